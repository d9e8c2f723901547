"""The one owner of a run directory's layout. Everything a run writes goes through a `RunDir`.

    <workdir>/
      config.json          the resolved config
      metrics.jsonl        one JSON row per log step and per evaluation milestone (jaxdiff.io.writers)
      summary.json         tau_gen, tau_mem and what the analysis groups runs by; written when a run finishes
      checkpoints/<step>/  Orbax checkpoints (jaxdiff.io.checkpoints)
      tensorboard/         the same scalars for TensorBoard, when TensorFlow is installed
      *.png                figures
      <member>/            an ensemble member: the same files (its solo config, metrics, summary, figures)

A workdir may be local or `gs://bucket/run` (jaxdiff.io.paths: whole-file writes, atomic on local disks).
Only the primary process (process 0) writes files; every process may read.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxdiff.io import paths
from jaxdiff.io.checkpoints import Checkpoints
from jaxdiff.io.writers import METRICS_FILE, MetricWriter, read_metrics

CONFIG_FILE = 'config.json'
SUMMARY_FILE = 'summary.json'


def json_safe(obj: Any) -> Any:
  """A copy that is standard JSON: NaN and +-inf become None, NumPy and JAX scalars and arrays become Python
  numbers and lists, tuples become lists."""
  if isinstance(obj, dict):
    return {str(k): json_safe(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [json_safe(v) for v in obj]
  if isinstance(obj, (np.ndarray, jax.Array)) and np.ndim(obj):
    return json_safe(np.asarray(obj).tolist())
  if isinstance(obj, (np.generic, jax.Array)):
    obj = np.asarray(obj).item()
  if isinstance(obj, float) and not math.isfinite(obj):
    return None
  return obj


class RunDir:
  """A run's directory (local or gs://) and the files in it. primary: whether this process writes (default:
  process 0)."""

  def __init__(self, root: str | os.PathLike, *, primary: bool | None = None):
    self.root = os.fspath(root)
    self.primary = jax.process_index() == 0 if primary is None else primary

  def __repr__(self) -> str:
    return f'RunDir({self.root!r})'

  def file(self, name: str) -> str:
    """The path of a file (or subdirectory) of the run."""
    return os.path.join(self.root, name)

  def member(self, name: str) -> RunDir:
    """The directory of ensemble member `name` ('' : this directory)."""
    return RunDir(self.file(name), primary=self.primary) if name else self

  def makedirs(self) -> RunDir:
    if self.primary:
      paths.makedirs(self.root)
    return self

  def exists(self, name: str) -> bool:
    return paths.path(self.file(name)).exists()

  # ---------------------------------------------------------------- JSON files

  def write_json(self, name: str, obj: Any) -> str:
    path = self.file(name)
    if self.primary:
      paths.makedirs(self.root)
      paths.write_text(path, json.dumps(json_safe(obj), indent=2))
    return path

  def read_json(self, name: str) -> Any | None:
    text = paths.read_text(self.file(name))
    return None if text is None else json.loads(text)

  def write_config(self, config: ml_collections.ConfigDict) -> str:
    return self.write_json(CONFIG_FILE, config.to_dict())

  def write_summary(self, summary: dict[str, Any]) -> str:
    return self.write_json(SUMMARY_FILE, summary)

  def read_summary(self) -> dict[str, Any] | None:
    return self.read_json(SUMMARY_FILE)

  @property
  def finished(self) -> bool:
    """A run writes summary.json when it completes (a sweep skips such points)."""
    return self.exists(SUMMARY_FILE)

  # ---------------------------------------------------------------- metrics, checkpoints, figures

  def metrics_writer(self, *, resume_step: int = 0, tensorboard: bool = True) -> MetricWriter:
    return MetricWriter(self.root, resume_step=resume_step, tensorboard=tensorboard, is_primary=self.primary)

  def read_metrics(self) -> list[dict[str, Any]]:
    return read_metrics(self.root)

  def checkpoints(self, milestones: Sequence[int] = (), keep_milestones: bool = True) -> Checkpoints:
    """The Orbax checkpoints in <root>/checkpoints (every process opens them: saving is collective)."""
    return Checkpoints(self.root, milestones, keep_milestones)


__all__ = ['RunDir', 'json_safe', 'CONFIG_FILE', 'SUMMARY_FILE', 'METRICS_FILE']
