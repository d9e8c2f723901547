"""Character-level text data (jaxdiff.data.text): text8-style cleaning into 27 symbols, distinct chunks, a
deterministic loader whose training and test chunks are disjoint and whose training sets are nested in n, the
chunk cache, and user text files."""

import os

import numpy as np
import pytest

from jaxdiff.data import text


def test_cleaning_is_text8_style_and_tokens_round_trip():
  assert text.clean("Hello, World!\n  It's 3.14 -- ok") == 'hello world it s ok'
  cleaned = text.clean(text.raw_text('pydoc'))
  assert set(cleaned) <= set(text.ALPHABET) and '  ' not in cleaned
  assert len(cleaned) > 300_000   # SPEC: ~376k characters
  tokens = text.encode(cleaned[:1000])
  assert tokens.dtype == np.uint8 and tokens.max() < text.VOCAB_SIZE == 27
  assert text.decode(tokens) == cleaned[:1000]


def test_the_loader_is_deterministic_and_its_train_and_test_chunks_are_distinct_and_disjoint(tmp_path):
  a = text.load('pydoc', 32, n=512, n_test=256, seed=0, cache_dir=str(tmp_path / 'a'))
  b = text.load('pydoc', 32, n=512, n_test=256, seed=0, cache_dir=str(tmp_path / 'b'))   # built again
  c = text.load('pydoc', 32, n=512, n_test=256, seed=0, cache_dir=str(tmp_path / 'a'))   # from the cache
  assert os.listdir(tmp_path / 'a') and a.train.shape == (512, 32, 27) and a.test.shape == (256, 32, 27)
  for other in (b, c):
    np.testing.assert_array_equal(a.train, other.train)
    np.testing.assert_array_equal(a.test, other.test)
  train, test = a.train_tokens, a.test.argmax(-1)
  assert len({tuple(r) for r in train}) == 512 and len({tuple(r) for r in test}) == 256   # distinct
  assert not {tuple(r) for r in train} & {tuple(r) for r in test}                          # disjoint
  # Chunks are consecutive pieces of the cleaned corpus.
  corpus = text.clean(text.raw_text('pydoc'))
  assert all(text.decode(r) in corpus for r in train[:20])
  # Nested in n, same test set; another seed gives another split.
  small = text.load('pydoc', 32, n=128, n_test=256, seed=0, cache_dir=str(tmp_path / 'a'))
  np.testing.assert_array_equal(small.train, a.train[:128])
  np.testing.assert_array_equal(small.test, a.test)
  other = text.load('pydoc', 32, n=128, n_test=256, seed=1, cache_dir=str(tmp_path / 'a'))
  assert not np.array_equal(other.test, a.test)


def test_repeated_chunks_are_dropped_and_user_files_are_a_source(tmp_path):
  tokens = text.encode('abcdabcdxyzwabcd')
  np.testing.assert_array_equal(text.distinct_chunks(tokens, 4), text.encode('abcdxyzw').reshape(2, 4))
  path = tmp_path / 'book.txt'
  path.write_text('The Cat sat; the MAT. ' * 3 + 'A different tail here!')
  chunks = text.corpus_chunks('files', 11, paths=(str(path),), cache_dir=str(tmp_path / 'cache'))
  assert [text.decode(r) for r in chunks] == ['the cat sat', ' the mat th', 'e cat sat t', 'he mat the ',
                                              'cat sat the', ' mat a diff', 'erent tail ']
  with pytest.raises(ValueError, match="'data.n': n \\+ n_test = 5 \\+ 3 exceeds the 7 distinct chunks"):
    text.load('files', 11, n=5, n_test=3, seed=0, paths=(str(path),), cache_dir=str(tmp_path / 'cache'))
