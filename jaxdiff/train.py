"""The one training loop of jaxdiff: any model family, on a device mesh, resumable bit for bit.

Data flows one way: config -> arrays on device -> compiled chunks of train steps -> milestones
(checkpoints, evaluation) -> writers. The training set lives on the devices (replicated); every step
draws its batch in-graph from (seed, step) alone, epoch by epoch without replacement, so a resumed run
sees exactly the batches an uninterrupted run would. Up to `train.steps_per_dispatch` steps run per
compiled call, in a `lax.fori_loop` whose trip count is an argument: one compilation serves every chunk
length (`train.loop='host'` dispatches single compiled steps instead). The batch is sharded over the mesh's
'data' axis and the state replicated: XLA inserts the gradient all-reduce (data parallelism through
`jax.jit` shardings).
"""

from __future__ import annotations

import functools
import json
import os
import signal
import threading
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import nnx

from jaxdiff import config as config_lib
from jaxdiff import distributed
from jaxdiff import families
from jaxdiff import ensemble as ensemble_lib
from jaxdiff import evaluate as evaluate_lib
from jaxdiff import paths
from jaxdiff import sharding
from jaxdiff.checkpoint import Checkpoints
from jaxdiff.families import Family, build_family
from jaxdiff.writers import MetricWriter, read_metrics


@flax.struct.dataclass
class TrainState:
  step: jax.Array             # int32 scalar: steps taken
  rng: jax.Array              # uint32 [2]: the run's base key; per-step keys are folded from it
  params: Any                 # nnx.State of the network's parameters
  opt_state: Any
  ema_params: Any = None      # nnx.State, or None without EMA
  # Training loss summed over the steps since the last log row, and their count: part of the checkpoint so
  # that a resumed run logs exactly the rows an uninterrupted one would.
  loss_sum: Any = None        # float32 scalar
  loss_count: Any = None      # int32 scalar


def make_optimizer(opt: ml_collections.ConfigDict) -> optax.GradientTransformation:
  if opt.name == 'sgd':
    tx = optax.sgd(opt.learning_rate, momentum=opt.momentum or None)
  elif opt.name == 'adam':
    tx = optax.adam(opt.learning_rate, b1=opt.b1, b2=opt.b2, eps=opt.eps)
  else:
    raise ValueError(f"config field 'optimizer.name': unknown optimizer {opt.name!r}")
  if opt.grad_clip > 0:
    tx = optax.chain(optax.clip_by_global_norm(opt.grad_clip), tx)
  return tx


def log_spaced_milestones(num_steps: int, count: int) -> np.ndarray:
  """About `count` distinct integer steps log-spaced in [1, num_steps], always including num_steps."""
  if count <= 0:
    return np.array([], np.int64)
  steps = np.unique(np.round(np.logspace(0, np.log10(num_steps), count)).astype(np.int64))
  return np.unique(np.append(steps[(steps >= 1) & (steps <= num_steps)], num_steps))


def create_train_state(family: Family, tx: optax.GradientTransformation, seed: int,
                       ema: bool) -> tuple[nnx.GraphDef, TrainState]:
  rng = jax.random.PRNGKey(seed)
  model = family.init(jax.random.fold_in(rng, 0))
  graphdef, params = nnx.split(model, nnx.Param)
  rest = nnx.state(model, nnx.Not(nnx.Param))
  if jax.tree.leaves(rest):
    raise NotImplementedError('networks with non-parameter state (e.g. batch statistics) are not supported')
  state = TrainState(step=jnp.zeros((), jnp.int32), rng=rng, params=params, opt_state=tx.init(params),
                     ema_params=jax.tree.map(jnp.copy, params) if ema else None,
                     loss_sum=jnp.zeros((), jnp.float32), loss_count=jnp.zeros((), jnp.int32))
  return graphdef, state


def draw_batch(data: dict[str, jax.Array], rng: jax.Array, step: jax.Array, batch_size: int) -> dict:
  """The batch of `step`, epoch by epoch without replacement (epoch e = step // (n // B) orders the n
  examples by uniform keys drawn from fold_in(fold_in(rng, 1), e); B >= n: the whole set in order).

  The same draw as a member of a vectorized ensemble (`ensemble.batch_indices`), so that an ensemble member
  trains exactly like the solo run with its key.
  """
  n = data['x'].shape[0]
  idx, _ = ensemble_lib.batch_indices(rng, step, n, n_max=n, batch_size=batch_size)
  return {k: v[idx] for k, v in data.items()}


def train_step(state: TrainState, data: dict, *, graphdef, family: Family, tx, batch_size: int,
               ema_decay: float, batch_sharding=None) -> tuple[TrainState, jax.Array]:
  """One optimizer step. data: the whole training set {'x': [n, ...], 'y': [n]} (replicated)."""
  batch = draw_batch(data, state.rng, state.step, batch_size)
  if batch_sharding is not None:
    batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
  step_key = jax.random.fold_in(jax.random.fold_in(state.rng, 2), state.step)

  def loss_fn(params):
    return family.loss(nnx.merge(graphdef, params), batch, step_key, train=True)

  loss, grads = jax.value_and_grad(loss_fn)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  ema_params = state.ema_params
  if ema_params is not None:
    ema_params = optax.incremental_update(params, ema_params, 1.0 - ema_decay)
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema_params,
                       loss_sum=state.loss_sum + loss, loss_count=state.loss_count + 1)


LOOPS = ensemble_lib.LOOPS
resolve_loop = ensemble_lib.resolve_loop


def make_train_chunk(graphdef, family: Family, tx, *, batch_size: int, ema_decay: float, mesh,
                     state_sharding, loop: str = 'auto'):
  """A `chunk(state, data, num_steps, reset) -> state` running num_steps steps.

  reset: zero the state's loss accumulators first (the previous chunk ended with a log row).
  loop 'device': one compiled call runs all the steps in a `lax.fori_loop` whose trip count is an argument
  (one compilation serves every chunk length, one dispatch per chunk). loop 'host': one compiled step,
  dispatched num_steps times (asynchronously: the host runs ahead of the device). Both compute the same steps.
  """
  step = functools.partial(train_step, graphdef=graphdef, family=family, tx=tx, batch_size=batch_size,
                           ema_decay=ema_decay, batch_sharding=sharding.batch_sharded(mesh))
  rep = sharding.replicated(mesh)

  def reset_sums(state, reset):
    return state.replace(loss_sum=jnp.where(reset, 0.0, state.loss_sum),
                         loss_count=jnp.where(reset, 0, state.loss_count))

  if resolve_loop(loop) == 'host':
    reset_fn = jax.jit(reset_sums, in_shardings=(state_sharding, rep), out_shardings=state_sharding,
                       donate_argnums=0)
    one = jax.jit(step, in_shardings=(state_sharding, rep), out_shardings=state_sharding, donate_argnums=0,
                  compiler_options=families.compiler_options(family))

    def host_chunk(state, data, num_steps, reset):
      state = reset_fn(state, reset)
      for _ in range(int(num_steps)):
        state = one(state, data)
      return state
    return host_chunk

  def chunk(state, data, num_steps, reset):
    return jax.lax.fori_loop(0, num_steps, lambda _, st: step(st, data), reset_sums(state, reset))

  return jax.jit(chunk, in_shardings=(state_sharding, rep, rep, rep), out_shardings=state_sharding,
                 donate_argnums=0, compiler_options=families.compiler_options(family))


class Preemption:
  """Turns SIGTERM (TPU preemption, job schedulers) into a flag the loop polls between chunks."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning('SIGTERM received: saving a checkpoint after the current chunk, then stopping')
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _format_duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f'{h}h{m:02d}m{s:02d}s' if h else f'{m}m{s:02d}s'


def prepare(config: ml_collections.ConfigDict, *, training: bool = True):
  """Validate the config, build the mesh, load the data. Fails before any compilation on bad input.

  training=False (evaluation only) skips the checks that concern training steps (batch divisibility).
  """
  from jaxdiff import data as data_lib  # pylint: disable=g-import-not-at-top
  config_lib.validate(config, num_devices=jax.device_count() if training else None)
  mesh = sharding.make_mesh(config.mesh)
  images = data_lib.load_images(config.data)
  if config.model.num_classes > 0 and images.num_classes > config.model.num_classes:
    raise ValueError(f"config field 'model.num_classes': {config.model.num_classes} is fewer than the "
                     f"{images.num_classes} classes of data set {config.data.name!r}")
  return mesh, images


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       stop_at_step: int | None = None) -> TrainState:
  """Train (resuming from `workdir` if it holds checkpoints) to `train.num_steps`, or `stop_at_step`.

  Writes `metrics.jsonl`, checkpoints at log-spaced milestones and every `train.checkpoint_every` steps,
  and a sample grid at the end. On SIGTERM it saves and returns early; running again resumes.
  """
  mesh, images = prepare(config)
  tc = config.train
  num_steps = tc.num_steps if stop_at_step is None else min(stop_at_step, tc.num_steps)
  batch_size = config_lib.effective_batch_size(config)
  is_primary = jax.process_index() == 0
  paths.makedirs(workdir)
  if is_primary:
    paths.write_text(os.path.join(workdir, 'config.json'), json.dumps(config.to_dict(), indent=2, default=list))

  family = build_family(config, images.train.shape[1:], images.value_range)
  tx = make_optimizer(config.optimizer)
  graphdef, state = create_train_state(family, tx, config.seed, config.optimizer.ema_decay > 0)
  rep = sharding.replicated(mesh)
  state_sharding = jax.tree.map(lambda _: rep, state)
  state = distributed.put(state, state_sharding)
  n_params = sum(x.size for x in jax.tree.leaves(state.params))
  logging.info('model: %s, %.3fM parameters; data: %s n=%d %s; mesh %s; batch %d',
               config.model.name, n_params / 1e6, images.name, images.train.shape[0],
               images.train.shape[1:], dict(mesh.shape), batch_size)

  milestones = log_spaced_milestones(tc.num_steps, tc.num_milestones)
  distributed.barrier('start')   # before Orbax's first cross-process collective
  ckpt = Checkpoints(workdir, milestones, tc.keep_milestone_checkpoints)
  start = ckpt.latest_step()
  if start is not None:
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
    state = ckpt.restore(start, target, config)
    logging.info('resuming from step %d', start)
  step = int(state.step)
  writer = MetricWriter(workdir, resume_step=step, is_primary=is_primary)

  data = {'x': jnp.asarray(images.train), 'y': jnp.asarray(images.train_labels, jnp.int32)}
  data = distributed.put(data, rep)
  chunk = make_train_chunk(graphdef, family, tx, batch_size=batch_size,
                           ema_decay=config.optimizer.ema_decay, mesh=mesh, state_sharding=state_sharding,
                           loop=tc.loop)

  def next_boundary(s: int) -> int:
    candidates = [num_steps, (s // tc.log_every + 1) * tc.log_every,
                  (s // tc.checkpoint_every + 1) * tc.checkpoint_every]
    later = milestones[milestones > s]
    if later.size:
      candidates.append(int(later[0]))
    return min(candidates)

  milestone_set = set(int(m) for m in milestones)
  evaluator = None
  if config.eval.enabled and milestone_set:
    evaluator = evaluate_lib.Evaluator(config, family, graphdef, images, mesh)
  reset = step % tc.log_every == 0  # a checkpoint at a log step holds the sums of the row already written
  last_log_step, last_log_time = step, time.perf_counter()
  t_start, step_start = last_log_time, step
  with Preemption() as preemption:
    while step < num_steps and not distributed.any_process(preemption.requested):
      n = min(next_boundary(step) - step, tc.steps_per_dispatch)
      state = chunk(state, data, jnp.int32(n), jnp.bool_(reset))
      step += n
      reset = False
      if step % tc.log_every == 0 or step == tc.num_steps:
        loss_sum, loss_count = distributed.fetch((state.loss_sum, state.loss_count))
        loss = float(loss_sum) / max(int(loss_count), 1)
        reset = True
        now = time.perf_counter()
        rate = (step - last_log_step) / (now - last_log_time)
        writer.write_scalars(step, {'train_loss': loss, 'steps_per_sec': rate,
                                    'images_per_sec': rate * batch_size,
                                    'elapsed_sec': now - t_start})
        overall = (step - step_start) / (now - t_start)
        logging.info('step %d/%d (%.0f%%)  loss %.5f  %.2f steps/s  ETA %s', step, tc.num_steps,
                     100 * step / tc.num_steps, loss, rate, _format_duration((tc.num_steps - step) / overall))
        last_log_step, last_log_time = step, now
      if evaluator is not None and step in milestone_set:
        # Before the checkpoint: a run stopped in between redoes this evaluation when it resumes.
        _evaluate_milestone(evaluator, state, step, writer, workdir,
                            figures=is_primary and step == tc.num_steps)
      if step in milestone_set or step % tc.checkpoint_every == 0 or step == num_steps:
        ckpt.save(step, state, config)
    if step < num_steps:   # stopped early: SIGTERM reached at least one process
      ckpt.save(step, state, config)
      logging.warning('stopped at step %d after SIGTERM; run again to resume', step)

  # Every process closes the checkpoints at the same point (Orbax synchronizes the hosts there) before the
  # primary's host-only work; the sample grid is a sharded computation that every process joins.
  ckpt.close()
  if step == tc.num_steps:
    if evaluator is not None:
      if is_primary:
        evaluate_lib.write_summary(workdir, read_metrics(workdir), config, evaluator.quality_key, n_params)
    else:
      write_sample_grid(config, workdir, family, graphdef, state, images, mesh, write=is_primary)
  writer.flush()
  writer.close()
  return state


def _eval_params(state: TrainState):
  return state.ema_params if state.ema_params is not None else state.params


def _evaluate_milestone(evaluator, state, step: int, writer: MetricWriter, out_dir: str, *, figures: bool):
  t0 = time.perf_counter()
  scalars, figs = evaluator.evaluate(_eval_params(state), step)
  scalars['eval_sec'] = time.perf_counter() - t0
  writer.write_scalars(step, scalars)
  q = evaluator.quality_key
  logging.info('eval at step %d: f_mem %.3f [%.3f, %.3f]  loss_t train %.5f test %s  %s  (%.1f s)', step,
               scalars['f_mem'], scalars['f_mem_lo'], scalars['f_mem_hi'], scalars['loss_train_t'],
               f"{scalars['loss_test_t']:.5f}" if 'loss_test_t' in scalars else '-',
               f'{q} {scalars[q]:.4g}' if q else '', scalars['eval_sec'])
  if figures:
    for path in evaluate_lib.write_figures(out_dir, step, figs):
      logging.info('wrote %s', path)


def evaluate_checkpoints(config: ml_collections.ConfigDict, workdir: str, out_dir: str | None = None,
                         steps: list[int] | None = None) -> dict[str, Any]:
  """Evaluate a run's saved checkpoints without training (`--mode=eval`).

  Writes metrics.jsonl, summary.json and the figures of the last step into `out_dir` (default
  `<workdir>/eval`), leaving the run's own history untouched. steps: which saved steps (default all).
  """
  mesh, images = prepare(config, training=False)
  out_dir = out_dir or os.path.join(workdir, 'eval')
  family = build_family(config, images.train.shape[1:], images.value_range)
  tx = make_optimizer(config.optimizer)
  graphdef, state = create_train_state(family, tx, config.seed, config.optimizer.ema_decay > 0)
  rep = sharding.replicated(mesh)
  state = distributed.put(state, jax.tree.map(lambda _: rep, state))
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
  distributed.barrier('start_eval')
  ckpt = Checkpoints(workdir, log_spaced_milestones(config.train.num_steps, config.train.num_milestones),
                     config.train.keep_milestone_checkpoints)
  saved = ckpt.all_steps()
  if not saved:
    raise ValueError(f'no checkpoints to evaluate in {ckpt.directory}')
  missing = sorted(set(steps or []) - set(saved))
  if missing:
    raise ValueError(f'no checkpoint for steps {missing} in {ckpt.directory}; saved steps: {sorted(saved)}')
  todo = sorted(steps or saved)
  evaluator = evaluate_lib.Evaluator(config, family, graphdef, images, mesh)
  is_primary = jax.process_index() == 0
  writer = MetricWriter(out_dir, resume_step=-1, is_primary=is_primary)
  for step in todo:
    state = ckpt.restore(step, target, config)
    _evaluate_milestone(evaluator, state, step, writer, out_dir, figures=is_primary and step == todo[-1])
  writer.close()
  ckpt.close()
  summary = {}
  if is_primary:
    summary = evaluate_lib.write_summary(out_dir, read_metrics(out_dir), config, evaluator.quality_key,
                                         sum(x.size for x in jax.tree.leaves(state.params)))
  return summary


def make_sampler(family: Family, graphdef, num: int, mesh):
  """Compiled `sampler(params, key) -> samples [num, ...]`, samples sharded over the mesh when possible."""
  n_data = mesh.shape[sharding.DATA]
  out = sharding.batch_sharded(mesh) if num % n_data == 0 else sharding.replicated(mesh)
  return jax.jit(lambda params, key: family.sample(nnx.merge(graphdef, params), key, num), out_shardings=out,
                 compiler_options=families.compiler_options(family))


def write_sample_grid(config, workdir, family, graphdef, state, images, mesh, *, write: bool = True) -> str:
  """samples.png for runs without evaluation (eval.enabled False or no milestones). Every process calls it
  (the sampler runs on the whole mesh); only those with write=True write the file."""
  params = _eval_params(state)
  sampler = make_sampler(family, graphdef, config.eval.grid_samples, mesh)
  key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 3)
  samples = distributed.fetch(sampler(params, key))
  path = os.path.join(workdir, 'samples.png')
  if not write:
    return path
  from jaxdiff.figures import save_image_grid  # pylint: disable=g-import-not-at-top
  path = save_image_grid(images.to_pixels(samples), path,
                         title=f'{config.eval.grid_samples} samples at step {int(state.step)}')
  logging.info('wrote %s', path)
  return path
