"""The FID Inception-v3 port: same tensors and parameter count as pytorch-fid, a strict converter, a
torch-free reader of torch files, torch's resize and pooling semantics, and [N, 2048] features.

tests/data/ was written by `bench/compare_inception_torch.py manifest|testfiles|reference` (torch 2.14.1,
torchvision 0.29.1, pytorch-fid 0.3.0): pytorch-fid's tensor names and shapes, two tiny torch.save files,
and pytorch-fid's features of two images under `random_state_dict(0)`, so CI compares against torch
without installing it. The same script's `compare` runs the wider check with torch itself.
"""

import json
import os
import pickle
import urllib.error
import zipfile

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from conftest import mismatched_state_dict
from jaxdiff.metrics import inception as I

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data')


@pytest.fixture(scope='module')
def manifest():
  with open(os.path.join(DATA, 'pytorch_fid_manifest.json')) as f:
    return json.load(f)['tensors']


@pytest.fixture(scope='module')
def model():
  return I.inception_skeleton()


def test_parameter_count_matches_pytorch_fid(manifest, model):
  torch_params = sum(int(np.prod(v['shape'])) for k, v in manifest.items()
                     if v['kind'] == 'parameter' and not k.startswith('fc.'))
  assert I.parameter_count(model) == torch_params
  assert 21_700_000 < torch_params < 21_900_000  # "about 21.8M without the classifier"


def test_converter_maps_every_manifest_tensor(manifest, model):
  needed = {name: shape for name, (_, shape) in I.torch_tensor_map(model).items()}
  optional = I.optional_torch_tensors(model)
  assert set(needed) | set(optional) == set(manifest)
  assert not set(needed) & set(optional)
  for name, info in manifest.items():
    assert tuple(info['shape']) == (needed.get(name) or optional[name]), name
  # Everything torch calls a buffer or parameter except the classifier and step counters is used.
  assert set(needed) == {k for k in manifest if not k.startswith('fc.') and 'num_batches' not in k}


def test_converter_puts_each_tensor_in_its_place(manifest):
  sd = I.random_state_dict(0)
  assert {k: list(v.shape) for k, v in sd.items()} == {k: v['shape'] for k, v in manifest.items()}
  net = I.convert_state_dict(sd)
  w = sd['Mixed_6b.branch7x7_2.conv.weight']  # OIHW [128, 128, 1, 7]
  k = np.asarray(net.Mixed_6b.branch7x7_2.conv.kernel[...])  # HWIO [1, 7, 128, 128]
  np.testing.assert_array_equal(k, w.transpose(2, 3, 1, 0))
  assert k[0, 5, 3, 9] == w[9, 3, 0, 5]
  bn = net.Mixed_7c.branch_pool.bn
  np.testing.assert_array_equal(bn.scale[...], sd['Mixed_7c.branch_pool.bn.weight'])
  np.testing.assert_array_equal(bn.bias[...], sd['Mixed_7c.branch_pool.bn.bias'])
  np.testing.assert_array_equal(bn.mean[...], sd['Mixed_7c.branch_pool.bn.running_mean'])
  np.testing.assert_array_equal(bn.var[...], sd['Mixed_7c.branch_pool.bn.running_var'])
  assert bn.epsilon == 1e-3 and bn.use_running_average


@pytest.mark.parametrize('edit, named', [
    ('remove', 'Mixed_6c.branch7x7dbl_3.conv.weight'),
    ('reshape', 'Mixed_5d.branch5x5_2.conv.weight'),
    ('reshape', 'Conv2d_4a_3x3.bn.running_var'),
    ('reshape', 'fc.weight'),
    ('add', 'Mixed_8a.branch1x1.conv.weight'),
])
def test_converter_refuses_a_wrong_state_dict_naming_the_tensor(manifest, edit, named):
  # Zeros are enough: the checks run before any value is read.
  sd, word = mismatched_state_dict({k: np.zeros(v['shape'], np.float32) for k, v in manifest.items()}, edit, named)
  with pytest.raises(ValueError, match=word) as info:
    I.convert_state_dict(sd, source='my_weights.pth')
  assert named in str(info.value) and 'my_weights.pth' in str(info.value)


def test_pool_features_match_pytorch_fid_and_batching_preserves_rows(tmp_path):
  # Reference: pytorch-fid's InceptionV3 (block 3, resize + normalize) under the same seeded random
  # weights, on two 16x16 RGB images (bench/compare_inception_torch.py reference, torch 2.14.1, CPU).
  ref = np.load(os.path.join(DATA, 'pytorch_fid_random_features.npz'))
  a, b = ref['images']
  path = str(tmp_path / 'fid_inception.npz')
  np.savez(path, **I.random_state_dict(0))
  features = I.make_inception_features(path, batch_size=2)
  out = np.asarray(features(jnp.asarray(np.stack([a, b, a]))))  # 3 images in batches of 2 (one padded)
  assert out.shape == (3, I.FEATURE_DIM)
  scale = np.abs(ref['features']).max()
  np.testing.assert_allclose(out[:2], ref['features'], atol=1e-5 * scale)
  np.testing.assert_allclose(out[2], out[0], atol=1e-6 * scale)
  assert np.abs(out[1] - out[0]).max() > 1e-2 * scale


def test_grayscale_is_repeated_to_rgb_and_mapped_to_minus_one_one():
  gray = np.random.default_rng(0).uniform(0, 1, (2, 5, 7, 1)).astype(np.float32)
  x = np.asarray(I.preprocess(jnp.asarray(gray), size=9))
  np.testing.assert_allclose(x, np.asarray(I.preprocess(jnp.asarray(np.repeat(gray, 3, -1)), size=9)))
  assert x.shape == (2, 9, 9, 3)
  np.testing.assert_allclose(np.asarray(I.preprocess(jnp.zeros((1, 4, 4, 3)), 6)), -1.0)
  np.testing.assert_allclose(np.asarray(I.preprocess(jnp.ones((1, 4, 4, 3)), 6)), 1.0, rtol=1e-6)
  with pytest.raises(ValueError, match='channels'):
    I.preprocess(jnp.zeros((1, 4, 4, 2)))


def test_resize_is_torch_bilinear_without_antialiasing():
  # F.interpolate(mode='bilinear', align_corners=False) along one axis, worked by hand.
  np.testing.assert_allclose(I.bilinear_resize_matrix(2, 4),
                             [[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])
  # Downsampling 4 -> 2 averages pixel pairs (1, 2 | 3, 4) only: no wider antialiasing kernel.
  np.testing.assert_allclose(I.bilinear_resize_matrix(4, 2), [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]])
  np.testing.assert_allclose(I.bilinear_resize_matrix(6, 6), np.eye(6))
  m = I.bilinear_resize_matrix(28, 299)
  np.testing.assert_allclose(m.sum(1), 1.0, rtol=1e-6)
  # Output pixel 150 of 299 samples input coordinate (150.5) * 28 / 299 - 0.5 = 13.5936...
  src = 150.5 * 28 / 299 - 0.5
  np.testing.assert_allclose(m[150, 13:15], [14 - src, src - 13], rtol=1e-5)


def test_fid_pools_exclude_padding_and_max_pool_pads_with_minus_infinity():
  x = jnp.ones((1, 4, 5, 2))
  np.testing.assert_allclose(np.asarray(I._avg_pool_exclude_pad(x)), 1.0)  # torchvision's would give 4/9
  y = -jnp.arange(20.0).reshape(1, 4, 5, 1) - 1.0  # all negative: a zero pad would win the max
  pooled = np.asarray(I._max_pool(y, stride=1, pad=1))
  assert pooled.shape == y.shape and pooled[0, 0, 0, 0] == -1.0 and pooled[0, 3, 4, 0] == -14.0


def expected_test_state_dict():
  """The values bench/compare_inception_torch.py `test_state_dict()` saved, rebuilt without torch."""
  base = np.arange(10, dtype=np.int64)
  return {
      '0.weight': (np.arange(12, dtype=np.float32).reshape(3, 2, 1, 2) / np.float32(7)),
      '1.weight': np.array([0.5, 1.0, 1.5], np.float32),
      '1.bias': np.array([-1.0, 0.0, 1.0], np.float32),
      '1.running_mean': np.array([0.1, 0.2, 0.3], np.float32),
      '1.running_var': np.array([1.0, 2.0, 4.0], np.float32),
      '1.num_batches_tracked': np.array(7, np.int64),
      'base': base,
      'slice': base[3:7],
      'transposed': np.arange(12, dtype=np.float64).reshape(3, 4).T,
      'half': np.linspace(-1, 1, 5).astype(np.float16),
      'bfloat16': np.array([1.0, -2.5, 0.15625], ml_dtypes.bfloat16),
      'bool': np.array([True, False, True]),
      'int32': np.array([[-1, 2], [3, -4]], np.int32),
      'scalar': np.array(3.5, np.float32),
      'empty': np.zeros((0, 3), np.float32),
      'param': np.full((2,), 0.25, np.float32),
  }


@pytest.mark.parametrize('fmt', ['zip', 'legacy'])
def test_torch_free_reader_round_trips_a_genuine_torch_file(fmt):
  got = I.read_torch_state_dict(os.path.join(DATA, f'torch_state_dict_{fmt}.pth'))
  want = expected_test_state_dict()
  assert list(got) == list(want)  # order kept, as an OrderedDict state dict
  for name, value in want.items():
    assert got[name].dtype == value.dtype and got[name].shape == value.shape, name
    np.testing.assert_array_equal(got[name], value, err_msg=name)


def test_weight_loader_reads_torch_and_npz_files_and_refuses_other_tensors(tmp_path):
  with pytest.raises(ValueError, match='unexpected tensor.*base') as info:
    I.load_pytorch_fid_weights(os.path.join(DATA, 'torch_state_dict_zip.pth'))
  assert 'missing tensor(s): Conv2d_1a_3x3' in str(info.value)
  path = str(tmp_path / 'w.npz')
  np.savez(path, **{'Conv2d_1a_3x3.conv.weight': np.zeros((32, 3, 3, 3), np.float32)})
  assert I.read_state_dict(path)['Conv2d_1a_3x3.conv.weight'].shape == (32, 3, 3, 3)
  with pytest.raises(ValueError, match=r'missing tensor\(s\): Conv2d_1a_3x3\.bn\.bias, .* \(and 461 more\)'):
    I.load_pytorch_fid_weights(path)
  with pytest.raises(FileNotFoundError, match='nowhere.pth'):
    I.load_pytorch_fid_weights(str(tmp_path / 'nowhere.pth'))


class _RunsCode:
  def __reduce__(self):
    return (os.system, ('echo owned',))


def test_reader_refuses_pickles_that_would_run_code(tmp_path):
  path = str(tmp_path / 'evil.pth')
  with zipfile.ZipFile(path, 'w') as zf:
    zf.writestr('archive/data.pkl', pickle.dumps({'x': _RunsCode()}))
  with pytest.raises(pickle.UnpicklingError, match='refusing to unpickle .*system'):
    I.read_torch_state_dict(path)
  not_torch = tmp_path / 'junk.pth'
  not_torch.write_bytes(pickle.dumps([1, 2, 3]))
  with pytest.raises(ValueError, match='not a torch file'):
    I.read_torch_state_dict(str(not_torch))


def test_missing_weights_fail_fast_saying_where_to_put_them(tmp_path, monkeypatch):
  with pytest.raises(FileNotFoundError, match='pt_inception-2015-12-05-6726825d.pth') as info:
    I.fid_weights_path(str(tmp_path), download=False)
  assert str(tmp_path) in str(info.value)

  def offline(*args, **kwargs):
    raise urllib.error.URLError('Name or service not known')

  monkeypatch.setattr(I.urllib.request, 'urlopen', offline)
  with pytest.raises(FileNotFoundError, match='could not be downloaded.*Name or service') as info:
    I.make_inception_features(cache_dir=str(tmp_path))
  assert I.FID_WEIGHTS_URL in str(info.value) and str(tmp_path) in str(info.value)
  assert not os.listdir(tmp_path)  # no partial file left behind
  # A file already in the cache is used without any download.
  (tmp_path / I.FID_WEIGHTS_FILENAME).write_bytes(b'')
  assert I.fid_weights_path(str(tmp_path)) == str(tmp_path / I.FID_WEIGHTS_FILENAME)
