"""`report`: everything the analysis produces for a set of runs, written to one directory."""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from jaxdiff.analysis import fits as fits_lib
from jaxdiff.analysis import plots
from jaxdiff.analysis.runs import load_runs, run_table
from jaxdiff.io.rundir import json_safe

RUN_COLUMNS = ('run', 'family', 'n', 'width', 'num_params', 'batch_size', 'learning_rate', 'optimizer', 'seed',
               'tau_gen', 'tau_mem_fmem', 'tau_mem_loss', 'T_gen', 'T_mem_fmem', 'T_mem_loss', 'quality_key',
               'quality_best', 'best_quality_pre_mem', 'best_sw_pre_mem', 'mem_rate', 'f_mem_final', 'last_step',
               'finished')


def _fmt(v: Any) -> str:
  if v is None:
    return ''
  if isinstance(v, bool):
    return str(v)
  if isinstance(v, float):
    if not math.isfinite(v):
      return str(v)
    return f'{v:.4g}'
  if isinstance(v, dict):
    return ', '.join(f'{k}={_fmt(x)}' for k, x in v.items() if x is not None)
  return str(v)


def write_csv(rows: Sequence[Mapping[str, Any]], path: str, columns: Sequence[str] | None = None) -> str:
  columns = list(columns or (sorted(set().union(*(r.keys() for r in rows))) if rows else []))
  with open(path, 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(columns)
    for r in rows:
      w.writerow(['' if r.get(c) is None else (_fmt(r[c]) if isinstance(r.get(c), dict) else r[c])
                  for c in columns])
  return path


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
  lines = ['| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
  for r in rows:
    lines.append('| ' + ' | '.join(_fmt(r.get(c)) for c in columns) + ' |')
  return '\n'.join(lines)


def write_markdown(text: str, path: str) -> str:
  with open(path, 'w') as f:
    f.write(text + '\n')
  return path


LOCAL_COLUMNS = ('y', 'group', 'n_a', 'n_b', 'tau_a', 'tau_b', 'exponent', 'reached_a', 'runs_a', 'reached_b',
                 'runs_b')


def _fit_rows(fits: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
  """One row per (fit, exponent): y, x, group, runs, exponent, bootstrap interval, t interval, c, points."""
  out = []
  for f in fits:
    for x in f['x'].split('+'):
      out.append({'y': f['y'], 'regressor': x, 'fit': f['x'], 'group': _fmt(f['group']), 'runs': f['runs'],
                  'exponent': f[x],
                  'lo': f[f'{x}_lo'], 'hi': f[f'{x}_hi'], 'lo_t': f.get(f'{x}_lo_t'), 'hi_t': f.get(f'{x}_hi_t'),
                  'c': f['c'], 'num_points': f['num_points'], 'residual_std': f['residual_std']})
  return out


def report(workdirs: Sequence[str], out: str, *, quality_key: str | None = None, num_bootstrap: int = 2000,
           level: float = 0.95, figures: bool = True, reference: Mapping[str, float] | None = None,
           seed: int = 0, tau_gen_rel_tol: float | None = None,
           tau_gen_reference: str | None = None) -> dict[str, Any]:
  """Read the runs at or below `workdirs` and write the tables and figures into `out`.

  quality_key: recompute tau_gen from this metric for every run; tau_gen_rel_tol, tau_gen_reference: ... with
  this tolerance and reference (`timescales.tau_gen`; None: as each run recorded them). reference: {'n', 'batch_size',
  'learning_rate'} of the normalized step (default: the smallest values among the runs).
  Returns {'runs': table rows, 'fits': fit dicts, 'local_exponents': `fits.local_exponents`' rows (group as text),
  'phase': phase rows, 'files': {name: path},
  'markdown': the Markdown report}.
  """
  recompute = {k: v for k, v in (('rel_tol', tau_gen_rel_tol), ('quality_reference', tau_gen_reference))
               if v is not None}
  runs = load_runs(workdirs, quality_key=quality_key, **recompute)
  if not runs:
    raise ValueError(f'no run directories (with metrics.jsonl) at or below {list(workdirs)}')
  os.makedirs(out, exist_ok=True)
  ref = dict(reference) if reference else fits_lib.normalization_reference([r.info for r in runs])
  rows = run_table(runs, reference=ref)
  fits = fits_lib.scaling_fits(rows, num_bootstrap=num_bootstrap, level=level, seed=seed)
  phase = fits_lib.phase_diagram(rows)
  local = [{**r, 'group': _fmt(r['group'])} for r in fits_lib.local_exponents(rows)]
  fit_rows = _fit_rows(fits)
  phase_rows = [{k: v for k, v in p.items() if k != 'points'} for p in phase]
  files = {
      'runs.csv': write_csv(rows, os.path.join(out, 'runs.csv'), RUN_COLUMNS),
      'fits.csv': write_csv(fit_rows, os.path.join(out, 'fits.csv'),
                            ('y', 'regressor', 'fit', 'group', 'runs', 'exponent', 'lo', 'hi', 'lo_t', 'hi_t',
                             'c', 'num_points', 'residual_std')),
      'local_exponents.csv': write_csv(local, os.path.join(out, 'local_exponents.csv'), LOCAL_COLUMNS),
      'phase.csv': write_csv(phase_rows, os.path.join(out, 'phase.csv'),
                             ('p', 'width', 'multiple', 'tau_gen', 'tau', 'n_star', 'num_clean')),
  }
  md = [f'# Analysis of {len(runs)} runs', '',
        f'Normalized step T = tau (N_min/N)(B/B_min)(lr/lr_min) with N_min={_fmt(ref.get("n"))}, '
        f'B_min={_fmt(ref.get("batch_size"))}, lr_min={_fmt(ref.get("learning_rate"))}.', '',
        '## Runs', '', markdown_table(rows, RUN_COLUMNS), '',
        f'## Fits (log y = log c + sum exponent log x; {level:.0%} bootstrap interval [lo, hi], '
        'Student-t [lo_t, hi_t] for one regressor)', '',
        markdown_table(fit_rows, ('y', 'regressor', 'group', 'runs', 'exponent', 'lo', 'hi', 'lo_t', 'hi_t', 'c',
                                  'num_points')) if fit_rows else '(not enough runs for a fit)', '',
        '## Local exponents of tau_mem (between consecutive n; ~1 where tau_mem ~ n holds, rising towards the '
        "model's capacity n*)", '',
        markdown_table(local, LOCAL_COLUMNS) if local else '(fewer than two n with tau_mem)', '',
        '## Phase diagram (smallest n not memorized at tau = k tau_gen)', '',
        markdown_table(phase_rows, ('p', 'width', 'multiple', 'tau', 'n_star', 'num_clean')) if phase_rows
        else '(no run has tau_gen)']
  markdown = '\n'.join(md)
  files['runs.md'] = write_markdown(markdown, os.path.join(out, 'runs.md'))
  if figures:
    files['tau_vs_n.png'] = plots.tau_vs_n(rows, fits, os.path.join(out, 'tau_vs_n.png'))
    files['collapse_fmem.png'] = plots.collapse_fmem(runs, os.path.join(out, 'collapse_fmem.png'))
    files['collapse_quality.png'] = plots.collapse_quality(runs, os.path.join(out, 'collapse_quality.png'))
    files['collapse_losses.png'] = plots.collapse_losses(runs, os.path.join(out, 'collapse_losses.png'))
    files['normalized.png'] = plots.normalized_curves(runs, rows, os.path.join(out, 'normalized.png'))
    for variable in plots.swept_variables(runs):   # paper 3: one collapse per swept variable
      name = f'collapse_T_{variable}.png'
      files[name] = plots.normalized_collapse(runs, variable, os.path.join(out, name), ref)
    validity = plots.validity_curves(runs, os.path.join(out, 'validity.png'))
    if validity:
      files['validity.png'] = validity
    if phase:
      files['phase.png'] = plots.phase_plot(phase, os.path.join(out, 'phase.png'))
  with open(os.path.join(out, 'summary.json'), 'w') as f:
    json.dump(json_safe({'reference': ref, 'runs': rows, 'fits': fits, 'local_exponents': local, 'phase': phase}),
              f, indent=1)
  files['summary.json'] = os.path.join(out, 'summary.json')
  return {'runs': rows, 'fits': fits, 'local_exponents': local, 'phase': phase, 'files': files,
          'markdown': markdown}
