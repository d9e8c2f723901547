"""Evaluator 'kl': KL(generated || true) for families that know their data density (`family.exact_log_density`,
e.g. the Gaussian mixture; it declines for others or when `family.kl_samples` is 0).

`family.kl_samples` samples of the deterministic probability-flow map from N(0, I) at t_max to t_min
(`jaxdiff.diffusion.ou.probability_flow` on `family.time_grid(family.kl_steps)`), with the exact log density
of each sample under that map (change of variables with the exact Jacobian of the learned score); KL is the
mean of log q(x) - log P_tmin(x). It is 0 for the exact score up to the discretisation and grows as samples
collapse onto training points. Conditional families average over their balanced labels (`family.labels`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdiff import distributed
from jaxdiff.diffusion import ou


def kl_to_truth(score_fn, log_density_fn, key: jax.Array, num: int, dim: int, grid, labels=None) -> jax.Array:
  """mean(log q(x) - log P(x)) over `num` probability-flow samples. score_fn(x, t, y), log_density_fn(x, y)."""
  x, log_q = ou.probability_flow(score_fn, jax.random.normal(key, (num, dim)), grid, labels)
  return jnp.mean(log_q - log_density_fn(x, labels))


class Evaluator:
  needs_samples = False

  def __new__(cls, ctx):
    if not hasattr(ctx.family, 'exact_log_density') or not getattr(ctx.family, 'kl_samples', 0):
      return None
    return super().__new__(cls)

  def __init__(self, ctx):
    family = ctx.family
    dim = int(ctx.data.train.shape[-1])

    def kl(params, key):
      model = ctx.model(params)
      return kl_to_truth(lambda x, t, y: family.model_score(model, x, t, y),
                         lambda x, y: family.exact_log_density(x, family.t_min, y), key, family.kl_samples, dim,
                         family.time_grid(family.kl_steps), family.labels(family.kl_samples))
    self._kl = jax.jit(kl, compiler_options=ctx.compiler_options)

  def __call__(self, params, keys, samples):
    del samples
    return {'kl': float(distributed.fetch(self._kl(params, jax.random.fold_in(keys.quality, 1))))}, {}
