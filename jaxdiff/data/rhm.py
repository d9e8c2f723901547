"""The Random Hierarchy Model (RHM): sequences of a random context-free grammar whose structure is known exactly
(paper 2, SPEC section 4).

A grammar has a vocabulary of v symbols per level, n_c root classes, m rules (productions) per symbol,
branching s and depth L. Level 0 is the root (a class in [0, n_c)), levels 1..L hold symbols in [0, v), and a
sequence is the s^L leaves at level L. A symbol of level l < L produces one of its m s-tuples of level l + 1.
Each level draws its productions on its own: the root level n_c * m distinct s-tuples out of the v^s, every
lower level v * m distinct ones, so within a level a tuple is produced by at most one symbol (unambiguous) and
a sequence has exactly one parse. There are P_max = n_c * m^((s^L - 1) / (s - 1)) distinct sequences (one
rule choice per internal node).

- `Grammar.from_seed(v, n_c, m, s, L, seed)`: the rules (`rules[l]`: [symbols of level l, m, s]).
- `generate(grammar, roots, choices)`: the leaves of trees given by their root class and rule choices;
  `decode_index` / `tree_index` map an index in [0, P_max) to its tree and back.
- `draw_sequences(grammar, num, seed, distinct=True)`: trees drawn uniformly (every index equally likely),
  distinct sequences in order of first appearance (or i.i.d. with `distinct=False`); the first k of a larger
  draw equal a draw of k, so training sets of increasing P are nested.
- `parse(tokens, tables)`: per-level validity, a pure, jitted, vectorized function of [B, s^L] tokens;
  `validity` gives valid@k for k = 1..L (the fraction of height-k subtrees that are valid, over samples and
  positions; valid@L = fully grammatical).
- `load(...)`: train and test sets (disjoint with `distinct`), as one-hot float32 [P, s^L, v] host arrays.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

DRAW_CHUNK = 4096   # trees per draw: fixed, so that a draw of k sequences is a prefix of any larger draw


def num_internal_nodes(s: int, L: int) -> int:
  """Nodes with a rule choice: the root and levels 1..L-1, (s^L - 1) / (s - 1)."""
  return sum(s ** l for l in range(L))


def p_max(v: int, n_c: int, m: int, s: int, L: int) -> int:
  """The number of distinct sequences, n_c * m^((s^L - 1) / (s - 1)) (a Python int: it may exceed 2^63)."""
  del v
  return n_c * m ** num_internal_nodes(s, L)


def check_sizes(v: int, n_c: int, m: int, s: int, L: int, prefix: str = '') -> None:
  """ValueError naming the field when the grammar cannot exist (needs v*m <= v^s and n_c*m <= v^s)."""
  for name, value in (('v', v), ('n_c', n_c), ('m', m), ('s', s), ('L', L)):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
      raise ValueError(f"config field '{prefix}{name}': must be a positive int, got {value!r}")
  if s < 2:
    raise ValueError(f"config field '{prefix}s': the branching must be >= 2, got {s}")
  if v < 2:
    raise ValueError(f"config field '{prefix}v': the vocabulary needs >= 2 symbols, got {v}")
  if v * m > v ** s:
    raise ValueError(f"config field '{prefix}m': v*m = {v}*{m} = {v * m} distinct productions per level exceed "
                     f"the v^s = {v ** s} s-tuples")
  if n_c * m > v ** s:
    raise ValueError(f"config field '{prefix}n_c': n_c*m = {n_c}*{m} = {n_c * m} root productions exceed the "
                     f"v^s = {v ** s} s-tuples")


@dataclasses.dataclass(frozen=True, eq=False)
class Grammar:
  """An RHM grammar. rules[l]: int32 [n_l, m, s], the m productions of each of the n_l symbols of level l
  (n_0 = n_c, n_l = v), for l = 0..L-1; tables[l]: int32 [v^s], the symbol of level l producing the s-tuple
  with index sum_i a_i v^(s-1-i), or -1 (the inverse of rules[l])."""
  v: int
  n_c: int
  m: int
  s: int
  L: int
  rules: tuple[np.ndarray, ...]

  @classmethod
  def from_seed(cls, v: int, n_c: int, m: int, s: int, L: int, seed: int) -> Grammar:
    check_sizes(v, n_c, m, s, L)
    rng = np.random.default_rng(seed)
    rules = []
    for level in range(L):
      count = n_c if level == 0 else v
      picked = rng.choice(v ** s, size=count * m, replace=False)   # distinct tuples: unambiguous
      rules.append(tuple_digits(picked, v, s).reshape(count, m, s).astype(np.int32))
    return cls(v, n_c, m, s, L, tuple(rules))

  @property
  def length(self) -> int:
    return self.s ** self.L

  @property
  def p_max(self) -> int:
    return p_max(self.v, self.n_c, self.m, self.s, self.L)

  @functools.cached_property
  def tables(self) -> np.ndarray:
    """int32 [L, v^s]: tables[l][tuple index] = the level-l symbol producing it, or -1."""
    out = np.full((self.L, self.v ** self.s), -1, np.int32)
    for level, r in enumerate(self.rules):
      idx = tuple_index(r.reshape(-1, self.s), self.v)
      out[level, idx] = np.repeat(np.arange(r.shape[0], dtype=np.int32), self.m)
    return out


def tuple_digits(index: np.ndarray, v: int, s: int) -> np.ndarray:
  """[...] tuple indices -> [..., s] symbols (most significant first)."""
  index = np.asarray(index)
  return np.stack([(index // v ** (s - 1 - i)) % v for i in range(s)], axis=-1)


def tuple_index(tuples, v: int):
  """[..., s] symbols -> [...] index sum_i a_i v^(s-1-i) (numpy or jax arrays)."""
  s = tuples.shape[-1]
  weights = np.array([v ** (s - 1 - i) for i in range(s)], np.int32)
  return (tuples * weights).sum(-1)


# ----------------------------------------------------------------------------------------------------------
# Trees -> sequences.

def generate(grammar: Grammar, roots: np.ndarray, choices: np.ndarray) -> np.ndarray:
  """Leaves of trees. roots: [B] classes; choices: [B, (s^L - 1)/(s - 1)] rule choices in [0, m) of the
  internal nodes in breadth-first order (root first). Returns int32 [B, s^L]."""
  symbols = np.asarray(roots, np.int64)[:, None]
  choices = np.asarray(choices, np.int64)
  start = 0
  for level in range(grammar.L):
    width = grammar.s ** level
    c = choices[:, start:start + width]
    start += width
    symbols = grammar.rules[level][symbols, c].reshape(symbols.shape[0], -1)
  return symbols.astype(np.int32)


def decode_index(grammar: Grammar, index: int) -> tuple[int, np.ndarray]:
  """Index in [0, P_max) -> (root class, rule choices [(s^L - 1)/(s - 1)]): mixed radix, root most
  significant, then the internal nodes breadth-first, each a digit in [0, m)."""
  if not 0 <= index < grammar.p_max:
    raise ValueError(f'index {index} is outside [0, P_max = {grammar.p_max})')
  n = num_internal_nodes(grammar.s, grammar.L)
  digits = np.zeros(n, np.int64)
  for j in range(n - 1, -1, -1):
    index, digits[j] = divmod(index, grammar.m)
  return int(index), digits


def tree_index(grammar: Grammar, root: int, choices: np.ndarray) -> int:
  """The inverse of `decode_index`."""
  index = int(root)
  for d in np.asarray(choices).tolist():
    index = index * grammar.m + int(d)
  return index


def draw_sequences(grammar: Grammar, num: int, seed: int, *, distinct: bool = True) -> np.ndarray:
  """`num` sequences int32 [num, s^L] of uniformly drawn trees (root class and every rule choice uniform: every
  index of [0, P_max) equally likely). distinct: keep the first appearance of each sequence (uniform draws
  without replacement; needs num <= P_max); otherwise i.i.d. Drawn in fixed chunks, so the first k rows
  of a draw of num >= k equal the draw of k (nested training sets)."""
  if distinct and num > grammar.p_max:
    raise ValueError(f'cannot draw {num} distinct sequences: the grammar has P_max = {grammar.p_max}')
  rng = np.random.default_rng(seed)
  n_int = num_internal_nodes(grammar.s, grammar.L)
  out, seen, count = [], set(), 0
  while count < num:
    roots = rng.integers(0, grammar.n_c, DRAW_CHUNK)
    choices = rng.integers(0, grammar.m, (DRAW_CHUNK, n_int))
    seqs = generate(grammar, roots, choices)
    if distinct:
      keep = []
      for i, row in enumerate(seqs):
        k = row.tobytes()
        if k not in seen:
          seen.add(k)
          keep.append(i)
      seqs = seqs[keep]
    out.append(seqs)
    count += len(seqs)
  return np.concatenate(out)[:num]


def one_hot(tokens: np.ndarray, v: int) -> np.ndarray:
  """int [..., S] -> float32 [..., S, v]."""
  return np.eye(v, dtype=np.float32)[np.asarray(tokens)]


# ----------------------------------------------------------------------------------------------------------
# Parsing: per-level validity.

@functools.partial(jax.jit, static_argnames=('v', 's'))
def parse(tokens: jax.Array, tables: jax.Array, *, v: int, s: int) -> list[jax.Array]:
  """Propagate from the leaves: an s-tuple that is a production of some symbol passes that symbol up, any
  other tuple (or one with an invalid child) passes "invalid" (-1).

  tokens: int [B, s^L]; tables: int32 [L, v^s] (`Grammar.tables`). Returns [valid_1, ..., valid_L]: bool
  [B, s^(L-k)], whether each height-k subtree is valid (valid_L: [B, 1], the whole sequence).
  """
  L = tables.shape[0]
  sym = jnp.asarray(tokens, jnp.int32)
  out = []
  for k in range(1, L + 1):
    groups = sym.reshape(sym.shape[0], -1, s)
    parent = tables[L - k][tuple_index(jnp.clip(groups, 0, v - 1), v)]
    sym = jnp.where(jnp.any(groups < 0, axis=-1), -1, parent)
    out.append(sym >= 0)
  return out


def validity(tokens: jax.Array, tables: jax.Array, *, v: int, s: int) -> jax.Array:
  """valid@k for k = 1..L: float32 [L], the fraction of height-k subtrees that are valid (mean over samples
  and positions). tokens: int [B, s^L]."""
  return jnp.stack([jnp.mean(x.astype(jnp.float32)) for x in parse(tokens, tables, v=v, s=s)])


@dataclasses.dataclass(frozen=True, eq=False)
class RHMData:
  """A training set and a test set of one grammar (host arrays; one-hot float32 [P, s^L, v])."""
  train: np.ndarray
  test: np.ndarray
  train_labels: np.ndarray   # [P] zeros (unconditional)
  test_labels: np.ndarray
  grammar: Grammar
  name: str = 'rhm'

  @property
  def train_tokens(self) -> np.ndarray:
    return self.train.argmax(-1).astype(np.int32)


def load(grammar: Grammar, n: int, n_test: int, seed: int, *, distinct: bool = True) -> RHMData:
  """Test set = the first n_test sequences of the draw of `seed`, training set = the next n (so the training
  sets of increasing n are nested and, with distinct, disjoint from the test set)."""
  if distinct and n + n_test > grammar.p_max:
    raise ValueError(f"config field 'data.n': P = {n} exceeds P_max - n_test = {grammar.p_max} - {n_test} "
                     f'= {grammar.p_max - n_test} distinct sequences left for training')
  tokens = draw_sequences(grammar, n + n_test, seed, distinct=distinct)
  x = one_hot(tokens, grammar.v)
  return RHMData(train=x[n_test:], test=x[:n_test], train_labels=np.zeros(n, np.int32),
                 test_labels=np.zeros(n_test, np.int32), grammar=grammar)


__all__ = ['Grammar', 'RHMData', 'check_sizes', 'decode_index', 'draw_sequences', 'generate', 'load', 'one_hot',
           'p_max', 'parse', 'tree_index', 'tuple_digits', 'tuple_index', 'validity', 'num_internal_nodes']
