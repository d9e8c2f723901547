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


def test_tau_gen_drop_reference_reads_the_drop_not_the_noise_on_the_plateau():
  """A small-sample FD: the curve falls from 300 to a plateau of 2 at tau, where estimation noise of +-0.3
  (15%) sits; its lowest noisy value comes late. 'best' (10% of 2 = 0.2) lands on that late milestone,
  'drop' (10% of the 298 drop) on the fall itself, and with no noise both read the same break."""
  tau = 1e3
  clean = np.where(TIMES < tau, 2.0 + 298.0 * (1 - np.log(TIMES / TIMES[0]) / np.log(tau / TIMES[0])), 2.0)
  noise = 0.3 * np.sin(7.0 * np.arange(TIMES.size))
  late = TIMES.size - 3
  noise[late] = -0.5                                  # the noise's lowest point, long after the fall
  noisy = clean + np.where(TIMES >= tau, noise, 0.0)
  # 10% of the drop: level 2 - 0.5 + 0.1 x (300 - 1.5), first reached on the linear-in-log fall.
  level = 1.5 + 0.1 * (300.0 - 1.5)
  drop = timescales.tau_gen(TIMES, noisy, rel_tol=0.1, reference='drop')
  frac = (300.0 - level) / 298.0                      # where the fall crosses the level, in log time
  assert drop == pytest.approx(TIMES[0] * (tau / TIMES[0]) ** frac, rel=0.05)
  assert TIMES[late - 1] < timescales.tau_gen(TIMES, noisy, rel_tol=0.1) <= TIMES[late]
  # Clean curve with rel_tol 0: both references read the first plateau milestone.
  for ref in ('best', 'drop'):
    assert timescales.tau_gen(TIMES, clean, rel_tol=0.0, reference=ref) == pytest.approx(TIMES[TIMES >= tau][0])
  # Higher is better mirrors it; an unknown reference is refused by name.
  assert timescales.tau_gen(TIMES, -noisy, rel_tol=0.1, reference='drop', lower_is_better=False) == \
      pytest.approx(drop)
  with pytest.raises(ValueError, match="reference must be one of .*'plateau'"):
    timescales.tau_gen(TIMES, clean, reference='plateau')
  s = timescales.summarize([{'step': float(t), 'fd': float(q)} for t, q in zip(TIMES, noisy)], quality_key='fd',
                           quality_reference='drop')
  assert s['tau_gen'] == pytest.approx(drop) and s['quality_reference'] == 'drop'


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
