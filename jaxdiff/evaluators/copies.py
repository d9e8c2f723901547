"""Evaluator 'copies': the fraction of generated sequences that equal a sequence of the member's own training
set (paper 2's memorization measure for discrete data), for families that sample token sequences [N, S] and
declare their `vocab_size` (the D3PM and masked-diffusion families; their data are one-hot [P, S, v]).

- `f_mem`, `f_mem_lo`, `f_mem_hi`: the exact-copy fraction and its 95% bootstrap interval (the keys of the
  image runs' ratio test, so summary.json's tau_mem from f_mem and the analysis read it unchanged);
- for families with a `grammar` (RHM data), also `copy_chance` = P / P_max * valid@L: the copy fraction of a
  generator that draws grammatical sequences uniformly (it copies a training sequence by chance), to read
  beside f_mem; `valid_seq`: valid@L itself.

A sample copies a training sequence when all S tokens agree (`jaxdiff.metrics.sequences.copy_flags`). The
training set stays on the devices (replicated), the samples are split over the mesh.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff import distributed, sharding
from jaxdiff.data import rhm
from jaxdiff.metrics import memorization
from jaxdiff.metrics.sequences import copy_flags


def declines(ctx) -> bool:
  """Whether the run's samples are not token sequences (the family declares no `vocab_size`)."""
  return getattr(ctx.family, 'vocab_size', None) is None


def train_tokens(ctx) -> jax.Array:
  """The member's training sequences int32 [P, S] (from one-hot [P, S, v]), replicated over the mesh."""
  return distributed.put(np.asarray(ctx.data.train).argmax(-1).astype(np.int32), sharding.replicated(ctx.mesh))


class Evaluator:
  needs_samples = True

  def __new__(cls, ctx):
    return None if declines(ctx) else super().__new__(cls)

  def __init__(self, ctx):
    ec, v, g = ctx.config.eval, ctx.family.vocab_size, getattr(ctx.family, 'grammar', None)
    self.train = train_tokens(ctx)
    self.tables = None if g is None else jnp.asarray(g.tables)
    self.fraction = None if g is None else self.train.shape[0] / g.p_max   # P / P_max (P_max may exceed 2^63)

    def metrics(samples, train, tables, key):
      flags = copy_flags(samples, train, v)
      f, lo, hi = memorization.f_mem_bootstrap(flags, key, num_resamples=ec.bootstrap_resamples)
      out = {'f_mem': f, 'f_mem_lo': lo, 'f_mem_hi': hi}
      if g is not None:
        out['valid_seq'] = jnp.mean(rhm.parse(samples, tables, v=g.v, s=g.s)[-1].astype(jnp.float32))
      return out
    self._metrics = jax.jit(metrics)

  def __call__(self, params, keys, samples):
    del params
    out = {k: float(v) for k, v in distributed.fetch(
        self._metrics(samples, self.train, self.tables, keys.memorization)).items()}
    if self.fraction is not None:
      out['copy_chance'] = self.fraction * out['valid_seq']
    return out, {}
