"""A memorization monitor and early-stopping rule for training loops jaxdiff does not run.

    monitor = MemorizationMonitor(train_images, workdir='runs/my_model')
    for step in my_milestones:
      ...                                               # the user's own training, any framework
      monitor.update(step, samples, losses={'train': l_train, 'test': l_test})
      if monitor.should_stop():
        break                                           # monitor.last_safe_step: the checkpoint to keep

At each `update` the samples (numpy or JAX arrays [M, ...], any pixel scale) go through the exact ratio test
of paper 1 against the training images (jaxdiff.metrics.memorization: f_mem with its bootstrap interval), and
the optional losses at a fixed diffusion time give the gap L_test - L_train. The history is written as
jaxdiff runs write it (`metrics.jsonl`, `summary.json` with tau_mem through jaxdiff.timescales), so
`python -m jaxdiff.analysis` reads it beside jaxdiff's own runs.

The stopping rule: stop at the first milestone where f_mem's lower bound exceeds `f_mem_threshold` (memorization
is certain at the bootstrap level), or where the loss gap exceeds `loss_gap_threshold` (relative to L_test by
default, as jaxdiff's summaries); `last_safe_step` is the milestone before, the last one where neither held.

`predict_tau_mem(pilots, n)`: from pilot runs at smaller training-set sizes (their n and measured tau_mem), the
power law tau_mem = c n^alpha (paper 1: alpha ~ 1) fitted with jaxdiff.timescales.fit_power_law, evaluated at
the user's n with the confidence interval of the fitted line there.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff import timescales
from jaxdiff.io.rundir import RunDir
from jaxdiff.metrics import memorization


class MemorizationMonitor:
  """Tracks f_mem and the train/test loss gap of a model at the user's milestones (see the module docstring).

  Args:
    train_images: [N, ...] the model's training images (N >= 2).
    workdir: where to write metrics.jsonl and summary.json (None: keep the history in memory only).
    k: memorized when d1/d2 < k.
    f_mem_threshold, loss_gap_threshold, loss_gap_relative: the stopping rule (jaxdiff's defaults).
    num_resamples: bootstrap resamples of the f_mem interval; seed: its key.
  """

  def __init__(self, train_images, *, workdir: str | None = None, k: float = 1 / 3, f_mem_threshold: float = 0.0,
               loss_gap_threshold: float = 0.1, loss_gap_relative: bool = True, num_resamples: int = 1000,
               seed: int = 0):
    train = np.asarray(train_images, np.float32)
    if train.ndim < 2 or train.shape[0] < 2:
      raise ValueError(f'train_images must be [N, ...] with N >= 2 images, got shape {train.shape}')
    if not 0 < k < 1:
      raise ValueError(f'k must be in (0, 1), got {k}')
    self.train = jnp.asarray(train)
    self.k, self.num_resamples, self.seed = k, num_resamples, seed
    self.f_mem_threshold, self.loss_gap_threshold = f_mem_threshold, loss_gap_threshold
    self.loss_gap_relative = loss_gap_relative
    self.history: list[dict[str, Any]] = []
    self.rundir = RunDir(workdir, primary=jax.process_index() == 0).makedirs() if workdir else None
    self._writer = self.rundir.metrics_writer(resume_step=-1, tensorboard=False) if self.rundir else None
    self.stop_step: int | None = None     # the first milestone where the rule fired
    self.last_safe_step: int | None = None

  def update(self, step: int, samples, losses: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Record one milestone: f_mem of `samples` [M, ...] (same per-image shape as the training images) and, if
    given, losses {'train': L_train, 'test': L_test} at a fixed diffusion time. Returns the metrics row."""
    step = int(step)
    if self.history and step <= self.history[-1]['step']:
      raise ValueError(f'milestones must increase: step {step} after {self.history[-1]["step"]}')
    x = np.asarray(samples, np.float32)
    if x.shape[1:] != tuple(self.train.shape[1:]):
      raise ValueError(f'samples have per-image shape {x.shape[1:]}, the training images {self.train.shape[1:]}')
    key = jax.random.fold_in(jax.random.key(self.seed), step)
    mem = memorization.memorization_metrics(jnp.asarray(x), self.train, key, k=self.k,
                                            num_resamples=self.num_resamples)
    row: dict[str, Any] = {'step': step, **{name: float(mem[name]) for name in ('f_mem', 'f_mem_lo', 'f_mem_hi')}}
    if losses is not None:
      row['loss_train_t'], row['loss_test_t'] = float(losses['train']), float(losses['test'])
      row['loss_gap_t'] = row['loss_test_t'] - row['loss_train_t']
    self.history.append(row)
    if self._writer is not None:
      self._writer.write_scalars(step, {name: v for name, v in row.items() if name != 'step'})
    if self.stop_step is None and self._memorizing(row):
      self.stop_step = step
    if self.stop_step is None:
      self.last_safe_step = step
    if self.rundir is not None:
      self.rundir.write_summary(self.summary())
    return row

  def _memorizing(self, row: Mapping[str, Any]) -> bool:
    if row['f_mem_lo'] > self.f_mem_threshold:
      return True
    if 'loss_gap_t' in row:
      gap = row['loss_gap_t']
      if self.loss_gap_relative:
        gap = gap / row['loss_test_t'] if row['loss_test_t'] else math.nan
      return bool(gap > self.loss_gap_threshold)
    return False

  def should_stop(self) -> bool:
    """True once a milestone met the rule (f_mem's lower bound or the loss gap above its threshold)."""
    return self.stop_step is not None

  def summary(self) -> dict[str, Any]:
    """tau_mem (both definitions, interpolated between milestones as for jaxdiff runs), the rule's decision."""
    cfg = _EvalThresholds(self.f_mem_threshold, self.loss_gap_threshold, self.loss_gap_relative)
    s = timescales.run_summary(self.history, cfg, None, stop_step=self.stop_step, last_safe_step=self.last_safe_step,
                               k=self.k, num_train=int(self.train.shape[0]))
    return s


class _EvalThresholds:
  """The thresholds `timescales.run_summary` reads from a config's eval section."""

  def __init__(self, f_mem_threshold: float, loss_gap_threshold: float, loss_gap_relative: bool):
    self.f_mem_threshold, self.loss_gap_threshold = f_mem_threshold, loss_gap_threshold
    self.loss_gap_relative = loss_gap_relative
    self.tau_gen_rel_tol = timescales.QUALITY_REL_TOL
    self.tau_gen_reference = 'best'


def predict_tau_mem(pilots: Sequence[tuple[float, float]], n: float, *, level: float = 0.95) -> dict[str, Any]:
  """tau_mem at training-set size n from pilot runs [(n_i, tau_mem_i), ...] (>= 2 distinct n; None or
  non-positive tau_mem dropped): the least-squares fit log tau = log c + alpha log n
  (`timescales.fit_power_law`), its value at n, and the Student-t confidence interval of the fitted line at
  n at `level` (infinite with 2 pilots: a line through 2 points has no error estimate)."""
  fit = timescales.fit_power_law([p[0] for p in pilots], [p[1] for p in pilots], level=level, at=n)
  return {'n': float(n), 'tau_mem': fit['tau_at'], 'tau_mem_lo': fit['tau_at_lo'], 'tau_mem_hi': fit['tau_at_hi'],
          'alpha': fit['alpha'], 'alpha_lo': fit['alpha_lo'], 'alpha_hi': fit['alpha_hi'],
          'num_pilots': fit['num_points']}


__all__ = ['MemorizationMonitor', 'predict_tau_mem']
