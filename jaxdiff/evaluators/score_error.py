"""Evaluator 'score_error': how far the learned score is from the exact one, for families of OU noise
prediction that know their data distribution (`family.eps(model, x, t, y)` and `family.exact_score(x, t, y)`,
e.g. the Gaussian mixture; it declines for others).

- `score_err_t`: Delta_t E|s_model - grad log P_t|^2 / d on the test points noised to the fixed time of the
  'losses' evaluator (`eval.loss_t_ou`);
- `score_err`: the same averaged over the training distribution of t (`family.sample_times`): the population
  score-matching error, a quality measure without sampling noise (at t = 0.01 alone even eps = 0 is nearly
  optimal).

The noise and times are drawn from the run's loss key: the same at every milestone, so the curves are smooth.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff import distributed
from jaxdiff.diffusion import ou


class Evaluator:
  needs_samples = False

  def __new__(cls, ctx):
    if not (hasattr(ctx.family, 'exact_score') and hasattr(ctx.family, 'eps')) or ctx.data.test.shape[0] == 0:
      return None
    return super().__new__(cls)

  def __init__(self, ctx):
    self.ctx = ctx
    self.time = ctx.family.loss_time(ctx.config.eval.loss_t_ou)
    self.x = jnp.asarray(np.asarray(ctx.data.test, np.float32))
    self.y = jnp.asarray(np.asarray(ctx.data.test_labels, np.int32))
    self._errors = jax.jit(self._score_errors, compiler_options=ctx.compiler_options)

  def _score_errors(self, params, key):
    family, model, x, y = self.ctx.family, self.ctx.model(params), self.x, self.y

    def weighted_error(t, k):   # Delta_t |s_model - s_true|^2 per coordinate, [N, d]
      x_t = ou.noise(x, t, jax.random.normal(k, x.shape))
      s_model = -family.eps(model, x_t, t, y) / jnp.sqrt(ou.delta(t))[:, None]
      return ou.delta(t)[:, None] * jnp.square(s_model - family.exact_score(x_t, t, y))

    k_fixed, k_t, k_xi = jax.random.split(key, 3)
    fixed = weighted_error(jnp.full(x.shape[:1], self.time, jnp.float32), k_fixed)
    drawn = weighted_error(family.sample_times(k_t, x.shape[:1]), k_xi)
    return {'score_err_t': jnp.mean(fixed), 'score_err': jnp.mean(drawn)}

  def __call__(self, params, keys, samples):
    del samples
    out = distributed.fetch(self._errors(params, jax.random.fold_in(keys.loss, 1)))
    return {k: float(v) for k, v in out.items()}, {}
