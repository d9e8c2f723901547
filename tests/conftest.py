"""Shared test fixtures: a tiny config, a persistent compilation cache, subprocess helpers."""

import os
import subprocess
import sys

import jax
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.expanduser('~/.cache/jaxdiff/xla-tests')
jax.config.update('jax_compilation_cache_dir', CACHE)
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)


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


def apply_overrides(c, overrides: dict):
  """Set dotted fields ('train.num_steps': 10) of config c in place; returns c."""
  for key, value in overrides.items():
    node = c
    *path, last = key.split('.')
    for p in path:
      node = node[p]
    node[last] = value
  return c


@pytest.fixture
def cache_dir(tmp_path_factory):
  """One prepared-data cache per test session."""
  return str(tmp_path_factory.getbasetemp() / 'data-cache')


def run_python(code: str, *, devices: int = 1, timeout: int = 600, env=None) -> subprocess.CompletedProcess:
  """Run `code` in a fresh interpreter (XLA_FLAGS are read only when jax is first imported)."""
  full_env = dict(os.environ)
  full_env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  full_env['PYTHONPATH'] = ROOT + os.pathsep + full_env.get('PYTHONPATH', '')
  full_env.update(env or {})
  return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=timeout,
                        env=full_env, cwd=ROOT)
