"""Scaling fits across runs, the (n, p) phase diagram and paper 3's normalized step.

- `fit_scaling`: log y = log c + sum_j alpha_j log x_j by least squares (tau_mem against n, against n and the
  width W, tau_gen against W, ...), with percentile-bootstrap intervals on the exponents (runs resampled with
  replacement) next to the Student-t interval of `jaxdiff.timescales.fit_power_law`. Paper 1: tau_mem ~ n/W,
  tau_gen ~ 1/W and independent of n.
- `phase_diagram`: for each model size p, the smallest n whose run has not memorized (f_mem still 0: the
  time is below tau_mem) at tau in {tau_gen, 3 tau_gen, 8 tau_gen} (paper 1, Fig. 4 / SPEC section 1).
- `local_exponents`: d log tau_mem / d log n between consecutive n (geometric means over seeds): the law holds
  where it is ~1 at every step; it rises with n as n approaches the model's capacity n*(p) (paper 1: above
  n*(p) a model never memorizes), which a single power-law fit over the whole range averages away.
- `normalized_step`: T = tau (N_min / N)(B / B_min)(lr / lr_min) (paper 3; the references default to the
  smallest n, batch and learning rate among the runs analysed, paper 3 uses 2048, 16, 1e-5).
- `memorization_rate`: the slope of the memorization score after tau_mem, per decade of training time (so the
  same for the step and the normalized step); `best_before`: the best (smallest) quality metric before
  tau_mem, paper 3's "best fidelity" (min SW or FD of the pre-memorization phase).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxdiff.timescales import fit_scaling

PHASE_MULTIPLES = (1.0, 3.0, 8.0)


def group_rows(rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> dict[tuple, list[Mapping[str, Any]]]:
  """Rows grouped by the values of `keys` (missing values count as None)."""
  groups: dict[tuple, list[Mapping[str, Any]]] = {}
  for r in rows:
    groups.setdefault(tuple(r.get(k) for k in keys), []).append(r)
  return groups


# The hyperparameters that must be equal within a fit of tau against n (or n and width).
FIT_GROUP_KEYS = ('family', 'dataset', 'optimizer', 'learning_rate', 'batch_size', 'conditional')
# ... of a fit against n alone: also one width and one configured batch (the effective batch min(n, B) varies with n).
N_FIT_GROUP_KEYS = tuple(k for k in FIT_GROUP_KEYS if k != 'batch_size') + ('width', 'batch_config')


# The `runs` of a fit over the runs whose window is open (`scaling_fits`).
WINDOW_OPEN = 'tau_gen < tau_mem'


def _positive(v: Any) -> bool:
  return v is not None and bool(np.isfinite(v)) and v > 0


def memorization_rate(steps: Sequence[float], score: Sequence[float], tau_mem: float | None, *,
                      upto: float = 0.9) -> float | None:
  """Least-squares slope of the memorization score (f_mem, or the copy score) against log10(step) over the
  milestones from tau_mem to the first one where the score reaches `upto` x its maximum (the rise, not the
  saturated plateau): the rise per decade of training. A factor on the time axis (the normalized step) shifts
  log10(step) and leaves the slope unchanged. None without tau_mem or with < 2 such milestones."""
  if tau_mem is None:
    return None
  t, f = np.asarray(steps, np.float64), np.asarray(score, np.float64)
  keep = (t >= tau_mem) & (t > 0) & np.isfinite(f)
  t, f = t[keep], f[keep]
  if t.size and np.max(f) > 0:
    t, f = t[:int(np.argmax(f >= upto * np.max(f))) + 1], f[:int(np.argmax(f >= upto * np.max(f))) + 1]
  if t.size < 2 or np.ptp(np.log10(t)) == 0:
    return None
  return float(np.polyfit(np.log10(t), f, 1)[0])


def best_before(steps: Sequence[float], values: Sequence[float], tau: float | None) -> float | None:
  """The smallest finite value at milestones up to tau (all milestones when tau is None; None if there is
  none): paper 3's best fidelity before tau_mem."""
  t, v = np.asarray(steps, np.float64), np.asarray(values, np.float64)
  keep = np.isfinite(v) & ((t <= tau) if tau is not None else True)
  return float(v[keep].min()) if keep.any() else None


def scaling_fits(rows: Sequence[Mapping[str, Any]], *, num_bootstrap: int = 2000, level: float = 0.95,
                 seed: int = 0) -> list[dict[str, Any]]:
  """The standard fits over a run table (`runs.run_table`), each where the data allow it:

  - tau_mem_fmem and tau_mem_loss against n, per width and configured batch (`batch_config`; and per
    `FIT_GROUP_KEYS`, except batch_size, which is min(n, B) and varies with n in a full-batch sweep);
  - the same against 1/B (`inv_batch_size`, the effective batch) per width and n, where several batches exist,
    and jointly against n and 1/B over the whole grid (paper 3: tau_mem ~ N / B);
  - the same jointly against n and width, where several widths exist;
  - tau_gen against width (per n-independent group) and against n.
  Every fit is over all runs of its group ('runs': 'all'), except one more fit against n per group where some
  runs' window is closed ('runs': WINDOW_OPEN, over the runs with tau_gen < tau_mem only): paper 1's law
  tau_mem ~ n is stated where samples generalize before they copy; at small n a model copies as soon as it
  has learned the data at all, and tau_mem sits near an n-independent floor that flattens the fit over all n.
  Returns one dict per fit: {'y', 'x', 'group', 'runs', fit_scaling's keys} (failures are skipped).
  """
  keys = [k for k in FIT_GROUP_KEYS if k != 'batch_size']
  fits = []

  def add(y_key, x_keys, group_keys, group, subset, runs='all'):
    try:
      f = fit_scaling({k: [r.get(k) for r in subset] for k in x_keys}, [r.get(y_key) for r in subset],
                      num_bootstrap=num_bootstrap, level=level, seed=seed)
    except ValueError:
      return
    fits.append({'y': y_key, 'x': '+'.join(x_keys), 'group': dict(zip(group_keys, group)), 'runs': runs, **f})

  for y_key in ('tau_mem_fmem', 'tau_mem_loss'):
    # Against n at one configured batch (paper 3 sweeps B at fixed n; a full-batch sweep has one nominal B).
    for group, subset in group_rows(rows, N_FIT_GROUP_KEYS).items():
      add(y_key, ['n'], N_FIT_GROUP_KEYS, group, subset)
      reached = [r for r in subset if _positive(r.get(y_key))]
      window = [r for r in reached if _positive(r.get('tau_gen')) and r['tau_gen'] < r[y_key]]
      if len(window) < len(reached):
        add(y_key, ['n'], N_FIT_GROUP_KEYS, group, window, runs=WINDOW_OPEN)
    # Against 1 / B at one n (paper 3: tau_mem ~ N / B), and jointly against n and 1 / B over an N x B grid.
    for group, subset in group_rows(rows, keys + ['width', 'n']).items():
      if len({r.get('batch_size') for r in subset}) > 1:
        add(y_key, ['inv_batch_size'], keys + ['width', 'n'], group, subset)
    # (A batch that varies only through min(n, B) at one configured B is confounded with n: no joint fit.)
    for group, subset in group_rows(rows, keys + ['width']).items():
      if len({r.get('batch_config') for r in subset}) > 1 and len({r.get('n') for r in subset}) > 1:
        add(y_key, ['n', 'inv_batch_size'], keys + ['width'], group, subset)
    for group, subset in group_rows(rows, keys).items():
      if len({r.get('width') for r in subset}) > 1:
        add(y_key, ['n', 'width'], keys, group, subset)
  for group, subset in group_rows(rows, keys).items():
    if len({r.get('width') for r in subset}) > 1:
      add('tau_gen', ['width'], keys, group, subset)
  for group, subset in group_rows(rows, keys + ['width']).items():
    add('tau_gen', ['n'], keys + ['width'], group, subset)
  return fits


def local_exponents(rows: Sequence[Mapping[str, Any]],
                    y_keys: Sequence[str] = ('tau_mem_fmem', 'tau_mem_loss')) -> list[dict[str, Any]]:
  """For each group of `scaling_fits`' fits against n and each pair of consecutive n in it: log(tau_b / tau_a) /
  log(n_b / n_a) with tau the geometric mean over the runs that reached it. Each row also counts the runs at
  both ends and how many of them reached tau ('reached_a' of 'runs_a', ...): where some did not (the run ended
  first), that end's tau is a lower bound. Pairs where one end has no run with tau are skipped."""
  keys = N_FIT_GROUP_KEYS
  out = []
  for y_key in y_keys:
    for group, subset in group_rows(rows, keys).items():
      runs: dict[float, list] = {}
      for r in subset:
        if r.get('n') is not None:
          runs.setdefault(r['n'], []).append(r.get(y_key))
      reached = {n: [float(v) for v in vals if _positive(v)] for n, vals in runs.items()}
      ns = sorted(n for n in runs if reached[n])
      for a, b in zip(ns, ns[1:]):
        tau_a, tau_b = (float(np.exp(np.mean(np.log(reached[n])))) for n in (a, b))
        out.append({'y': y_key, 'group': dict(zip(keys, group)), 'n_a': a, 'n_b': b, 'tau_a': tau_a,
                    'tau_b': tau_b, 'exponent': float(np.log(tau_b / tau_a) / np.log(b / a)),
                    'reached_a': len(reached[a]), 'runs_a': len(runs[a]), 'reached_b': len(reached[b]),
                    'runs_b': len(runs[b])})
  return out


def normalization_reference(infos: Sequence[Mapping[str, Any]]) -> dict[str, float]:
  """N_min, B_min, lr_min over the runs (paper 3's normalisation constants; ignores missing values)."""
  def smallest(key):
    vals = [float(i[key]) for i in infos if i.get(key) is not None and float(i[key]) > 0]
    return min(vals) if vals else None
  return {'n': smallest('n'), 'batch_size': smallest('batch_size'), 'learning_rate': smallest('learning_rate')}


def normalized_step(tau: float | None, info: Mapping[str, Any], reference: Mapping[str, float | None]) -> float | None:
  """Paper 3's T = tau (N_min / N)(B / B_min)(lr / lr_min); a factor whose values are missing is left out."""
  if tau is None:
    return None
  factor = 1.0
  n, b, lr = info.get('n'), info.get('batch_size'), info.get('learning_rate')
  if n and reference.get('n'):
    factor *= reference['n'] / n
  if b and reference.get('batch_size'):
    factor *= b / reference['batch_size']
  if lr and reference.get('learning_rate'):
    factor *= lr / reference['learning_rate']
  return float(tau) * factor


def phase_diagram(rows: Sequence[Mapping[str, Any]], *, multiples: Sequence[float] = PHASE_MULTIPLES,
                  size_key: str = 'num_params') -> list[dict[str, Any]]:
  """Smallest n that has not memorized at tau = k tau_gen, per model size p and multiple k.

  Within a group of runs of one size (`size_key`, falling back to 'width' when a run lacks it; the other
  hyperparameters of `FIT_GROUP_KEYS` except the batch equal), tau_gen is the median of the runs' tau_gen
  (paper 1: independent of n). A run has memorized at tau when tau_mem_fmem <= tau; it has not when
  tau_mem_fmem is None or > tau and the run reached tau; otherwise it is unknown.

  Returns rows {'p', 'width', 'multiple', 'tau', 'n_star' (None if every known run memorized), 'points':
  [(n, memorized bool or None)], and the group's hyperparameters}.
  """
  keys = [k for k in FIT_GROUP_KEYS if k != 'batch_size']
  out = []
  sized = [dict(r, _p=r.get(size_key) if r.get(size_key) is not None else r.get('width')) for r in rows]
  for group, subset in group_rows(sized, keys + ['_p']).items():
    gens = [r['tau_gen'] for r in subset if r.get('tau_gen') is not None]
    if not gens:
      continue
    tau_gen = float(np.median(gens))
    for k in multiples:
      tau = k * tau_gen
      points = []
      for r in sorted(subset, key=lambda r: (r.get('n') or 0)):
        tm, last = r.get('tau_mem_fmem'), r.get('last_step')
        if tm is not None and tm <= tau:
          mem = True
        elif last is not None and last >= tau:
          mem = False
        else:
          mem = None
        points.append((r.get('n'), mem))
      clean = [n for n, mem in points if mem is False]
      # The smallest n from which on every known run is clean (memorization stops above n*); runs of the same n
      # (several seeds) count together, whatever their order.
      n_star = None
      for n, mem in points:
        if mem is False and all(m2 is not True for n2, m2 in points if (n2 or 0) >= (n or 0)):
          n_star = n
          break
      out.append({'p': group[-1], 'width': subset[0].get('width'), 'multiple': float(k), 'tau': tau,
                  'tau_gen': tau_gen, 'n_star': n_star, 'num_clean': len(clean), 'points': points,
                  **dict(zip(keys, group[:-1]))})
  return out
