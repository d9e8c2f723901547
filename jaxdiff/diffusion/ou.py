"""The Ornstein-Uhlenbeck (OU) forward process and its reverse-time samplers, the one place they are written.

    dx = -x dt + sqrt(2) dW,   x_t = e^-t x_0 + sqrt(Delta_t) xi,   Delta_t = 1 - e^-2t,   xi ~ N(0, I).

For data of covariance Sigma the marginal P_t has covariance e^-2t Sigma + Delta_t I (`marginal_variance`), and
P_t -> N(0, I) as t grows. Times are OU times t > 0 (SPEC section 1); a DDPM step t has the OU time
-1/2 log(alpha_bar[t]) (`ddpm_ou_time`), which is how `jaxdiff.diffusion.ddpm` and the OU experiments
(`jaxdiff.experiments.gmm`, `jaxdiff.models.random_features`) compare times.

The reverse process from P_T back to P_t_min is driven by the score s(x, t) = grad log P_t(x):
the SDE dx = [x + 2 s(x, t)] dt + sqrt(2) dW (`euler_maruyama`) and the probability-flow ODE
dx = [x + s(x, t)] dt (`probability_flow`, with the exact log density of its samples), in reverse time on a
decreasing grid t_max = grid[0] > ... > grid[S] = t_min (`time_grid`). Training draws t with `sample_times`.

Everything is a pure function of arrays, PRNG keys and Python numbers; float32 throughout.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]   # s(x [B, ...], t [B]) -> [B, ...]
SPACINGS = ('log', 'linear')
DISTRIBUTIONS = ('log_uniform', 'uniform')


# ----------------------------------------------------------------------------------------------------------
# The forward process.

def delta(t: float | jax.Array) -> jax.Array:
  """Delta_t = 1 - e^-2t, the variance of x_t given x_0, in float32. t: any shape -> the same shape.

  -expm1(-2t) keeps full relative precision at small t, where 1 - exp(-2t) would cancel.
  """
  return -jnp.expm1(-2.0 * jnp.asarray(t, jnp.float32))


def mean_coef(t: float | jax.Array) -> jax.Array:
  """e^-t, the factor of x_0 in the mean of x_t given x_0, in float32. t: any shape -> the same shape."""
  return jnp.exp(-jnp.asarray(t, jnp.float32))


def marginal_variance(t: float | jax.Array, data_variance: float | jax.Array) -> jax.Array:
  """e^-2t v + Delta_t: the variance of x_t when x_0 has variance v (per coordinate; shapes broadcast)."""
  return jnp.exp(-2.0 * t) * data_variance + delta(t)


def _per_example(a: jax.Array, ndim: int) -> jax.Array:
  """a: scalar or [B, ...] -> broadcastable against an array of `ndim` dims with the same leading axes."""
  return a if a.ndim == 0 else a.reshape(a.shape + (1,) * (ndim - a.ndim))


def noise(x0: jax.Array, t: float | jax.Array, xi: jax.Array) -> jax.Array:
  """x_t = e^-t x0 + sqrt(Delta_t) xi, the forward process at time t.

  x0, xi: [B, ...] (they broadcast against each other); t: a scalar, or [B] (one time per example, broadcast
  over the trailing dims of x0). Returns [B, ...].
  """
  ndim = jnp.ndim(x0)
  return _per_example(mean_coef(t), ndim) * x0 + _per_example(jnp.sqrt(delta(t)), ndim) * xi


# ----------------------------------------------------------------------------------------------------------
# Times: the samplers' grid and the training distribution.

def time_grid(t_max: float, t_min: float, steps: int, spacing: str = 'log') -> np.ndarray:
  """[steps + 1] decreasing times t_max, ..., t_min: geometric ('log') or evenly spaced ('linear')."""
  if spacing == 'log':
    return np.geomspace(t_max, t_min, steps + 1)
  if spacing == 'linear':
    return np.linspace(t_max, t_min, steps + 1)
  raise ValueError(f'time grid spacing must be one of {SPACINGS}, got {spacing!r}')


def sample_times(key: jax.Array, shape: tuple[int, ...], t_min: float, t_max: float,
                 distribution: str = 'log_uniform') -> jax.Array:
  """Times of `shape` in [t_min, t_max]: log t uniform ('log_uniform') or t uniform ('uniform'). float32."""
  u = jax.random.uniform(key, shape)
  if distribution == 'log_uniform':
    return t_min * (t_max / t_min) ** u
  if distribution == 'uniform':
    return t_min + (t_max - t_min) * u
  raise ValueError(f'time distribution must be one of {DISTRIBUTIONS}, got {distribution!r}')


# ----------------------------------------------------------------------------------------------------------
# Reverse-time samplers.

def euler_maruyama(score_fn: ScoreFn, x_T: jax.Array, key: jax.Array, grid: np.ndarray) -> jax.Array:
  """Reverse-SDE sampler: x <- x + h (x + 2 s(x, t)) + sqrt(2 h) z, h = grid[i] - grid[i + 1] > 0.

  score_fn(x [B, ...], t [B]) -> [B, ...]; x_T: [B, ...], the start at grid[0]; grid: [S + 1] decreasing
  (`time_grid`). Step i draws z from fold_in(key, i). No noise is added on the last step (it would only blur
  the samples at the scale sqrt(2 h)). Returns x at grid[-1], [B, ...].
  """
  grid = jnp.asarray(grid, jnp.float32)
  num = grid.shape[0] - 1

  def body(i, x):
    t, h = grid[i], grid[i] - grid[i + 1]
    drift = x + 2.0 * score_fn(x, jnp.full(x.shape[:1], t))
    z = jax.random.normal(jax.random.fold_in(key, i), x.shape)
    return x + h * drift + jnp.where(i < num - 1, jnp.sqrt(2.0 * h), 0.0) * z

  return jax.lax.fori_loop(0, num, body, x_T)


def probability_flow(score_fn: Callable[[jax.Array, jax.Array, jax.Array | None], jax.Array], x_T: jax.Array,
                     grid: np.ndarray, labels: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Probability-flow samples with their exact log density under the discrete flow map.

  x <- (1 + h) x + h s(x, t) on the decreasing grid [S + 1], from x_T ~ N(0, I): log q starts at
  log N(x_T; 0, I) and loses log|det((1 + h) I + h ds/dx)| per step (change of variables, with the exact
  per-sample Jacobian of s, so d must be small). score_fn(x [B, d], t [B], y [B] | None) -> [B, d];
  x_T: [B, d]; labels: [B] or None, passed to score_fn. Returns (x [B, d], log_q [B]).
  """
  grid = jnp.asarray(grid, jnp.float32)
  d = x_T.shape[1]
  log_q = -0.5 * d * math.log(2 * math.pi) - 0.5 * jnp.sum(x_T * x_T, axis=1)

  def one_jacobian(xi, t, yi):
    y1 = None if yi is None else yi[None]
    return jax.jacfwd(lambda v: score_fn(v[None], t[None], y1)[0])(xi)   # [d, d]

  def body(i, carry):
    x, lq = carry
    t, h = grid[i], grid[i] - grid[i + 1]
    tt = jnp.full(x.shape[:1], t)
    s = score_fn(x, tt, labels)
    jac = jax.vmap(one_jacobian)(x, tt, labels)
    _, logdet = jnp.linalg.slogdet((1.0 + h) * jnp.eye(d) + h * jac)
    return (1.0 + h) * x + h * s, lq - logdet

  return jax.lax.fori_loop(0, grid.shape[0] - 1, body, (x_T, log_q))


# ----------------------------------------------------------------------------------------------------------
# The DDPM <-> OU link.

def ddpm_ou_time(alpha_bars: jax.Array, t: int | jax.Array) -> jax.Array:
  """OU time of DDPM step t: -1/2 log(alpha_bar[t]), so that the DDPM forward marginal
  sqrt(alpha_bar[t]) x_0 + sqrt(1 - alpha_bar[t]) eps is `noise(x_0, t_OU, eps)`.

  alpha_bars: [T] (`ddpm.Schedule.alpha_bars`); t: int steps of any shape -> OU times of that shape.
  """
  return -0.5 * jnp.log(alpha_bars[t])


def ddpm_step_from_ou_time(alpha_bars: jax.Array, t_ou: float | jax.Array) -> jax.Array:
  """The DDPM step whose OU time is closest to t_ou (inverse of `ddpm_ou_time` on the steps 0..T-1).

  alpha_bars: [T]; t_ou: a scalar or [K] -> int steps of the same shape.
  """
  t_all = ddpm_ou_time(alpha_bars, jnp.arange(alpha_bars.shape[0]))
  return jnp.argmin(jnp.abs(t_all[None, :] - jnp.atleast_1d(t_ou)[:, None]), axis=-1).reshape(jnp.shape(t_ou))
