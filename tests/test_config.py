"""Bad configs fail before any work, with a message naming the field."""

import pytest

from conftest import run_python, tiny_config
from jaxdiff import config as config_lib


def test_defaults_and_shipped_configs_are_valid():
  import importlib
  config_lib.validate(config_lib.default_config(), num_devices=1)
  for name in ('quickstart', 'celeba_unet', 'cifar10_unet'):
    config_lib.validate(importlib.import_module(f'configs.{name}').get_config(), num_devices=1)
  fid = importlib.import_module('configs.celeba_unet').get_config('fid')
  config_lib.validate(fid, num_devices=1)
  assert fid.eval.num_reference * fid.eval.num_reference_sets == fid.data.n_test == 50_000


@pytest.mark.parametrize('field,value,match', [
    ('data.n', 0, "'data.n': must be positive"),
    ('train.batch_size', -3, "'train.batch_size': must be positive"),
    ('model.width', 0, "'model.width'"),
    ('optimizer.name', 'lion', "'optimizer.name'"),
    ('data.centering', 'zscore', "'data.centering'"),
    ('model.groups', 3, "'model.groups'"),
    ('diffusion.sample_steps', 5000, "'diffusion.sample_steps'"),
    ('data.image_size', 10, "'data.image_size'"),  # with 3 levels: not divisible by 4
    ('ensemble.n', (4, -8), "'ensemble.n': must be a tuple of positive ints"),
    ('ensemble.n', (4, 4), "'ensemble.n': has repeated sizes"),
    ('ensemble.num_seeds', 0, "'ensemble.num_seeds'"),
    ('data.test_split', 'validation', "'data.test_split'"),
    ('eval.num_reference_sets', 0, "'eval.num_reference_sets'"),
    ('model.init', 'xavier', "'model.init': must be one of"),
    ('model.time_activation', 'relu', "'model.time_activation'"),
    ('model.downsample_padding', 'valid', "'model.downsample_padding'"),
    ('model.freq_shift', 2, "'model.freq_shift'"),
    ('model.norm_eps', 0.0, "'model.norm_eps'"),
    ('diffusion.fixed_step', 1000, "'diffusion.fixed_step'"),
    ('eval.memorization_fractions', (0.25, 1.5), "'eval.memorization_fractions'"),
])
def test_bad_values_name_the_field(field, value, match):
  overrides = {field: value}
  if field == 'data.image_size':
    overrides['model.channel_mult'] = (1, 2, 4)  # 10 is not divisible by 4
  with pytest.raises(ValueError, match=match):
    config_lib.validate(tiny_config(**overrides), num_devices=1)


def test_unknown_field_and_wrong_type():
  c = tiny_config()
  with c.unlocked():
    c.model.widht = 16
  with pytest.raises(ValueError, match="unknown config field 'model.widht'"):
    config_lib.validate(c)
  c = tiny_config()
  c.data.name = 'digits'
  with c.ignore_type():
    c.data.n = 'many'
  with pytest.raises(ValueError, match="'data.n' must be of type int"):
    config_lib.validate(c)


def test_batch_must_divide_over_data_parallel_devices():
  c = tiny_config(**{'data.n': 6, 'train.batch_size': 512})
  config_lib.validate(c, num_devices=2)  # effective batch min(6, 512) = 6 splits over 2
  with pytest.raises(ValueError, match=r"'train.batch_size'.*= 6 is not divisible by the 4"):
    config_lib.validate(c, num_devices=4)
  c.mesh.data = 8
  with pytest.raises(ValueError, match="'mesh.data': asks for 8 devices but only 4"):
    config_lib.validate(c, num_devices=4)


def test_command_line_errors_are_clear(tmp_path):
  """Through the real entry point: typo in a field, wrong type, and a value check, each before training."""
  base = ("import sys; from jaxdiff import main; sys.argv = ['jaxdiff', '--config=configs/quickstart.py', "
          f"'--workdir={tmp_path}', %r]; main.run()")
  r = run_python(base % '--config.model.widht=16')
  assert r.returncode != 0 and 'widht' in r.stderr
  r = run_python(base % '--config.data.n=many')
  assert r.returncode != 0 and 'data.n' in r.stderr
  r = run_python(base % '--config.data.n=100000')
  assert r.returncode != 0 and 'data.n' in r.stderr and 'Traceback' not in r.stderr
  assert not (tmp_path / 'checkpoints').exists()
