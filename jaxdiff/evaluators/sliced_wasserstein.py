"""Evaluator 'sliced_wasserstein': `sw`, the sliced 2-Wasserstein distance between the samples and the test
points in data space (flattened), over 256 random directions (jaxdiff.metrics.quality). A quality measure for
low-dimensional data (the Gaussian mixture); image runs use 'quality' in a feature space instead.
"""

from __future__ import annotations

import jax
import numpy as np

from jaxdiff import distributed
from jaxdiff.metrics import quality

NUM_PROJECTIONS = 256


class Evaluator:
  needs_samples = True

  def __new__(cls, ctx):
    if ctx.data.test.shape[0] < 2:
      return None   # nothing to compare with
    return super().__new__(cls)

  def __init__(self, ctx):
    self.test = np.asarray(ctx.data.test, np.float32).reshape(ctx.data.test.shape[0], -1)
    self._sw = jax.jit(lambda x, y, key: quality.sliced_wasserstein(x, y, key, NUM_PROJECTIONS))

  def __call__(self, params, keys, samples):
    del params
    x = distributed.fetch(samples).reshape(samples.shape[0], -1)
    return {'sw': float(self._sw(x, self.test, jax.random.fold_in(keys.quality, 2)))}, {}
