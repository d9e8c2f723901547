"""D3PM with uniform transitions (Austin et al. 2021; paper 2's grammar diffusion, SPEC section 4).

Conventions (SPEC section 4): noise levels t = 0..T, beta_t = beta_min + (beta_max - beta_min) t / T,
alpha_bar_t = prod_{s <= t} (1 - beta_s) (so alpha_bar_0 = 1 - beta_min = 0.999 with the defaults). The one-step
kernel of level t is Q_t = (1 - beta_t) I + beta_t / v 11^T and the marginal of level t given the data x_0 is

  q(x_t | x_0) = alpha_bar_t x_0 + (1 - alpha_bar_t) / v                        (x_0 one-hot or a distribution)

(the data sit one kernel Q_0 below level 0). The true posterior of level t - 1, for t >= 1, is

  q(x_{t-1} | x_t, x_0) ∝ [(1 - beta_t) x_t + beta_t / v] ⊙ [alpha_bar_{t-1} x_0 + (1 - alpha_bar_{t-1}) / v],

and the model posterior is the same expression with the network's x_0 probabilities softmax(logits) in place
of x_0 (x_0 parameterization). The loss is KL(true posterior || model posterior) per token, mean over tokens,
at t uniform in 1..T, plus `ce_weight` times the cross-entropy of the x_0 logits (default 0).

Ancestral sampling (`sample`, a `lax.scan`): x_T uniform; for t = T..2 draw x_{t-1} from the model posterior;
the last step draws the sequence from the x_0 prediction at t = 1 (D3PM's decoder p(x_0 | x_1)).

Tokens are int arrays [..., S]; the network sees one-hot [..., S, v]. Everything is a pure function of arrays and
PRNG keys. `logits_fn(x_t, t) -> [B, S, v]` is any callable: x_t one-hot [B, S, v], t int [B].
"""

from __future__ import annotations

from collections.abc import Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np

LogitsFn = Callable[[jax.Array, jax.Array], jax.Array]


@flax.struct.dataclass
class Schedule:
  betas: jax.Array        # [T + 1], levels 0..T
  alpha_bars: jax.Array   # [T + 1]
  v: int = flax.struct.field(pytree_node=False, default=2)

  @property
  def num_steps(self) -> int:
    """T: training draws t in 1..T."""
    return self.betas.shape[0] - 1


def uniform_schedule(v: int, num_steps: int = 200, beta_min: float = 1e-3, beta_max: float = 0.1) -> Schedule:
  """SPEC section 4: T = 200, beta linear 1e-3 -> 0.1 over t = 0..T, alpha_bar cumulative (float64 on the
  host, stored float32)."""
  if num_steps < 1:
    raise ValueError(f'num_steps must be >= 1, got {num_steps}')
  if not 0 < beta_min <= beta_max < 1:
    raise ValueError(f'need 0 < beta_min <= beta_max < 1, got {beta_min}, {beta_max}')
  betas = beta_min + (beta_max - beta_min) * np.arange(num_steps + 1, dtype=np.float64) / num_steps
  return Schedule(betas=jnp.asarray(betas, jnp.float32), alpha_bars=jnp.asarray(np.cumprod(1 - betas), jnp.float32),
                  v=v)


def _bcast(a: jax.Array, t: jax.Array, ndim: int) -> jax.Array:
  """a[t] for t [B], reshaped to broadcast against [B, ...] of rank ndim."""
  return a[t].reshape(t.shape + (1,) * (ndim - t.ndim))


def q_marginal(schedule: Schedule, x0: jax.Array, t: jax.Array) -> jax.Array:
  """q(x_t | x_0): x0 [B, S, v] one-hot (or probabilities), t [B] -> [B, S, v] probabilities."""
  ab = _bcast(schedule.alpha_bars, t, x0.ndim)
  return ab * x0 + (1.0 - ab) / schedule.v


def q_posterior_logits(schedule: Schedule, x_t: jax.Array, x0: jax.Array, t: jax.Array) -> jax.Array:
  """log q(x_{t-1} | x_t, x_0) up to a constant per token, for t >= 1. x_t: one-hot [B, S, v]; x0: one-hot or
  probabilities [B, S, v]; t: [B]. Returns [B, S, v] (normalize with log_softmax)."""
  beta = _bcast(schedule.betas, t, x_t.ndim)
  ab_prev = _bcast(schedule.alpha_bars, t - 1, x_t.ndim)
  v = schedule.v
  fact1 = (1.0 - beta) * x_t + beta / v           # q(x_t | x_{t-1}) as a function of x_{t-1} (Q_t symmetric)
  fact2 = ab_prev * x0 + (1.0 - ab_prev) / v      # q(x_{t-1} | x_0)
  return jnp.log(fact1) + jnp.log(fact2)


def q_posterior(schedule: Schedule, x_t: jax.Array, x0: jax.Array, t: jax.Array) -> jax.Array:
  """q(x_{t-1} | x_t, x_0) as probabilities [B, S, v] (see `q_posterior_logits`)."""
  return jax.nn.softmax(q_posterior_logits(schedule, x_t, x0, t), axis=-1)


def noise(schedule: Schedule, key: jax.Array, x0: jax.Array, t: jax.Array) -> jax.Array:
  """x_t ~ q(x_t | x_0), one-hot [B, S, v]: each token kept with probability alpha_bar_t, else replaced by a
  uniform one (which may be itself: alpha_bar_t + (1 - alpha_bar_t) / v in total)."""
  k_keep, k_tok = jax.random.split(key)
  ab = _bcast(schedule.alpha_bars, t, x0.ndim - 1)
  keep = jax.random.uniform(k_keep, x0.shape[:-1]) < ab
  uniform = jax.random.randint(k_tok, x0.shape[:-1], 0, schedule.v)
  tokens = jnp.where(keep, jnp.argmax(x0, -1), uniform)
  return jax.nn.one_hot(tokens, schedule.v, dtype=x0.dtype)


def kl_losses(schedule: Schedule, logits: jax.Array, x0: jax.Array, x_t: jax.Array, t: jax.Array,
              ce_weight: float = 0.0) -> jax.Array:
  """Per-example loss [B]: KL(q(x_{t-1} | x_t, x_0) || q(x_{t-1} | x_t, softmax(logits))) per token, mean over
  tokens, plus ce_weight * cross-entropy(logits, x_0). logits, x0, x_t: [B, S, v]; t: [B] in 1..T."""
  log_q = jax.nn.log_softmax(q_posterior_logits(schedule, x_t, x0, t), axis=-1)
  log_p = jax.nn.log_softmax(q_posterior_logits(schedule, x_t, jax.nn.softmax(logits, axis=-1), t), axis=-1)
  kl = jnp.sum(jnp.exp(log_q) * (log_q - log_p), axis=-1)
  loss = jnp.mean(kl, axis=-1)
  if ce_weight:
    loss = loss + ce_weight * jnp.mean(-jnp.sum(x0 * jax.nn.log_softmax(logits, axis=-1), axis=-1), axis=-1)
  return loss


def losses(schedule: Schedule, logits_fn: LogitsFn, x0: jax.Array, key: jax.Array,
           ce_weight: float = 0.0) -> jax.Array:
  """Training losses [B] at t uniform in 1..T. x0: one-hot [B, S, v]."""
  k_t, k_x = jax.random.split(key)
  t = jax.random.randint(k_t, x0.shape[:1], 1, schedule.num_steps + 1)
  return loss_at(schedule, logits_fn, x0, t, k_x, ce_weight)


def loss_at(schedule: Schedule, logits_fn: LogitsFn, x0: jax.Array, t: jax.Array, key: jax.Array,
            ce_weight: float = 0.0) -> jax.Array:
  """Per-example losses [B] at given levels t [B] (1..T), x_t drawn from `key`."""
  x_t = noise(schedule, key, x0, t)
  return kl_losses(schedule, logits_fn(x_t, t), x0, x_t, t, ce_weight)


def sample(schedule: Schedule, logits_fn: LogitsFn, key: jax.Array, shape: tuple[int, int]) -> jax.Array:
  """Ancestral sampling: int32 tokens [num, S] (shape = (num, S)). x_T uniform, then the model posterior for
  t = T..2 and the x_0 prediction at t = 1."""
  num, _ = shape
  v = schedule.v
  k_init, k_steps = jax.random.split(key)
  x = jax.random.randint(k_init, shape, 0, v)

  def step(x, t):
    tt = jnp.full((num,), t)
    x_oh = jax.nn.one_hot(x, v)
    logits = logits_fn(x_oh, tt)
    post = q_posterior_logits(schedule, x_oh, jax.nn.softmax(logits, axis=-1), tt)
    k = jax.random.fold_in(k_steps, t)
    # t = 1: the sequence itself, from the x_0 prediction; else x_{t-1} from the model posterior.
    x = jax.random.categorical(k, jnp.where(t == 1, logits, post), axis=-1).astype(jnp.int32)
    return x, None

  x, _ = jax.lax.scan(step, x.astype(jnp.int32), jnp.arange(schedule.num_steps, 0, -1))
  return x


__all__ = ['Schedule', 'uniform_schedule', 'q_marginal', 'q_posterior', 'q_posterior_logits', 'noise',
           'kl_losses', 'losses', 'loss_at', 'sample']
