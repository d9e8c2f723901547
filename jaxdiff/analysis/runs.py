"""Finding and reading run directories: metrics.jsonl, summary.json, config.json -> `Run` records.

A run directory is any directory holding a `metrics.jsonl` (a U-Net run's workdir, one member of a GMM
ensemble, ...). Its hyperparameters come from summary.json (which training writes at the end: n, width,
batch_size, learning_rate, seed, num_params) and, where missing, from config.json. A run without summary.json
(still running or interrupted) is summarized here from its metrics with `jaxdiff.timescales.summarize`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Sequence
from typing import Any

import ml_collections
import numpy as np

from jaxdiff import experiments, timescales
from jaxdiff.analysis.fits import best_before, memorization_rate, normalization_reference, normalized_step
from jaxdiff.io.rundir import json_safe
from jaxdiff.io.writers import METRICS_FILE, read_metrics

SUMMARY_FILE = 'summary.json'
CONFIG_FILE = 'config.json'
# Quality keys tried, in order, when a run has no summary.json to name its own.
QUALITY_KEYS = ('fd', 'fid', 'kl', 'kid', 'sw')
SKIP_DIRS = ('checkpoints', 'tensorboard', 'analysis')


@dataclasses.dataclass
class Run:
  """One training run: where it is, its hyperparameters, its metric history and its timescales."""
  workdir: str
  name: str
  info: dict[str, Any]          # family, dataset, n, width, num_params, batch_size (effective), learning_rate,
                                # optimizer, seed
  history: list[dict[str, Any]]
  summary: dict[str, Any]       # timescales.summarize output (+ whatever summary.json holds)
  finished: bool                # summary.json was present

  def curve(self, key: str, time_key: str = 'step') -> tuple[np.ndarray, np.ndarray]:
    """(times, values) of metric `key`, sorted by time, NaN for null values."""
    pts = sorted((float(r[time_key]), np.nan if r[key] is None else float(r[key]))
                 for r in self.history if key in r and time_key in r)
    if not pts:
      return np.zeros(0), np.zeros(0)
    t, v = zip(*pts)
    return np.asarray(t), np.asarray(v)

  @property
  def quality_key(self) -> str | None:
    return self.summary.get('quality_key')


def find_run_dirs(paths: Iterable[str]) -> list[str]:
  """Every directory at or below `paths` holding metrics.jsonl (sorted; checkpoints/ etc. skipped)."""
  found = []
  for path in paths:
    if not os.path.isdir(path):
      raise ValueError(f'not a directory: {path!r}')
    for root, dirs, files in os.walk(path):
      dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
      if METRICS_FILE in files:
        found.append(os.path.normpath(root))
  return sorted(set(found))


def _read_json(path: str) -> dict[str, Any] | None:
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _get(d: dict | None, dotted: str, default=None):
  for part in dotted.split('.'):
    if not isinstance(d, dict) or part not in d:
      return default
    d = d[part]
  return d


def _declared_info(family: str, config: dict[str, Any] | None) -> dict[str, Any]:
  """What the family's experiment would record in summary.json for this config (`summary_info`), or {} when
  the family or the config is unknown (a run of another version, a partial config.json)."""
  if not config:
    return {}
  try:
    experiment = experiments.get(family)
    return dict(experiment.summary_info(ml_collections.ConfigDict(config)))
  except (ValueError, AttributeError, KeyError, TypeError, IndexError):
    return {}


def run_info(config: dict[str, Any] | None, summary: dict[str, Any] | None) -> dict[str, Any]:
  """Hyperparameters of a run: summary.json first, then what its experiment reads from config.json."""
  s = summary or {}
  family = s.get('family') or _get(config, 'family', 'ddpm')
  declared = _declared_info(family, config)
  get = lambda k: s.get(k, declared.get(k))  # noqa: E731
  n, batch = get('n'), get('batch_size')
  info = {
      'family': family,
      'dataset': get('dataset'),
      'n': n,
      'width': get('width'),
      'num_params': s.get('num_params'),
      # The effective batch is min(n, batch_size) (config.effective_batch_size).
      'batch_size': min(n, batch) if n is not None and batch is not None else batch,
      'batch_config': batch,   # train.batch_size as configured (sweeps over n group by it)
      'learning_rate': get('learning_rate'),
      'optimizer': get('optimizer'),
      'seed': get('seed'),
  }
  if 'conditional' in s or 'conditional' in declared:
    info['conditional'] = get('conditional')
  return info


def _guess_quality_key(history: Sequence[dict[str, Any]]) -> str | None:
  keys = set().union(*(r.keys() for r in history)) if history else set()
  return next((k for k in QUALITY_KEYS if k in keys), None)


# `timescales.summarize` keyword -> the summary.json key that records the value a run used.
_RECORDED_SETTINGS = {'time_key': 'time_key', 'rel_tol': 'quality_rel_tol', 'quality_reference': 'quality_reference',
                      'lower_is_better': 'quality_lower_is_better', 'f_mem_threshold': 'f_mem_threshold',
                      'loss_gap_threshold': 'loss_gap_threshold', 'loss_gap_relative': 'loss_gap_relative'}


def load_run(workdir: str, name: str | None = None, *, quality_key: str | None = None,
             **summarize_kw) -> Run:
  """Read one run directory. quality_key / summarize_kw (`timescales.summarize`'s keywords): recompute the
  timescales with these settings, the others as summary.json recorded them (otherwise summary.json is used
  as written, or computed with the defaults when absent)."""
  history = read_metrics(workdir)
  summary = _read_json(os.path.join(workdir, SUMMARY_FILE))
  config = _read_json(os.path.join(workdir, CONFIG_FILE))
  finished = summary is not None
  if summary is None or quality_key is not None or summarize_kw:
    qk = quality_key or (summary or {}).get('quality_key') or _guess_quality_key(history)
    kw = {arg: summary[key] for arg, key in _RECORDED_SETTINGS.items() if summary and summary.get(key) is not None}
    if quality_key is not None and quality_key != (summary or {}).get('quality_key'):
      kw.pop('lower_is_better', None)   # recorded for another metric
    fresh = timescales.summarize(history, quality_key=qk, **{**kw, **summarize_kw})
    summary = {**(summary or {}), **fresh}
  return Run(workdir=workdir, name=name or os.path.basename(os.path.normpath(workdir)),
             info=run_info(config, summary), history=history, summary=summary, finished=finished)


def load_runs(paths: Iterable[str], **kw) -> list[Run]:
  """All runs at or below `paths`; names are paths relative to their common parent."""
  dirs = find_run_dirs(paths)
  if not dirs:
    return []
  base = os.path.commonpath(dirs) if len(dirs) > 1 else os.path.dirname(dirs[0])
  runs = [load_run(d, os.path.relpath(d, base) if base else d, **kw) for d in dirs]

  def order(r):   # family, model size, then n and seed: the order of the tables
    i = r.info
    return (str(i.get('family')), str(i.get('dataset')), i.get('width') or 0, i.get('n') or 0,
            i.get('seed') or 0, r.name)
  return sorted(runs, key=order)


def run_table(runs: Sequence[Run], *, reference: dict[str, float] | None = None) -> list[dict[str, Any]]:
  """One row per run: hyperparameters, tau_gen, both tau_mem, final f_mem, best quality, and the normalized
  steps T of paper 3 (`normalized_step`) at tau_gen and tau_mem."""
  ref = reference or normalization_reference([r.info for r in runs])
  rows = []
  for r in runs:
    s = r.summary
    final = s.get('final') or {}
    row = {'run': r.name, **r.info,
           'tau_gen': json_safe(s.get('tau_gen')), 'tau_mem_fmem': json_safe(s.get('tau_mem_fmem')),
           'tau_mem_loss': json_safe(s.get('tau_mem_loss')), 'quality_key': s.get('quality_key'),
           'quality_best': json_safe(s.get('quality_best')), 'f_mem_final': json_safe(final.get('f_mem')),
           'last_step': max((float(h['step']) for h in r.history if 'step' in h), default=None),
           'finished': r.finished}
    for k in ('tau_gen', 'tau_mem_fmem', 'tau_mem_loss'):
      row[f'T_{k[4:]}'] = normalized_step(row[k], r.info, ref)
    row['inv_batch_size'] = 1.0 / row['batch_size'] if row.get('batch_size') else None
    # Paper 3: the memorization rate after tau_mem and the best fidelity before it (quality key and SW).
    tau_mem = row['tau_mem_fmem'] if row['tau_mem_fmem'] is not None else row['tau_mem_loss']
    row['mem_rate'] = memorization_rate(*r.curve('f_mem'), row['tau_mem_fmem'])
    if r.quality_key:
      row['best_quality_pre_mem'] = best_before(*r.curve(r.quality_key), tau_mem)
    sw_key = next((k for k in sorted({k for h in r.history for k in h}) if k.startswith('sw_')
                   and '_train_' not in k and not k.endswith('_set_std')), None)
    if sw_key:
      row['best_sw_pre_mem'] = best_before(*r.curve(sw_key), tau_mem)
    rows.append(row)
  return rows
