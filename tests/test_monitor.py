"""The monitor for external training loops: f_mem and the loss gap per milestone, the stopping rule fires at the
milestone it names, files as jaxdiff runs write them, and the tau_mem prediction from pilots."""

import json

import numpy as np
import pytest

from jaxdiff import analysis
from jaxdiff.monitor import MemorizationMonitor, predict_tau_mem

SHAPE = (6, 6, 1)


@pytest.fixture
def train():
  return np.floor(256 * np.random.default_rng(0).random((30,) + SHAPE)).astype(np.float32)


def _fresh(seed, m=20):
  return np.floor(256 * np.random.default_rng(seed).random((m,) + SHAPE)).astype(np.float32)


def test_stops_at_the_first_milestone_whose_samples_are_copies(train, tmp_path):
  monitor = MemorizationMonitor(train, workdir=str(tmp_path), num_resamples=200)
  for step in (10, 20, 40):
    row = monitor.update(step, _fresh(step))
    assert row['f_mem'] == 0.0 and not monitor.should_stop()
  copies = np.concatenate([train[:12], _fresh(80, 8)])            # 60% copies: the lower bound is well above 0
  row = monitor.update(80, copies)
  assert row['f_mem'] == pytest.approx(0.6) and row['f_mem_lo'] > 0
  assert monitor.should_stop() and monitor.stop_step == 80 and monitor.last_safe_step == 40
  monitor.update(160, train[:20])                                   # later milestones keep the decision
  assert monitor.stop_step == 80 and monitor.last_safe_step == 40
  # Files as jaxdiff runs write them; the analysis reads the run.
  rows = [json.loads(line) for line in open(tmp_path / 'metrics.jsonl')]
  assert [r['step'] for r in rows] == [10, 20, 40, 80, 160]
  summary = json.load(open(tmp_path / 'summary.json'))
  assert 40 <= summary['tau_mem_fmem'] <= 80 and summary['stop_step'] == 80 and summary['last_safe_step'] == 40
  (run,) = analysis.load_runs([str(tmp_path)])
  assert run.summary['tau_mem_fmem'] == summary['tau_mem_fmem']


def test_the_loss_gap_rule_fires_where_the_relative_gap_crosses_its_threshold(train):
  monitor = MemorizationMonitor(train, loss_gap_threshold=0.1, num_resamples=100)
  gaps = {1: 0.0, 2: 0.05, 4: 0.09, 8: 0.2, 16: 0.5}                # (L_test - L_train) / L_test
  for step, gap in gaps.items():
    monitor.update(step, _fresh(step), losses={'train': 1.0 - gap, 'test': 1.0})
    assert monitor.should_stop() == (gap > 0.1), step
  assert monitor.stop_step == 8 and monitor.last_safe_step == 4
  assert 4 < monitor.summary()['tau_mem_loss'] < 8


def test_bad_input_is_refused(train):
  with pytest.raises(ValueError, match='N >= 2'):
    MemorizationMonitor(train[:1])
  monitor = MemorizationMonitor(train, num_resamples=100)
  with pytest.raises(ValueError, match='per-image shape'):
    monitor.update(1, np.zeros((4, 7, 7, 1), np.float32))
  monitor.update(5, _fresh(1))
  with pytest.raises(ValueError, match='milestones must increase'):
    monitor.update(5, _fresh(2))


def test_tau_mem_prediction_from_pilots_covers_the_power_law():
  rng = np.random.default_rng(3)
  ns = np.array([64, 128, 256, 512])
  taus = 3.0 * ns ** 1.0 * np.exp(0.05 * rng.standard_normal(4))   # tau_mem ~ n with 5% scatter
  pred = predict_tau_mem(list(zip(ns, taus)), 2048)
  assert pred['tau_mem_lo'] < 3.0 * 2048 < pred['tau_mem_hi']
  assert pred['tau_mem'] == pytest.approx(3.0 * 2048, rel=0.2) and pred['num_pilots'] == 4
  # More pilots over a wider range: a narrower interval that still covers the law.
  ns8 = 64 * 2 ** np.arange(8)
  taus8 = 3.0 * ns8 * np.exp(0.05 * rng.standard_normal(8))
  pred8 = predict_tau_mem(list(zip(ns8, taus8)), 2 * ns8[-1])
  assert pred8['tau_mem_lo'] < 3.0 * 2 * ns8[-1] < pred8['tau_mem_hi']
  assert pred8['tau_mem_hi'] / pred8['tau_mem_lo'] < pred['tau_mem_hi'] / pred['tau_mem_lo']
  two = predict_tau_mem([(100, 300.0), (200, 600.0)], 400)
  assert two['tau_mem'] == pytest.approx(1200.0) and two['tau_mem_hi'] == np.inf
  with pytest.raises(ValueError):
    predict_tau_mem([(100, 300.0), (100, 310.0)], 400)            # one distinct n: no fit


@pytest.mark.slow
def test_pilots_at_n_and_2n_predict_the_measured_tau_mem_at_4n_on_the_gaussian_mixture(tmp_path):
  """configs/gmm_mlp.py:cpu with n in {32, 64, 128} and two seeds, as one vectorized ensemble: the pilots
  (n = 32 and 64, two seeds each) predict tau_mem at n = 128 by the fit tau_mem = c n^alpha, and both measured
  tau_mem at n = 128 lie in the prediction's interval. Run with `python -m pytest -m slow tests/test_monitor.py`
  (its time: bench/README.md, "Tests")."""
  import os
  from jaxdiff import experiments, sweep
  config = sweep.load_config_module(os.path.join(os.path.dirname(os.path.dirname(__file__)),
                                                 'configs', 'gmm_mlp.py')).get_config('cpu')
  config.gmm.n = (32, 64, 128)
  config.gmm.num_seeds = 2
  config.gmm.analysis = False
  summary = experiments.train(config, str(tmp_path / 'gmm')).summary
  taus = [(m['n'], m['tau_mem_fmem']) for m in summary['members']]
  assert all(t is not None for _, t in taus), taus
  prediction = predict_tau_mem([p for p in taus if p[0] < 128], 128)
  assert prediction['num_pilots'] == 4 and np.isfinite(prediction['tau_mem_hi'])
  measured = [t for n, t in taus if n == 128]
  for t in measured:
    assert prediction['tau_mem_lo'] <= t <= prediction['tau_mem_hi'], (prediction, taus)
  print('PREDICTION', json.dumps(prediction), 'MEASURED', measured)
