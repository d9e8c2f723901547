"""Evaluator 'copies': the fraction of generated sequences that equal a sequence of the member's own training
set (paper 2's memorization measure for discrete data), for families that declare their `grammar` and sample
token sequences [N, S].

- `f_mem`, `f_mem_lo`, `f_mem_hi`: the exact-copy fraction and its 95% bootstrap interval (the keys of the
  image runs' ratio test, so summary.json's tau_mem from f_mem and the analysis read it unchanged);
- `copy_chance` = P / P_max * valid@L: the copy fraction of a generator that draws grammatical sequences
  uniformly (it copies a training sequence by chance), to read beside f_mem; `valid_seq`: valid@L itself.

A sample copies a training sequence when all S tokens agree: one matrix product of one-hot codes,
[N, S v] x [S v, P], counts the agreeing tokens exactly (integers <= S in float32). The training set stays on
the devices (replicated), the samples are split over the mesh.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff import distributed, sharding
from jaxdiff.data import rhm
from jaxdiff.evaluators import validity
from jaxdiff.metrics import memorization


def copy_flags(samples: jax.Array, train_tokens: jax.Array, v: int) -> jax.Array:
  """bool [N]: sample i equals some training sequence. samples: int [N, S]; train_tokens: int [P, S]."""
  a = jax.nn.one_hot(samples, v, dtype=jnp.float32).reshape(samples.shape[0], -1)
  b = jax.nn.one_hot(train_tokens, v, dtype=jnp.float32).reshape(train_tokens.shape[0], -1)
  agree = jnp.dot(a, b.T, precision=jax.lax.Precision.HIGHEST)
  return jnp.any(agree >= samples.shape[1] - 0.5, axis=1)


class Evaluator(validity.Evaluator):
  """Declines, like 'validity', for families without a grammar."""

  def __init__(self, ctx):
    super().__init__(ctx)
    ec, g = ctx.config.eval, ctx.family.grammar
    train_tokens = np.asarray(ctx.data.train).argmax(-1).astype(np.int32)
    self.train = distributed.put(train_tokens, sharding.replicated(ctx.mesh))
    self.fraction = train_tokens.shape[0] / g.p_max   # P / P_max (float: P_max may exceed 2^63)

    def metrics(samples, train, tables, key):
      flags = copy_flags(samples, train, g.v)
      f, lo, hi = memorization.f_mem_bootstrap(flags, key, num_resamples=ec.bootstrap_resamples)
      valid = jnp.mean(rhm.parse(samples, tables, v=g.v, s=g.s)[-1].astype(jnp.float32))
      return {'f_mem': f, 'f_mem_lo': lo, 'f_mem_hi': hi, 'valid_seq': valid}
    self._metrics = jax.jit(metrics)

  def __call__(self, params, keys, samples):
    del params
    out = {k: float(v) for k, v in distributed.fetch(
        self._metrics(samples, self.train, self.tables, keys.memorization)).items()}
    out['copy_chance'] = self.fraction * out['valid_seq']
    return out, {}
