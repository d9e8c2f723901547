"""Figures of a sweep: tau against n with the fits, the collapse plots, the phase diagram, curves against the
normalized step. Each function takes `Run`s / table rows and a path, writes one PNG and returns the path.

Grammar runs (paper 2) also get valid@k against tau, one panel per level (`validity_curves`).

Collapses (paper 1, Figs. 2-3): f_mem / f_mem(end) against tau / n; quality against tau W; the losses at fixed
diffusion time against tau / n. One panel per width (several widths) or a single panel, colour = n.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxdiff.analysis.fits import normalization_reference, normalized_step
from jaxdiff.analysis.runs import Run
from jaxdiff.io.figures import pyplot, save_figure


def _colors(values: Sequence[float]):
  plt = pyplot()
  vals = sorted({v for v in values if v is not None})
  cmap = plt.get_cmap('viridis')
  if len(vals) <= 1:
    return {v: cmap(0.2) for v in vals}
  lo, hi = math.log(vals[0]), math.log(vals[-1])
  return {v: cmap(0.9 * (math.log(v) - lo) / (hi - lo)) for v in vals}


def _panels(runs: Sequence[Run]):
  widths = sorted({r.info.get('width') for r in runs}, key=lambda w: (w is None, w or 0))
  return widths, [[r for r in runs if r.info.get('width') == w] for w in widths]


def not_reached(rows: Sequence[Mapping[str, Any]], key: str, width: Any) -> list[tuple[float, float]]:
  """(n, last step) of the runs at `width` that did not reach `key` within their run: tau > last step, a lower
  bound that tau_vs_n draws as an open triangle (a run that never copied still says its tau_mem is later)."""
  return [(float(r['n']), float(r['last_step'])) for r in rows
          if r.get('width') == width and r.get('n') and r.get(key) is None and r.get('last_step')]


def tau_vs_n(rows: Sequence[Mapping[str, Any]], fits: Sequence[Mapping[str, Any]], path: str) -> str:
  """tau_mem (f_mem and loss definitions) and tau_gen against n, log-log, with the fitted power laws (dashed:
  the fit over the runs whose window tau_gen < tau_mem is open, where some are closed); runs that did not reach
  tau_mem are open triangles at their last step (`not_reached`)."""
  plt = pyplot()
  fig, axes = plt.subplots(1, 3, figsize=(13, 4))
  widths = sorted({r.get('width') for r in rows}, key=lambda w: (w is None, w or 0))
  colors = _colors([w for w in widths if w])
  all_n = sorted({float(r['n']) for r in rows if r.get('n')})
  for ax, key in zip(axes, ('tau_mem_fmem', 'tau_mem_loss', 'tau_gen')):
    for w in widths:
      later = not_reached(rows, key, w) if key != 'tau_gen' else []
      if later:
        ax.loglog(*np.array(later).T, '^', mfc='none', color=colors.get(w, 'k'), label=f'W={w}: not by the last step')
      pts = [(r['n'], r[key]) for r in rows if r.get('width') == w and r.get(key) and r.get('n')]
      if not pts:
        continue
      n, tau = np.array(pts, float).T
      ax.loglog(n, tau, 'o', color=colors.get(w, 'k'), label=f'W={w}')
      for f in fits:
        if f['y'] == key and f['x'] == 'n' and f['group'].get('width') == w:
          window = f['runs'] != 'all'   # the fit over the runs with an open window: dashed
          grid = np.geomspace(n.min(), n.max(), 50)
          ax.loglog(grid, f['c'] * grid ** f['n'], '--' if window else '-', color=colors.get(w, 'k'),
                    label=f"alpha={f['n']:.2f} [{f['n_lo']:.2f}, {f['n_hi']:.2f}]"
                    + (f" ({f['runs']})" if window else ''))
    if all_n:   # the swept n as plain ticks (log axes spanning under a decade label every minor tick)
      ax.set_xticks(all_n, [f'{v:g}' for v in all_n])
      ax.xaxis.set_minor_formatter(plt.NullFormatter())
    ax.set_xlabel('n (training-set size)')
    ax.set_ylabel(key)
    ax.set_title({'tau_mem_fmem': 'tau_mem (f_mem leaves 0)', 'tau_mem_loss': 'tau_mem (loss gap opens)',
                  'tau_gen': 'tau_gen (quality plateau)'}[key])
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=7)
  return save_figure(fig, path)


def _collapse(runs: Sequence[Run], path: str, title: str, curves, xlabel: str, ylabel: str,
              logy: bool = False) -> str:
  """curves(run) -> list of (x, y, style) to draw for a run."""
  plt = pyplot()
  widths, groups = _panels(runs)
  fig, axes = plt.subplots(1, len(widths), figsize=(5 * len(widths), 4), squeeze=False)
  colors = _colors([r.info.get('n') for r in runs])
  for ax, w, group in zip(axes[0], widths, groups):
    for r in sorted(group, key=lambda r: r.info.get('n') or 0):
      for i, (x, y, style) in enumerate(curves(r)):
        keep = np.isfinite(y) & (x > 0)
        if keep.any():
          ax.plot(x[keep], y[keep], style, color=colors.get(r.info.get('n'), 'k'),
                  label=f"n={r.info.get('n')}" if i == 0 else None, lw=1.2, ms=3)
    ax.set_xscale('log')
    if logy:
      ax.set_yscale('log')
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f'{title}' + (f' (W={w})' if len(widths) > 1 or w is not None else ''))
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=7)
  return save_figure(fig, path)


def collapse_fmem(runs: Sequence[Run], path: str) -> str:
  """f_mem / f_mem(end) against tau / n (runs whose final f_mem is 0 are left out)."""
  def curves(r):
    t, f = r.curve('f_mem')
    n = r.info.get('n')
    if not t.size or not n or not np.isfinite(f[-1]) or f[-1] <= 0:
      return []
    return [(t / n, f / f[-1], '-o')]
  return _collapse(runs, path, 'f_mem / f_mem(end)', curves, 'tau / n', 'f_mem / f_mem(end)')


def collapse_quality(runs: Sequence[Run], path: str) -> str:
  """The quality metric against tau W (tau_gen ~ 1/W)."""
  def curves(r):
    key, w = r.quality_key, r.info.get('width')
    if not key or not w:
      return []
    t, q = r.curve(key)
    return [(t * w, q, '-o')] if t.size else []
  keys = sorted({r.quality_key for r in runs if r.quality_key})
  return _collapse(runs, path, 'quality', curves, 'tau x W', '/'.join(keys) or 'quality', logy=True)


def collapse_losses(runs: Sequence[Run], path: str) -> str:
  """loss_train_t (solid) and loss_test_t (dashed) against tau / n."""
  def curves(r):
    n = r.info.get('n')
    if not n:
      return []
    out = []
    for key, style in (('loss_train_t', '-'), ('loss_test_t', '--')):
      t, v = r.curve(key)
      if t.size:
        out.append((t / n, v, style))
    return out
  return _collapse(runs, path, 'train (solid) / test (dashed) loss', curves, 'tau / n', 'loss at fixed t',
                   logy=True)


def validity_curves(runs: Sequence[Run], path: str) -> str | None:
  """Grammar runs (the 'validity' evaluator): valid@k against tau, one panel per level k, colour = n (paper 2:
  the levels are learned bottom up). None (no file) when no run has valid_1."""
  levels = sorted({int(k.split('_')[1]) for r in runs for row in r.history for k in row
                   if k.startswith('valid_') and k[6:].isdigit()})
  if not levels:
    return None
  plt = pyplot()
  fig, axes = plt.subplots(1, len(levels), figsize=(4.2 * len(levels), 3.8), squeeze=False)
  colors = _colors([r.info.get('n') for r in runs])
  for ax, k in zip(axes[0], levels):
    for r in sorted(runs, key=lambda r: r.info.get('n') or 0):
      t, v = r.curve(f'valid_{k}')
      if t.size:
        ax.plot(t, v, '-', color=colors.get(r.info.get('n'), 'k'), label=f"n={r.info.get('n')}", lw=1.2)
    ax.set_xscale('log')
    ax.set_xlabel('training step')
    ax.set_ylabel(f'valid@{k}')
    ax.set_title(f'level {k}: valid height-{k} subtrees')
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=7)
  return save_figure(fig, path)


def normalized_curves(runs: Sequence[Run], rows: Sequence[Mapping[str, Any]], path: str) -> str:
  """Loss gap and quality against paper 3's normalized step T (the factor T / tau of each run's row)."""
  plt = pyplot()
  factor = {}
  for r, row in zip(runs, rows):
    for k in ('tau_mem_fmem', 'tau_gen', 'tau_mem_loss'):
      if row.get(k) and row.get(f'T_{k[4:]}'):
        factor[r.name] = row[f'T_{k[4:]}'] / row[k]
        break
    else:
      factor[r.name] = normalized_step(1.0, r.info, normalization_reference([x.info for x in runs]))
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  colors = _colors([r.info.get('n') for r in runs])
  for r in runs:
    c, f = colors.get(r.info.get('n'), 'k'), factor.get(r.name) or 1.0
    t_tr, l_tr = r.curve('loss_train_t')
    t_te, l_te = r.curve('loss_test_t')
    common, i_tr, i_te = np.intersect1d(t_tr, t_te, return_indices=True)
    if common.size:
      axes[0].plot(common * f, l_te[i_te] - l_tr[i_tr], '-', color=c, label=r.name)
    if r.quality_key:
      t, q = r.curve(r.quality_key)
      if t.size:
        axes[1].plot(t * f, q, '-', color=c, label=r.name)
  axes[0].set_ylabel('loss_test_t - loss_train_t')
  axes[1].set_ylabel('quality')
  axes[1].set_yscale('log')
  for ax in axes:
    ax.set_xscale('log')
    ax.set_xlabel('T = tau (N_min/N)(B/B_min)(lr/lr_min)')
    if 0 < len(runs) <= 12 and ax.get_legend_handles_labels()[0]:   # runs without a curve here draw nothing
      ax.legend(fontsize=6)
  return save_figure(fig, path)


def phase_plot(phase: Sequence[Mapping[str, Any]], path: str) -> str:
  """The (n, p) phase diagram: runs that have (x) or have not (o) memorized at tau = k tau_gen, and n*(p)."""
  plt = pyplot()
  multiples = sorted({p['multiple'] for p in phase})
  fig, axes = plt.subplots(1, max(len(multiples), 1), figsize=(4.5 * max(len(multiples), 1), 4), squeeze=False)
  for ax, k in zip(axes[0], multiples):
    rows = sorted((p for p in phase if p['multiple'] == k), key=lambda p: p['p'] or 0)
    for p in rows:
      for n, mem in p['points']:
        if n is None or mem is None:
          continue
        ax.plot(n, p['p'], 'x' if mem else 'o', color='tab:red' if mem else 'tab:green', ms=6)
    star = [(p['n_star'], p['p']) for p in rows if p['n_star'] is not None]
    if star:
      ax.plot(*zip(*star), 'k--s', lw=1, ms=9, mfc='none', label='n*(p): smallest clean n')
      ax.legend(fontsize=7)
    ax.set_xscale('log')
    ax.set_yscale('log')
    ax.set_xlabel('n')
    ax.set_ylabel('p (parameters)')
    ax.set_title(f'tau = {k:g} tau_gen: memorized x, clean o')
  return save_figure(fig, path)


SWEPT = {'n': 'N', 'batch_size': 'B', 'learning_rate': 'lr', 'width': 'W'}


def swept_variables(runs: Sequence[Run]) -> list[str]:
  """The hyperparameters of `SWEPT` that take more than one value among the runs."""
  return [k for k in SWEPT if len({r.info.get(k) for r in runs if r.info.get(k) is not None}) > 1]


def normalized_collapse(runs: Sequence[Run], variable: str, path: str,
                        reference: Mapping[str, float] | None = None) -> str:
  """Paper 3's collapse for one swept variable: f_mem (left) and the loss gap (right) against the normalized
  step T = tau (N_min/N)(B/B_min)(lr/lr_min), colour = the variable's value (paper 3: the curves collapse in N
  and B, not in lr)."""
  plt = pyplot()
  ref = reference or normalization_reference([r.info for r in runs])
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  colors = _colors([r.info.get(variable) for r in runs])
  labelled = set()
  for r in sorted(runs, key=lambda r: (r.info.get(variable) or 0, r.name)):
    value, factor = r.info.get(variable), normalized_step(1.0, r.info, ref)
    c = colors.get(value, 'k')
    label = None if value in labelled else f'{SWEPT[variable]}={value:g}' if value is not None else r.name
    labelled.add(value)
    t, f = r.curve('f_mem')
    if t.size:
      axes[0].plot(t * factor, f, '-o', color=c, ms=3, lw=1.2, label=label)
    t_tr, l_tr = r.curve('loss_train_t')
    t_te, l_te = r.curve('loss_test_t')
    common, i_tr, i_te = np.intersect1d(t_tr, t_te, return_indices=True)
    if common.size:
      axes[1].plot(common * factor, l_te[i_te] - l_tr[i_tr], '-', color=c, lw=1.2, label=label)
  axes[0].set_ylabel('f_mem')
  axes[1].set_ylabel('loss_test_t - loss_train_t')
  for ax in axes:
    ax.set_xscale('log')
    ax.set_xlabel(f"T = tau (N_min/N)(B/B_min)(lr/lr_min); N_min={ref.get('n')}, B_min={ref.get('batch_size')}")
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=7)
  fig.suptitle(f'collapse against the normalized step, swept: {SWEPT[variable]}')
  return save_figure(fig, path)
