"""The copy-detection memorization score: the largest cosine similarity of a sample's features to the training set.

Paper 3 (Marion & Wu; after Somepalli et al. 2023) calls a sample a copy when the cosine similarity of its
copy-detection features (SSCD) to some training image exceeds a threshold (0.6), and the memorization score is
the fraction of such samples. The features are the caller's: SSCD when its weights are available, the FID
features, a random projection, or the pixels themselves (pixel cosine, the feature-free fallback).

Exactness: the similarities are float32 dot products of L2-normalized features at HIGHEST precision over
chunks of the training set (`lax.scan`, memory ~ M * chunk_size floats), the running maximum ties broken by
the lower training index, as a float64 brute force would (tests/test_copy_detection.py). Sharded like the
ratio test: the training features are split over the mesh axis 'data', each device keeps its best match, an
all_gather merges them.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec as P

from jaxdiff.metrics import memorization
from jaxdiff.sharding import DATA

CHUNK_SIZE = 32768   # training features per matmul
THRESHOLD = 0.6      # paper 3 / Somepalli et al.: SSCD cosine similarity above 0.6 is a copy


def normalize(feats: jax.Array, eps: float = 1e-12) -> jax.Array:
  """Rows scaled to unit L2 norm (a zero row stays zero): [N, D] -> [N, D] float32."""
  f = feats.reshape(feats.shape[0], -1).astype(jnp.float32)
  norm = jnp.sqrt(jnp.sum(f * f, axis=1, keepdims=True))
  return f / jnp.maximum(norm, eps)


def _best_local(x: jax.Array, y: jax.Array, valid: jax.Array, index_offset, chunk_size: int
                ) -> tuple[jax.Array, jax.Array]:
  """Max cosine and its (global) index of each row of x over the valid rows of y; both normalized."""
  n = y.shape[0]
  chunk = min(chunk_size, n)
  num_chunks = -(-n // chunk)
  pad = num_chunks * chunk - n
  y = jnp.pad(y, ((0, pad), (0, 0))).reshape(num_chunks, chunk, -1)
  valid = jnp.pad(valid, (0, pad)).reshape(num_chunks, chunk)
  m = x.shape[0]

  def body(carry, inputs):
    best, best_i = carry
    yc, vc, c = inputs
    s = jnp.dot(x, yc.T, precision=jax.lax.Precision.HIGHEST)       # [M, chunk]
    s = jnp.where(vc[None, :], s, -jnp.inf)
    j = jnp.argmax(s, axis=1)                                         # first maximum: the lower index
    sj = jnp.take_along_axis(s, j[:, None], axis=1)[:, 0]
    better = sj > best                                                # ties keep the earlier chunk's index
    return (jnp.where(better, sj, best), jnp.where(better, index_offset + c * chunk + j, best_i)), None

  init = (jnp.full((m,), -jnp.inf, jnp.float32), jnp.zeros((m,), jnp.int32))
  (best, best_i), _ = jax.lax.scan(body, init, (y, valid, jnp.arange(num_chunks, dtype=jnp.int32)))
  return best, best_i.astype(jnp.int32)


def _check(samples: jax.Array, train: jax.Array) -> tuple[jax.Array, jax.Array]:
  if samples.ndim < 2 or train.ndim < 2:
    raise ValueError(f'features must be [N, D] arrays, got samples {samples.shape} and train {train.shape}')
  x, y = normalize(samples), normalize(train)
  if x.shape[1] != y.shape[1]:
    raise ValueError(f'samples have {x.shape[1]} features per item but the training set has {y.shape[1]}')
  if y.shape[0] < 1:
    raise ValueError('the training set is empty')
  return x, y


@functools.partial(jax.jit, static_argnames=('chunk_size',))
def nearest_cosine(samples: jax.Array, train: jax.Array, *, chunk_size: int = CHUNK_SIZE) -> dict[str, jax.Array]:
  """Each sample's most similar training item by cosine similarity of features.

  samples: [M, ...] features (flattened per item), train: [N, ...] of the same size per item.
  Returns {'similarity': [M] float32 in [-1, 1], 'index': [M] int32 (the lowest index among ties)}.
  """
  x, y = _check(samples, train)
  best, index = _best_local(x, y, jnp.ones(y.shape[0], bool), 0, chunk_size)
  return {'similarity': best, 'index': index}


def nearest_cosine_sharded(samples: jax.Array, train: jax.Array, mesh: Mesh, *,
                           chunk_size: int = CHUNK_SIZE) -> dict[str, jax.Array]:
  """`nearest_cosine` with the training features split over the mesh axis 'data'; same outputs, replicated."""
  x, y = _check(samples, train)
  if DATA not in mesh.axis_names:
    raise ValueError(f'the mesh must have an axis named {DATA!r}, got {mesh.axis_names}')
  ndev, n = mesh.shape[DATA], y.shape[0]
  per = -(-n // ndev)
  y = jnp.pad(y, ((0, per * ndev - n), (0, 0)))

  def local(x, y_local):
    offset = jax.lax.axis_index(DATA) * per
    best, index = _best_local(x, y_local, offset + jnp.arange(per) < n, offset, chunk_size)
    sims, idx = jax.lax.all_gather((best, index), DATA)             # [S, M]: shards in index order
    s = jnp.argmax(sims, axis=0)                                     # first maximum: the lower index
    return {'similarity': jnp.max(sims, axis=0), 'index': jnp.take_along_axis(idx, s[None], axis=0)[0]}

  return jax.shard_map(local, mesh=mesh, in_specs=(P(), P(DATA)), out_specs=P(), check_vma=False)(x, y)


def copy_score(similarity: jax.Array, key: jax.Array, *, threshold: float = THRESHOLD, num_resamples: int = 1000,
               level: float = 0.95) -> dict[str, jax.Array]:
  """The fraction of samples whose best similarity exceeds `threshold`, with its bootstrap interval.

  Returns {'copy_score', 'copy_score_lo', 'copy_score_hi'} scalars and 'copied' [M] bool.
  """
  if not -1 <= threshold < 1:
    raise ValueError(f'the copy threshold must be in [-1, 1), got {threshold}')
  copied = similarity > threshold
  f, lo, hi = memorization.f_mem_bootstrap(copied, key, num_resamples=num_resamples, level=level)
  return {'copy_score': f, 'copy_score_lo': lo, 'copy_score_hi': hi, 'copied': copied}


__all__ = ['normalize', 'nearest_cosine', 'nearest_cosine_sharded', 'copy_score', 'THRESHOLD']
