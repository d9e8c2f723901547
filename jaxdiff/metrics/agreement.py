"""Agreement of two models trained on disjoint halves of a training set (paper 2; Kadkhodaie et al. 2024).

Two models that generalize learn nearly the same score, so from the same noise they generate nearly the same
sample; two models that memorize their own halves map the same noise to different training examples. For
samples a_i, b_i generated from the same noise by the two models ([M, ...] each, pair i = row i):

- `l2`: mean_i ||a_i - b_i|| (model space), beside `l2_unpaired` = mean_i ||a_i - b_{i+1 mod M}||, the
  distance of samples that share no noise (the scale against which the pairs' distance is small or not), and
  `rel_l2` = l2 / l2_unpaired (0: the same samples, ~1: no more alike than unrelated samples). Untrained
  networks also give rel_l2 < 1: their samples are mostly the shared noise itself;
- `pair_ratio`_i = ||a_i - b_i|| / min(min_{j != i} ||a_i - b_j||, min_{j != i} ||b_i - a_j||): the partner is
  closer than any other sample of either model by this factor. Pair i agrees when pair_ratio_i < k: each sample
  is a copy of the other under the ratio test of memorization (d1/d2 < k, k = 1/3) with the other model's
  samples as the reference set (the two ratio tests pass and both nearest neighbours are the partners);
- `agree`: the fraction of agreeing pairs, with its bootstrap interval.

The neighbours come from the exact search of jaxdiff.metrics.memorization (any pixel scale).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxdiff.metrics import memorization


@functools.partial(jax.jit, static_argnames=('k', 'num_resamples', 'chunk_size'))
def agreement(a: jax.Array, b: jax.Array, key: jax.Array, *, k: float = 1 / 3, num_resamples: int = 1000,
              chunk_size: int = memorization.CHUNK_SIZE) -> dict[str, jax.Array]:
  """Agreement of paired samples a, b: [M, ...] each, M >= 3 (see the module docstring).

  Returns scalars {'l2', 'l2_unpaired', 'rel_l2', 'agree', 'agree_lo', 'agree_hi'} and per pair {'pair_l2': [M],
  'pair_ratio': [M], 'agreed': [M] bool}.
  """
  if a.shape != b.shape or a.shape[0] < 3:
    raise ValueError(f'paired samples need equal shapes with at least 3 pairs, got {a.shape} and {b.shape}')
  x = a.reshape(a.shape[0], -1).astype(jnp.float32)
  y = b.reshape(b.shape[0], -1).astype(jnp.float32)
  m = x.shape[0]
  pair_l2 = jnp.sqrt(jnp.sum((x - y) ** 2, axis=1))                     # exact: differences, not products
  unpaired = jnp.sqrt(jnp.sum((x - jnp.roll(y, -1, axis=0)) ** 2, axis=1))
  own = jnp.arange(m, dtype=jnp.int32)

  def nearest_other(p, q):
    """Distance from p_i to the nearest q_j with j != i (exact)."""
    nn = memorization.nearest_two(p, q, chunk_size=chunk_size)
    return jnp.where(nn['index'] == own, nn['d2'], nn['d1'])

  denom = jnp.minimum(nearest_other(x, y), nearest_other(y, x))
  ratio = jnp.where(denom > 0, pair_l2 / jnp.where(denom > 0, denom, 1.0), jnp.where(pair_l2 > 0, jnp.inf, 0.0))
  agreed = ratio < k
  f, lo, hi = memorization.f_mem_bootstrap(agreed, key, num_resamples=num_resamples)
  l2, l2_unpaired = jnp.mean(pair_l2), jnp.mean(unpaired)
  return {'l2': l2, 'l2_unpaired': l2_unpaired, 'rel_l2': l2 / jnp.maximum(l2_unpaired, 1e-30), 'agree': f, 'agree_lo': lo, 'agree_hi': hi,
          'pair_l2': pair_l2, 'pair_ratio': ratio, 'agreed': agreed}


__all__ = ['agreement']
