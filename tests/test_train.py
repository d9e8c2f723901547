"""The training loop: learning, exact resume, preemption, data parallelism, metrics, bad checkpoints."""

import os
import signal
import subprocess
import sys
import time

import jax
import ml_collections
import numpy as np
import pytest

from conftest import ROOT, run_python, tiny_config, xla_flags
from jaxdiff import experiments
from jaxdiff.io.checkpoints import CheckpointError
from jaxdiff.io.writers import read_metrics
from jaxdiff.train.steps import log_spaced_milestones


def _train(config, workdir, **kw):
  """Train through the experiment table (as `python -m jaxdiff.main`); returns the final TrainState."""
  return experiments.train(config, workdir, **kw).state


def _params(state):
  return [np.asarray(x) for x in jax.tree.leaves(state.params)]


def _assert_same(a, b):
  for x, y in zip(_params(a), _params(b), strict=True):
    np.testing.assert_array_equal(x, y)


@pytest.fixture
def cfg(cache_dir):
  return tiny_config(**{'data.cache_dir': cache_dir})


def test_loss_of_tiny_model_on_four_images_falls(cfg, tmp_path):
  cfg.train.num_steps = 300
  cfg.train.log_every = 50
  cfg.train.checkpoint_every = 1000
  cfg.train.num_milestones = 0
  _train(cfg, str(tmp_path))
  rows = [r for r in read_metrics(str(tmp_path)) if 'train_loss' in r]
  assert [r['step'] for r in rows] == [50, 100, 150, 200, 250, 300]
  assert rows[-1]['train_loss'] < 0.5 * rows[0]['train_loss'], rows
  assert all(r['steps_per_sec'] > 0 for r in rows)
  # The throughput columns: images = steps x the effective batch; elapsed time grows row by row.
  assert all(r['images_per_sec'] == pytest.approx(r['steps_per_sec'] * cfg.train.batch_size) for r in rows)
  assert all(a['elapsed_sec'] < b['elapsed_sec'] for a, b in zip(rows, rows[1:]))
  assert (tmp_path / 'samples.png').stat().st_size > 1000


def test_kill_and_resume_equals_uninterrupted_run(cfg, tmp_path):
  full = _train(cfg, str(tmp_path / 'full'))
  # Interrupted at a step that is neither a log step nor a chunk boundary of the full run.
  part = _train(cfg, str(tmp_path / 'resumed'), stop_at_step=13)
  assert int(part.step) == 13
  resumed = _train(cfg, str(tmp_path / 'resumed'))
  assert int(resumed.step) == int(full.step) == cfg.train.num_steps
  _assert_same(full, resumed)
  for a, b in zip(jax.tree.leaves(full.opt_state), jax.tree.leaves(resumed.opt_state), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # The metric history of the resumed run is that of the uninterrupted one (timings aside).
  # Evaluation rows at the milestones included: their samples, f_mem and losses derive from (seed, step).
  timing = {'steps_per_sec', 'images_per_sec', 'elapsed_sec', 'eval_sec'}
  strip = lambda d: [{k: v for k, v in r.items() if k not in timing} for r in read_metrics(str(tmp_path / d))]
  assert strip('full') == strip('resumed')
  assert any('f_mem' in r for r in strip('full'))
  assert [r['step'] for r in strip('full') if 'train_loss' in r] == [10, 20, 30, 40]
  # Milestone checkpoints are kept, plus the latest.
  steps = sorted(int(d) for d in os.listdir(tmp_path / 'full' / 'checkpoints') if d.isdigit())
  assert steps == sorted(set(log_spaced_milestones(40, 5).tolist()) | {40})


def test_host_and_device_loops_train_alike(cfg, tmp_path):
  """One compiled step dispatched per step and the lax loop (the default) compute the same training.

  SGD, because Adam's first updates are lr * g / |g| and flip sign on gradients at rounding level, so two
  compilations of the same Adam step differ by ~lr on such parameters."""
  cfg.train.num_milestones = 0
  cfg.optimizer.name = 'sgd'
  cfg.optimizer.learning_rate = 0.05
  cfg.train.loop = 'host'
  host = _train(cfg, str(tmp_path / 'host'), stop_at_step=16)
  cfg.train.loop = 'device'
  device = _train(cfg, str(tmp_path / 'device'), stop_at_step=16)
  for x, y in zip(_params(host), _params(device), strict=True):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)
  assert int(host.step) == int(device.step) == 16


def test_resume_refuses_a_different_model_and_reports_a_corrupt_checkpoint(cfg, tmp_path):
  cfg.eval.enabled = False   # checkpoints only
  _train(cfg, str(tmp_path), stop_at_step=8)
  wider = ml_collections.ConfigDict(cfg.to_dict())
  wider.model.width = 16
  with pytest.raises(CheckpointError, match=r'model.width: checkpoint 8, config 16'):
    _train(wider, str(tmp_path))
  ckpt = tmp_path / 'checkpoints' / '8' / 'state'
  for root, _, files in os.walk(ckpt):
    for f in files:
      with open(os.path.join(root, f), 'wb') as fh:
        fh.write(b'garbage')
  with pytest.raises(CheckpointError, match='checkpoint step 8'):
    _train(cfg, str(tmp_path))


def test_sigterm_saves_and_resume_finishes_and_tensorflow_is_optional(cfg, tmp_path):
  """A preempted process (SIGTERM) checkpoints where it is and exits cleanly; a rerun completes the run.
  That process has TensorFlow blocked: training, evaluation and metrics.jsonl need none."""
  cfg.train.num_steps = 100_000
  cfg.train.log_every = 8
  cfg.train.checkpoint_every = 100_000
  code = ("import sys, ml_collections; from absl import logging; logging.set_verbosity('info');"
          "sys.modules['tensorflow'] = None;"
          "from jaxdiff import experiments; from jaxdiff.io import writers; assert not writers.tensorflow_available();"
          f"c = ml_collections.ConfigDict({cfg.to_dict()!r});"
          f"s = experiments.train(c, {str(tmp_path)!r}).state; print('STOPPED_AT', int(s.step));"
          "print('TF_IMPORTED', sys.modules.get('tensorflow') is not None)")
  env = dict(os.environ, XLA_FLAGS=xla_flags(1),
             PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
  proc = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, env=env, cwd=ROOT)
  deadline = time.time() + 300
  while time.time() < deadline and not read_metrics(str(tmp_path)):
    time.sleep(0.5)
  assert read_metrics(str(tmp_path)), 'training never logged'
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 0, out
  stopped = int(out.split('STOPPED_AT')[1].split()[0])
  assert 0 < stopped < cfg.train.num_steps
  assert 'TF_IMPORTED False' in out
  assert any('f_mem' in row for row in read_metrics(str(tmp_path)))  # evaluated without TensorFlow
  saved = sorted(int(d) for d in os.listdir(tmp_path / 'checkpoints') if d.isdigit())
  assert saved[-1] == stopped
  cfg.train.num_steps = stopped + 16
  state = _train(cfg, str(tmp_path))
  assert int(state.step) == stopped + 16


def test_eight_devices_train_like_one(cache_dir):
  """Data parallel over 8 fake CPU devices gives the parameters of a 1-device run (float tolerance)."""
  code = f"""
import jax, numpy as np, tempfile
from conftest import tiny_config
from jaxdiff import experiments
assert jax.device_count() == 8
out = []
for n_dev in (1, 8):
  c = tiny_config(**{{'data.n': 16, 'train.batch_size': 8, 'mesh.data': n_dev, 'train.num_steps': 13,
                     'data.cache_dir': {cache_dir!r}, 'model.dropout': 0.1, 'eval.enabled': False,
                     'optimizer.name': 'sgd', 'optimizer.learning_rate': 0.05}})
  s = experiments.train(c, tempfile.mkdtemp(), stop_at_step=12).state   # stopped: no final sample grid
  leaf = jax.tree.leaves(s.params)[0]
  assert len(leaf.sharding.device_set) == n_dev
  out.append([np.asarray(x) for x in jax.tree.leaves(s.params)])
# SGD keeps float reduction-order differences at rounding level (Adam's normalisation would amplify the
# differences of near-zero gradients); the moved distance shows the comparison is not vacuous.
init = [np.asarray(x) for x in jax.tree.leaves(experiments.train(c, tempfile.mkdtemp(), stop_at_step=0).state.params)]
moved = max(float(np.abs(a - b).max()) for a, b in zip(out[0], init))
assert moved > 1e-3, moved
worst = max(float(np.abs(a - b).max()) for a, b in zip(*out))
print('WORST', worst)
assert worst < 1e-5 * max(moved, 1.0), (worst, moved)
"""
  r = run_python(code, devices=8, env={'PYTHONPATH': os.path.join(ROOT, 'tests')})
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
  assert 'WORST' in r.stdout


def test_debiased_moving_average_is_optax_debiased_ema_of_the_trained_parameters():
  """optimizer.ema_debias: after k steps the average is optax.ema(debias=True) of the k trained parameter
  vectors (no share of the initial weights); without it, the initial weights keep decay^k of the average."""
  import jax.numpy as jnp
  import optax
  from jaxdiff.train.steps import init_state, train_step

  def loss_fn(params, batch, weight, key):
    del key
    return jnp.sum(weight * jnp.sum((batch['x'] - params['w']) ** 2, -1)) / jnp.sum(weight)

  data = {'x': jnp.arange(12.0).reshape(4, 3)}
  tx = optax.sgd(0.1)
  decay, k = 0.9, 7
  for debias in (True, False):
    state = init_state(lambda key: {'w': jax.random.normal(key, (3,))}, tx, jax.random.key_data(jax.random.key(0)),
                       ema=True)
    w0 = state.params['w']
    reference = optax.ema(decay, debias=True)
    ref_state = reference.init(state.params)
    biased = w0
    for _ in range(k):
      state = train_step(state, data, None, loss_fn=loss_fn, tx=tx, batch_size=2, ema_decay=decay,
                         ema_debias=debias)
      avg, ref_state = reference.update(state.params, ref_state)
      biased = decay * biased + (1 - decay) * state.params['w']
    want = avg['w'] if debias else biased
    np.testing.assert_allclose(state.ema_params['w'], want, rtol=1e-5, atol=1e-6)
    if debias:   # the first update puts the average at the first trained parameters
      assert not np.allclose(state.ema_params['w'], biased, rtol=1e-3)
