"""Memorization of token sequences: exact copies and the longest common substring with the training set.

- `copy_flags(samples, train, v)`: whether each sample equals a training sequence (one matrix product of
  one-hot codes, [N, S v] x [S v, P], counts agreeing tokens exactly).
- `longest_common_substring(samples, train)`: per sample, the length of the longest run of consecutive tokens
  that also occurs consecutively in some training sequence (anywhere in it). The classic dynamic programme
  over positions, run for every training sequence at once: with run[j] = the length of the common run ending
  at a's position i and b's position j,

      run_i[j] = (run_{i-1}[j - 1] + 1) if a[i] == b[j] else 0,

  a `lax.scan` over the sample's positions carrying [P, S], vmapped over a block of samples and `lax.map`ped
  over the blocks (memory: block x P x S integers). Exact, O(N P S^2) work, jitted.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def copy_flags(samples: jax.Array, train_tokens: jax.Array, v: int) -> jax.Array:
  """bool [N]: sample i equals some training sequence. samples: int [N, S]; train_tokens: int [P, S]."""
  a = jax.nn.one_hot(samples, v, dtype=jnp.float32).reshape(samples.shape[0], -1)
  b = jax.nn.one_hot(train_tokens, v, dtype=jnp.float32).reshape(train_tokens.shape[0], -1)
  agree = jnp.dot(a, b.T, precision=jax.lax.Precision.HIGHEST)
  return jnp.any(agree >= samples.shape[1] - 0.5, axis=1)


def _lcs_one(a: jax.Array, train: jax.Array) -> jax.Array:
  """int32 []: the longest common substring of a [S] with any row of train [P, S]."""
  def step(carry, a_i):
    run, best = carry
    shifted = jnp.pad(run, ((0, 0), (1, 0)))[:, :-1]     # run_{i-1}[j - 1], 0 at j = 0
    run = jnp.where(train == a_i, shifted + 1, 0)
    return (run, jnp.maximum(best, jnp.max(run))), None
  (_, best), _ = jax.lax.scan(step, (jnp.zeros(train.shape, jnp.int32), jnp.int32(0)), a)
  return best


@functools.partial(jax.jit, static_argnames=('block',))
def longest_common_substring(samples: jax.Array, train: jax.Array, block: int = 8) -> jax.Array:
  """int32 [N]: for each sample [S], the longest substring it shares with some training sequence.
  samples: int [N, S]; train: int [P, S'] (any lengths)."""
  n = samples.shape[0]
  pad = (-n) % block
  x = jnp.pad(samples.astype(jnp.int32), ((0, pad), (0, 0)), constant_values=-1)   # -1 never matches
  out = jax.lax.map(jax.vmap(lambda a: _lcs_one(a, train.astype(jnp.int32))), x.reshape(-1, block, x.shape[1]))
  return out.reshape(-1)[:n]


__all__ = ['copy_flags', 'longest_common_substring']
