"""Evaluator 'window_losses': the training loss per window of diffusion time on all training examples and on
the test set (paper 2: 10 windows of 20 steps of T = 200), for families that declare `time_windows` [K, 2]: int
inclusive ranges of discrete levels (the D3PM family), or float [lo, hi) intervals of continuous time (the
masked-diffusion family: windows of equal width covering [0, 1], so their mean is the loss itself, in bits per
token).

`loss_train_w<k>`, `loss_test_w<k>` for window k, and `loss_train_t`, `loss_test_t`, `loss_gap_t`: their mean
over the windows (the training objective, whose test-train gap gives tau_mem from the loss in summary.json).
Per example and window, the level (time) is drawn uniformly in the window and the corruption from the run's
loss key: the same at every milestone, so the curves are smooth. Shares the chunked, sharded computation of 'losses'.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff import distributed
from jaxdiff.evaluators import losses


class Evaluator(losses.Evaluator):
  needs_samples = False

  def __new__(cls, ctx):
    if not hasattr(ctx.family, 'time_windows'):
      return None
    return super().__new__(cls)

  def __init__(self, ctx):
    windows = np.asarray(ctx.family.time_windows)
    self.continuous = np.issubdtype(windows.dtype, np.floating)
    windows = windows.astype(np.float32 if self.continuous else np.int32)
    self.lo, self.hi = jnp.asarray(windows[:, 0]), jnp.asarray(windows[:, 1])
    super().__init__(ctx)

  def time_sets(self, key, batch: int) -> jax.Array:
    """[K, batch] levels (times) uniform in each window."""
    if self.continuous:
      return jax.random.uniform(key, (self.lo.shape[0], batch), minval=self.lo[:, None], maxval=self.hi[:, None])
    return jax.random.randint(key, (self.lo.shape[0], batch), self.lo[:, None], self.hi[:, None] + 1)

  def __call__(self, params, keys, samples):
    del samples
    per_set = distributed.fetch({name: self._loss(params, chunks, mask, keys.loss)
                                 for name, (chunks, mask) in self.sets.items()})
    out = {}
    for name, values in per_set.items():
      values = np.asarray(values, np.float64)
      out.update({f'loss_{name}_w{k}': float(v) for k, v in enumerate(values)})
      out[f'loss_{name}_t'] = float(values.mean())
    if 'loss_test_t' in out:
      out['loss_gap_t'] = out['loss_test_t'] - out['loss_train_t']
    return out, {}
