"""Character-level text, text8-style, cut into fixed-length chunks: the data of the masked-diffusion family's text
experiments (SPEC section 4). No download by default.

Sources (`source`):
  * 'pydoc': CPython's own `pydoc_data.topics` (the help topics of the standard library, ~465k characters,
    ~376k after cleaning; it ships with every CPython, so the text depends on the Python version, which the
    cache key records);
  * 'files': the concatenation of user text files (`paths`), e.g. the `text8` file itself (already clean).

Cleaning, as text8: lowercase; every character outside a-z becomes a space; runs of spaces collapse to one.
Tokens: space = 0, a..z = 1..26 (VOCAB_SIZE = 27). The cleaned stream is cut into consecutive, non-overlapping
chunks of `length` d characters; repeated chunks are dropped (distinct chunks, in order of first appearance);
these chunk arrays are cached as uint8 .npy files under `cache_dir` (like the prepared images of
`jaxdiff.data.images`). `load` permutes the chunks with its seed: the test set is the first n_test, the training
set the next n, so the training sets of increasing n are nested and every one is disjoint from the test set.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import sys

import numpy as np
from absl import logging

from jaxdiff.data import images, rhm

SOURCES = ('pydoc', 'files')
ALPHABET = ' abcdefghijklmnopqrstuvwxyz'
VOCAB_SIZE = len(ALPHABET)
CACHE_VERSION = 'v1'   # bump when the cleaning or chunking changes


def clean(text: str) -> str:
  """text8-style: lowercase, non a-z -> space, runs of spaces -> one space, stripped."""
  return re.sub(' +', ' ', re.sub('[^a-z]', ' ', text.lower())).strip()


def encode(text: str) -> np.ndarray:
  """Cleaned text -> uint8 tokens (space 0, a..z 1..26)."""
  codes = np.frombuffer(text.encode('ascii'), np.uint8).astype(np.int32)
  return np.where(codes == ord(' '), 0, codes - ord('a') + 1).astype(np.uint8)


def decode(tokens) -> str:
  """Tokens [S] -> text."""
  return ''.join(ALPHABET[int(t)] for t in np.asarray(tokens).reshape(-1))


def raw_text(source: str, paths=()) -> str:
  """The uncleaned text of a source."""
  if source == 'pydoc':
    from pydoc_data import topics  # pylint: disable=g-import-not-at-top
    return '\n'.join(topics.topics[k] for k in sorted(topics.topics))
  if source == 'files':
    parts = []
    for p in paths:
      with open(os.path.expanduser(p), encoding='utf-8', errors='replace') as f:
        parts.append(f.read())
    return '\n'.join(parts)
  raise ValueError(f"config field 'md4.text.source': must be one of {SOURCES}, got {source!r}")


def distinct_chunks(tokens: np.ndarray, length: int) -> np.ndarray:
  """uint8 [C, length]: the consecutive non-overlapping chunks of `tokens`, repeats dropped (first kept)."""
  num = tokens.shape[0] // length
  chunks = tokens[:num * length].reshape(num, length)
  _, first = np.unique(chunks, axis=0, return_index=True)
  return chunks[np.sort(first)]


def _fingerprint(source: str, paths) -> str:
  """What identifies a source's text without reading it: the Python version for pydoc, path, size and mtime of
  each file."""
  if source == 'pydoc':
    key = f'pydoc-{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}'
  else:
    stats = [(os.path.abspath(os.path.expanduser(p)), os.path.getsize(os.path.expanduser(p)),
              int(os.path.getmtime(os.path.expanduser(p)))) for p in paths]
    key = f'files-{stats}'
  return hashlib.sha1(key.encode()).hexdigest()[:16]


def corpus_chunks(source: str, length: int, paths=(), cache_dir: str = '') -> np.ndarray:
  """The distinct chunks uint8 [C, length] of a source (read from the cache when prepared before)."""
  directory = os.path.abspath(os.path.expanduser(cache_dir or '~/.cache/jaxdiff'))
  path = os.path.join(directory, f'text-{source}-{_fingerprint(source, paths)}-d{length}.{CACHE_VERSION}.npy')
  if os.path.exists(path):
    try:
      chunks = np.load(path, allow_pickle=False)
      if chunks.dtype == np.uint8 and chunks.ndim == 2 and chunks.shape[1] == length:
        return chunks
      raise ValueError(f'unexpected contents {chunks.dtype} {chunks.shape}')
    except Exception as e:  # pylint: disable=broad-except
      logging.warning('data: ignoring unreadable cache file %s (%s); rebuilding it', path, e)
  chunks = distinct_chunks(encode(clean(raw_text(source, paths))), length)
  try:
    os.makedirs(directory, exist_ok=True)
    images.atomic_save(path, chunks)
    logging.info('data: cached %d text chunks of %d characters (%s) in %s', len(chunks), length, source, path)
  except OSError as e:
    logging.warning('data: could not write the cache %s (%s); continuing without it', path, e)
  return chunks


@dataclasses.dataclass(frozen=True, eq=False)
class TextData:
  """Training and test chunks as one-hot float32 [n, d, 27] host arrays (the layout of `rhm.RHMData`)."""
  train: np.ndarray
  test: np.ndarray
  train_labels: np.ndarray   # [n] zeros (unconditional)
  test_labels: np.ndarray
  num_chunks: int            # distinct chunks in the corpus
  name: str = 'text'

  @property
  def train_tokens(self) -> np.ndarray:
    return self.train.argmax(-1).astype(np.int32)


def load(source: str, length: int, n: int, n_test: int, seed: int, paths=(), cache_dir: str = '') -> TextData:
  """Test set = the first n_test chunks of the permutation of `seed`, training set = the next n."""
  chunks = corpus_chunks(source, length, paths, cache_dir)
  if n + n_test > len(chunks):
    raise ValueError(f"config field 'data.n': n + n_test = {n} + {n_test} exceeds the {len(chunks)} distinct "
                     f'chunks of {length} characters in the {source!r} corpus')
  order = np.random.default_rng(seed).permutation(len(chunks))
  test, train = chunks[order[:n_test]], chunks[order[n_test:n_test + n]]
  return TextData(train=rhm.one_hot(train, VOCAB_SIZE), test=rhm.one_hot(test, VOCAB_SIZE),
                  train_labels=np.zeros(n, np.int32), test_labels=np.zeros(n_test, np.int32),
                  num_chunks=len(chunks), name=f'text:{source}')


__all__ = ['ALPHABET', 'SOURCES', 'VOCAB_SIZE', 'TextData', 'clean', 'corpus_chunks', 'decode', 'distinct_chunks',
           'encode', 'load', 'raw_text']
