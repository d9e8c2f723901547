"""Rectified flow (Liu et al. 2023; the family of paper 3, SPEC section 5): interpolation, velocity loss, time
distributions and the Euler sampler.

Conventions: t in [0, 1], t = 0 is data and t = 1 is noise, x_t = (1 - t) x_0 + t eps with eps ~ N(0, I); the
network predicts the velocity dx_t/dt = eps - x_0, trained by the MSE to it with t drawn from `T_DISTRIBUTIONS`
('uniform', or 'logit_normal': t = sigmoid(loc + scale z), Esser et al. 2024). Sampling integrates
dx/dt = v(x, t) from t = 1 (pure noise) down to t = 0 by Euler steps in a `lax.scan`.

Everything here is a pure function of arrays and PRNG keys. `velocity_fn(x_t, t) -> v` is any callable (a
network closed over its parameters and labels, or an exact field in tests); t is a float array [B] in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

VelocityFn = Callable[[jax.Array, jax.Array], jax.Array]

T_DISTRIBUTIONS = ('uniform', 'logit_normal')


def _bcast(t: jax.Array, x: jax.Array) -> jax.Array:
  return t.reshape((-1,) + (1,) * (x.ndim - 1))


def interpolate(x0: jax.Array, eps: jax.Array, t: jax.Array) -> jax.Array:
  """x_t = (1 - t) x_0 + t eps. x0, eps: [B, ...]; t: [B]."""
  t = _bcast(t, x0)
  return (1.0 - t) * x0 + t * eps


def sample_times(key: jax.Array, batch: int, distribution: str = 'uniform', loc: float = 0.0,
                 scale: float = 1.0) -> jax.Array:
  """Training times [batch] in (0, 1): uniform, or logit-normal sigmoid(loc + scale z), z ~ N(0, 1)."""
  if distribution == 'uniform':
    return jax.random.uniform(key, (batch,))
  if distribution == 'logit_normal':
    return jax.nn.sigmoid(loc + scale * jax.random.normal(key, (batch,)))
  raise ValueError(f"config field 'flow.t_distribution': must be one of {T_DISTRIBUTIONS}, got {distribution!r}")


def loss_at(velocity_fn: VelocityFn, x0: jax.Array, t: jax.Array, key: jax.Array) -> jax.Array:
  """Per-example velocity MSE (mean over the data dimensions) at times t. x0: [B, ...]; t: [B] -> [B]."""
  eps = jax.random.normal(key, x0.shape, x0.dtype)
  err = velocity_fn(interpolate(x0, eps, t), t) - (eps - x0)
  return jnp.mean(jnp.square(err).reshape(x0.shape[0], -1), axis=1)


def losses(velocity_fn: VelocityFn, x0: jax.Array, key: jax.Array, *, distribution: str = 'uniform',
           loc: float = 0.0, scale: float = 1.0) -> jax.Array:
  """Per-example training losses [B]: `loss_at` at times drawn from `distribution`."""
  k_t, k_eps = jax.random.split(key)
  return loss_at(velocity_fn, x0, sample_times(k_t, x0.shape[0], distribution, loc, scale), k_eps)


def sample(velocity_fn: VelocityFn, shape: tuple[int, ...], key: jax.Array, num_steps: int = 250) -> jax.Array:
  """Euler integration of dx/dt = v(x, t) from x_1 ~ N(0, I) at t = 1 to t = 0 in `num_steps` equal steps:
  x_{t - dt} = x_t - dt v(x_t, t) (the field is never evaluated at t = 0). Returns x_0 [shape]."""
  if num_steps < 1:
    raise ValueError(f"config field 'flow.sample_steps': must be >= 1, got {num_steps}")
  times = jnp.linspace(1.0, 0.0, num_steps + 1, dtype=jnp.float32)

  def step(x, ts):
    t, t_next = ts
    return x + (t_next - t) * velocity_fn(x, jnp.full((shape[0],), t)), None

  x, _ = jax.lax.scan(step, jax.random.normal(key, shape), (times[:-1], times[1:]))
  return x


def guided(velocity_fn: Callable[..., jax.Array], y: jax.Array, null: jax.Array | int,
           weight: float) -> VelocityFn:
  """Classifier-free guidance: v = (1 + w) v(x, t, y) - w v(x, t, null); w = 0 is the conditional field.
  velocity_fn(x, t, y) -> v."""
  if weight == 0:
    return lambda x, t: velocity_fn(x, t, y)
  null = jnp.broadcast_to(jnp.asarray(null, jnp.int32), y.shape)
  return lambda x, t: (1.0 + weight) * velocity_fn(x, t, y) - weight * velocity_fn(x, t, null)


def time_from_ou(t_ou: float) -> float:
  """The flow time with the signal-to-noise ratio of OU time t_ou: (1 - t) / t = e^-t_ou / sqrt(1 - e^-2 t_ou)
  (where the 'losses' evaluator measures; OU 0.01 -> t ~ 0.124)."""
  a, s = math.exp(-t_ou), math.sqrt(-math.expm1(-2.0 * t_ou))
  return s / (a + s)


__all__ = ['T_DISTRIBUTIONS', 'VelocityFn', 'interpolate', 'sample_times', 'loss_at', 'losses', 'sample', 'guided',
           'time_from_ou']
