"""Masked (absorbing-state) diffusion in continuous time: MD4 (Shi et al. 2024; SPEC section 4).

Tokens are ints in [0, V); the mask is the extra token V. At time t in [0, 1] each token of x is kept with
probability alpha(t) and replaced by MASK otherwise, independently:

  alpha(t) = (1 - 2 eps) a(t) + eps,   a(t) = 1 - t (linear)  or  1 - cos(pi/2 (1 - t)) (cosine),

so alpha(0) = 1 - eps and alpha(1) = eps (eps = 1e-4 keeps the weight below finite at both ends). The
network maps z_t to logits over the V real tokens (`logits_fn(z_t) -> [B, S, V]`, z_t int [B, S]); the
continuous-time loss (MD4 eq. 5, the diffusion term of the ELBO) is

  L = E_t [ alpha'(t) / (1 - alpha(t)) * sum_{i: z_t^i = MASK} log p(x^i | z_t) ],

about E_t[(1/t) masked cross-entropy] for the linear schedule (alpha' < 0, so L >= 0). Here it is divided by
S ln 2: bits per token. For a denoiser that knows nothing (uniform over V) the integrand is -alpha'(t) log2 V
per token at every t, and L = (1 - 2 eps) log2 V, the entropy of a uniform token; an exact denoiser gives 0.
(The ELBO's other two terms, the reconstruction at t = 0 and the prior at t = 1, are O(eps) per token and
left out.) A batch draws its times antithetically: t_i = (u + i / B) mod 1 for one uniform u (MD4).

The denoiser needs no time input: the true p(x^i | z_t) of absorbing diffusion does not depend on t given
z_t (which tokens are masked carries everything), so `logits_fn` sees z_t alone.

Ancestral sampling (`sample`, a `lax.scan`) on the grid t_k = k / K: z_1 all MASK; from t to s = t - 1/K every
masked token is revealed with probability (alpha(s) - alpha(t)) / (1 - alpha(t)), its value drawn from
softmax(logits_fn(z_t)); revealed tokens never change. The last step (s = 0) reveals every token still masked
(the reconstruction p(x | z_0)), so samples hold no MASK.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import flax
import jax
import jax.numpy as jnp

LogitsFn = Callable[[jax.Array], jax.Array]
SCHEDULES = ('linear', 'cosine')


@flax.struct.dataclass
class Schedule:
  """alpha(t) = (1 - 2 eps) a(t) + eps (see the module docstring); `vocab_size` V real tokens, MASK = V."""
  vocab_size: int = flax.struct.field(pytree_node=False)
  kind: str = flax.struct.field(pytree_node=False, default='linear')
  eps: float = flax.struct.field(pytree_node=False, default=1e-4)

  @property
  def mask_token(self) -> int:
    return self.vocab_size

  def alpha(self, t: jax.Array) -> jax.Array:
    a = 1.0 - t if self.kind == 'linear' else 1.0 - jnp.cos(0.5 * jnp.pi * (1.0 - t))
    return (1.0 - 2.0 * self.eps) * a + self.eps

  def dalpha(self, t: jax.Array) -> jax.Array:
    """alpha'(t) (<= 0)."""
    da = -jnp.ones_like(t) if self.kind == 'linear' else -0.5 * jnp.pi * jnp.sin(0.5 * jnp.pi * (1.0 - t))
    return (1.0 - 2.0 * self.eps) * da

  def weight(self, t: jax.Array) -> jax.Array:
    """-alpha'(t) / (1 - alpha(t)) >= 0: the weight of the masked cross-entropy at time t."""
    return -self.dalpha(t) / (1.0 - self.alpha(t))


def make_schedule(vocab_size: int, kind: str = 'linear', eps: float = 1e-4) -> Schedule:
  if kind not in SCHEDULES:
    raise ValueError(f'schedule must be one of {SCHEDULES}, got {kind!r}')
  if not 0 < eps < 0.5:
    raise ValueError(f'eps must be in (0, 0.5), got {eps}')
  if vocab_size < 2:
    raise ValueError(f'vocab_size must be >= 2, got {vocab_size}')
  return Schedule(vocab_size=vocab_size, kind=kind, eps=eps)


def antithetic_times(key: jax.Array, batch: int) -> jax.Array:
  """[batch] times t_i = (u + i / batch) mod 1, u uniform: a stratified cover of [0, 1)."""
  u = jax.random.uniform(key, ())
  return jnp.mod(u + jnp.arange(batch, dtype=jnp.float32) / batch, 1.0)


def mask(schedule: Schedule, key: jax.Array, x: jax.Array, t: jax.Array) -> jax.Array:
  """z_t ~ q(z_t | x): int [B, S], each token kept with probability alpha(t_b), else MASK. x: int [B, S]; t: [B]."""
  keep = jax.random.uniform(key, x.shape) < schedule.alpha(t)[:, None]
  return jnp.where(keep, x, schedule.mask_token).astype(jnp.int32)


def masked_losses(schedule: Schedule, logits: jax.Array, x: jax.Array, z_t: jax.Array, t: jax.Array) -> jax.Array:
  """Per-example loss [B] in bits per token: weight(t) * sum over masked positions of -log p(x^i | z_t), / (S ln 2).
  logits: [B, S, V]; x, z_t: int [B, S]; t: [B]."""
  logp = jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), x[..., None], axis=-1)[..., 0]
  masked = (z_t == schedule.mask_token).astype(logp.dtype)
  nll = -jnp.sum(masked * logp, axis=-1)
  return schedule.weight(t) * nll / (x.shape[-1] * math.log(2.0))


def loss_at(schedule: Schedule, logits_fn: LogitsFn, x: jax.Array, t: jax.Array, key: jax.Array) -> jax.Array:
  """Per-example losses [B] (bits per token) at times t [B], z_t drawn from `key`. x: int [B, S]."""
  z_t = mask(schedule, key, x, t)
  return masked_losses(schedule, logits_fn(z_t), x, z_t, t)


def losses(schedule: Schedule, logits_fn: LogitsFn, x: jax.Array, key: jax.Array) -> jax.Array:
  """Training losses [B] (bits per token) at antithetic times. x: int [B, S]."""
  k_t, k_z = jax.random.split(key)
  return loss_at(schedule, logits_fn, x, antithetic_times(k_t, x.shape[0]), k_z)


def sample(schedule: Schedule, logits_fn: LogitsFn, key: jax.Array, shape: tuple[int, int],
           num_steps: int) -> jax.Array:
  """Ancestral unmasking: int32 tokens [num, S] in [0, V) (shape = (num, S)), `num_steps` steps from t = 1 to 0."""
  if num_steps < 1:
    raise ValueError(f'num_steps must be >= 1, got {num_steps}')
  z = jnp.full(shape, schedule.mask_token, jnp.int32)

  def step(z, k):
    t, s = k / num_steps, (k - 1) / num_steps
    a_t, a_s = schedule.alpha(t), schedule.alpha(s)
    p_reveal = jnp.where(k == 1, 1.0, (a_s - a_t) / (1.0 - a_t))
    kk = jax.random.fold_in(key, k)
    k_reveal, k_tok = jax.random.split(kk)
    tokens = jax.random.categorical(k_tok, logits_fn(z), axis=-1).astype(jnp.int32)
    reveal = (z == schedule.mask_token) & (jax.random.uniform(k_reveal, shape) < p_reveal)
    return jnp.where(reveal, tokens, z), None

  z, _ = jax.lax.scan(step, z, jnp.arange(num_steps, 0, -1))
  return z


__all__ = ['SCHEDULES', 'Schedule', 'make_schedule', 'antithetic_times', 'mask', 'masked_losses', 'loss_at',
           'losses', 'sample']
