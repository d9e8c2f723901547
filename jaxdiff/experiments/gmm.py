"""The Gaussian-mixture experiment of paper 1's appendix (SPEC section 2), as vectorized ensembles.

Data: x ~ 1/2 N(mu, I) + 1/2 N(-mu, I), mu = mu_scale * (1, ..., 1) in R^d. Diffusion: the OU process
x_t = e^-t x_0 + sqrt(Delta_t) xi, Delta_t = 1 - e^-2t, whose marginal is known in closed form,
P_t = 1/2 N(m_t, I) + 1/2 N(-m_t, I) with m_t = mu e^-t (the covariance stays I), so

  log P_t(x) = -d/2 log(2 pi) - |x|^2 / 2 - |m_t|^2 / 2 + log cosh(x . m_t),
  grad log P_t(x) = m_t tanh(x . m_t) - x                                   (SPEC section 2).

Model: a residual MLP of `jaxdiff.models.mlp` (`gmm.network`) predicts the noise, eps(x_t, t); the score is
-eps / sqrt(Delta_t), and the loss is the eps-MSE per coordinate (denoising score matching weighted by
Delta_t). Two time schedules (`gmm.schedule`), both written in OU time, so that the samplers and evaluators
are the same:
- 'ou' (jaxdiff's): t drawn log-uniformly (or uniformly) in [t_min, t_max]; the network sees the time code
  1000 (log t - log t_min) / (log t_max - log t_min); samplers on a geometric (or linear) grid.
- 'ddpm' (paper 1's code): the linear DDPM schedule of `config.diffusion` (T = 1000 steps, betas 1e-4 ->
  0.02); training steps k uniform in 1..T-1 at OU times t_k = -1/2 log(alpha_bar_k), whose marginal
  sqrt(alpha_bar_k) x_0 + sqrt(1 - alpha_bar_k) xi is the OU one; the network sees the integer step k (the
  nearest step of any OU time it is asked about); samplers walk the OU times of evenly spaced steps from T-1
  to 0 (t_min, t_max are those of steps 0 and T-1).
`gmm.fixed_t` > 0 trains at that one OU time (its nearest step under 'ddpm'): paper 1's fixed-time mode.
Paper 1's protocol (configs/gmm_mlp.py) is `schedule='ddpm'`, `network='post_ln'`, `init='torch'`,
`balanced=True` (exactly n/2 training points per component).

Sampling: Euler-Maruyama on the reverse SDE dx = [x + 2 s(x, t)] dt + sqrt(2) dW from N(0, I) at t_max down
to t_min (`gmm.sample_steps` steps on the schedule's grid; no noise on the last step).

Evaluation (jaxdiff.evaluators, by name; default 'memorization', 'losses', 'score_error', 'kl',
'sliced_wasserstein'): f_mem of the samples against the member's training points, the eps-MSE at OU time
`eval.loss_t_ou` on training and test points, the score error against the exact score, KL(generated || true)
by the probability flow with exact log densities (jaxdiff.evaluators.kl), and the sliced Wasserstein distance
to fresh test points.

Class-conditional variant (`gmm.conditional`): the label is the component (0: +mu, 1: -mu), dropped to the
null label with probability `label_dropout` in training; sampling uses classifier-free guidance
eps = (1 + w) eps(x, y) - w eps(x, null) on balanced labels; KL is then the mean of KL(q(.|y) || N(+-m, I)).

The experiment (`EXPERIMENT`, family 'gmm' of jaxdiff.experiments) is a network family
(jaxdiff.experiments.base) whose members are (n, seed) for n in `gmm.n` and seed in config.seed +
[0, gmm.num_seeds): nested training sets, the first n points of the seed's stream, trained as one vectorized
ensemble by the shared ensemble trainer and driver. It writes, per member, `<workdir>/<member>/` with
config.json (the solo config that reproduces it), metrics.jsonl and summary.json, plus `<workdir>/summary.json`
(the members' timescales and the fits tau_mem = c n^alpha) and, with `gmm.analysis`, the tables and figures of
`jaxdiff.analysis` in `<workdir>/analysis/`. `Trainer` is the same machinery for notebooks: train(k),
evaluate(), member_params(i).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from jaxdiff import sharding
from jaxdiff.config import require
from jaxdiff.diffusion import ou
from jaxdiff.evaluators import kl
from jaxdiff.experiments.base import EnsembleTrainer, NetworkExperiment, eval_seed_of, halves_members, set_half
from jaxdiff.diffusion import ddpm
from jaxdiff.models import initializers
from jaxdiff.models import mlp
from jaxdiff.train import loop
from jaxdiff.train.steps import LossFn, weighted_mean

NULL_LABEL = 2   # classifier-free guidance: the "no label" token (labels 0 and 1 are the components)
TIME_CODE_SCALE = 1000.0
QUALITY_KEYS = {'kl': 'kl', 'sw': 'sw', 'score_err': 'score_err'}   # gmm.quality -> metrics.jsonl key
GMM_T_SAMPLING = ou.DISTRIBUTIONS
GMM_SPACINGS = ou.SPACINGS
GMM_QUALITY = tuple(QUALITY_KEYS)
GMM_SCHEDULES = ('ou', 'ddpm')


# ----------------------------------------------------------------------------------------------------------
# The data and its exact density and score.

def mean_vector(d: int, mu_scale: float = 1.0) -> jax.Array:
  """mu = mu_scale * ones(d) (SPEC: all-ones)."""
  return jnp.full((d,), mu_scale, jnp.float32)


def sample_data(key: jax.Array, n: int, mu: jax.Array) -> tuple[jax.Array, jax.Array]:
  """n points of 1/2 N(mu, I) + 1/2 N(-mu, I): (x [n, d], component label y [n] int32, 0: +mu, 1: -mu).

  The first m of n points equal the m points drawn from the same key (threefry prefix property), so sets of
  increasing n from one key are nested.
  """
  k_y, k_x = jax.random.split(key)
  y = jax.random.bernoulli(k_y, 0.5, (n,)).astype(jnp.int32)
  x = jax.random.normal(k_x, (n, mu.shape[0])) + sign(y)[:, None] * mu
  return x, y


_sample_data = jax.jit(sample_data, static_argnums=1)


def sample_balanced(key: jax.Array, n: int, mu: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Exactly n/2 points of N(mu, I) and n/2 of N(-mu, I) (n even; paper 1's code), alternating: (x [n, d],
  y [n]). The first m (even) of n points equal the m points drawn from the same key (nested across n)."""
  z = jax.random.normal(key, (n // 2, 2, mu.shape[0])).reshape(n, mu.shape[0])
  y = jnp.tile(jnp.array([0, 1], jnp.int32), n // 2)
  return z + sign(y)[:, None] * mu, y


_sample_balanced = jax.jit(sample_balanced, static_argnums=1)


def sign(y: jax.Array) -> jax.Array:
  """Component sign of a label: 0 -> +1, 1 -> -1."""
  return 1.0 - 2.0 * y.astype(jnp.float32)


def _log_cosh(z: jax.Array) -> jax.Array:
  a = jnp.abs(z)
  return a + jnp.log1p(jnp.exp(-2.0 * a)) - math.log(2.0)


def log_density(x: jax.Array, t: jax.Array | float, mu: jax.Array, y: jax.Array | None = None) -> jax.Array:
  """Exact log P_t(x) (or log P_t(x | y) = log N(x; sign(y) m_t, I) given labels). x: [B, d] -> [B]."""
  d = x.shape[-1]
  m = mu * ou.mean_coef(t)[..., None]   # m_t = mu e^-t: [d], or [B, d] for times t [B]
  const = -0.5 * d * math.log(2 * math.pi)
  if y is not None:
    return const - 0.5 * jnp.sum(jnp.square(x - sign(y)[:, None] * m), axis=-1)
  return const - 0.5 * jnp.sum(x * x, -1) - 0.5 * jnp.sum(m * m, -1) + _log_cosh(jnp.sum(x * m, -1))


def score(x: jax.Array, t: jax.Array | float, mu: jax.Array, y: jax.Array | None = None) -> jax.Array:
  """Exact grad_x log P_t(x) = m_t tanh(x . m_t) - x (or sign(y) m_t - x given labels). x: [B, d]."""
  m = mu * ou.mean_coef(t)[..., None]   # m_t = mu e^-t: [d], or [B, d] for times t [B]
  if y is not None:
    return sign(y)[:, None] * m - x
  return m * jnp.tanh(jnp.sum(x * m, -1, keepdims=True)) - x


# ----------------------------------------------------------------------------------------------------------
# The problem: static hyperparameters of one ensemble (hashable, closed over by compiled functions).

@dataclasses.dataclass(frozen=True)
class Problem:
  d: int = 8
  mu_scale: float = 1.0
  width: int = 256
  num_blocks: int = 3
  conditional: bool = False
  label_dropout: float = 0.1
  guidance: float = 0.0
  t_min: float = 1e-3
  t_max: float = 5.0
  t_sampling: str = 'log_uniform'
  sample_steps: int = 1000
  sample_spacing: str = 'log'
  kl_samples: int = 1000
  kl_steps: int = 200
  loss_t: float = 0.01          # OU time of loss_train_t / loss_test_t / score_err_t
  loss_noise_draws: int = 4
  schedule: str = 'ou'          # 'ou' or 'ddpm' (module docstring)
  network: str = 'pre_ln'       # jaxdiff.models.mlp.NETWORKS
  init: str = 'flax'            # jaxdiff.models.initializers.INITS
  balanced: bool = False        # exactly n/2 training points per component
  fixed_t: float = 0.0          # > 0: train at this one OU time only
  num_steps: int = 1000         # 'ddpm': the linear schedule
  beta_min: float = 1e-4
  beta_max: float = 0.02

  @property
  def mu(self) -> jax.Array:
    return mean_vector(self.d, self.mu_scale)

  @functools.cached_property
  def step_times(self) -> np.ndarray:
    """'ddpm': [T] OU times of the steps 0..T-1, increasing (host float32, the one table all uses share)."""
    alpha_bars = ddpm.linear_schedule(self.num_steps, self.beta_min, self.beta_max).alpha_bars
    return np.asarray(ou.ddpm_ou_time(alpha_bars, jnp.arange(self.num_steps)), np.float32)

  def nearest_step(self, t: jax.Array) -> jax.Array:
    """'ddpm': the step whose OU time is nearest to t (any shape) -> int32 of that shape."""
    table = jnp.asarray(self.step_times)
    hi = jnp.clip(jnp.searchsorted(table, t), 1, table.shape[0] - 1)
    return jnp.where(jnp.abs(table[hi - 1] - t) <= jnp.abs(table[hi] - t), hi - 1, hi).astype(jnp.int32)

  def model(self, key: jax.Array) -> nnx.Module:
    return mlp.build(self.network, dim=self.d, width=self.width, num_blocks=self.num_blocks,
                     num_classes=2 if self.conditional else 0, init=self.init, rngs=nnx.Rngs(params=key))

  def init_params(self, key: jax.Array):
    return nnx.state(self.model(key), nnx.Param)

  @functools.cached_property
  def graphdef(self):
    return nnx.split(nnx.eval_shape(lambda: self.model(jax.random.key(0))), nnx.Param)[0]

  def time_code(self, t: jax.Array) -> jax.Array:
    """The network's time input: 'ou': 0 at t_min, 1000 at t_max, linear in log t; 'ddpm': the nearest step."""
    if self.schedule == 'ddpm':
      return self.nearest_step(t).astype(jnp.float32)
    lo, hi = math.log(self.t_min), math.log(self.t_max)
    return TIME_CODE_SCALE * (jnp.log(t) - lo) / (hi - lo)

  def eps(self, params, x: jax.Array, t: jax.Array, y: jax.Array | None = None) -> jax.Array:
    """Noise estimate. params: the network's `nnx.Param` state, or the network itself; x: [B, d]; t: [B] OU
    times; y: [B] labels (conditional models) or None."""
    model = params if isinstance(params, nnx.Module) else nnx.merge(self.graphdef, params)
    return model(x, self.time_code(t), y if self.conditional else None)

  def guided_eps(self, params, x, t, y):
    """Classifier-free guidance (1 + w) eps(x, y) - w eps(x, null) (conditional), plain eps otherwise."""
    if not self.conditional or self.guidance == 0.0:
      return self.eps(params, x, t, y)
    null = jnp.full(x.shape[:1], NULL_LABEL, jnp.int32)
    w = self.guidance
    return (1.0 + w) * self.eps(params, x, t, y) - w * self.eps(params, x, t, null)

  def model_score(self, params, x, t, y=None) -> jax.Array:
    """Learned score -eps / sqrt(Delta_t) (guided for conditional models). x: [B, d]; t: [B]."""
    return -self.guided_eps(params, x, t, y) / jnp.sqrt(ou.delta(t))[:, None]

  def snap(self, t: float) -> float:
    """The OU time the model can be trained at nearest to t: t itself ('ou') or that of its nearest step."""
    if self.schedule == 'ddpm':
      return float(self.step_times[int(np.argmin(np.abs(self.step_times - t)))])
    return t

  def sample_times(self, key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Training times of `shape`: `fixed_t` (snapped) if set; 'ou': in [t_min, t_max], distributed as
    `t_sampling`; 'ddpm': the OU times of steps uniform in 1..T-1."""
    if self.fixed_t > 0:
      return jnp.full(shape, self.snap(self.fixed_t), jnp.float32)
    if self.schedule == 'ddpm':
      return jnp.asarray(self.step_times)[jax.random.randint(key, shape, 1, self.num_steps)]
    return ou.sample_times(key, shape, self.t_min, self.t_max, self.t_sampling)

  def time_grid(self, steps: int) -> np.ndarray:
    """Decreasing times t_max ... t_min of the samplers: 'ou': [steps + 1] spaced as `sample_spacing`; 'ddpm':
    the OU times of min(steps + 1, T) evenly spaced steps T-1 ... 0."""
    if self.schedule == 'ddpm':
      idx = np.unique(np.round(np.linspace(0, self.num_steps - 1, min(steps + 1, self.num_steps))).astype(int))
      return self.step_times[idx[::-1]].astype(np.float64)
    return ou.time_grid(self.t_max, self.t_min, steps, self.sample_spacing)


def problem_from_config(config: ml_collections.ConfigDict) -> Problem:
  g, df = config.gmm, config.diffusion
  problem = Problem(d=g.d, mu_scale=g.mu_scale, width=g.width, num_blocks=g.num_blocks, conditional=g.conditional,
                    label_dropout=g.label_dropout, guidance=g.guidance, t_min=g.t_min, t_max=g.t_max,
                    t_sampling=g.t_sampling, sample_steps=g.sample_steps, sample_spacing=g.sample_spacing,
                    kl_samples=g.kl_samples, kl_steps=g.kl_steps, loss_t=config.eval.loss_t_ou,
                    loss_noise_draws=config.eval.loss_noise_draws, schedule=g.schedule, network=g.network,
                    init=g.init, balanced=g.balanced, fixed_t=g.fixed_t, num_steps=df.num_steps,
                    beta_min=df.beta_min, beta_max=df.beta_max)
  if g.schedule == 'ddpm':   # the schedule's ends replace gmm.t_min, gmm.t_max
    steps = problem.step_times
    problem = dataclasses.replace(problem, t_min=float(steps[0]), t_max=float(steps[-1]))
  return problem


@functools.lru_cache(maxsize=32)
def parameter_count(problem: Problem) -> int:
  return int(sum(x.size for x in jax.tree.leaves(
      nnx.state(nnx.eval_shape(lambda: problem.model(jax.random.key(0))), nnx.Param))))


# ----------------------------------------------------------------------------------------------------------
# Training loss (one member; jaxdiff.train.steps vmaps it).

def losses(problem: Problem, params, batch: dict[str, jax.Array], key: jax.Array) -> jax.Array:
  """Per-example eps-MSE per coordinate [B] at times drawn as in training (labels dropped to the null label
  with probability label_dropout for conditional models). batch: {'x': [B, d], 'y': [B]}."""
  x0, y = batch['x'], batch['y']
  k_t, k_xi, k_drop = jax.random.split(key, 3)
  t = problem.sample_times(k_t, x0.shape[:1])
  xi = jax.random.normal(k_xi, x0.shape)
  if problem.conditional:
    y = jnp.where(jax.random.bernoulli(k_drop, problem.label_dropout, y.shape), NULL_LABEL, y)
  return jnp.mean(jnp.square(problem.eps(params, ou.noise(x0, t, xi), t, y) - xi), axis=1)


def make_loss_fn(problem: Problem) -> LossFn:
  """loss_fn(params, batch {'x': [B, d], 'y': [B]}, weight [B], key) -> weighted eps-MSE per coordinate."""
  return lambda params, batch, weight, key: weighted_mean(losses(problem, params, batch, key), weight)


# ----------------------------------------------------------------------------------------------------------
# Samplers (`jaxdiff.diffusion.ou`): the KL of their samples to the truth.

def balanced_labels(num: int) -> jax.Array:
  """[num] labels 0, 1, 0, 1, ... (the two components equally)."""
  return (jnp.arange(num) % 2).astype(jnp.int32)


def kl_to_truth(score_fn, key: jax.Array, num: int, grid: np.ndarray, mu: jax.Array, t_end: float,
                labels: jax.Array | None = None) -> jax.Array:
  """KL(q || P_t_end) on `num` probability-flow samples: mean(log q(x) - log P_t_end(x)) (the 'kl' evaluator).

  score_fn(x, t, y) as in `ou.probability_flow`. With labels [num] (conditional model) the reference is
  P_t_end(. | y) = N(sign(y) m, I) and the result is the label-average of KL(q(. | y) || P(. | y)).
  """
  return kl.kl_to_truth(score_fn, lambda x, y: log_density(x, t_end, mu, y), key, num, mu.shape[0], grid, labels)


# ----------------------------------------------------------------------------------------------------------
# The family (jaxdiff.experiments.base): network, per-example loss, sampler, and the exact distribution that
# the 'score_error' and 'kl' evaluators compare with.


class GMMFamily:
  """The residual-MLP score model of one `Problem`, as the shared trainers and evaluators use it."""

  def __init__(self, problem: Problem):
    self.problem = problem
    self.t_min = problem.t_min
    self.kl_samples, self.kl_steps = problem.kl_samples, problem.kl_steps

  def init(self, key: jax.Array) -> nnx.Module:
    return self.problem.model(key)

  def losses(self, model, batch, key, *, train: bool) -> jax.Array:
    del train
    return losses(self.problem, model, batch, key)

  def labels(self, num: int) -> jax.Array | None:
    """Sampling labels: both components equally for conditional models, None otherwise."""
    return balanced_labels(num) if self.problem.conditional else None

  def eps(self, model, x, t, y=None) -> jax.Array:
    """The noise estimate (unguided)."""
    return self.problem.eps(model, x, t, y)

  def model_score(self, model, x, t, y=None) -> jax.Array:
    """The learned score (guided for conditional models)."""
    return self.problem.model_score(model, x, t, y)

  def sample(self, model, key: jax.Array, num: int) -> jax.Array:
    """Euler-Maruyama on the reverse SDE from N(0, I) at t_max to t_min. -> [num, d]"""
    k_x, k_em = jax.random.split(key)
    labels = self.labels(num)
    p = self.problem
    return ou.euler_maruyama(lambda x, t: p.model_score(model, x, t, labels), jax.random.normal(k_x, (num, p.d)),
                             k_em, p.time_grid(p.sample_steps))

  def loss_time(self, t_ou: float) -> float:
    return self.problem.snap(t_ou)

  def loss_at(self, model, x, t, key, y=None) -> jax.Array:
    """Per-example eps-MSE per coordinate at OU times t [B]. x: [B, d]; y: [B] labels (conditional)."""
    xi = jax.random.normal(key, x.shape)
    return jnp.mean(jnp.square(self.problem.eps(model, ou.noise(x, t, xi), t, y) - xi), axis=1)

  def sample_times(self, key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    return self.problem.sample_times(key, shape)

  def time_grid(self, steps: int) -> np.ndarray:
    return self.problem.time_grid(steps)

  def exact_score(self, x, t, y=None) -> jax.Array:
    return score(x, t, self.problem.mu, y if self.problem.conditional else None)

  def exact_log_density(self, x, t, y=None) -> jax.Array:
    return log_density(x, t, self.problem.mu, y if self.problem.conditional else None)


@dataclasses.dataclass(frozen=True, eq=False)
class GMMData:
  """A member's training points and fresh test points (host arrays)."""
  train: np.ndarray          # [n, d]
  train_labels: np.ndarray   # [n] component (0: +mu, 1: -mu)
  test: np.ndarray           # [num_test, d]
  test_labels: np.ndarray    # [num_test]
  name: str = 'gmm'


# ----------------------------------------------------------------------------------------------------------
# Members of an ensemble: one per (n, seed).

@dataclasses.dataclass(frozen=True)
class Member(loop.Member):
  """A Gaussian-mixture member: its data are drawn from its seed."""

  @property
  def key(self) -> jax.Array:
    """The member's training key (its init, batch and noise draws): fold_in(key(seed), n), raw."""
    return jax.random.key_data(jax.random.fold_in(jax.random.key(self.seed), self.n))

  def data(self, problem: Problem) -> tuple[np.ndarray, np.ndarray]:
    """The training set: the first n points of the seed's stream (nested across n; `balanced`: n/2 per
    component, alternating)."""
    draw = _sample_balanced if problem.balanced else _sample_data
    x, y = draw(jax.random.fold_in(jax.random.key(self.seed), 0), self.n, problem.mu)
    return np.asarray(x), np.asarray(y)

  def test_data(self, problem: Problem, num: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = _sample_data(jax.random.fold_in(jax.random.key(self.seed), 1), num, problem.mu)
    return np.asarray(x), np.asarray(y)



def members_of(config: ml_collections.ConfigDict) -> list[Member]:
  """(n, seed) for n in gmm.n and seed = config.seed + s, s < gmm.num_seeds; with ensemble.halves a pair per
  (n, seed) whose halves train on independent draws of n points (their seeds differ): two disjoint halves of
  2n i.i.d. points have exactly that distribution."""
  pairs = [(int(n), config.seed + s) for s in range(config.gmm.num_seeds) for n in config.gmm.n]
  if config.ensemble.halves:
    return halves_members(pairs, config.gmm.num_seeds, Member)
  return [Member(n, seed, eval_seed=eval_seed_of(config)) for n, seed in pairs]


def member_config(config: ml_collections.ConfigDict, m: Member) -> ml_collections.ConfigDict:
  """The solo config that trains exactly member m (its n alone, its seed)."""
  c = ml_collections.ConfigDict(config.to_dict())
  c.seed = m.seed
  c.gmm.n = (m.n,)
  c.gmm.num_seeds = 1
  set_half(c, m)
  return c


# ----------------------------------------------------------------------------------------------------------
# The experiment (the table's entry 'gmm'): a network family whose members are gmm.n x gmm.num_seeds.


class GMMExperiment(NetworkExperiment):
  """Family 'gmm': vectorized ensembles of residual-MLP score models on the two-component mixture."""

  section = 'gmm'
  data_depends_on_seed = True
  ensemble_section = False   # members are gmm.n x gmm.num_seeds
  default_metrics = ('memorization', 'losses', 'score_error', 'kl', 'sliced_wasserstein')

  def default_section(self) -> ml_collections.ConfigDict:
    """Data 1/2 N(mu, I) + 1/2 N(-mu, I), mu = mu_scale * ones(d), residual MLP score model; one member of a
    vectorized ensemble per (n, seed). Also reads optimizer.*, train.* and eval.*."""
    return ml_collections.ConfigDict(dict(
        d=8,
        mu_scale=1.0,
        n=(128, 256, 512, 1024, 2048, 4096),  # training-set sizes (member n: the first n points of its seed)
        num_seeds=1,             # members per n; seed s of config.seed + s
        width=256,               # residual MLP width W
        num_blocks=3,
        conditional=False,       # class-conditional on the component, with classifier-free guidance
        label_dropout=0.1,       # conditional: probability of the null label in training
        guidance=0.0,            # conditional: w in eps = (1 + w) eps(x, y) - w eps(x, null)
        t_min=1e-3,              # OU diffusion times trained and sampled: [t_min, t_max]
        t_max=5.0,
        t_sampling='log_uniform',  # training times: 'log_uniform' or 'uniform' on [t_min, t_max]
        sample_steps=1000,       # Euler-Maruyama steps (eval.num_samples samples per milestone)
        sample_spacing='log',    # sampler time grid: 'log' (geometric) or 'linear'
        kl_samples=1000,         # probability-flow samples for KL(generated || true); 0 = no KL
        kl_steps=200,
        num_test=2048,           # fresh points for loss_test_t, score_err_t and the sliced Wasserstein
        quality='kl',            # tau_gen from 'kl', 'sw' or 'score_err' (population score-matching error)
        analysis=True,           # write <workdir>/analysis (jaxdiff.analysis tables and figures) at the end
        # Paper 1's protocol (module docstring; configs/gmm_mlp.py sets it) against jaxdiff's defaults:
        schedule='ou',           # training times: 'ou' (t_sampling in [t_min, t_max]) or 'ddpm' (paper 1: steps
                                 # uniform in 1..T-1 of config.diffusion's schedule, the network sees the step)
        network='pre_ln',        # 'pre_ln' (jaxdiff: pre-LayerNorm SiLU blocks, learned time MLP) or 'post_ln'
                                 # (paper 1: post-LayerNorm GELU blocks, fixed step encoding in every block)
        init='flax',             # 'flax' or 'torch' (paper 1; jaxdiff/models/initializers.py)
        balanced=False,          # True: exactly n/2 training points per component (paper 1); n must be even
        fixed_t=0.0,             # > 0: train at this one OU time (nearest step under 'ddpm'); paper 1's mode
    ))

  def validate(self, config: ml_collections.ConfigDict) -> None:
    _validate_gmm(config.gmm)

  def wants_report(self, config: ml_collections.ConfigDict) -> bool:
    """Write <workdir>/analysis (jaxdiff.analysis tables and figures) after a finished run."""
    return bool(config.gmm.analysis)

  def members(self, config: ml_collections.ConfigDict) -> list[Member]:
    """(n, seed) for n in gmm.n and seed = config.seed + s, s < gmm.num_seeds (always an ensemble layout:
    one subdirectory per member, even for one)."""
    return members_of(config)

  def member_config(self, config: ml_collections.ConfigDict, m: Member) -> ml_collections.ConfigDict:
    return member_config(config, m)

  def member_key(self, m: Member) -> jax.Array:
    return m.key

  def trainer(self, config: ml_collections.ConfigDict, mesh) -> Trainer:
    return Trainer(config, mesh=mesh)

  def load_data(self, config: ml_collections.ConfigDict) -> GMMData:
    """The member's training set (the first n points of its seed's stream) and gmm.num_test test points."""
    problem = problem_from_config(config)
    m = Member(config.gmm.n[0], config.seed)
    (x, y), (xt, yt) = m.data(problem), m.test_data(problem, config.gmm.num_test)
    return GMMData(x, y, xt, yt)

  def build_family(self, config: ml_collections.ConfigDict, data: GMMData) -> GMMFamily:
    return GMMFamily(problem_from_config(config))

  def quality_key(self, config: ml_collections.ConfigDict, evaluation) -> str:
    return QUALITY_KEYS[config.gmm.quality]

  def summary_info(self, config: ml_collections.ConfigDict) -> dict[str, Any]:
    g = config.gmm
    return dict(family='gmm', dataset='gmm', n=g.n[0], width=g.width, seed=config.seed, d=g.d,
                batch_size=min(g.n[0], config.train.batch_size), learning_rate=config.optimizer.learning_rate,
                optimizer=config.optimizer.name, conditional=g.conditional)


class Trainer(EnsembleTrainer):
  """An ensemble of GMM members (the shared ensemble trainer); also the library form for notebooks:
  train(k), evaluate(), member_params(i)."""

  def __init__(self, config: ml_collections.ConfigDict, members: list[Member] | None = None, mesh=None):
    mesh = mesh if mesh is not None else sharding.make_mesh(config.mesh)
    super().__init__(EXPERIMENT, config, mesh, members if members is not None else members_of(config))
    self.problem = problem_from_config(config)

  def evaluate(self, step: int | None = None) -> list[dict[str, Any]] | None:
    """One metrics row per member at `step` (default: the current step)."""
    return super().evaluate(int(self.state.step) if step is None else step)


def _validate_gmm(g: ml_collections.ConfigDict) -> None:
  for field in ('d', 'width', 'num_seeds', 'sample_steps', 'kl_steps', 'num_test'):
    require(g[field] >= 1, f'gmm.{field}', f'must be >= 1, got {g[field]}')
  require(g.num_blocks >= 0, 'gmm.num_blocks', f'must be >= 0, got {g.num_blocks}')
  require(g.mu_scale > 0, 'gmm.mu_scale', f'must be positive, got {g.mu_scale}')
  ns = tuple(g.n)
  require(len(ns) >= 1 and all(isinstance(v, int) and not isinstance(v, bool) and v >= 2 for v in ns),
          'gmm.n', f'must be a non-empty tuple of ints >= 2 (training-set sizes), got {ns}')
  require(len(set(ns)) == len(ns), 'gmm.n', f'must not repeat values, got {ns}')
  require(0 < g.t_min < g.t_max, 'gmm.t_min', f'need 0 < t_min < t_max, got {g.t_min}, {g.t_max}')
  require(g.t_sampling in GMM_T_SAMPLING, 'gmm.t_sampling',
          f'must be one of {GMM_T_SAMPLING}, got {g.t_sampling!r}')
  require(g.sample_spacing in GMM_SPACINGS, 'gmm.sample_spacing',
          f'must be one of {GMM_SPACINGS}, got {g.sample_spacing!r}')
  require(g.kl_samples >= 0, 'gmm.kl_samples', f'must be >= 0 (0 = no KL), got {g.kl_samples}')
  require(0 <= g.label_dropout < 1, 'gmm.label_dropout', f'must be in [0, 1), got {g.label_dropout}')
  require(g.guidance >= 0, 'gmm.guidance', f'must be >= 0, got {g.guidance}')
  require(g.quality in GMM_QUALITY, 'gmm.quality', f'must be one of {GMM_QUALITY}, got {g.quality!r}')
  require(g.schedule in GMM_SCHEDULES, 'gmm.schedule', f'must be one of {GMM_SCHEDULES}, got {g.schedule!r}')
  require(g.network in mlp.NETWORKS, 'gmm.network', f'must be one of {tuple(mlp.NETWORKS)}, got {g.network!r}')
  require(g.network != 'post_ln' or g.width % 2 == 0, 'gmm.width',
          f"the 'post_ln' network's step encoding needs an even width, got {g.width}")
  require(g.init in initializers.INITS, 'gmm.init', f'must be one of {initializers.INITS}, got {g.init!r}')
  require(not g.balanced or all(v % 2 == 0 for v in ns), 'gmm.balanced',
          f'n/2 points per component needs every gmm.n even, got {ns}')
  require(g.fixed_t >= 0, 'gmm.fixed_t', f'must be >= 0 (0 = times drawn as gmm.schedule), got {g.fixed_t}')
  require(g.quality != 'kl' or g.kl_samples > 0, 'gmm.quality',
          "'kl' needs gmm.kl_samples > 0 (or choose 'sw' / 'score_err')")


EXPERIMENT = GMMExperiment()

__all__ = ['Problem', 'GMMFamily', 'GMMData', 'Member', 'Trainer', 'GMMExperiment', 'EXPERIMENT', 'mean_vector',
           'sample_data', 'sample_balanced', 'log_density', 'score', 'problem_from_config', 'parameter_count', 'losses', 'make_loss_fn',
           'kl_to_truth', 'members_of', 'member_config']
