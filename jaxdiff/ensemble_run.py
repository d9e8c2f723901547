"""The training loop of vectorized ensembles, shared by every ensemble family (Gaussian-mixture MLPs,
small U-Nets): checkpoints of the whole ensemble, one metrics directory per member, evaluation at
log-spaced milestones, SIGTERM handling, and the fit of tau_mem against n over the members.

A family plugs in a trainer object with:
- `members`: a list of objects with `name` (the member's subdirectory), `n` and `seed`;
- `state`: an `ensemble.EnsembleState` (checkpointed and restored as a whole);
- `train(num_steps, reset)`: num_steps more steps of every member (reset: zero the loss sums first);
- `evaluate(step) -> list[dict]`: one metrics row per member;
- `member_config(member)`: the solo config that trains that member alone (written to its directory);
- optionally `write_figures(workdir, step)`: called once after the last evaluation.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from jaxdiff.writers import MetricWriter


@dataclasses.dataclass(frozen=True)
class Member:
  """One member of an ensemble: its training-set size and seed; its files go to <workdir>/<name>."""
  n: int
  seed: int

  @property
  def name(self) -> str:
    return f'n{self.n}_seed{self.seed}'


def json_dump(obj: Any, path: str) -> None:
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=2, default=list)
  os.replace(tmp, path)


def train_members(config: ml_collections.ConfigDict, workdir: str, trainer, *, stop_at_step: int | None = None,
                  tag: str = 'ensemble') -> int:
  """Train `trainer`'s members to `train.num_steps` (or stop_at_step), resuming from `workdir`'s latest
  checkpoint. Returns the step reached (< num_steps when stopped early: run again to resume)."""
  from jaxdiff.checkpoint import Checkpoints  # pylint: disable=g-import-not-at-top
  from jaxdiff.train import Preemption, log_spaced_milestones  # pylint: disable=g-import-not-at-top
  tc = config.train
  os.makedirs(workdir, exist_ok=True)
  json_dump(config.to_dict(), os.path.join(workdir, 'config.json'))
  milestones = log_spaced_milestones(tc.num_steps, tc.num_milestones)
  ckpt = Checkpoints(workdir, milestones, keep_milestones=False)
  start = ckpt.latest_step()
  if start is not None:
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), trainer.state)
    trainer.state = ckpt.restore(start, target, config)
    logging.info('%s: resuming from step %d', tag, start)
  step = int(trainer.state.step)
  writers = []
  for m in trainer.members:
    mdir = os.path.join(workdir, m.name)
    os.makedirs(mdir, exist_ok=True)
    json_dump(trainer.member_config(m).to_dict(), os.path.join(mdir, 'config.json'))
    writers.append(MetricWriter(mdir, resume_step=step, tensorboard=False))

  milestone_set = set(int(s) for s in milestones)
  reset = step % tc.log_every == 0   # a checkpoint at a log step holds the sums of the row already written
  last_time, last_step, t_start, step_start = time.perf_counter(), step, time.perf_counter(), step
  end = tc.num_steps if stop_at_step is None else min(stop_at_step, tc.num_steps)
  with Preemption() as preemption:
    while step < end and not preemption.requested:
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
        losses = np.asarray(jax.device_get(trainer.state.loss_sum)) / max(int(trainer.state.loss_count), 1)
        now = time.perf_counter()
        rate = (step - last_step) / max(now - last_time, 1e-9)
        for w, loss in zip(writers, losses):
          w.write_scalars(step, {'train_loss': float(loss), 'steps_per_sec': rate})
        overall = (step - step_start) / max(now - t_start, 1e-9)
        logging.info('%s: step %d/%d (%.0f%%)  loss %s  %.2f steps/s (all %d members)  ETA %.0fs', tag, step,
                     tc.num_steps, 100 * step / tc.num_steps, np.array2string(losses, precision=4), rate,
                     len(writers), (tc.num_steps - step) / max(overall, 1e-9))
        last_time, last_step, reset = now, step, True
      if step in milestone_set:
        # Before the checkpoint: a run stopped in between redoes this evaluation when it resumes.
        t0 = time.perf_counter()
        for w, row in zip(writers, trainer.evaluate(step)):
          w.write_scalars(step, row)
        logging.info('%s: evaluated %d members at step %d (%.1fs)', tag, len(writers), step,
                     time.perf_counter() - t0)
        if step == tc.num_steps and hasattr(trainer, 'write_figures'):
          trainer.write_figures(workdir, step)
        last_time = time.perf_counter()  # evaluation time is not training throughput
      if step in milestone_set or step % tc.checkpoint_every == 0 or step == end:
        ckpt.save(step, trainer.state, config)
    if step < end:
      ckpt.save(step, trainer.state, config)
      logging.warning('%s: stopped at step %d after SIGTERM; run again to resume', tag, step)
  ckpt.close()
  for w in writers:
    w.close()
  if step < tc.num_steps:
    logging.info('%s: stopped at step %d of %d; run again to resume', tag, step, tc.num_steps)
  return step


def fit_summary(family: str, config: ml_collections.ConfigDict, per_member, quality_key: str | None,
                tag: str = 'ensemble') -> dict[str, Any]:
  """The members' timescales and the fits tau_mem = c n^alpha over them (f_mem and loss-gap definitions,
  bootstrap interval over the members; None where too few members memorized)."""
  from jaxdiff.analysis.fits import fit_scaling  # pylint: disable=g-import-not-at-top
  rows = [{'member': m.name, 'n': m.n, 'seed': m.seed, 'tau_gen': s['tau_gen'],
           'tau_mem_fmem': s['tau_mem_fmem'], 'tau_mem_loss': s['tau_mem_loss'],
           'f_mem_final': s['final'].get('f_mem')} for m, s in per_member]
  summary: dict[str, Any] = {'family': family, 'members': rows, 'quality_key': quality_key,
                             'f_mem_threshold': config.eval.f_mem_threshold,
                             'loss_gap_threshold': config.eval.loss_gap_threshold,
                             'loss_gap_relative': config.eval.loss_gap_relative}
  for which in ('tau_mem_fmem', 'tau_mem_loss'):
    key = 'tau_mem_fit' if which == 'tau_mem_fmem' else 'tau_mem_loss_fit'
    try:
      f = fit_scaling({'n': [r['n'] for r in rows]}, [r[which] for r in rows], t_interval=False)
      summary[key] = {'c': f['c'], 'alpha': f['n'], 'alpha_lo': f['n_lo'], 'alpha_hi': f['n_hi'],
                      'num_points': f['num_points']}
    except ValueError as e:   # too few members that memorized
      summary[key] = None
      logging.info('%s: no fit of %s against n (%s)', tag, which, e)
  return summary


__all__ = ['Member', 'train_members', 'fit_summary', 'json_dump']
