"""tau_gen and tau_mem from a run's metric history (SPEC "Definitions"; paper 1, Figs. 2-3).

Milestones are log-spaced in training time, so a crossing between two milestones is interpolated linearly
in log(time). These are host-side functions of small NumPy arrays (one value per milestone); they run after
training, on `metrics.jsonl`, and write what goes into `<workdir>/summary.json`.

- tau_gen: the first time the quality metric (FID, KID, SW, ...) is within a relative tolerance of its best
  value over the run (reference 'best'), or has made all but that fraction of its improvement from the first
  evaluation to the best (reference 'drop': for small-sample metrics whose plateau sits near their noise floor).
- tau_mem: the first time the lower 95% bootstrap bound of f_mem exceeds a threshold, and separately the
  first time the loss gap L_test - L_train at fixed diffusion time exceeds a threshold.
- `fit_power_law`: tau_mem = c n^alpha across runs, with an interval on alpha (paper 1: alpha ~ 1);
  `fit_scaling`: several regressors with bootstrap intervals.
- `run_summary`, `ensemble_summary`: what a run (and an ensemble over n) writes into summary.json.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# Defaults, recorded in summary.json next to the timescales they produced.
F_MEM_THRESHOLD = 0.05      # on the lower bootstrap bound of f_mem
LOSS_GAP_THRESHOLD = 0.01   # on L_test - L_train at t_OU = 0.01 (per-pixel epsilon MSE units)
QUALITY_REL_TOL = 0.1       # tau_gen: within 10% of the best quality
QUALITY_REFERENCES = ('best', 'drop')  # what QUALITY_REL_TOL is relative to (see `tau_gen`)


def _as_curve(times, values, *, log_time: bool) -> tuple[np.ndarray, np.ndarray]:
  """Validated float64 copies with NaN (and None) values dropped."""
  t = np.asarray(times, dtype=np.float64)
  v = np.asarray([np.nan if x is None else x for x in values] if isinstance(values, (list, tuple))
                 else values, dtype=np.float64)
  if t.ndim != 1 or v.ndim != 1:
    raise ValueError(f'times and values must be 1-D, got shapes {t.shape} and {v.shape}')
  if t.shape != v.shape:
    raise ValueError(f'times and values must have the same length, got {t.size} and {v.size}')
  if not np.all(np.isfinite(t)):
    raise ValueError('times must be finite')
  if t.size > 1 and not np.all(np.diff(t) > 0):
    raise ValueError('times must be strictly increasing')
  if log_time and t.size and t[0] <= 0:
    raise ValueError(f'times must be > 0 for interpolation in log time, got times[0] = {t[0]}')
  keep = ~np.isnan(v)
  return t[keep], v[keep]


def first_crossing(times: Sequence[float] | np.ndarray, values: Sequence[float] | np.ndarray,
                   threshold: float, *, above: bool = True, log_time: bool = True,
                   inclusive: bool = False) -> float | None:
  """First time the curve goes above (or below if above=False) `threshold`.

  Args:
    times: [M] milestone times, > 0 and strictly increasing.
    values: [M] the metric at those times; NaN / None entries are skipped.
    threshold: the level to cross.
    above: cross upwards (value > threshold) or downwards (value < threshold).
    log_time: interpolate linearly in log(time) (milestones are log-spaced) rather than in time.
    inclusive: count value == threshold as crossed (>= / <=).

  Returns:
    The interpolated crossing time between the two valid milestones that bracket it; the first valid time
    if the first valid point already satisfies the condition; None if the curve never crosses (or has no
    valid point).
  """
  t, v = _as_curve(times, values, log_time=log_time)
  threshold = float(threshold)
  if above:
    hit = v >= threshold if inclusive else v > threshold
  else:
    hit = v <= threshold if inclusive else v < threshold
  if not hit.any():
    return None
  i = int(np.argmax(hit))
  if i == 0:
    return float(t[0])
  v0, v1 = v[i - 1], v[i]
  # v0 is on the wrong side of the threshold and v1 on the right one, so 0 <= frac <= 1 (v1 may be inf).
  frac = 0.0 if math.isinf(v1) else float(np.clip((threshold - v0) / (v1 - v0), 0.0, 1.0))
  if log_time:
    return float(np.exp(np.log(t[i - 1]) + frac * (np.log(t[i]) - np.log(t[i - 1]))))
  return float(t[i - 1] + frac * (t[i] - t[i - 1]))


def tau_gen(times: Sequence[float] | np.ndarray, quality: Sequence[float] | np.ndarray, *,
            rel_tol: float = QUALITY_REL_TOL, lower_is_better: bool = True,
            log_time: bool = True, reference: str = 'best') -> float | None:
  """First time quality is within `rel_tol` of its best value, interpolated in log time.

  reference 'best': the tolerance is relative to the best value, level = best + rel_tol |best| (lower is better:
  FID, KID, SW; higher is better: best - rel_tol |best|). reference 'drop': relative to the improvement from
  the first valid value q0 to the best, level = best + rel_tol (q0 - best): the time the curve has made a
  fraction 1 - rel_tol of its drop. 'best' reads a plateau that a well-estimated metric approaches slowly;
  with a metric estimated from few samples its plateau is mostly estimation noise and bias, 10% of it is
  within the noise, and 'best' picks whichever milestone the noise favoured, while 'drop' still reads when
  the samples became good.
  None if the quality curve has no valid (non-NaN) point.
  """
  if rel_tol < 0:
    raise ValueError(f'rel_tol must be >= 0, got {rel_tol}')
  if reference not in QUALITY_REFERENCES:
    raise ValueError(f'reference must be one of {QUALITY_REFERENCES}, got {reference!r}')
  _, q = _as_curve(times, quality, log_time=log_time)
  if q.size == 0:
    return None
  best = float(q.min() if lower_is_better else q.max())
  scale = abs(best) if reference == 'best' else abs(float(q[0]) - best)
  level = best + rel_tol * scale if lower_is_better else best - rel_tol * scale
  return first_crossing(times, quality, level, above=not lower_is_better, log_time=log_time,
                        inclusive=True)


def tau_mem(times: Sequence[float] | np.ndarray, *, f_mem_lo: Sequence[float] | np.ndarray | None = None,
            loss_gap: Sequence[float] | np.ndarray | None = None,
            f_mem_threshold: float = F_MEM_THRESHOLD, loss_gap_threshold: float = LOSS_GAP_THRESHOLD,
            log_time: bool = True) -> dict[str, Any]:
  """The two memorization times (paper 1: f_mem leaves zero; paper 3: the loss gap opens).

  Args:
    times: [M] milestone times.
    f_mem_lo: [M] lower 95% bootstrap bound of f_mem (or None to skip).
    loss_gap: [M] L_test - L_train at fixed diffusion time (or None to skip).

  Returns:
    {'tau_mem_fmem': first time f_mem_lo > f_mem_threshold (None if never or not given),
     'tau_mem_loss': first time loss_gap > loss_gap_threshold (None if never or not given),
     'f_mem_threshold': ..., 'loss_gap_threshold': ...}
  """
  out: dict[str, Any] = {'tau_mem_fmem': None, 'tau_mem_loss': None,
                         'f_mem_threshold': float(f_mem_threshold),
                         'loss_gap_threshold': float(loss_gap_threshold)}
  if f_mem_lo is not None:
    out['tau_mem_fmem'] = first_crossing(times, f_mem_lo, f_mem_threshold, above=True, log_time=log_time)
  if loss_gap is not None:
    out['tau_mem_loss'] = first_crossing(times, loss_gap, loss_gap_threshold, above=True, log_time=log_time)
  return out


def _column(rows: Sequence[Mapping[str, Any]], time_key: str, key: str) -> tuple[np.ndarray, np.ndarray]:
  """(times, values) of the rows that carry `key` (a finite or NaN number), sorted by time, last row of a
  duplicated time wins, rows at time <= 0 dropped (log time)."""
  by_time: dict[float, float] = {}
  for r in rows:
    if key in r and time_key in r and r[key] is not None and float(r[time_key]) > 0:
      by_time[float(r[time_key])] = float(r[key])
  ts = np.array(sorted(by_time), dtype=np.float64)
  return ts, np.array([by_time[t] for t in ts], dtype=np.float64)


def summarize(history: Sequence[Mapping[str, Any]], *, quality_key: str | None, time_key: str = 'step',
              lower_is_better: bool = True, rel_tol: float = QUALITY_REL_TOL, quality_reference: str = 'best',
              f_mem_key: str = 'f_mem', f_mem_lo_key: str = 'f_mem_lo', f_mem_hi_key: str = 'f_mem_hi',
              loss_train_key: str = 'loss_train_t', loss_test_key: str = 'loss_test_t',
              f_mem_threshold: float = F_MEM_THRESHOLD,
              loss_gap_threshold: float = LOSS_GAP_THRESHOLD, loss_gap_relative: bool = False) -> dict[str, Any]:
  """What goes into `<workdir>/summary.json`: tau_gen, both tau_mem, the thresholds and the last milestone.

  Args:
    history: rows of metrics.jsonl (dicts with `time_key` and any metric keys); rows without a given metric
      (e.g. training-loss rows) are ignored for that metric. Times <= 0 are dropped (log-time interpolation).
    quality_key: the quality metric for tau_gen (e.g. 'fid_pixels'); None to skip tau_gen.
    rel_tol, quality_reference: tau_gen's tolerance and what it is relative to (`tau_gen`).

  Returns:
    A JSON-serialisable dict (None for anything not found).
  """
  rows = list(history)
  summary: dict[str, Any] = {'time_key': time_key, 'quality_key': quality_key, 'quality_rel_tol': float(rel_tol),
                             'quality_reference': quality_reference,
                             'quality_lower_is_better': bool(lower_is_better), 'tau_gen': None,
                             'quality_best': None, 'quality_best_time': None}
  if quality_key is not None:
    t, q = _column(rows, time_key, quality_key)
    finite = ~np.isnan(q)
    if finite.any():
      i = int(np.nanargmin(q) if lower_is_better else np.nanargmax(q))
      summary.update(tau_gen=tau_gen(t, q, rel_tol=rel_tol, lower_is_better=lower_is_better,
                                     reference=quality_reference),
                     quality_best=float(q[i]), quality_best_time=float(t[i]))

  t_lo, lo = _column(rows, time_key, f_mem_lo_key)
  t_tr, l_tr = _column(rows, time_key, loss_train_key)
  t_te, l_te = _column(rows, time_key, loss_test_key)
  t_gap, i_tr, i_te = np.intersect1d(t_tr, t_te, return_indices=True)
  gap = l_te[i_te] - l_tr[i_tr]
  if loss_gap_relative:  # (L_test - L_train) / L_test: free of the loss scale and of a small initial offset
    gap = gap / np.where(l_te[i_te] != 0, l_te[i_te], np.nan)
  mem = tau_mem(t_gap, loss_gap=gap if t_gap.size else None, f_mem_threshold=f_mem_threshold,
                loss_gap_threshold=loss_gap_threshold)
  mem['tau_mem_fmem'] = tau_mem(t_lo, f_mem_lo=lo if t_lo.size else None,
                                f_mem_threshold=f_mem_threshold)['tau_mem_fmem']
  summary.update(mem)
  summary['loss_gap_relative'] = bool(loss_gap_relative)

  # The last evaluated milestone, as reported numbers.
  final: dict[str, Any] = {}
  keys = [k for k in (f_mem_key, f_mem_lo_key, f_mem_hi_key, loss_train_key, loss_test_key, quality_key) if k]
  for k in keys:
    t, v = _column(rows, time_key, k)
    if t.size:
      final[k] = None if np.isnan(v[-1]) else float(v[-1])
      final[f'{k}_time'] = float(t[-1])
  summary['final'] = final
  summary['num_milestones'] = int(max((_column(rows, time_key, k)[0].size for k in keys), default=0))
  return summary


def fit_power_law(n: Sequence[float] | np.ndarray, tau: Sequence[float] | np.ndarray, *,
                  level: float = 0.95, at: float | None = None) -> dict[str, float]:
  """Least-squares fit of log tau = log c + alpha log n, with a Student-t interval on alpha.

  Points with a missing (None / NaN) or non-positive tau are dropped. Needs >= 3 points for an interval
  (with 2 the interval is infinite). at: also the fitted tau at n = at and the Student-t confidence interval
  of the fitted line there.

  Returns:
    {'c', 'alpha', 'alpha_lo', 'alpha_hi', 'num_points'} and with `at`: {'tau_at', 'tau_at_lo', 'tau_at_hi'}.
  """
  import scipy.stats  # pylint: disable=g-import-not-at-top

  n = np.asarray(n, dtype=np.float64)
  tau = np.asarray([np.nan if x is None else x for x in tau], dtype=np.float64)
  if n.shape != tau.shape or n.ndim != 1:
    raise ValueError(f'n and tau must be 1-D of the same length, got {n.shape} and {tau.shape}')
  keep = np.isfinite(tau) & (tau > 0) & (n > 0)
  x, y = np.log(n[keep]), np.log(tau[keep])
  m = x.size
  if m < 2 or np.ptp(x) == 0:
    raise ValueError(f'fit_power_law needs >= 2 points with distinct n and finite tau > 0, got {m}')
  xm = x - x.mean()
  alpha = float((xm * (y - y.mean())).sum() / (xm ** 2).sum())
  log_c = float(y.mean() - alpha * x.mean())
  sxx = float((xm ** 2).sum())
  if m > 2:
    resid = y - (log_c + alpha * x)
    s = math.sqrt(float((resid ** 2).sum()) / (m - 2))
    t = float(scipy.stats.t.ppf(0.5 + level / 2, m - 2))
  else:
    s, t = math.inf, math.inf
  half = t * s / math.sqrt(sxx) if m > 2 else math.inf
  out = {'c': math.exp(log_c), 'alpha': alpha, 'alpha_lo': alpha - half, 'alpha_hi': alpha + half,
         'num_points': int(m)}
  if at is not None:
    x0 = math.log(at)
    log_at = log_c + alpha * x0
    half_at = t * s * math.sqrt(1.0 / m + (x0 - x.mean()) ** 2 / sxx) if m > 2 else math.inf
    out.update(tau_at=math.exp(log_at), tau_at_lo=math.exp(log_at - half_at),
               tau_at_hi=math.exp(log_at + half_at) if math.isfinite(half_at) else math.inf)
  return out


def _log_design(columns: Sequence[np.ndarray]) -> np.ndarray:
  return np.column_stack([np.ones_like(columns[0])] + [np.log(c) for c in columns])


def _lstsq(design: np.ndarray, y: np.ndarray) -> np.ndarray | None:
  if np.linalg.matrix_rank(design) < design.shape[1]:
    return None
  return np.linalg.lstsq(design, y, rcond=None)[0]


def fit_scaling(x: Mapping[str, Sequence[float]], y: Sequence[float | None], *, num_bootstrap: int = 2000,
                level: float = 0.95, seed: int = 0, t_interval: bool = True) -> dict[str, Any]:
  """Fit y = c prod_j x_j^alpha_j in log-log space, with bootstrap intervals on the alphas.

  Args:
    x: {name: [R] positive values} (e.g. {'n': ..., 'width': ...}); one exponent per name.
    y: [R] positive values (None / NaN / <= 0 are dropped with their x).
    num_bootstrap: resamples of the R points (with replacement); degenerate resamples (a rank-deficient
      design, e.g. a single distinct n) are redrawn. The interval is the percentile interval at `level`.
  Returns:
    {'c', 'num_points', 'residual_std', and per name: f'{name}' the exponent, f'{name}_lo', f'{name}_hi' the
     bootstrap interval, plus for a single regressor and t_interval f'{name}_lo_t', f'{name}_hi_t'
     (Student-t, `fit_power_law`; imports scipy)}.
  Raises:
    ValueError if fewer points than parameters + 1 or a regressor has a single distinct value.
  """
  names = list(x)
  if not names:
    raise ValueError('fit_scaling needs at least one regressor')
  yy = np.asarray([np.nan if v is None else v for v in y], np.float64)
  cols = [np.asarray([np.nan if v is None else v for v in x[k]], np.float64) for k in names]
  for k, c in zip(names, cols):
    if c.shape != yy.shape:
      raise ValueError(f'regressor {k!r} has {c.size} values but y has {yy.size}')
  keep = np.isfinite(yy) & (yy > 0)
  for c in cols:
    keep &= np.isfinite(c) & (c > 0)
  yy, cols = yy[keep], [c[keep] for c in cols]
  m = yy.size
  for k, c in zip(names, cols):
    if np.unique(c).size < 2:
      raise ValueError(f'fit_scaling: regressor {k!r} needs >= 2 distinct values among the {m} usable points')
  if m < len(names) + 2:
    raise ValueError(f'fit_scaling: {m} usable points are too few for {len(names)} exponents and an interval')
  design, target = _log_design(cols), np.log(yy)
  coef = _lstsq(design, target)
  if coef is None:
    raise ValueError(f'fit_scaling: the regressors {names} are collinear in log space')
  resid = target - design @ coef
  out: dict[str, Any] = {'c': float(math.exp(coef[0])), 'num_points': int(m),
                         'residual_std': float(np.sqrt(resid @ resid / max(m - design.shape[1], 1)))}
  rng = np.random.default_rng(seed)
  boots, tries = [], 0
  while len(boots) < num_bootstrap and tries < 20 * num_bootstrap:
    tries += 1
    idx = rng.integers(0, m, m)
    b = _lstsq(design[idx], target[idx])
    if b is not None:
      boots.append(b[1:])
  boots = np.asarray(boots)
  alpha = (1 - level) / 2
  for j, k in enumerate(names):
    out[k] = float(coef[j + 1])
    if len(boots) >= 10:
      lo, hi = np.quantile(boots[:, j], [alpha, 1 - alpha])
      out[f'{k}_lo'], out[f'{k}_hi'] = float(lo), float(hi)
    else:
      out[f'{k}_lo'], out[f'{k}_hi'] = -math.inf, math.inf
  if len(names) == 1 and t_interval:
    t = fit_power_law(cols[0], yy, level=level)
    out[f'{names[0]}_lo_t'], out[f'{names[0]}_hi_t'] = t['alpha_lo'], t['alpha_hi']
  out['num_bootstrap'] = int(len(boots))
  return out


# ----------------------------------------------------------------------------------------------------------
# Summaries of runs and ensembles (what training writes into summary.json).


def run_summary(history: Sequence[Mapping[str, Any]], eval_config, quality_key: str | None,
                **info: Any) -> dict[str, Any]:
  """`summarize` with the thresholds of `config.eval`, plus `info` (what the analysis groups runs by: n,
  width, seed, batch_size, learning_rate, optimizer, num_params, ...)."""
  ec = eval_config
  summary = summarize(history, quality_key=quality_key, rel_tol=ec.tau_gen_rel_tol,
                      quality_reference=ec.tau_gen_reference,
                      f_mem_threshold=ec.f_mem_threshold, loss_gap_threshold=ec.loss_gap_threshold,
                      loss_gap_relative=ec.loss_gap_relative)
  summary.update(info)
  return summary


def ensemble_summary(family: str, eval_config, members: Sequence[tuple[Any, Mapping[str, Any]]],
                     quality_key: str | None) -> dict[str, Any]:
  """The members' timescales and the fits tau_mem = c n^alpha over them (f_mem and loss-gap definitions,
  bootstrap interval over the members; None where too few members memorized).

  members: (member, its run summary) pairs; a member has `name`, `n` and `seed`."""
  rows = [{'member': m.name, 'n': m.n, 'seed': m.seed, 'tau_gen': s['tau_gen'],
           'tau_mem_fmem': s['tau_mem_fmem'], 'tau_mem_loss': s['tau_mem_loss'],
           'f_mem_final': s['final'].get('f_mem')} for m, s in members]
  ec = eval_config
  summary: dict[str, Any] = {'family': family, 'members': rows, 'quality_key': quality_key,
                             'f_mem_threshold': ec.f_mem_threshold, 'loss_gap_threshold': ec.loss_gap_threshold,
                             'loss_gap_relative': ec.loss_gap_relative}
  for which, key in (('tau_mem_fmem', 'tau_mem_fit'), ('tau_mem_loss', 'tau_mem_loss_fit')):
    try:
      f = fit_scaling({'n': [r['n'] for r in rows]}, [r[which] for r in rows], t_interval=False)
      summary[key] = {'c': f['c'], 'alpha': f['n'], 'alpha_lo': f['n_lo'], 'alpha_hi': f['n_hi'],
                      'num_points': f['num_points']}
    except ValueError:   # too few members that memorized
      summary[key] = None
  return summary
