"""The one training driver of jaxdiff: any experiment, a solo run or a vectorized ensemble, resumable bit for bit.

Data flows one way: config -> arrays on device -> compiled chunks of train steps -> milestones (evaluation,
checkpoints) -> writers. The experiment supplies a `Trainer` (its state, data and compiled chunk, and how it
evaluates); this module owns everything around it, the same for every experiment:

- chunk boundaries: log steps (`train.log_every`), checkpoint steps (`train.checkpoint_every`), the
  log-spaced milestones (`train.num_milestones`) and at most `train.steps_per_dispatch` steps per call;
- logging (loss, steps/s, ETA) and one metrics row per member and log step;
- evaluation at milestones (before the checkpoint: a run stopped in between redoes it when it resumes);
- Orbax checkpoints (the milestones kept, plus the latest) and restore with config checks;
- SIGTERM (TPU preemption, job schedulers): every process agrees on it at the same chunk boundary, saves
  the same step and stops; running again resumes.

Every step draws its batch in-graph from (seed, step) alone, so a resumed run sees exactly the batches an
uninterrupted run would; the loss sums since the last log row are part of the checkpoint, so it also logs
exactly the same rows.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
from typing import Any, Protocol

import jax
import ml_collections
import numpy as np
from absl import logging

from jaxdiff import distributed
from jaxdiff.io.rundir import RunDir
from jaxdiff.train.steps import TrainState, log_spaced_milestones


@dataclasses.dataclass(frozen=True)
class Member:
  """One model of a run: its training-set size and seed. `name` is its subdirectory ('' : the run directory
  itself, a solo run).

  Disjoint-halves runs (`ensemble.halves`) pair two members: half 0 and half 1 train on disjoint training
  sets of n examples each (data blocks 0 and 1) from independent seeds, and both evaluate with the keys of
  `eval_seed` (the pair's), so that their samples start from the same noise."""
  n: int
  seed: int
  solo: bool = False
  half: int = -1                    # 0 or 1 in a disjoint-halves pair, -1 otherwise
  eval_seed: int | None = None      # the seed of the evaluation keys (None: seed)

  @property
  def name(self) -> str:
    if self.solo:
      return ''
    return f'n{self.n}_seed{self.seed}' + (f'_half{self.half}' if self.half >= 0 else '')

  @property
  def keys_seed(self) -> int:
    """The seed evaluations draw their keys from."""
    return self.seed if self.eval_seed is None else self.eval_seed


class Trainer(Protocol):
  """What an experiment hands the driver.

  - `members`: the models trained together (one solo `Member`, or an ensemble's);
  - `state`: the `TrainState` (checkpointed and restored as a whole; the driver may replace it);
  - `batch_size`: examples per step of one member (for the images/s column);
  - `train(num_steps, reset)`: num_steps more steps (reset: zero the loss sums first);
  - `evaluate(step) -> list[dict] | None`: one metrics row per member (None: this run does not evaluate);
  - `member_config(member)`: the solo config that trains that member alone (written to its directory);
  - `write_figures(rundir, step)`: called by the primary process after the last evaluation.
  """
  members: list[Member]
  state: TrainState
  batch_size: int

  def train(self, num_steps: int, reset: bool) -> None: ...
  def evaluate(self, step: int) -> list[dict[str, Any]] | None: ...
  def member_config(self, member: Member) -> ml_collections.ConfigDict: ...
  def write_figures(self, rundir: RunDir, step: int) -> None: ...


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


def format_duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f'{h}h{m:02d}m{s:02d}s' if h else f'{m}m{s:02d}s'


def check_processes(num_members: int) -> None:
  """Vectorized ensembles run in one process (their members are split over its devices). The one check,
  for every experiment: a multi-process job trains solo runs."""
  if num_members and jax.process_count() > 1:
    raise ValueError(f'an ensemble of {num_members} members runs in one process (its members are split over '
                     f'that process\'s devices), but this job has {jax.process_count()} processes: launch one '
                     'ensemble per host, or train the members as solo runs')


def train(config: ml_collections.ConfigDict, rundir: RunDir, trainer: Trainer, *,
          stop_at_step: int | None = None, tag: str = 'train') -> int:
  """Train `trainer` to `train.num_steps` (or stop_at_step), resuming from rundir's latest checkpoint.

  Writes config.json (and each member's solo config), metrics.jsonl per member (the run directory for a
  solo run, <member>/ for an ensemble), checkpoints, and the figures of the last evaluation. Returns the
  step reached (< train.num_steps when stopped early: run again to resume).
  """
  tc = config.train
  end = tc.num_steps if stop_at_step is None else min(stop_at_step, tc.num_steps)
  check_processes(trainer.state.num_members)
  rundir.makedirs()
  rundir.write_config(config)
  milestones = log_spaced_milestones(tc.num_steps, tc.num_milestones)
  distributed.barrier('start')   # before Orbax's first cross-process collective
  ckpt = rundir.checkpoints(milestones, tc.keep_milestone_checkpoints)
  start = ckpt.latest_step()
  if start is not None:
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), trainer.state)
    trainer.state = ckpt.restore(start, target, config)
    logging.info('%s: resuming from step %d', tag, start)
  step = int(trainer.state.step)
  writers = []
  for m in trainer.members:
    mdir = rundir.member(m.name)
    if m.name:
      mdir.write_config(trainer.member_config(m))
    writers.append(mdir.metrics_writer(resume_step=step, tensorboard=m.solo))

  milestone_set = set(int(s) for s in milestones)
  reset = step % tc.log_every == 0   # a checkpoint at a log step holds the sums of the row already written
  last_time = t_start = time.perf_counter()
  last_step = step_start = step
  with Preemption() as preemption:
    while step < end and not distributed.any_process(preemption.requested):
      candidates = [end, (step // tc.log_every + 1) * tc.log_every,
                    (step // tc.checkpoint_every + 1) * tc.checkpoint_every, step + tc.steps_per_dispatch]
      later = milestones[milestones > step]
      if later.size:
        candidates.append(int(later[0]))
      n = min(candidates) - step
      trainer.train(n, reset)
      step += n
      reset = False
      if step % tc.log_every == 0 or step == tc.num_steps:
        loss_sum, loss_count = distributed.fetch((trainer.state.loss_sum, trainer.state.loss_count))
        losses = np.atleast_1d(np.asarray(loss_sum, np.float64)) / max(int(loss_count), 1)
        now = time.perf_counter()
        rate = (step - last_step) / max(now - last_time, 1e-9)
        for w, loss in zip(writers, losses):
          w.write_scalars(step, {'train_loss': float(loss), 'steps_per_sec': rate,
                                 'images_per_sec': rate * trainer.batch_size, 'elapsed_sec': now - t_start})
        overall = (step - step_start) / max(now - t_start, 1e-9)
        loss_text = f'{losses[0]:.5f}' if losses.size == 1 else np.array2string(losses, precision=4)
        logging.info('%s: step %d/%d (%.0f%%)  loss %s  %.2f steps/s  ETA %s', tag, step, tc.num_steps,
                     100 * step / tc.num_steps, loss_text, rate, format_duration((tc.num_steps - step) / overall))
        last_time, last_step, reset = now, step, True
      if step in milestone_set:
        # Train steps are dispatched asynchronously: wait for them, or the evaluation's time (eval_sec) would
        # include the training since the last milestone and steps_per_sec would leave it out.
        jax.block_until_ready(trainer.state)
        t0 = time.perf_counter()
        rows = trainer.evaluate(step)
        if rows is not None:
          for w, row in zip(writers, rows):
            w.write_scalars(step, row)
          logging.info('%s: evaluated at step %d (%.1f s)', tag, step, time.perf_counter() - t0)
          if step == tc.num_steps and rundir.primary:
            trainer.write_figures(rundir, step)
        last_time += time.perf_counter() - t0  # evaluation time is not training throughput
      if step in milestone_set or step % tc.checkpoint_every == 0 or step == end:
        ckpt.save(step, trainer.state, config)
    if step < end:   # stopped early: SIGTERM reached at least one process
      ckpt.save(step, trainer.state, config)
      logging.warning('%s: stopped at step %d after SIGTERM; run again to resume', tag, step)
  # Every process closes the checkpoints at the same point (Orbax synchronizes the hosts there).
  ckpt.close()
  for w in writers:
    w.flush()
    w.close()
  if step < tc.num_steps:
    logging.info('%s: stopped at step %d of %d; run again to resume', tag, step, tc.num_steps)
  return step


def evaluate_checkpoints(config: ml_collections.ConfigDict, rundir: RunDir, out: RunDir, trainer: Trainer, *,
                         steps: list[int] | None = None, tag: str = 'eval') -> list[int]:
  """Evaluate the checkpoints saved in `rundir` again, without training, writing metrics rows (per member)
  and the figures of the last step into `out`. steps: which saved steps (default all). Returns the steps."""
  ckpt = rundir.checkpoints(log_spaced_milestones(config.train.num_steps, config.train.num_milestones),
                            config.train.keep_milestone_checkpoints)
  saved = ckpt.all_steps()
  if not saved:
    ckpt.close()
    raise ValueError(f'no checkpoints to evaluate in {ckpt.directory}')
  missing = sorted(set(steps or []) - set(saved))
  if missing:
    ckpt.close()
    raise ValueError(f'no checkpoint for steps {missing} in {ckpt.directory}; saved steps: {sorted(saved)}')
  todo = sorted(steps or saved)
  out.makedirs()
  writers = [out.member(m.name).metrics_writer(resume_step=-1, tensorboard=m.solo) for m in trainer.members]
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), trainer.state)
  distributed.barrier('start_eval')
  for step in todo:
    trainer.state = ckpt.restore(step, target, config)
    t0 = time.perf_counter()
    rows = trainer.evaluate(step) or [{} for _ in writers]
    for w, row in zip(writers, rows):
      w.write_scalars(step, row)
    logging.info('%s: evaluated checkpoint %d (%.1f s)', tag, step, time.perf_counter() - t0)
  if out.primary:
    trainer.write_figures(out, todo[-1])
  for w in writers:
    w.close()
  ckpt.close()
  return todo


__all__ = ['Member', 'Trainer', 'Preemption', 'check_processes', 'format_duration', 'train',
           'evaluate_checkpoints']
