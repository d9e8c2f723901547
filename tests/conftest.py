"""Shared test fixtures: a tiny config, a persistent compilation cache, subprocess helpers."""

import os
import subprocess
import sys


def selects_slow_tests(argv) -> bool:
  """Whether pytest's command line selects the slow tests (`-m slow`, `-m "slow and not gpu"`, `-mslow`)."""
  for i, arg in enumerate(argv):
    expr = argv[i + 1] if arg == '-m' and i + 1 < len(argv) else arg[2:] if arg.startswith('-m') else None
    if expr and 'slow' in expr.split() and 'not slow' not in expr:
      return True
  return False


# Tests are compile-bound (tiny models, few steps): unoptimized XLA:CPU code compiles ~40% faster and runs
# fast enough. Set before jax is imported; subprocesses inherit it (run_python adds the device count). Not for
# `-m slow`: those tests train for minutes, where unoptimized code runs several times slower (bench/README.md,
# "Tests").
# pytest-xdist's workers (PYTEST_XDIST_WORKER) do not see the command line in sys.argv: they inherit XLA_FLAGS
# from the controller, which decided.
FAST_COMPILE_FLAGS = '--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true'
if (FAST_COMPILE_FLAGS not in os.environ.get('XLA_FLAGS', '')  # keep a child's device count
    and 'PYTEST_XDIST_WORKER' not in os.environ and not selects_slow_tests(sys.argv)):
  os.environ['XLA_FLAGS'] = f"{FAST_COMPILE_FLAGS} {os.environ.get('XLA_FLAGS', '')}".strip()

if 'PYTEST_XDIST_WORKER' in os.environ:
  # On a GPU every worker would otherwise reserve 75% of its memory at the first jax call.
  os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.expanduser('~/.cache/jaxdiff/xla-tests')
jax.config.update('jax_compilation_cache_dir', CACHE)
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
# Subprocesses (fake-device runs, SIGTERM, notebooks) share the cache through the environment: in a cold CI
# run, the programs the tests compile in this process are not compiled again in every child.
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', CACHE)
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.5')


def tiny_config(**overrides):
  """A U-Net small enough for seconds-long CPU tests: 8x8 digits, width 8, two levels."""
  from jaxdiff.config import default_config
  c = default_config()
  c.data.name = 'digits'
  c.data.n = 4
  c.data.n_test = 16
  c.data.image_size = 8
  c.model.width = 8
  c.model.channel_mult = (1, 2)
  c.model.attention_resolutions = (4,)
  c.model.num_res_blocks = 1
  # Tests are compile-bound (tiny models, few steps): Flax's kernels compile faster than the CPU ones
  # (jaxdiff/models/kernels.py), which test_models checks against them, and one compiled step faster than the
  # device loop's program (bench/README.md, "Tests"); test_train checks that the
  # two loops train alike, and the quickstart notebook test runs the defaults (CPU kernels, device loop).
  c.model.kernels = 'xla'
  c.train.loop = 'host'
  c.diffusion.num_steps = 100
  c.diffusion.sample_steps = 10
  c.optimizer.name = 'adam'
  c.optimizer.learning_rate = 3e-3
  c.train.num_steps = 40
  c.train.batch_size = 4
  c.train.steps_per_dispatch = 8
  c.train.log_every = 10
  c.train.checkpoint_every = 20
  c.train.num_milestones = 5
  c.eval.num_samples = 8
  c.eval.sample_batch_size = 8
  c.eval.grid_samples = 4
  c.eval.bootstrap_resamples = 100
  c.eval.loss_batch_size = 8
  c.eval.loss_noise_draws = 2
  c.eval.kid_subset_size = 8
  return apply_overrides(c, overrides)


def tiny_gmm_config(**overrides):
  """The Gaussian-mixture problem of the GMM and sweep tests: d = 4, n in {8, 16}, 40 Adam steps."""
  from jaxdiff.config import default_config
  c = default_config()
  c.family = 'gmm'
  c.gmm.d = 4
  c.gmm.n = (8, 16)
  c.gmm.width = 16
  c.gmm.num_blocks = 2
  c.gmm.sample_steps = 20
  c.gmm.kl_samples = 32
  c.gmm.kl_steps = 10
  c.gmm.num_test = 64
  c.gmm.analysis = False
  c.eval.num_samples = 64
  c.eval.bootstrap_resamples = 100
  c.optimizer.name = 'adam'
  c.optimizer.learning_rate = 3e-3
  c.train.batch_size = 1024
  c.train.num_steps = 40
  c.train.log_every = 10
  c.train.checkpoint_every = 20
  c.train.num_milestones = 3
  return apply_overrides(c, overrides)


def mismatched_state_dict(state_dict: dict, edit: str, name: str) -> tuple[dict, str]:
  """A copy of a torch state dict with tensor `name` removed ('remove'), its last axis one longer ('reshape') or
  added as a stray [4, 4, 1, 1] ('add'); returns it with the word the loader's error must use."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  sd = dict(state_dict)
  if edit == 'remove':
    del sd[name]
  elif edit == 'reshape':
    shape = np.shape(sd[name])
    sd[name] = np.zeros(shape[:-1] + (shape[-1] + 1,), np.float32)
  else:
    sd[name] = np.zeros((4, 4, 1, 1), np.float32)
  return sd, {'remove': 'missing', 'reshape': 'shape', 'add': 'unexpected'}[edit]


def apply_overrides(c, overrides: dict):
  """Set dotted fields ('train.num_steps': 10) of config c in place; returns c."""
  for key, value in overrides.items():
    node = c
    *path, last = key.split('.')
    for p in path:
      node = node[p]
    node[last] = value
  return c


TIMING_KEYS = {'steps_per_sec', 'images_per_sec', 'elapsed_sec', 'eval_sec'}


def train_member_and_solo(experiment, config, ensemble, i: int, m, root) -> list[dict]:
  """Train member m (index i) of `ensemble` (trained in root/'ens') again as its solo run in root/m.name and
  assert the two agree: the same parameters and the same metrics rows (timings aside), with the steps of a
  30-step run with two milestones. Returns the solo run's rows."""
  import numpy as np
  from jaxdiff import experiments
  from jaxdiff.io.writers import read_metrics
  solo = experiments.train(experiment.member_config(config, m), str(root / m.name))
  for a, b in zip(jax.tree.leaves(ensemble.member_params(i, ema=False)), jax.tree.leaves(solo.state.params),
                  strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  strip = lambda rows: [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]   # noqa: E731
  member_rows = strip(read_metrics(str(root / 'ens' / m.name)))
  solo_rows = strip(read_metrics(str(root / m.name)))
  assert [r['step'] for r in member_rows] == [r['step'] for r in solo_rows] == [1, 10, 20, 30, 30]
  for a, b in zip(member_rows, solo_rows):
    assert a.keys() == b.keys()
    for k in b:
      assert a[k] == pytest.approx(b[k], rel=1e-3, abs=1e-5), k
  return solo_rows


@pytest.fixture
def cache_dir(tmp_path_factory):
  """One prepared-data cache per test session."""
  return str(tmp_path_factory.getbasetemp() / 'data-cache')


def xla_flags(devices: int) -> str:
  """XLA_FLAGS for a child process with `devices` fake CPU devices."""
  return f'{FAST_COMPILE_FLAGS} --xla_force_host_platform_device_count={devices}'


def run_python(code: str, *, devices: int = 1, timeout: int = 600, env=None) -> subprocess.CompletedProcess:
  """Run `code` in a fresh interpreter (XLA_FLAGS are read only when jax is first imported)."""
  full_env = dict(os.environ)
  full_env['XLA_FLAGS'] = xla_flags(devices)
  full_env['PYTHONPATH'] = ROOT + os.pathsep + full_env.get('PYTHONPATH', '')
  full_env.update(env or {})
  return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=timeout,
                        env=full_env, cwd=ROOT)
