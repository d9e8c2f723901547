"""The notebooks in colabs/ run top to bottom at their SMALL settings (CPU) and produce their key outputs.

The three are executed concurrently (one nbclient process each, started by the module fixture): each is
mostly single-threaded XLA compilation, so on 2 cores the wall time is about half their sum. The kernels
share the tests' persistent compilation cache, so a second run is much faster than the first.
"""

import json
import os
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.expanduser('~/.cache/jaxdiff/xla-tests')
NOTEBOOKS = ('quickstart', 'random_features', 'analysis')
TIMEOUT = 900   # seconds per notebook; measured 45-170 s (quickstart, warm / cold cache) on the shared 2-core CPU

RUNNER = '''
import sys
import nbformat
from nbclient import NotebookClient
src, dst, cwd, timeout = sys.argv[1:5]
nb = nbformat.read(src, as_version=4)
try:
    NotebookClient(nb, timeout=int(timeout), kernel_name='python3', resources={'metadata': {'path': cwd}}).execute()
finally:
    nbformat.write(nb, dst)
'''


@pytest.fixture(scope='module')
def executions(tmp_path_factory):
  pytest.importorskip('nbclient', reason='the notebook tests need the test extra: pip install -e ".[test]"')
  pytest.importorskip('ipykernel', reason='the notebook tests need the test extra: pip install -e ".[test]"')
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''),
             JAXDIFF_NOTEBOOK_SMALL='1', JAX_COMPILATION_CACHE_DIR=CACHE,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0.5',
             # The small runs are compile-bound: unoptimized CPU code compiles ~40% faster (measured: 78 s
             # instead of 126 s of CPU for the small quickstart with a cold cache) and runs fast enough.
             XLA_FLAGS='--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true')
  for key in ('MPLBACKEND', 'JAXDIFF_SWEEP_DIRS', 'JAXDIFF_NOTEBOOK_WORKDIR', 'JAXDIFF_REPO'):
    env.pop(key, None)
  runs = {}
  for name in NOTEBOOKS:
    cwd = tmp_path_factory.mktemp(name)
    dst = cwd / f'{name}.executed.ipynb'
    proc = subprocess.Popen([sys.executable, '-c', RUNNER, os.path.join(ROOT, 'colabs', f'{name}.ipynb'), str(dst),
                             str(cwd), str(TIMEOUT)], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    runs[name] = (proc, cwd, dst, time.time())
  yield runs
  for proc, *_ in runs.values():
    if proc.poll() is None:
      proc.kill()
      proc.wait()


def _finish(executions, name):
  """Wait for the notebook; return (its working directory, all text it printed). Fails on any cell error."""
  import nbformat  # pylint: disable=g-import-not-at-top
  proc, cwd, dst, t0 = executions[name]
  log, _ = proc.communicate(timeout=TIMEOUT + 60)
  assert dst.exists(), log[-3000:]
  print(f'{name}.ipynb executed in {dst.stat().st_mtime - t0:.0f} s (concurrently with the others)')
  nb = nbformat.read(str(dst), as_version=4)
  text, errors = [], []
  for cell in nb.cells:
    for out in cell.get('outputs', []):
      if out.output_type == 'error':
        errors.append(f'{out.ename}: {out.evalue}')
      elif out.output_type == 'stream':
        text.append(out.text)
      elif 'text/plain' in out.get('data', {}):
        text.append(out.data['text/plain'])
  assert not errors and proc.returncode == 0, (errors, log[-3000:])
  assert all(c.cell_type != 'code' or c.get('execution_count') for c in nb.cells), 'a code cell did not run'
  return cwd, ''.join(text)


def test_quickstart_notebook_trains_and_shows_samples_neighbours_and_the_f_mem_curve(executions):
  cwd, text = _finish(executions, 'quickstart')
  workdir = cwd / 'workdirs' / 'quickstart_notebook'
  for name in ('samples.png', 'neighbours.png', 'f_mem.png', 'summary.json', 'metrics.jsonl'):
    assert (workdir / name).stat().st_size > 0, name
  assert 'backend: cpu' in text and 'trained to step 200' in text
  assert 'f_mem at the last milestone (step 200)' in text
  rows = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  assert len([r for r in rows if 'f_mem' in r]) == 3          # the 3 milestones of the SMALL run


def test_random_features_notebook_draws_the_spectrum_and_the_collapse(executions):
  cwd, text = _finish(executions, 'random_features')
  out = cwd / 'workdirs' / 'rf_notebook'
  for name in ('spectrum/spectrum.png', 'timescales/losses.png', 'collapse.png'):
    assert (out / name).stat().st_size > 0, name
  assert 'rho2: theory' in text and 'tau_mem ~ psi_n^alpha' in text
  summary = json.loads((out / 'timescales' / 'summary.json').read_text())
  # The predicted memorization time grows ~linearly with psi_n = n/d (paper 1: tau_mem ~ n).
  assert abs(summary['tau_mem_exponent_predicted'] - 1) < 0.2


def test_analysis_notebook_recovers_the_planted_scaling_law_and_draws_the_phase_diagram(executions):
  cwd, text = _finish(executions, 'analysis')
  report = cwd / 'workdirs' / 'analysis_notebook' / 'report'
  for name in ('tau_vs_n.png', 'collapse_fmem.png', 'phase.png', 'runs.csv', 'fits.csv'):
    assert (report / name).stat().st_size > 0, name
  assert '20 runs' in text and 'smallest n not memorized' in text
  fits = json.loads((report / 'summary.json').read_text())['fits']
  joint = next(f for f in fits if f['y'] == 'tau_mem_fmem' and f['x'] == 'n+width')
  # Planted: tau_mem = 40 n / W (x lognormal noise, 2 seeds): the exponents come back within ~0.1.
  assert abs(joint['n'] - 1.0) < 0.1 and abs(joint['width'] + 1.0) < 0.15, joint
