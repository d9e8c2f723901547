"""Sweeps (jaxdiff/sweep.py): points, workdirs and seeds; the local runner skips finished points and resumes
interrupted ones; the launcher hook yields one command per point."""

import json
import os
import shlex
import subprocess
import sys

import pytest

from jaxdiff import experiments, sweep
from jaxdiff.io.checkpoints import Checkpoints

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The same tiny problem as tests/test_gmm.py (compilations are shared within the test process); the sweeps
# are over the learning rate and over seeds (which compiles nothing new).
CONFIG_FILE = '''
import sys
sys.path.insert(0, TESTS_DIR)
from conftest import tiny_gmm_config
from jaxdiff.sweep import product


def get_config(arg=''):
  return tiny_gmm_config(seed=3)


def sweep(arg=''):
  if arg == 'seeds':
    return product({'seed': [3, 4]})
  rates = [3e-3, 1e-2] if arg == 'small' else [3e-3, 1e-2, 3e-2]
  return product({'optimizer.learning_rate': rates, 'gmm.mu_scale': [1.0]})
'''.replace('TESTS_DIR', repr(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def config_path(tmp_path):
  path = tmp_path / 'gmm_sweep.py'
  path.write_text(CONFIG_FILE)
  return str(path)


def test_points_have_own_workdirs_stable_seeds_and_names(config_path, tmp_path):
  base, points = sweep.points_from_spec(config_path, str(tmp_path / 's'))
  assert [p.name for p in points] == ['learning_rate0.003_mu_scale1', 'learning_rate0.01_mu_scale1',
                                      'learning_rate0.03_mu_scale1']
  assert len({p.seed for p in points}) == 3 and len({p.workdir for p in points}) == 3
  assert all(p.workdir.startswith(str(tmp_path / 's')) for p in points)
  # The config argument reaches sweep(arg); seeds do not depend on the order or number of points.
  _, small = sweep.points_from_spec(config_path + ':small', str(tmp_path / 's'))
  assert [(p.name, p.seed) for p in small] == [(p.name, p.seed) for p in points[:2]]
  shared = sweep.make_points('d', [{'a.b': 1}, {'a.b': 2}], 7, seeds='shared')
  assert [p.seed for p in shared] == [7, 7]
  assert sweep.make_points('d', [{'seed': 11, 'x': 1}], 0)[0].seed == 11
  c = sweep.point_config(base, points[2])
  assert c.optimizer.learning_rate == 3e-2 and c.seed == points[2].seed and base.optimizer.learning_rate == 3e-3
  with pytest.raises(ValueError, match="unknown config field 'gmm.widht'"):
    sweep.apply_overrides(base, {'gmm.widht': 3})
  assert sweep.product({'a': [1, 2], 'b': ['x']}) == [{'a': 1, 'b': 'x'}, {'a': 2, 'b': 'x'}]


def test_sweep_resumes_after_interruption_without_redoing_finished_points(config_path, tmp_path):
  sweep_dir = str(tmp_path / 'sweep')
  base, points = sweep.points_from_spec(config_path + ':seeds', sweep_dir)
  assert [(p.name, p.seed) for p in points] == [('seed3', 3), ('seed4', 4)]
  calls = []

  def interrupted(config, workdir):   # point 1 completes; point 2 is killed after 20 of 40 steps
    calls.append(os.path.basename(workdir))
    if len(calls) == 2:
      experiments.train(config, workdir, stop_at_step=20)
      raise KeyboardInterrupt
    return experiments.train(config, workdir)

  with pytest.raises(KeyboardInterrupt):
    sweep.run_local(base, points, run_fn=interrupted, log=lambda s: None)
  assert sweep.is_finished(points[0].workdir) and not sweep.is_finished(points[1].workdir)
  first_metrics = os.path.join(points[0].workdir, 'n8_seed%d' % points[0].seed, 'metrics.jsonl')
  mtime = os.stat(first_metrics).st_mtime_ns

  calls.clear()
  resumed_from = []

  def resume(config, workdir):
    calls.append(os.path.basename(workdir))
    resumed_from.append(Checkpoints(workdir).latest_step())
    return experiments.train(config, workdir)

  results = sweep.run_local(base, points, run_fn=resume, log=lambda s: None)
  assert [r['status'] for r in results] == ['skipped', 'done']
  assert calls == [points[1].name] and resumed_from == [20]
  assert os.stat(first_metrics).st_mtime_ns == mtime
  # tests/test_gmm.py checks that a resumed GMM run writes the history of an uninterrupted one.
  # Everything finished: a third invocation runs nothing.
  assert [r['status'] for r in sweep.run_local(base, points, run_fn=resume, log=lambda s: None)] == ['skipped'] * 2


def test_launcher_hook_yields_one_main_command_per_unfinished_point(config_path, tmp_path):
  sweep_dir = str(tmp_path / 'sweep')
  _, points = sweep.points_from_spec(config_path, sweep_dir)
  os.makedirs(points[0].workdir)
  open(os.path.join(points[0].workdir, 'summary.json'), 'w').write('{}')
  cmds = list(sweep.commands(config_path, points, base_overrides={'train.num_steps': 50}, python='python'))
  assert len(cmds) == 2
  args = shlex.split(cmds[0])
  assert args[:3] == ['python', '-m', 'jaxdiff.main'] and f'--config={config_path}' in args
  assert f'--workdir={points[1].workdir}' in args
  assert {'--config.optimizer.learning_rate=0.01', '--config.gmm.mu_scale=1.0', '--config.train.num_steps=50',
          f'--config.seed={points[1].seed}'} <= set(args)
  # The same from the command line (nothing is trained in this mode).
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
  proc = subprocess.run([sys.executable, '-m', 'jaxdiff.sweep', f'--config={config_path}:small',
                         f'--sweep_dir={sweep_dir}', '--mode=commands', '--config.train.num_steps=50'],
                        capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.strip().splitlines()
  assert len(lines) == 1 and '--config.optimizer.learning_rate=0.01' in lines[0]
  assert '--config.train.num_steps=50' in lines[0]
  manifest = json.load(open(os.path.join(sweep_dir, 'sweep.json')))
  assert [p['name'] for p in manifest['points']] == [p.name for p in points[:2]]
