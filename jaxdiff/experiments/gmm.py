"""The Gaussian-mixture experiment of paper 1's appendix (SPEC section 2), as vectorized ensembles.

Data: x ~ 1/2 N(mu, I) + 1/2 N(-mu, I), mu = mu_scale * (1, ..., 1) in R^d. Diffusion: the OU process
x_t = e^-t x_0 + sqrt(Delta_t) xi, Delta_t = 1 - e^-2t, whose marginal is known in closed form,
P_t = 1/2 N(m_t, I) + 1/2 N(-m_t, I) with m_t = mu e^-t (the covariance stays I), so

  log P_t(x) = -d/2 log(2 pi) - |x|^2 / 2 - |m_t|^2 / 2 + log cosh(x . m_t),
  grad log P_t(x) = m_t tanh(x . m_t) - x                                   (SPEC section 2).

Model: the residual MLP of `jaxdiff.models.mlp` predicts the noise, eps(x_t, t); the score is
-eps / sqrt(Delta_t), and the loss is the eps-MSE per coordinate (denoising score matching weighted by
Delta_t), with t drawn log-uniformly (or uniformly) in [t_min, t_max]. The network sees t through the time
code 1000 (log t - log t_min) / (log t_max - log t_min).

Sampling: Euler-Maruyama on the reverse SDE dx = [x + 2 s(x, t)] dt + sqrt(2) dW from N(0, I) at t_max down
to t_min (`gmm.sample_steps` steps on a geometric or linear grid; no noise on the last step).

KL(generated || true): samples from the deterministic probability-flow map x <- x + h (x + s(x, t)) (Euler
on the same grid, from N(0, I)); the log density of each sample follows exactly from the change of variables
of that map, log q <- log q - log|det((1 + h) I + h ds/dx)| (the Jacobian of the learned score, exact since
d is small), and KL = mean(log q(x) - log P_tmin(x)): the cross-entropy term is the Monte Carlo average of
the exact log density. It is 0 for the exact score up to the discretisation, and grows as samples collapse
onto training points (then q is a mixture of narrow bumps).

Class-conditional variant (`gmm.conditional`): the label is the component (0: +mu, 1: -mu), dropped to the
null label with probability `label_dropout` in training; sampling uses classifier-free guidance
eps = (1 + w) eps(x, y) - w eps(x, null) on balanced labels; KL is then the mean of KL(q(.|y) || N(+-m, I)).

The experiment (`EXPERIMENT`, family 'gmm' of jaxdiff.experiments) trains one vectorized ensemble member per
(n, seed) with the one driver (jaxdiff.train.loop; nested training sets, the first n points of the seed's
stream), evaluates every member at log-spaced milestones
and writes, per member, `<workdir>/<member>/` with config.json (the solo config that reproduces it),
metrics.jsonl (f_mem, f_mem_lo, f_mem_hi, loss_train_t, loss_test_t, score_err_t, score_err, kl, sw;
train_loss) and summary.json (jaxdiff.timescales), plus `<workdir>/summary.json` (the members' timescales
and the fits tau_mem = c n^alpha) and, with `gmm.analysis`, the tables and figures of `jaxdiff.analysis`
in `<workdir>/analysis/`. The ensemble state is checkpointed in `<workdir>/checkpoints` (Orbax); running
again resumes. `Trainer` is the same machinery for notebooks: train(k), evaluate(), member_params(i).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from jaxdiff import config as config_lib
from jaxdiff import sharding, timescales
from jaxdiff.config import require
from jaxdiff.diffusion import ou
from jaxdiff.io.rundir import RunDir
from jaxdiff.metrics import memorization, quality
from jaxdiff.models.mlp import ResidualMLP
from jaxdiff.train import loop
from jaxdiff.train.steps import (LossFn, init_state, make_optimizer, make_train_chunk, member, member_sharding,
                                 pad_stack, resolve_loop, state_sharding, weighted_mean)

NULL_LABEL = 2   # classifier-free guidance: the "no label" token (labels 0 and 1 are the components)
TIME_CODE_SCALE = 1000.0
QUALITY_KEYS = {'kl': 'kl', 'sw': 'sw', 'score_err': 'score_err'}   # gmm.quality -> metrics.jsonl key
GMM_T_SAMPLING = ou.DISTRIBUTIONS
GMM_SPACINGS = ou.SPACINGS
GMM_QUALITY = tuple(QUALITY_KEYS)


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

  @property
  def mu(self) -> jax.Array:
    return mean_vector(self.d, self.mu_scale)

  def model(self, key: jax.Array) -> ResidualMLP:
    return ResidualMLP(dim=self.d, width=self.width, num_blocks=self.num_blocks,
                       num_classes=2 if self.conditional else 0, rngs=nnx.Rngs(params=key))

  def init_params(self, key: jax.Array):
    return nnx.state(self.model(key), nnx.Param)

  @functools.cached_property
  def graphdef(self):
    return nnx.split(nnx.eval_shape(lambda: self.model(jax.random.key(0))), nnx.Param)[0]

  def time_code(self, t: jax.Array) -> jax.Array:
    """The network's time input: 0 at t_min, 1000 at t_max, linear in log t."""
    lo, hi = math.log(self.t_min), math.log(self.t_max)
    return TIME_CODE_SCALE * (jnp.log(t) - lo) / (hi - lo)

  def eps(self, params, x: jax.Array, t: jax.Array, y: jax.Array | None = None) -> jax.Array:
    """Noise estimate. x: [B, d]; t: [B] OU times; y: [B] labels (conditional models) or None."""
    model = nnx.merge(self.graphdef, params)
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

  def sample_times(self, key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Training times of `shape` in [t_min, t_max], distributed as `t_sampling`."""
    return ou.sample_times(key, shape, self.t_min, self.t_max, self.t_sampling)

  def time_grid(self, steps: int) -> np.ndarray:
    """[steps + 1] decreasing times t_max ... t_min of the samplers, spaced as `sample_spacing`."""
    return ou.time_grid(self.t_max, self.t_min, steps, self.sample_spacing)


def problem_from_config(config: ml_collections.ConfigDict) -> Problem:
  g = config.gmm
  return Problem(d=g.d, mu_scale=g.mu_scale, width=g.width, num_blocks=g.num_blocks, conditional=g.conditional,
                 label_dropout=g.label_dropout, guidance=g.guidance, t_min=g.t_min, t_max=g.t_max,
                 t_sampling=g.t_sampling, sample_steps=g.sample_steps, sample_spacing=g.sample_spacing,
                 kl_samples=g.kl_samples, kl_steps=g.kl_steps, loss_t=config.eval.loss_t_ou,
                 loss_noise_draws=config.eval.loss_noise_draws)


@functools.lru_cache(maxsize=32)
def parameter_count(problem: Problem) -> int:
  return int(sum(x.size for x in jax.tree.leaves(
      nnx.state(nnx.eval_shape(lambda: problem.model(jax.random.key(0))), nnx.Param))))


# ----------------------------------------------------------------------------------------------------------
# Training loss (one member; jaxdiff.train.steps vmaps it).

def make_loss_fn(problem: Problem) -> LossFn:
  """loss_fn(params, batch {'x': [B, d], 'y': [B]}, weight [B], key) -> weighted eps-MSE per coordinate."""

  def loss_fn(params, batch, weight, key):
    x0, y = batch['x'], batch['y']
    k_t, k_xi, k_drop = jax.random.split(key, 3)
    t = problem.sample_times(k_t, x0.shape[:1])
    xi = jax.random.normal(k_xi, x0.shape)
    if problem.conditional:
      y = jnp.where(jax.random.bernoulli(k_drop, problem.label_dropout, y.shape), NULL_LABEL, y)
    err = jnp.mean(jnp.square(problem.eps(params, ou.noise(x0, t, xi), t, y) - xi), axis=1)
    return weighted_mean(err, weight)

  return loss_fn


# ----------------------------------------------------------------------------------------------------------
# Samplers (`jaxdiff.diffusion.ou`): the KL of their samples to the truth.

def balanced_labels(num: int) -> jax.Array:
  """[num] labels 0, 1, 0, 1, ... (the two components equally)."""
  return (jnp.arange(num) % 2).astype(jnp.int32)


def kl_to_truth(score_fn, key: jax.Array, num: int, grid: np.ndarray, mu: jax.Array, t_end: float,
                labels: jax.Array | None = None) -> jax.Array:
  """KL(q || P_t_end) on `num` probability-flow samples: mean(log q(x) - log P_t_end(x)).

  score_fn(x, t, y) as in `ou.probability_flow`. With labels [num] (conditional model) the reference is
  P_t_end(. | y) = N(sign(y) m, I) and the result is the label-average of KL(q(. | y) || P(. | y)).
  """
  x_T = jax.random.normal(key, (num, mu.shape[0]))
  x, log_q = ou.probability_flow(score_fn, x_T, grid, labels)
  return jnp.mean(log_q - log_density(x, t_end, mu, labels))


# ----------------------------------------------------------------------------------------------------------
# Evaluation of one member (in-graph; vmapped over the ensemble).

def evaluate_member(problem: Problem, params, x_train: jax.Array, y_train: jax.Array, n: jax.Array,
                    x_test: jax.Array, y_test: jax.Array, key: jax.Array, loss_key: jax.Array, *,
                    num_samples: int) -> dict[str, jax.Array]:
  """Samples and the in-graph metrics of one member at one milestone.

  x_train: [n_max, d] padded (first n valid); x_test: [T, d]; key: this milestone's key; loss_key: the
  member's fixed key of the loss noise draws (the same at every milestone, so L_test - L_train is smooth).
  Returns {'samples': [M, d] (Euler-Maruyama), 'loss_train_t', 'loss_test_t': eps-MSE per coordinate at OU
  time problem.loss_t (mean over `loss_noise_draws` draws), 'score_err_t': Delta_t E|s - grad log P_t|^2 / d
  on noised test points at that time, 'score_err': the same with t drawn as in training, 'kl':
  KL(generated || true) if kl_samples > 0}.
  """
  k_x, k_em, k_kl = jax.random.split(key, 3)
  d = problem.d
  labels = balanced_labels(num_samples) if problem.conditional else None
  out = {'samples': ou.euler_maruyama(lambda x, t: problem.model_score(params, x, t, labels),
                                      jax.random.normal(k_x, (num_samples, d)), k_em,
                                      problem.time_grid(problem.sample_steps))}

  t = problem.loss_t
  k_tr, k_te = jax.random.split(loss_key)

  def eps_mse(x0, y, k):
    xi = jax.random.normal(k, (problem.loss_noise_draws, *x0.shape))
    tt = jnp.full(x0.shape[:1], t, jnp.float32)

    def one(xi_k):
      return jnp.mean(jnp.square(problem.eps(params, ou.noise(x0, tt, xi_k), tt, y) - xi_k), axis=1)
    return jnp.mean(jax.lax.map(one, xi), axis=0)   # [N]

  valid = (jnp.arange(x_train.shape[0]) < n).astype(jnp.float32)
  out['loss_train_t'] = weighted_mean(eps_mse(x_train, y_train, k_tr), valid)
  out['loss_test_t'] = jnp.mean(eps_mse(x_test, y_test, k_te))
  tt = jnp.full(x_test.shape[:1], t, jnp.float32)
  x_t = ou.noise(x_test, tt, jax.random.normal(k_te, x_test.shape))
  s_true = score(x_t, t, problem.mu, y_test if problem.conditional else None)
  s_model = -problem.eps(params, x_t, tt, y_test) / jnp.sqrt(ou.delta(tt))[:, None]
  out['score_err_t'] = ou.delta(jnp.float32(t)) * jnp.mean(jnp.square(s_model - s_true))
  # The same averaged over the training distribution of t (fixed draws): the population score-matching error,
  # a quality measure without sampling noise (at t = 0.01 alone even eps = 0 is nearly optimal).
  k_t, k_xi = jax.random.split(jax.random.fold_in(loss_key, 1))
  tt = problem.sample_times(k_t, x_test.shape[:1])
  x_t = ou.noise(x_test, tt, jax.random.normal(k_xi, x_test.shape))
  s_true = score(x_t, tt, problem.mu, y_test if problem.conditional else None)
  s_model = -problem.eps(params, x_t, tt, y_test) / jnp.sqrt(ou.delta(tt))[:, None]
  out['score_err'] = jnp.mean(ou.delta(tt)[:, None] * jnp.square(s_model - s_true))
  if problem.kl_samples > 0:
    kl_labels = balanced_labels(problem.kl_samples) if problem.conditional else None
    out['kl'] = kl_to_truth(lambda x, tq, y: problem.model_score(params, x, tq, y), k_kl, problem.kl_samples,
                            problem.time_grid(problem.kl_steps), problem.mu, problem.t_min, kl_labels)
  return out


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
    """The training set: the first n points of the seed's stream (nested across n)."""
    x, y = _sample_data(jax.random.fold_in(jax.random.key(self.seed), 0), self.n, problem.mu)
    return np.asarray(x), np.asarray(y)

  def test_data(self, problem: Problem, num: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = _sample_data(jax.random.fold_in(jax.random.key(self.seed), 1), num, problem.mu)
    return np.asarray(x), np.asarray(y)

  def eval_key(self, step: int) -> jax.Array:
    return jax.random.key_data(jax.random.fold_in(jax.random.fold_in(jax.random.key(self.seed), 5), step))

  @property
  def loss_key(self) -> jax.Array:
    return jax.random.key_data(jax.random.fold_in(jax.random.key(self.seed), 6))


def members_of(config: ml_collections.ConfigDict) -> list[Member]:
  """(n, seed) for n in gmm.n and seed = config.seed + s, s < gmm.num_seeds."""
  return [Member(int(n), config.seed + s) for s in range(config.gmm.num_seeds) for n in config.gmm.n]


def member_config(config: ml_collections.ConfigDict, m: Member) -> ml_collections.ConfigDict:
  """The solo config that trains exactly member m (its n alone, its seed)."""
  c = ml_collections.ConfigDict(config.to_dict())
  c.seed = m.seed
  c.gmm.n = (m.n,)
  c.gmm.num_seeds = 1
  return c


# ----------------------------------------------------------------------------------------------------------
# The trainer (jaxdiff.train.loop drives it).

@functools.lru_cache(maxsize=8)
def _compiled_training(problem: Problem, optimizer: tuple, batch_size: int, loop_kind: str):
  """(tx, init, chunk) of one problem and optimizer (config.optimizer's sorted items), built once per
  process: a sweep or a resumed run in the same process reuses the compilations."""
  tx = make_optimizer(ml_collections.ConfigDict(dict(optimizer)))
  init = jax.jit(lambda keys: init_state(problem.init_params, tx, keys))
  chunk = make_train_chunk(loss_fn=make_loss_fn(problem), tx=tx, batch_size=batch_size, loop=loop_kind)
  return tx, init, chunk


@functools.lru_cache(maxsize=8)
def _compiled_evaluation(problem: Problem, num_samples: int):
  return jax.jit(jax.vmap(functools.partial(evaluate_member, problem, num_samples=num_samples)))


class Trainer:
  """An ensemble of GMM members: data, state, compiled chunk and evaluation (the `loop.Trainer` of this
  experiment; also the library form for notebooks: train(k), evaluate(), member_params(i))."""

  def __init__(self, config: ml_collections.ConfigDict, members: list[Member] | None = None, mesh=None):
    self.config = config
    self.problem = problem_from_config(config)
    self.members = members if members is not None else members_of(config)
    if not self.members:
      raise ValueError('a GMM ensemble needs at least one member')
    self.mesh = mesh
    self.batch_size = int(config.train.batch_size)
    self.tx, init, self.chunk = _compiled_training(
        self.problem, tuple(sorted(config.optimizer.to_dict().items())), self.batch_size,
        resolve_loop(config.train.loop))
    self._evaluate = _compiled_evaluation(self.problem, int(config.eval.num_samples))
    # One draw per seed of its largest n; members slice it (the same points as their own draws: the
    # threefry prefix property, see Member.data).
    streams = {}
    for m in self.members:
      n_max = max(m2.n for m2 in self.members if m2.seed == m.seed)
      if m.seed not in streams:
        streams[m.seed] = (Member(n_max, m.seed).data(self.problem),
                           m.test_data(self.problem, config.gmm.num_test))
    xs = [streams[m.seed][0][0][:m.n] for m in self.members]
    ys = [streams[m.seed][0][1][:m.n] for m in self.members]
    tests = [streams[m.seed][1] for m in self.members]
    x_pad, sizes = pad_stack(xs)
    y_pad, _ = pad_stack(ys)
    shard = member_sharding(mesh, len(self.members))
    put = (lambda a: jax.device_put(a, shard)) if shard is not None else jnp.asarray
    self.data = {'x': put(x_pad), 'y': put(y_pad)}
    self.sizes = put(sizes)
    self.test = {'x': put(np.stack([t[0] for t in tests])), 'y': put(np.stack([t[1] for t in tests]))}
    self.train_sets = xs
    self.state = init(jnp.stack([m.key for m in self.members]))
    if mesh is not None:
      self.state = jax.device_put(self.state, state_sharding(self.state, mesh))
    self.num_params = parameter_count(self.problem)
    self.summary: dict[str, Any] = {}

  def train(self, num_steps: int, reset: bool = True) -> None:
    """num_steps more steps of every member (one compiled call)."""
    self.state = self.chunk(self.state, self.data, self.sizes, jnp.int32(num_steps), jnp.bool_(reset))

  def evaluate(self, step: int | None = None) -> list[dict[str, Any]]:
    """One metrics row per member at the current step (f_mem with its bootstrap interval, losses at fixed
    time, score error, KL, sliced Wasserstein to the test points)."""
    step = int(self.state.step) if step is None else step
    ec = self.config.eval
    keys = jnp.stack([m.eval_key(step) for m in self.members])
    loss_keys = jnp.stack([m.loss_key for m in self.members])
    out = jax.device_get(self._evaluate(self.state.params, self.data['x'], self.data['y'], self.sizes,
                                        self.test['x'], self.test['y'], keys, loss_keys))
    rows = []
    for e, m in enumerate(self.members):
      k_mem, k_sw = jax.random.split(jax.random.fold_in(keys[e], 1))
      samples = out['samples'][e]
      mem = memorization.memorization_metrics(samples, self.train_sets[e], k_mem, k=ec.memorization_k,
                                              num_resamples=ec.bootstrap_resamples)
      row = {'f_mem': float(mem['f_mem']), 'f_mem_lo': float(mem['f_mem_lo']),
             'f_mem_hi': float(mem['f_mem_hi']),
             'sw': float(quality.sliced_wasserstein(samples, self.test['x'][e], k_sw, 256))}
      for k in ('loss_train_t', 'loss_test_t', 'score_err_t', 'score_err', 'kl'):
        if k in out:
          row[k] = float(out[k][e])
      rows.append(row)
    logging.info('gmm: step %d f_mem %s', step, ', '.join(f"{m.name} {r['f_mem']:.3f}"
                                                         for m, r in zip(self.members, rows)))
    return rows

  def member_params(self, i: int):
    return member(self.state.params, i)

  def member_config(self, m: Member) -> ml_collections.ConfigDict:
    return member_config(self.config, m)

  def write_figures(self, rundir: RunDir, step: int) -> None:
    """The analysis report draws this experiment's figures (`gmm.analysis`)."""
    del rundir, step

  def finish(self, rundir: RunDir, *, seconds: float) -> dict[str, Any]:
    """summary.json of every member and of the ensemble (the fits tau_mem = c n^alpha over the members)."""
    config = self.config
    quality_key = QUALITY_KEYS[config.gmm.quality]
    per_member = []
    for m in self.members:
      mdir = rundir.member(m.name)
      s = timescales.run_summary(
          mdir.read_metrics(), config.eval, quality_key, family='gmm', dataset='gmm', n=m.n,
          width=config.gmm.width, seed=m.seed, d=config.gmm.d, batch_size=min(m.n, config.train.batch_size),
          learning_rate=config.optimizer.learning_rate, optimizer=config.optimizer.name,
          num_params=self.num_params, conditional=config.gmm.conditional)
      mdir.write_summary(s)
      per_member.append((m, s))
    summary = timescales.ensemble_summary('gmm', config.eval, per_member, quality_key)
    summary.update(num_params=self.num_params, seconds=seconds)
    rundir.write_summary(summary)
    logging.info('gmm: tau_mem exponent %s, summary in %s (%.1fs)', summary.get('tau_mem_fit'), rundir.root,
                 seconds)
    self.summary = summary
    return summary


# ----------------------------------------------------------------------------------------------------------
# The experiment (the table's entry 'gmm').


class GMMExperiment:
  """Family 'gmm': vectorized ensembles of residual-MLP score models on the two-component mixture."""

  section = 'gmm'

  def default_section(self) -> ml_collections.ConfigDict:
    """Data 1/2 N(mu, I) + 1/2 N(-mu, I), mu = mu_scale * ones(d), residual MLP score model; one member of a
    vectorized ensemble per (n, seed). Also reads optimizer.*, train.*, and eval.num_samples /
    memorization_k / bootstrap_resamples / loss_t_ou / loss_noise_draws / tau_gen_rel_tol / f_mem_threshold /
    loss_gap_threshold."""
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
    ))

  def validate(self, config: ml_collections.ConfigDict) -> None:
    _validate_gmm(config.gmm)

  def wants_report(self, config: ml_collections.ConfigDict) -> bool:
    """Write <workdir>/analysis (jaxdiff.analysis tables and figures) after a finished run."""
    return bool(config.gmm.analysis)

  def prepare(self, config: ml_collections.ConfigDict, *, training: bool = True):
    config_lib.validate(config, num_devices=jax.device_count() if training else None)
    return sharding.make_mesh(config.mesh)

  def train(self, config: ml_collections.ConfigDict, workdir: str, *, stop_at_step: int | None = None) -> Trainer:
    """Train the ensemble of `config.gmm` in `workdir` (resuming from its checkpoint), evaluate at log-spaced
    milestones, write per-member metrics and summaries and the ensemble summary. Returns the trainer
    (`.summary` is {} when stopped before train.num_steps: run again to resume)."""
    t_start = time.time()
    trainer = Trainer(config, mesh=self.prepare(config))
    tc = config.train
    logging.info('gmm: %d members (n = %s, seeds %s), d=%d, W=%d (%d parameters), batch min(n, %d), %s lr %g',
                 len(trainer.members), sorted({m.n for m in trainer.members}),
                 sorted({m.seed for m in trainer.members}), config.gmm.d, config.gmm.width, trainer.num_params,
                 tc.batch_size, config.optimizer.name, config.optimizer.learning_rate)
    rundir = RunDir(workdir)
    if loop.train(config, rundir, trainer, stop_at_step=stop_at_step, tag='gmm') == tc.num_steps:
      trainer.finish(rundir, seconds=time.time() - t_start)
    return trainer

  def evaluate(self, config: ml_collections.ConfigDict, workdir: str, out_dir: str | None = None) -> dict[str, Any]:
    """Evaluate the saved checkpoints of the ensemble again into out_dir (default <workdir>/eval)."""
    t_start = time.time()
    trainer = Trainer(config, mesh=self.prepare(config, training=False))
    out = RunDir(out_dir or RunDir(workdir).file('eval'))
    loop.evaluate_checkpoints(config, RunDir(workdir), out, trainer, tag='gmm')
    return trainer.finish(out, seconds=time.time() - t_start)


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
  require(g.quality != 'kl' or g.kl_samples > 0, 'gmm.quality',
          "'kl' needs gmm.kl_samples > 0 (or choose 'sw' / 'score_err')")


EXPERIMENT = GMMExperiment()

__all__ = ['Problem', 'Member', 'Trainer', 'GMMExperiment', 'EXPERIMENT', 'mean_vector', 'sample_data', 'log_density',
           'score', 'problem_from_config', 'parameter_count', 'make_loss_fn', 'kl_to_truth', 'evaluate_member',
           'members_of', 'member_config']
