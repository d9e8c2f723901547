"""The analysis (jaxdiff/analysis): from run directories to timescales, fits, phase diagram and figures."""

import csv
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from jaxdiff import analysis
from jaxdiff.analysis import fits
from jaxdiff.analysis.report import report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write_run(workdir, *, n, width, seed, tau_mem, tau_gen, steps, summary=True, lr=1e-3, batch=512,
               family='ddpm'):
  """A synthetic run: f_mem leaves 0 at tau_mem (then grows in log time), quality plateaus at tau_gen,
  the loss gap opens at tau_mem / 2."""
  os.makedirs(workdir, exist_ok=True)
  times = np.unique(np.round(np.geomspace(10, steps, 60)).astype(int))
  rows = []
  for t in times:
    f = float(np.clip(0.4 * np.log(t / tau_mem), 0.0, 1.0))
    q = 20.0 * (1 + (tau_gen / t) ** 2)
    gap = float(np.clip(0.2 * np.log(t / (tau_mem / 2)), 0.0, None))
    rows.append({'step': int(t), 'f_mem': f, 'f_mem_lo': max(f - 0.02, 0.0), 'f_mem_hi': min(f + 0.02, 1.0),
                 'fd': q, 'loss_train_t': 0.1 - gap / 4, 'loss_test_t': 0.1 + 3 * gap / 4})
    rows.append({'step': int(t), 'train_loss': 0.1})
  with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
    for r in rows:
      f.write(json.dumps(r) + '\n')
  config = {'family': family, 'seed': seed, 'data': {'n': n, 'name': 'synthetic'}, 'model': {'width': width},
            'train': {'batch_size': batch}, 'optimizer': {'learning_rate': lr, 'name': 'sgd'}}
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    json.dump(config, f)
  if summary:
    from jaxdiff import timescales
    s = timescales.summarize(rows, quality_key='fd')
    s.update(n=n, width=width, seed=seed, batch_size=batch, learning_rate=lr)
    with open(os.path.join(workdir, 'summary.json'), 'w') as f:
      json.dump(s, f)


@pytest.fixture(scope='module')
def sweep_dir(tmp_path_factory):
  """n in {128, ..., 2048} x W in {16, 32} x 3 seeds: tau_mem = 40 n / W x lognormal(0.1), tau_gen ~ 1e4 / W."""
  root = tmp_path_factory.mktemp('sweep')
  rs = np.random.RandomState(0)
  for w in (16, 32):
    for n in (128, 256, 512, 1024, 2048):
      for seed in range(3):
        tau_mem = 40.0 * n / w * math.exp(0.1 * rs.randn())
        _write_run(str(root / f'w{w}' / f'n{n}_s{seed}'), n=n, width=w, seed=seed, tau_mem=tau_mem,
                   tau_gen=1e4 / w, steps=60_000, summary=(seed != 2))
  return str(root)


def test_fit_scaling_recovers_a_planted_exponent_with_an_interval_covering_it():
  rs = np.random.RandomState(1)
  n = np.repeat([100, 200, 400, 800, 1600], 4).astype(float)
  w = np.tile([8, 16, 32, 64], 5).astype(float)
  tau = 3.0 * n ** 1.0 * w ** -1.0 * np.exp(0.1 * rs.randn(n.size))
  f = fits.fit_scaling({'n': n, 'width': w}, tau, num_bootstrap=500)
  assert f['n_lo'] < 1.0 < f['n_hi'] and f['n_hi'] - f['n_lo'] < 0.3
  assert f['width_lo'] < -1.0 < f['width_hi']
  single = fits.fit_scaling({'n': n}, tau * w, num_bootstrap=500)
  assert single['n_lo'] < 1.0 < single['n_hi'] and single['n_lo_t'] < 1.0 < single['n_hi_t']
  with pytest.raises(ValueError, match="'n' needs >= 2 distinct"):
    fits.fit_scaling({'n': [5, 5, 5, 5]}, [1, 2, 3, 4])


def test_analysis_recovers_tau_mem_proportional_to_n_over_w_from_run_dirs(sweep_dir):
  runs = analysis.load_runs([sweep_dir])
  assert len(runs) == 30
  assert sum(not r.finished for r in runs) == 10          # seed 2 has no summary.json: recomputed
  rows = analysis.run_table(runs)
  got = analysis.scaling_fits(rows, num_bootstrap=500)
  per_width = [f for f in got if f['y'] == 'tau_mem_fmem' and f['x'] == 'n' and f['runs'] == 'all']
  assert sorted(f['group']['width'] for f in per_width) == [16, 32]
  for f in per_width:
    assert f['n_lo'] < 1.0 < f['n_hi'], f
    assert abs(f['n'] - 1.0) < 0.15
  joint = next(f for f in got if f['y'] == 'tau_mem_fmem' and f['x'] == 'n+width')
  assert joint['n_lo'] < 1.0 < joint['n_hi'] and joint['width_lo'] < -1.0 < joint['width_hi']
  gen = next(f for f in got if f['y'] == 'tau_gen' and f['x'] == 'width')   # noiseless: tau_gen = 3e4 / W
  assert gen['width'] == pytest.approx(-1.0, abs=0.02)
  assert gen['c'] == pytest.approx(math.sqrt(10) * 1e4, rel=0.05)


def test_phase_diagram_and_normalized_step(sweep_dir):
  rows = analysis.run_table(analysis.load_runs([sweep_dir]))
  phase = analysis.phase_diagram(rows)
  # Measured: tau_gen = sqrt(10) 1e4 / W (quality within 10% of its best), tau_mem = 1.19 x 40 n / W
  # (f_mem_lo > 0.05). At tau_gen the runs with n <= 512 have memorized (n < 664), at 8 tau_gen all of them.
  by = {(p['width'], p['multiple']): p for p in phase}
  assert by[(16, 1.0)]['n_star'] == 1024 and by[(32, 1.0)]['n_star'] == 1024
  assert by[(16, 8.0)]['n_star'] is None
  ref = analysis.normalization_reference([{'n': 256, 'batch_size': 32, 'learning_rate': 1e-4},
                                          {'n': 1024, 'batch_size': 64, 'learning_rate': 2e-4}])
  assert ref == {'n': 256, 'batch_size': 32, 'learning_rate': 1e-4}
  t = analysis.normalized_step(1000.0, {'n': 1024, 'batch_size': 64, 'learning_rate': 2e-4}, ref)
  assert t == pytest.approx(1000.0 * (256 / 1024) * (64 / 32) * (2e-4 / 1e-4))


def test_cli_writes_tables_and_figures(sweep_dir, tmp_path):
  out = str(tmp_path / 'out')
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
  proc = subprocess.run([sys.executable, '-m', 'jaxdiff.analysis', '--workdirs', os.path.join(sweep_dir, 'w16'),
                         os.path.join(sweep_dir, 'w32'), '--out', out, '--bootstrap', '200'],
                        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
  assert proc.returncode == 0, proc.stderr
  for name in ('runs.csv', 'runs.md', 'fits.csv', 'local_exponents.csv', 'phase.csv', 'summary.json', 'tau_vs_n.png',
               'collapse_fmem.png', 'collapse_quality.png', 'collapse_losses.png', 'normalized.png', 'phase.png'):
    assert os.path.getsize(os.path.join(out, name)) > 0, name
  with open(os.path.join(out, 'runs.csv')) as f:
    table = list(csv.DictReader(f))
  assert len(table) == 30 and {'tau_mem_fmem', 'T_mem_fmem', 'tau_gen'} <= set(table[0])
  assert '| tau_mem_fmem | n |' in proc.stdout
  bad = subprocess.run([sys.executable, '-m', 'jaxdiff.analysis', '--workdirs', out, '--out', out],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
  assert bad.returncode == 2 and 'no run directories' in bad.stderr


def test_local_exponents_follow_tau_mem_towards_capacity_and_count_runs_that_never_memorized():
  """tau_mem = c n / (1 - n / n*) with n* = 256: the exponent between consecutive n is (log of) the exact ratio,
  rising from ~1 towards n*; a run that never memorized is counted and left out of the mean; a linear law
  gives 1 everywhere; different widths are separate groups."""
  def row(n, tau, width=8, seed=0):
    return {'family': 'ddpm', 'dataset': 'digits', 'optimizer': 'adam', 'learning_rate': 1e-3, 'width': width,
            'batch_config': 8, 'batch_size': 8, 'n': n, 'seed': seed, 'tau_mem_fmem': tau, 'tau_mem_loss': None}
  law = lambda n: 10.0 * n / (1 - n / 256)
  rows = [row(n, law(n) * f, seed=s) for n in (16, 32, 64, 128) for s, f in enumerate((1.1, 1 / 1.1))]
  rows += [row(128, None, seed=2)] + [row(n, 5.0 * n, width=16) for n in (16, 32, 64)]
  got = fits.local_exponents(rows)
  assert all(r['y'] == 'tau_mem_fmem' for r in got)            # no loss-gap tau anywhere: no rows
  narrow = [r for r in got if r['group']['width'] == 8]
  assert [(r['n_a'], r['n_b']) for r in narrow] == [(16, 32), (32, 64), (64, 128)]
  for r in narrow:                                              # the seeds' factors cancel in the geometric mean
    assert r['exponent'] == pytest.approx(math.log(law(r['n_b']) / law(r['n_a'])) / math.log(2), rel=1e-9)
  assert narrow[0]['exponent'] < narrow[1]['exponent'] < narrow[2]['exponent'] and narrow[2]['exponent'] > 1.5
  assert (narrow[2]['reached_b'], narrow[2]['runs_b'], narrow[2]['reached_a']) == (2, 3, 2)
  wide = [r for r in got if r['group']['width'] == 16]
  assert [r['exponent'] for r in wide] == pytest.approx([1.0, 1.0])


def test_a_second_fit_against_n_keeps_only_the_runs_whose_window_is_open():
  """tau_mem = max(floor, 20 n) with the floor just below tau_gen: the small n copy as soon as they learn (window
  closed) and flatten the fit over all runs; the fit over the runs with tau_gen < tau_mem finds the law's 1, and
  is there only for the definition and group where a window is closed."""
  def row(n, seed, tau_mem, tau_loss, width=8):
    return {'family': 'ddpm', 'dataset': 'digits', 'optimizer': 'adam', 'learning_rate': 1e-3, 'width': width,
            'batch_config': 32, 'batch_size': min(n, 32), 'inv_batch_size': 1 / min(n, 32), 'n': n, 'seed': seed,
            'tau_gen': 1000.0, 'tau_mem_fmem': tau_mem, 'tau_mem_loss': tau_loss}
  noise = (1.05, 1 / 1.05)
  rows = [row(n, s, max(900.0, 20.0 * n) * f, 5e3 * n * f) for n in (16, 32, 64, 128, 256)
          for s, f in enumerate(noise)]
  rows += [row(n, s, 30.0 * n * f, None, width=16) for n in (64, 128, 256) for s, f in enumerate(noise)]
  every = fits.scaling_fits(rows, num_bootstrap=300)
  assert not [f for f in every if 'inv_batch_size' in f['x']]   # min(n, 32) varies with n only: no fit in 1/B
  got = [f for f in every if f['x'] == 'n' and f['y'] != 'tau_gen']
  by = {(f['y'], f['group']['width'], f['runs']): f for f in got}
  assert set(by) == {('tau_mem_fmem', 8, 'all'), ('tau_mem_fmem', 8, fits.WINDOW_OPEN),
                     ('tau_mem_loss', 8, 'all'), ('tau_mem_fmem', 16, 'all')}
  everything, window = by['tau_mem_fmem', 8, 'all'], by['tau_mem_fmem', 8, fits.WINDOW_OPEN]
  assert everything['num_points'] == 10 and window['num_points'] == 6       # n = 16, 32 are closed
  assert everything['n_hi'] < 0.95
  assert window['n'] == pytest.approx(1.0, abs=1e-6) and window['n_lo'] < 1.0 < window['n_hi']
  assert by['tau_mem_loss', 8, 'all']['n'] == pytest.approx(1.0, abs=1e-6)


def test_recomputing_tau_gen_keeps_the_thresholds_the_run_recorded(tmp_path):
  """`--quality_key` / `--tau_gen_reference` recompute tau_gen only: tau_mem stays what the run's own
  thresholds gave (here f_mem's lower bound > 0 and the relative loss gap, not the library defaults)."""
  from jaxdiff import timescales
  wd = str(tmp_path / 'run')
  _write_run(wd, n=64, width=8, seed=0, tau_mem=3000.0, tau_gen=500.0, steps=60_000, summary=False)
  rows = analysis.load_run(wd).history
  recorded = timescales.summarize(rows, quality_key='fd', f_mem_threshold=0.0, loss_gap_threshold=0.5,
                                  loss_gap_relative=True, rel_tol=0.3)
  assert recorded['tau_mem_fmem'] != timescales.summarize(rows, quality_key='fd')['tau_mem_fmem']
  with open(os.path.join(wd, 'summary.json'), 'w') as f:
    json.dump({**recorded, 'n': 64}, f)
  for kw in ({'quality_key': 'fd'}, {'quality_reference': 'drop'}):
    s = analysis.load_run(wd, **kw).summary
    for key in ('tau_mem_fmem', 'tau_mem_loss', 'f_mem_threshold', 'loss_gap_relative', 'quality_rel_tol'):
      assert s[key] == recorded[key], (kw, key)
  drop = analysis.load_run(wd, quality_reference='drop').summary
  t, q = analysis.load_run(wd).curve('fd')
  assert drop['quality_reference'] == 'drop'
  assert drop['tau_gen'] == pytest.approx(timescales.tau_gen(t, q, rel_tol=0.3, reference='drop'))
  assert drop['tau_gen'] < recorded['tau_gen']       # q falls from 20 (1 + 2500) to 20: 30% of that comes early
  out = report([wd], str(tmp_path / 'out'), figures=False, num_bootstrap=50, tau_gen_reference='drop',
               tau_gen_rel_tol=0.1)
  assert out['runs'][0]['tau_gen'] == pytest.approx(timescales.tau_gen(t, q, rel_tol=0.1, reference='drop'))


@pytest.mark.parametrize('order', [(0, 1), (1, 0)])
def test_phase_diagram_counts_every_seed_of_an_n_whatever_their_order(order):
  """n* is the smallest n from which on no run memorized: a memorized seed at n = 64 rules 64 out, whichever of
  the two seeds comes first."""
  seeds = [{'n': 64, 'tau_gen': 10.0, 'tau_mem_fmem': 5.0, 'last_step': 100, 'width': 8, 'num_params': 1},
           {'n': 64, 'tau_gen': 10.0, 'tau_mem_fmem': None, 'last_step': 100, 'width': 8, 'num_params': 1}]
  rows = [seeds[order[0]], seeds[order[1]],
          {'n': 32, 'tau_gen': 10.0, 'tau_mem_fmem': 2.0, 'last_step': 100, 'width': 8, 'num_params': 1},
          {'n': 128, 'tau_gen': 10.0, 'tau_mem_fmem': None, 'last_step': 100, 'width': 8, 'num_params': 1}]
  (row,) = fits.phase_diagram(rows, multiples=(1.0,))
  assert row['n_star'] == 128


def test_paper_3_analysis_fits_tau_mem_against_n_and_inverse_batch_and_collapses_against_the_normalized_step(
    tmp_path):
  """Synthetic N x B grid with tau_mem = 50 N / B: the fits against N (per B) and against 1/B (per N) find
  exponent 1 inside their intervals, T_mem is the same for every run, one collapse figure per swept variable,
  and each row has the memorization rate (f_mem = 0.4 ln(t / tau_mem): 0.4 ln 10 per decade) and the best
  quality before tau_mem."""
  rs = np.random.RandomState(3)
  for n in (8, 16, 32):
    for b in (2, 4, 8):
      _write_run(str(tmp_path / f'b{b}' / f'n{n}'), n=n, width=8, seed=0, batch=b, family='flow', steps=50_000,
                 tau_mem=50.0 * n / b * math.exp(0.05 * rs.randn()), tau_gen=20.0)
  rep = report([str(tmp_path)], str(tmp_path / 'analysis'), num_bootstrap=300)
  by_n = [f for f in rep['fits'] if f['y'] == 'tau_mem_fmem' and f['x'] == 'n' and f['runs'] == 'all']
  by_b = [f for f in rep['fits'] if f['y'] == 'tau_mem_fmem' and f['x'] == 'inv_batch_size']
  assert sorted(f['group']['batch_config'] for f in by_n) == [2, 4, 8]
  assert sorted(f['group']['n'] for f in by_b) == [8, 16, 32]
  for f in by_n:   # three points per fit: the Student-t interval (the bootstrap of 3 points is degenerate)
    assert f['n_lo_t'] < 1.0 < f['n_hi_t'] and abs(f['n'] - 1) < 0.15, f
  for f in by_b:
    assert f['inv_batch_size_lo_t'] < 1.0 < f['inv_batch_size_hi_t'] and abs(f['inv_batch_size'] - 1) < 0.15, f
  joint = next(f for f in rep['fits'] if f['y'] == 'tau_mem_fmem' and f['x'] == 'n+inv_batch_size')
  assert joint['n_lo'] < 1.0 < joint['n_hi'] and joint['inv_batch_size_lo'] < 1.0 < joint['inv_batch_size_hi']
  t_mem = [r['T_mem_fmem'] for r in rep['runs']]
  assert max(t_mem) / min(t_mem) < 1.5          # collapsed (tau_mem spans a factor 16)
  for name in ('collapse_T_n.png', 'collapse_T_batch_size.png'):
    assert os.path.getsize(rep['files'][name]) > 0
  assert 'collapse_T_learning_rate.png' not in rep['files']
  for r in rep['runs']:
    assert r['mem_rate'] == pytest.approx(0.4 * math.log(10), rel=0.05)
    assert r['best_quality_pre_mem'] is not None and r['best_quality_pre_mem'] >= r['quality_best']


def test_memorization_rate_and_best_before_read_only_their_side_of_tau_mem():
  steps = [10, 100, 1000, 10_000]
  assert fits.memorization_rate(steps, [0.0, 0.0, 0.3, 0.6], 1000) == pytest.approx(0.3)
  assert fits.memorization_rate(steps, [0.0, 0.0, 0.3, 0.6], None) is None
  assert fits.memorization_rate(steps, [0.0, 0.0, 0.3, 0.6], 5000) is None   # one milestone after tau_mem
  assert fits.best_before(steps, [5.0, 2.0, 1.0, 0.5], 100) == 2.0
  assert fits.best_before(steps, [5.0, 2.0, 1.0, 0.5], None) == 0.5


def test_runs_that_never_memorized_are_drawn_as_lower_bounds_at_their_last_step(tmp_path):
  """A run that did not copy within its steps still bounds tau_mem from below: tau_vs_n draws it at its last
  step (plots.not_reached), per width and tau definition; runs that memorized are not among them."""
  from jaxdiff.analysis import plots
  for n, tau_mem in ((64, 4000.0), (256, 1e6)):     # n = 256 memorizes long after its 28k steps
    _write_run(str(tmp_path / f'n{n}'), n=n, width=8, seed=0, tau_mem=tau_mem, tau_gen=2500.0, steps=28_000)
  rows = analysis.run_table(analysis.load_runs([str(tmp_path)]))
  by_n = {r['n']: r for r in rows}
  assert by_n[256]['tau_mem_fmem'] is None and by_n[64]['tau_mem_fmem'] is not None
  assert plots.not_reached(rows, 'tau_mem_fmem', 8) == [(256.0, 28000.0)]
  assert plots.not_reached(rows, 'tau_mem_fmem', 16) == []
  assert plots.tau_vs_n(rows, [], str(tmp_path / 'tau_vs_n.png')).endswith('tau_vs_n.png')
