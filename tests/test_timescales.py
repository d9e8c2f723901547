"""tau_gen / tau_mem extraction returns the known break points of synthetic curves."""

import json
import math

import numpy as np
import pytest

from jaxdiff import timescales

TIMES = np.logspace(2, 6, 41)  # 40 log-spaced intervals, 10 per decade


def test_crossing_of_a_curve_linear_in_log_time_is_exact():
  # v = log10(t): crosses 3.55 at t = 10**3.55, between milestones; log-time interpolation is exact here.
  v = np.log10(TIMES)
  assert timescales.first_crossing(TIMES, v, 3.55) == pytest.approx(10 ** 3.55, rel=1e-9)
  assert timescales.first_crossing(TIMES, -v, -3.55, above=False) == pytest.approx(10 ** 3.55, rel=1e-9)
  # Linear interpolation in time instead lands elsewhere between the same two milestones.
  t_lin = timescales.first_crossing(TIMES, v, 3.55, log_time=False)
  assert 10 ** 3.5 < t_lin < 10 ** 3.6 and t_lin != pytest.approx(10 ** 3.55, rel=1e-3)


def test_crossing_edge_cases():
  v = np.log10(TIMES)
  assert timescales.first_crossing(TIMES, v, 1.0) == TIMES[0]        # already above at the first point
  assert timescales.first_crossing(TIMES, v, 7.0) is None             # never
  assert timescales.first_crossing(TIMES, v, 6.0) is None             # strict: 6.0 is not above 6.0
  assert timescales.first_crossing(TIMES, v, 6.0, inclusive=True) == pytest.approx(TIMES[-1])
  # NaNs and Nones are skipped: the bracket becomes the surrounding valid milestones.
  w = list(v)
  w[15] = None
  w[16] = float('nan')
  got = timescales.first_crossing(TIMES, w, 3.55)
  assert got == pytest.approx(10 ** 3.55, rel=1e-9)  # still linear in log t across the gap
  assert timescales.first_crossing(TIMES[:3], [math.nan] * 3, 0.0) is None


def test_bad_input_is_refused():
  with pytest.raises(ValueError, match='increasing'):
    timescales.first_crossing([1, 3, 2], [0, 1, 2], 0.5)
  with pytest.raises(ValueError, match='> 0'):
    timescales.first_crossing([0, 1, 2], [0, 1, 2], 0.5)
  with pytest.raises(ValueError, match='same length'):
    timescales.first_crossing([1, 2], [0, 1, 2], 0.5)


def _quality_curve(tau, floor=20.0):
  """FID-like: decays as a power of t until `tau`, flat `floor` after (the break point)."""
  return np.where(TIMES < tau, floor * (TIMES / tau) ** -0.5, floor)


def test_tau_gen_finds_the_plateau():
  tau = 10 ** 4.2
  fid = _quality_curve(tau)
  # With rel_tol = 0 the first point at the best value is the plateau start (first milestone >= tau).
  assert timescales.tau_gen(TIMES, fid, rel_tol=0.0) == pytest.approx(TIMES[TIMES >= tau][0])
  # With rel_tol = 0.1: floor (t/tau)^-0.5 = 1.1 floor at t = tau / 1.21, within log-interpolation error.
  got = timescales.tau_gen(TIMES, fid, rel_tol=0.1)
  assert got == pytest.approx(tau / 1.21, rel=0.02)
  # Higher-is-better metrics mirror it.
  assert timescales.tau_gen(TIMES, -fid, rel_tol=0.1, lower_is_better=False) == pytest.approx(got)
  # A later spike (double descent) does not move tau_gen, and noise after the plateau neither.
  assert timescales.tau_gen(TIMES, np.where(TIMES > 1e5, fid * 1.5, fid), rel_tol=0.1) == pytest.approx(got)


def _fmem_curves(tau_mem, tau_loss):
  f = np.clip(0.5 * np.log10(TIMES / tau_mem), 0, 1)  # leaves zero at tau_mem, linear in log t
  gap = np.clip(0.02 * np.log10(TIMES / tau_loss), 0, None)
  return f, gap


def test_tau_mem_from_fmem_and_loss_gap():
  tau_m, tau_l = 10 ** 4.63, 10 ** 4.31
  f_lo, gap = _fmem_curves(tau_m, tau_l)
  out = timescales.tau_mem(TIMES, f_mem_lo=f_lo, loss_gap=gap, f_mem_threshold=0.05, loss_gap_threshold=0.004)
  # f_lo crosses 0.05 at log10 t = log10 tau_m + 0.1; gap crosses 0.004 at log10 tau_l + 0.2.
  assert out['tau_mem_fmem'] == pytest.approx(tau_m * 10 ** 0.1, rel=1e-9)
  assert out['tau_mem_loss'] == pytest.approx(tau_l * 10 ** 0.2, rel=1e-9)
  assert out['f_mem_threshold'] == 0.05 and out['loss_gap_threshold'] == 0.004
  none = timescales.tau_mem(TIMES, f_mem_lo=np.zeros_like(TIMES))
  assert none['tau_mem_fmem'] is None and none['tau_mem_loss'] is None


def test_summarize_reads_a_mixed_history():
  tau_q, tau_m, tau_l = 10 ** 3.9, 10 ** 4.63, 10 ** 4.31
  fid = _quality_curve(tau_q)
  f_lo, gap = _fmem_curves(tau_m, tau_l)
  history = [{'step': 0, 'loss': 1.0}]  # step 0 and training-loss rows are ignored
  for t, q, lo, g in zip(TIMES, fid, f_lo, gap):
    history.append({'step': float(t), 'loss': 0.1})
    history.append({'step': float(t), 'fid_pixels': float(q), 'f_mem': float(lo) + 0.01, 'f_mem_lo': float(lo),
                    'f_mem_hi': float(lo) + 0.02, 'loss_train_t': 0.05, 'loss_test_t': 0.05 + float(g)})
  s = timescales.summarize(history, quality_key='fid_pixels', loss_gap_threshold=0.004)
  json.dumps(s)  # serialisable
  assert s['tau_gen'] == pytest.approx(timescales.tau_gen(TIMES, fid))
  assert s['tau_mem_fmem'] == pytest.approx(tau_m * 10 ** 0.1)
  assert s['tau_mem_loss'] == pytest.approx(tau_l * 10 ** 0.2)
  assert s['quality_best'] == pytest.approx(20.0) and s['loss_gap_threshold'] == 0.004
  assert s['final']['f_mem'] == pytest.approx(f_lo[-1] + 0.01) and s['num_milestones'] == TIMES.size
  empty = timescales.summarize([{'step': 5, 'loss': 1.0}], quality_key='fid_pixels')
  assert empty['tau_gen'] is None and empty['tau_mem_fmem'] is None and empty['final'] == {}


def test_power_law_fit_recovers_the_exponent():
  rng = np.random.default_rng(0)
  n = np.array([256, 512, 1024, 2048, 4096])
  tau = 300 * n ** 1.0 * np.exp(0.05 * rng.standard_normal(n.size))
  fit = timescales.fit_power_law(n, tau)
  assert fit['alpha_lo'] < 1.0 < fit['alpha_hi'] and fit['alpha_hi'] - fit['alpha_lo'] < 0.3
  exact = timescales.fit_power_law(n, 300 * n ** 1.0)
  assert exact['alpha'] == pytest.approx(1.0) and exact['c'] == pytest.approx(300)
  # Missing tau (the run never memorized) is dropped, not fitted.
  assert timescales.fit_power_law(list(n) + [8192], list(tau) + [None])['num_points'] == 5
