"""Evaluator 'memorization': the fraction of samples that copy a training example (SPEC "Definitions").

`f_mem`, `f_mem_lo`, `f_mem_hi`: the fraction of generated samples whose nearest / second-nearest training distance
ratio d1/d2 is below `eval.memorization_k`, with its bootstrap interval; `num_uncertified` samples whose fast
candidate search could not be certified and that were searched exhaustively (jaxdiff.metrics.memorization: every
decision is exact). Every row also has `f_mem_k0.25`, `f_mem_k0.333`, `f_mem_k0.5`: the fractions at k = 1/4, 1/3
and 1/2 (`eval.memorization_fractions`; paper 1's claims hold at each), from the same ratios. The training set stays on the devices (replicated) and the samples are split over the mesh.
"""

from __future__ import annotations

import jax
import numpy as np

from jaxdiff import distributed, sharding
from jaxdiff.metrics import memorization


class Evaluator:
  needs_samples = True

  def __init__(self, ctx):
    ec = ctx.config.eval
    self.data, self.images = ctx.data, ctx.images
    self.train = distributed.put(np.asarray(ctx.data.train), sharding.replicated(ctx.mesh))
    self.grid = min(ec.grid_samples, ec.num_samples)
    mesh = ctx.mesh if ctx.num_devices > 1 else None
    self.fraction_keys = tuple(memorization.ratio_threshold_fractions(jax.numpy.zeros(1), ec.memorization_fractions))

    def metrics(s, t, key):
      mem = memorization.memorization_metrics(s, t, key, k=ec.memorization_k, num_resamples=ec.bootstrap_resamples,
                                              mesh=mesh, shard='samples', chunk_size=ec.nn_chunk_size)
      return {**mem, **memorization.ratio_threshold_fractions(mem['ratio'], ec.memorization_fractions)}

    self._metrics = jax.jit(metrics)

  def __call__(self, params, keys, samples):
    del params
    mem = self._metrics(samples, self.train, keys.memorization)
    scalars = distributed.fetch({k: mem[k] for k in ('f_mem', 'f_mem_lo', 'f_mem_hi', 'num_uncertified',
                                                     *self.fraction_keys)})
    g = self.grid
    figs = distributed.fetch({'ratio': mem['ratio'][:g], 'index': mem['index'][:g],
                              'memorized': mem['memorized'][:g]})
    figs = {k: np.asarray(v) for k, v in figs.items()}
    neighbours = np.asarray(self.data.train)[figs['index']]
    figs['neighbours'] = np.asarray(self.data.to_pixels(neighbours)) if self.images else neighbours
    return {k: float(v) for k, v in scalars.items()}, figs
