"""The Random Hierarchy Model: rules unambiguous within a level, every generated sequence parses as fully valid,
a corrupted token invalidates exactly its ancestors, train and test are distinct, disjoint and nested, and
impossible grammars are refused naming the field."""

import numpy as np
import pytest

from jaxdiff.data import rhm

PAPER = dict(v=8, n_c=8, m=3, s=2, L=3)


def test_rules_are_unambiguous_within_each_level_and_p_max_counts_the_trees():
  g = rhm.Grammar.from_seed(**PAPER, seed=3)
  assert g.p_max == 8 * 3 ** 7 == 17_496 and g.length == 8
  for level, rules in enumerate(g.rules):
    assert rules.shape == ((8 if level == 0 else 8), 3, 2)
    tuples = {tuple(t) for t in rules.reshape(-1, 2).tolist()}
    assert len(tuples) == rules.shape[0] * 3    # no tuple is produced twice in a level
    assert (g.tables[level] >= 0).sum() == len(tuples)
  # Every index of a small grammar decodes to a distinct, valid sequence, and back.
  small = rhm.Grammar.from_seed(v=3, n_c=2, m=2, s=2, L=2, seed=1)
  trees = [rhm.decode_index(small, i) for i in range(small.p_max)]
  assert all(rhm.tree_index(small, r, c) == i for i, (r, c) in enumerate(trees))
  seqs = rhm.generate(small, np.array([r for r, _ in trees]), np.stack([c for _, c in trees]))
  assert len({s.tobytes() for s in seqs}) == small.p_max == 2 * 2 ** 3
  np.testing.assert_array_equal(rhm.validity(seqs, small.tables, v=3, s=2), [1.0, 1.0])


def test_generated_sequences_all_parse_as_fully_valid_and_uniform_tokens_at_chance():
  g = rhm.Grammar.from_seed(**PAPER, seed=0)
  seqs = rhm.draw_sequences(g, 3000, seed=1)
  np.testing.assert_array_equal(rhm.validity(seqs, g.tables, v=8, s=2), [1.0, 1.0, 1.0])
  noise = np.random.default_rng(0).integers(0, 8, (50_000, 8))
  valid = np.asarray(rhm.validity(noise, g.tables, v=8, s=2))
  np.testing.assert_allclose(valid[:2], [0.375, 0.375 ** 3], atol=4e-3)   # SPEC: 0.375 and ~0.053


def test_a_corrupted_token_makes_exactly_its_ancestors_invalid():
  g = rhm.Grammar.from_seed(**PAPER, seed=0)
  seqs = rhm.draw_sequences(g, 64, seed=2)
  rng = np.random.default_rng(0)
  checked = 0
  for seq in seqs:
    pos = int(rng.integers(0, 8))
    sibling = seq[pos ^ 1]   # s = 2: the other child of the leaf's parent
    for tok in range(8):
      pair = (tok, sibling) if pos % 2 == 0 else (sibling, tok)
      if tok != seq[pos] and g.tables[2][pair[0] * 8 + pair[1]] < 0:
        break
    else:
      continue
    bad = seq.copy()
    bad[pos] = tok
    levels = rhm.parse(bad[None], g.tables, v=8, s=2)
    for k, valid in enumerate(levels, start=1):
      expected = np.ones(8 // 2 ** k, bool)
      expected[pos // 2 ** k] = False           # the height-k subtree holding the corrupted leaf
      np.testing.assert_array_equal(np.asarray(valid[0]), expected)
    checked += 1
  assert checked > 40


def test_train_and_test_are_distinct_disjoint_nested_one_hot():
  g = rhm.Grammar.from_seed(**PAPER, seed=0)
  small, big = rhm.load(g, 100, 50, seed=4), rhm.load(g, 300, 50, seed=4)
  assert big.train.shape == (300, 8, 8) and big.train.dtype == np.float32
  np.testing.assert_array_equal(big.train.sum(-1), 1.0)
  np.testing.assert_array_equal(small.train, big.train[:100])     # nested in P
  np.testing.assert_array_equal(small.test, big.test)
  rows = {r.tobytes() for r in big.train_tokens}
  test = {r.tobytes() for r in big.test.argmax(-1).astype(np.int32)}
  assert len(rows) == 300 and len(test) == 50 and not rows & test
  iid = rhm.draw_sequences(rhm.Grammar.from_seed(v=3, n_c=2, m=2, s=2, L=2, seed=1), 64, seed=0, distinct=False)
  assert len({r.tobytes() for r in iid}) < 64    # 16 sequences: i.i.d. draws repeat


@pytest.mark.parametrize('sizes,match', [
    (dict(v=8, n_c=8, m=9, s=2, L=3), "'m': v\\*m = 8\\*9 = 72"),
    (dict(v=8, n_c=30, m=3, s=2, L=3), "'n_c': n_c\\*m = 30\\*3 = 90"),
    (dict(v=8, n_c=8, m=3, s=1, L=3), "'s'"),
])
def test_impossible_grammars_are_refused_naming_the_field(sizes, match):
  with pytest.raises(ValueError, match=match):
    rhm.Grammar.from_seed(**sizes, seed=0)


def test_p_beyond_p_max_minus_the_test_set_is_refused():
  g = rhm.Grammar.from_seed(v=3, n_c=2, m=2, s=2, L=2, seed=1)
  with pytest.raises(ValueError, match="'data.n': P = 10 exceeds P_max - n_test = 16 - 8 = 8"):
    rhm.load(g, 10, 8, seed=0)
