"""The notebooks in colabs/ run top to bottom at their SMALL settings (CPU) and compute what they show.

The three are executed concurrently (one nbclient process each, started by the module fixture): each is
mostly single-threaded XLA compilation, so on 2 cores the wall time is about half their sum. The kernels
share the tests' persistent compilation cache, so a second run is much faster than the first.

The tests read values, not printed text: after a notebook's last cell the runner executes one more cell (not
part of the notebook) in the same kernel, which writes the values of `RESULTS[name]` (expressions over the
notebook's variables) to a JSON file that the test asserts on.
"""

import json
import math
import os
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jaxdiff.train.steps import log_spaced_milestones

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.expanduser('~/.cache/jaxdiff/xla-tests')
NOTEBOOKS = ('quickstart', 'random_features', 'analysis')
TIMEOUT = 900   # seconds per notebook: generous against the measured times (bench/README.md, "Tests")

# What each test reads from its notebook's kernel: {key: Python expression over the notebook's variables}.
RESULTS = {
    'quickstart': {
        'backend': 'jax.default_backend()',
        'step': 'int(run.state.step)',
        'num_steps': 'config.train.num_steps',
        'num_milestones': 'config.train.num_milestones',
        'milestones': 'step',                                                    # the f_mem curve's x
        'f_mem': "[[r['f_mem_lo'], r['f_mem'], r['f_mem_hi']] for r in rows]",
        'loss_t': "[[r['loss_train_t'], r['loss_test_t']] for r in rows]",
        'summary': 'summary',
        'workdir': 'WORKDIR',
    },
    'random_features': {
        'coef': '{k: getattr(coef, k) for k in ("a", "b", "v2", "s2")}',
        'psi': '[r.psi_p[0], r.psi_n[0]]',
        'closed_form_edges': 'theory.memorization_edges(coef, r.psi_p[0], r.psi_n[0])',
        'spectrum_check': 'spectrum["spectrum_check"]',
        'psi_n': 'list(config.rf.psi_n)',
        'timescales': '{k: summary[k] for k in ("tau_mem", "tau_mem_exponent", "tau_mem_exponent_predicted")}',
        'workdir': 'WORKDIR',
    },
    'analysis': {
        'num_runs': 'len(runs)',
        'runs': "[{k: r.get(k) for k in ('n', 'width', 'tau_gen', 'tau_mem_fmem')} for r in rows]",
        'joint': 'joint',
        'phase': "[{k: v for k, v in p.items() if k != 'points'} for p in report['phase']]",
        'files': "report['files']",
    },
}

RUNNER = '''
import sys
import nbformat
from nbclient import NotebookClient
src, dst, cwd, timeout, results_cell = sys.argv[1:6]
nb = nbformat.read(src, as_version=4)
nb.cells.append(nbformat.v4.new_code_cell(results_cell))
try:
    NotebookClient(nb, timeout=int(timeout), kernel_name='python3', resources={'metadata': {'path': cwd}}).execute()
finally:
    nbformat.write(nb, dst)
'''


def _results_cell(name: str, path: str) -> str:
  """The cell the runner appends: the values of RESULTS[name] as JSON in `path`."""
  items = ''.join(f'    {key!r}: {expr},\n' for key, expr in RESULTS[name].items())
  return ('import json as _json\n'
          f'with open({path!r}, "w") as _f:\n'
          '    _json.dump({\n' + items + '    }, _f,\n'
          '               default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))\n')


@pytest.fixture(scope='module')
def executions(tmp_path_factory):
  pytest.importorskip('nbclient', reason='the notebook tests need the test extra: pip install -e ".[test]"')
  pytest.importorskip('ipykernel', reason='the notebook tests need the test extra: pip install -e ".[test]"')
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''),
             JAXDIFF_NOTEBOOK_SMALL='1', JAX_COMPILATION_CACHE_DIR=CACHE,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0.5',
             # The small runs are compile-bound: unoptimized CPU code compiles faster (bench/README.md, "Tests")
             # and runs fast enough.
             XLA_FLAGS='--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true')
  for key in ('MPLBACKEND', 'JAXDIFF_SWEEP_DIRS', 'JAXDIFF_NOTEBOOK_WORKDIR', 'JAXDIFF_REPO'):
    env.pop(key, None)
  runs = {}
  for name in NOTEBOOKS:
    cwd = tmp_path_factory.mktemp(name)
    dst, results = cwd / f'{name}.executed.ipynb', cwd / f'{name}.results.json'
    proc = subprocess.Popen([sys.executable, '-c', RUNNER, os.path.join(ROOT, 'colabs', f'{name}.ipynb'), str(dst),
                             str(cwd), str(TIMEOUT), _results_cell(name, str(results))], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    runs[name] = (proc, cwd, dst, results, time.time())
  yield runs
  for proc, *_ in runs.values():
    if proc.poll() is None:
      proc.kill()
      proc.wait()


def _finish(executions, name):
  """Wait for the notebook; return (its working directory, the values of RESULTS[name]). Fails on any cell
  error or a cell that did not run."""
  import nbformat  # pylint: disable=g-import-not-at-top
  proc, cwd, dst, results, t0 = executions[name]
  log, _ = proc.communicate(timeout=TIMEOUT + 60)
  assert dst.exists(), log[-3000:]
  print(f'{name}.ipynb executed in {dst.stat().st_mtime - t0:.0f} s (concurrently with the others)')
  nb = nbformat.read(str(dst), as_version=4)
  errors = [f'{out.ename}: {out.evalue}' for cell in nb.cells for out in cell.get('outputs', [])
            if out.output_type == 'error']
  assert not errors and proc.returncode == 0, (errors, log[-3000:])
  assert all(c.cell_type != 'code' or c.get('execution_count') for c in nb.cells), 'a code cell did not run'
  return cwd, json.loads(results.read_text())


def _assert_figure(path, min_size=(200, 150)):
  """A PNG of at least min_size (width, height) pixels that is not one flat colour."""
  import matplotlib.image  # pylint: disable=g-import-not-at-top
  with open(path, 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n', path
  pixels = matplotlib.image.imread(str(path))
  assert pixels.shape[1] >= min_size[0] and pixels.shape[0] >= min_size[1], (path, pixels.shape)
  assert float(pixels[..., :3].std()) > 0.01, path


def test_quickstart_notebook_trains_and_shows_samples_neighbours_and_the_f_mem_curve(executions):
  _, out = _finish(executions, 'quickstart')
  workdir = out['workdir']
  assert out['backend'] == jax.default_backend()
  assert out['step'] == out['num_steps'] == 200                       # the SMALL run, trained to the end
  # The f_mem curve: one point per log-spaced milestone (3 for the SMALL run), each a fraction in [0, 1]
  # inside its bootstrap interval, with positive finite losses at t_OU = 0.01.
  assert out['milestones'] == list(log_spaced_milestones(200, out['num_milestones'])) and len(out['milestones']) == 3
  for lo, f_mem, hi in out['f_mem']:
    assert 0.0 <= lo <= f_mem <= hi <= 1.0, out['f_mem']
  assert all(0 < x < 2 for pair in out['loss_t'] for x in pair), out['loss_t']   # eps-MSE: ~1 untrained
  # The summary the notebook printed is the one written to summary.json, from those milestones.
  with open(os.path.join(workdir, 'summary.json')) as f:
    assert json.load(f) == out['summary']
  assert out['summary']['num_milestones'] == 3
  rows = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  assert [r['f_mem'] for r in rows if 'f_mem' in r] == [row[1] for row in out['f_mem']]
  for name in ('samples.png', 'neighbours.png', 'f_mem.png'):
    _assert_figure(os.path.join(workdir, name))


def test_random_features_notebook_draws_the_spectrum_and_the_collapse(executions):
  _, out = _finish(executions, 'random_features')
  check = out['spectrum_check']
  # The closed-form edges of the memorization bulk rho_1 the notebook printed: s^2 + v^2 (1 -/+ sqrt(psi_p/psi_n))^2.
  psi_p, psi_n = out['psi']
  c, root = out['coef'], math.sqrt(psi_p / psi_n)
  edges = [c['s2'] + c['v2'] * (1 - root) ** 2, c['s2'] + c['v2'] * (1 + root) ** 2]
  np.testing.assert_allclose(out['closed_form_edges'], edges, rtol=1e-6)
  np.testing.assert_allclose(check['rho1_edges_closed_form'], edges, rtol=1e-6)
  for bulk in ('rho1', 'rho2'):
    lo, hi = check[f'{bulk}_edges_theory']
    elo, ehi = check[f'{bulk}_edges_empirical']
    assert 0 < lo < hi and 0 < elo < ehi, check
    assert 0 <= check[f'{bulk}_ks'] <= 1, check
  assert check['rho1_edges_theory'][1] < check['rho2_edges_theory'][0]       # two separate bulks
  assert check['rho1_edges_empirical'][1] < check['rho2_edges_empirical'][0]
  # At d = 12 the top d eigenvalues follow rho_2 (edges within 30%, measured 10-25%; KS measured 0.13).
  np.testing.assert_allclose(check['rho2_edges_empirical'], check['rho2_edges_theory'], rtol=0.3)
  assert check['rho2_ks'] < 0.3, check
  # The predicted memorization time grows ~linearly with psi_n = n/d (paper 1: tau_mem ~ n).
  ts = out['timescales']
  assert abs(ts['tau_mem_exponent_predicted'] - 1) < 0.2, ts
  predicted = [ts['tau_mem'][f'{x:g}']['predicted'] for x in out['psi_n']]
  assert all(a < b for a, b in zip(predicted, predicted[1:])), predicted
  workdir = out['workdir']
  for name in ('spectrum/spectrum.png', 'timescales/losses.png', 'collapse.png'):
    _assert_figure(os.path.join(workdir, name))


def test_analysis_notebook_recovers_the_planted_scaling_law_and_draws_the_phase_diagram(executions):
  _, out = _finish(executions, 'analysis')
  assert out['num_runs'] == 20                                   # 2 widths x 5 training-set sizes x 2 seeds
  assert {(r['width'], r['n']) for r in out['runs']} == {(w, n) for w in (16, 32) for n in (128, 256, 512, 1024, 2048)}
  # Each run's timescales follow the planted curves: tau_mem_fmem is where f_mem's lower bound leaves 0,
  # 1.19 x 40 n / W (x noise exp(0.1 z)); tau_gen is where the quality comes within 10% of its best,
  # sqrt(10) x 1e4 / W (on the milestone grid).
  for r in out['runs']:
    assert 0.8 < r['tau_mem_fmem'] / (40 * r['n'] / r['width']) < 1.8, r
    assert 2.5 < r['tau_gen'] / (1e4 / r['width']) < 4.0, r
  # The joint fit log tau_mem = log c + alpha log n + beta log W is the least-squares fit of the run table,
  # its bootstrap interval holds it, and it recovers the planted exponents (+1, -1) within ~0.1. (Not
  # within the interval for n: the fit of these 20 draws is 0.964 +- 0.03 before any measurement.)
  joint = out['joint']
  assert joint['y'] == 'tau_mem_fmem' and joint['x'] == 'n+width' and joint['num_points'] == 20, joint
  design = np.array([[1.0, math.log(r['n']), math.log(r['width'])] for r in out['runs']])
  (_, alpha, beta), *_ = np.linalg.lstsq(design, np.log([r['tau_mem_fmem'] for r in out['runs']]), rcond=None)
  assert joint['n'] == pytest.approx(alpha, abs=1e-6) and joint['width'] == pytest.approx(beta, abs=1e-6)
  assert joint['n_lo'] < joint['n'] < joint['n_hi'] and joint['n_hi'] - joint['n_lo'] < 0.2, joint
  assert joint['width_lo'] < joint['width'] < joint['width_hi'] and joint['width_lo'] < -1.0 < joint['width_hi']
  assert abs(joint['n'] - 1.0) < 0.1 and abs(joint['width'] + 1.0) < 0.15, joint
  # The phase diagram at tau = tau_gen: runs with 40 n / W x 1.19 <= sqrt(10) x 1e4 / W (n <= 512) have
  # memorized, the larger ones not, whatever the width: n* = 1024 for both.
  phase = out['phase']
  assert sorted({p['width'] for p in phase}) == [16, 32]
  assert {p['width']: p['n_star'] for p in phase if p['multiple'] == 1.0} == {16: 1024, 32: 1024}, phase
  report = os.path.dirname(out['files']['summary.json'])
  for name in ('runs.csv', 'fits.csv'):
    assert os.path.getsize(os.path.join(report, name)) > 100, name
  for name in ('tau_vs_n.png', 'collapse_fmem.png', 'phase.png'):
    _assert_figure(out['files'][name])
