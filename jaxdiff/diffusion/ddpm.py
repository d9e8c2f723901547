"""DDPM (Ho et al. 2020): the linear beta schedule, forward noising, the epsilon loss and the samplers.

Conventions (paper 1's code): steps t = 0..T-1, betas linear in [beta_min, beta_max],
alpha_bar[t] = prod_{s <= t} (1 - beta_s), x_t = sqrt(alpha_bar[t]) x_0 + sqrt(1 - alpha_bar[t]) eps.
Training draws t uniformly in 1..T-1. The Ornstein-Uhlenbeck time of step t is
t_OU = -1/2 log(alpha_bar[t]), so that x_t = e^{-t_OU} x_0 + sqrt(1 - e^{-2 t_OU}) eps (SPEC section 1); that
mapping lives in `jaxdiff.diffusion.ou` (`ddpm_ou_time`, `ddpm_step_from_ou_time`).

Everything here is a pure function of arrays and PRNG keys. `eps_fn(x_t, t) -> eps` is any callable
(a network closed over its parameters, or an exact score in tests); t is a float array [B] of step indices.
"""

from __future__ import annotations

from collections.abc import Callable

import flax
import jax
import jax.numpy as jnp

from jaxdiff.diffusion import ou

EpsFn = Callable[[jax.Array, jax.Array], jax.Array]


@flax.struct.dataclass
class Schedule:
  betas: jax.Array       # [T]
  alpha_bars: jax.Array  # [T]

  @property
  def num_steps(self) -> int:
    return self.betas.shape[0]


def linear_schedule(num_steps: int = 1000, beta_min: float = 1e-4, beta_max: float = 0.02) -> Schedule:
  if num_steps < 2:
    raise ValueError(f'diffusion.num_steps must be >= 2, got {num_steps}')
  if not 0 < beta_min <= beta_max < 1:
    raise ValueError(f'need 0 < diffusion.beta_min <= diffusion.beta_max < 1, got {beta_min}, {beta_max}')
  # Cumulative product in float64 on the host would be more exact, but float32 cumprod of (1 - beta)
  # loses < 1e-6 relative here; keep it in-graph friendly.
  betas = jnp.linspace(beta_min, beta_max, num_steps, dtype=jnp.float32)
  return Schedule(betas=betas, alpha_bars=jnp.cumprod(1.0 - betas))


def step_from_ou_time(schedule: Schedule, t_ou: float | jax.Array) -> jax.Array:
  """The step of `schedule` whose OU time is closest to t_OU (a scalar or [K] -> int steps of that shape)."""
  return ou.ddpm_step_from_ou_time(schedule.alpha_bars, t_ou)


def q_sample(schedule: Schedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
  """Forward noising. x0, noise: [B, ...]; t: [B] int."""
  ab = schedule.alpha_bars[t].reshape((-1,) + (1,) * (x0.ndim - 1))
  return jnp.sqrt(ab) * x0 + jnp.sqrt(1.0 - ab) * noise


def eps_loss_at(schedule: Schedule, eps_fn: EpsFn, x0: jax.Array, t: jax.Array,
                key: jax.Array) -> jax.Array:
  """Per-example epsilon-prediction MSE at given steps t: [B] -> [B]."""
  noise = jax.random.normal(key, x0.shape, x0.dtype)
  x_t = q_sample(schedule, x0, t, noise)
  err = eps_fn(x_t, t.astype(jnp.float32)) - noise
  return jnp.mean(jnp.square(err), axis=tuple(range(1, x0.ndim)))


def ddpm_losses(schedule: Schedule, eps_fn: EpsFn, x0: jax.Array, key: jax.Array, fixed_step: int = -1) -> jax.Array:
  """Per-example DDPM training losses [B]: the eps-MSE with t uniform in 1..T-1, or at the one step
  `fixed_step` >= 0 (paper 1's fixed-diffusion-time training; the noise draws are the same either way)."""
  k_t, k_noise = jax.random.split(key)
  t = jax.random.randint(k_t, (x0.shape[0],), 1, schedule.num_steps)
  if fixed_step >= 0:
    t = jnp.full_like(t, fixed_step)
  return eps_loss_at(schedule, eps_fn, x0, t, k_noise)


def ddpm_loss(schedule: Schedule, eps_fn: EpsFn, x0: jax.Array, key: jax.Array) -> jax.Array:
  """The DDPM training loss: the batch mean of `ddpm_losses`."""
  return jnp.mean(ddpm_losses(schedule, eps_fn, x0, key))


def ddim_timesteps(num_steps: int, sample_steps: int) -> jax.Array:
  """Evenly spaced steps from T-1 down to 0 (inclusive), `sample_steps` of them."""
  if not 1 <= sample_steps <= num_steps:
    raise ValueError(f'sampler steps must be in 1..{num_steps}, got {sample_steps}')
  return jnp.round(jnp.linspace(num_steps - 1, 0, sample_steps)).astype(jnp.int32)


Clip = tuple[jax.Array, jax.Array] | None


def _denoise(schedule: Schedule, eps_fn: EpsFn, x: jax.Array, t: jax.Array, clip: Clip):
  """The network's estimates (x0, eps) at step t, with x0 clipped to the data range [lo, hi] if given.

  x0 = (x - sqrt(1 - ab) eps) / sqrt(ab) multiplies the error of eps by 1/sqrt(ab) (~160 at t = T-1 for the
  linear schedule), so an imperfect network sends the trajectory far outside the data range early on, where it
  never trained, and it does not come back. Clipping x0 (Ho et al. 2020's `clip_denoised`) and recomputing eps
  from the clipped x0, so that the pair stays consistent with x, prevents that.
  """
  ab = schedule.alpha_bars[t]
  eps = eps_fn(x, jnp.full((x.shape[0],), t, jnp.float32))
  x0 = (x - jnp.sqrt(1.0 - ab) * eps) / jnp.sqrt(ab)
  if clip is not None:
    x0 = jnp.clip(x0, clip[0], clip[1])
    eps = (x - jnp.sqrt(ab) * x0) / jnp.sqrt(1.0 - ab)
  return x0, eps


def ddim_sample(schedule: Schedule, eps_fn: EpsFn, x_T: jax.Array, key: jax.Array, *,
                sample_steps: int = 100, eta: float = 0.0, clip: Clip = None) -> jax.Array:
  """DDIM (Song et al. 2021, eq. 12). eta = 0 is the deterministic sampler of paper 1. x_T: [B, ...].

  clip: (lo, hi) bounds of the data (broadcastable to x) for the x0 estimate, or None (paper 1's code).
  """
  ts = ddim_timesteps(schedule.num_steps, sample_steps)
  ts_prev = jnp.concatenate([ts[1:], jnp.array([-1], jnp.int32)])

  def step(x, inp):
    t, t_prev, k = inp
    ab = schedule.alpha_bars[t]
    ab_prev = jnp.where(t_prev >= 0, schedule.alpha_bars[jnp.maximum(t_prev, 0)], 1.0)
    x0, eps = _denoise(schedule, eps_fn, x, t, clip)
    sigma = eta * jnp.sqrt((1.0 - ab_prev) / (1.0 - ab) * (1.0 - ab / ab_prev))
    dir_xt = jnp.sqrt(jnp.maximum(1.0 - ab_prev - sigma**2, 0.0)) * eps
    x = jnp.sqrt(ab_prev) * x0 + dir_xt + sigma * jax.random.normal(k, x.shape, x.dtype)
    return x, None

  keys = jax.random.split(key, ts.shape[0])
  x, _ = jax.lax.scan(step, x_T, (ts, ts_prev, keys))
  return x


def ddpm_sample(schedule: Schedule, eps_fn: EpsFn, x_T: jax.Array, key: jax.Array, *,
                clip: Clip = None) -> jax.Array:
  """Ancestral sampling (Ho et al. 2020, Algorithm 2) with sigma_t^2 = beta_t, over all T steps.

  The mean is that of the posterior q(x_{t-1} | x_t, x0) at the estimate x0 (Ho et al. eq. 7), which equals
  Algorithm 2's (x - beta_t / sqrt(1 - ab_t) eps) / sqrt(alpha_t) when x0 is not clipped.
  """
  alphas = 1.0 - schedule.betas

  def step(x, inp):
    t, k = inp
    x0, _ = _denoise(schedule, eps_fn, x, t, clip)
    ab, beta = schedule.alpha_bars[t], schedule.betas[t]
    ab_prev = jnp.where(t > 0, schedule.alpha_bars[jnp.maximum(t - 1, 0)], 1.0)
    mean = (beta * jnp.sqrt(ab_prev) * x0 + (1.0 - ab_prev) * jnp.sqrt(alphas[t]) * x) / (1.0 - ab)
    noise = jnp.where(t > 0, jnp.sqrt(schedule.betas[t]), 0.0) * jax.random.normal(k, x.shape, x.dtype)
    return mean + noise, None

  ts = jnp.arange(schedule.num_steps - 1, -1, -1)
  x, _ = jax.lax.scan(step, x_T, (ts, jax.random.split(key, schedule.num_steps)))
  return x


SAMPLERS = ('ddim', 'ddpm')


def sample(schedule: Schedule, eps_fn: EpsFn, shape: tuple[int, ...], key: jax.Array, *,
           sampler: str = 'ddim', sample_steps: int = 100, eta: float = 0.0, clip: Clip = None) -> jax.Array:
  """Draw x_T ~ N(0, I) of `shape` and integrate back to x_0 with the named sampler (clip: see `_denoise`)."""
  k_init, k_run = jax.random.split(key)
  x_T = jax.random.normal(k_init, shape, jnp.float32)
  if sampler == 'ddim':
    return ddim_sample(schedule, eps_fn, x_T, k_run, sample_steps=sample_steps, eta=eta, clip=clip)
  if sampler == 'ddpm':
    return ddpm_sample(schedule, eps_fn, x_T, k_run, clip=clip)
  raise ValueError(f'diffusion.sampler must be one of {SAMPLERS}, got {sampler!r}')
