"""Metric writers: `<workdir>/metrics.jsonl` always, TensorBoard (clu) when TensorFlow is installed.

TensorFlow is optional (Colab TPU runtimes and GPU boxes may lack it): `clu.metric_writers` imports it,
so it is imported lazily here and only when `tensorflow` can be found.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxdiff.io import paths

METRICS_FILE = 'metrics.jsonl'


def tensorflow_available() -> bool:
  return importlib.util.find_spec('tensorflow') is not None


def hide_accelerators_from_tensorflow() -> None:
  """If TensorFlow is installed, keep it off the GPUs/TPUs so it never takes accelerator memory."""
  if not tensorflow_available():
    return
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], 'GPU')
  tf.config.set_visible_devices([], 'TPU')


def _to_builtin(value: Any) -> Any:
  value = np.asarray(value)
  if value.ndim == 0:
    v = value.item()
    if isinstance(v, float) and not math.isfinite(v):
      return None if math.isnan(v) else (math.inf if v > 0 else -math.inf)
    return v
  return value.tolist()


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """All rows of `<workdir>/metrics.jsonl` (skipping a torn last line from an interrupted write)."""
  path = os.path.join(workdir, METRICS_FILE)
  rows = []
  text = paths.read_text(path)
  for line in (text or '').splitlines():
    line = line.strip()
    if not line:
      continue
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError:
      logging.warning('skipping an unreadable line in %s', path)
  return rows


class MetricWriter:
  """Appends scalar rows to metrics.jsonl and mirrors them to clu writers (TensorBoard) if available.

  `resume_step`: rows with step > resume_step (logged after the checkpoint a resumed run restarts from)
  are dropped, so a resumed run's history equals an uninterrupted one. On a local disk a row is appended;
  on an object store (gs://, no append) the whole file is rewritten with every row.
  """

  def __init__(self, workdir: str, *, resume_step: int = 0, tensorboard: bool = True,
               is_primary: bool = True):
    self.workdir = workdir
    self.path = os.path.join(workdir, METRICS_FILE)
    self.is_primary = is_primary
    self._clu = None
    if not is_primary:
      return
    paths.makedirs(workdir)
    rows = [r for r in read_metrics(workdir) if r.get('step', 0) <= resume_step]
    self._lines = [json.dumps(r) + '\n' for r in rows]
    paths.write_text(self.path, ''.join(self._lines))
    if tensorboard and tensorflow_available():
      from clu import metric_writers  # pylint: disable=g-import-not-at-top
      self._clu = metric_writers.SummaryWriter(os.path.join(workdir, 'tensorboard'))

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    if not self.is_primary:
      return
    row = {'step': int(step)}
    row.update({k: _to_builtin(v) for k, v in scalars.items()})
    line = json.dumps(row) + '\n'
    self._lines.append(line)
    if paths.is_local(self.path):
      with open(self.path, 'a') as f:
        f.write(line)
    else:
      paths.write_text(self.path, ''.join(self._lines))
    if self._clu is not None:
      self._clu.write_scalars(int(step), {k: v for k, v in row.items()
                                          if k != 'step' and isinstance(v, (int, float))})

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    if self.is_primary and self._clu is not None:
      self._clu.write_images(int(step), images)

  def flush(self) -> None:
    if self._clu is not None:
      self._clu.flush()

  def close(self) -> None:
    if self._clu is not None:
      self._clu.close()
      self._clu = None
