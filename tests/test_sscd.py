"""The SSCD port: torchvision's ResNet-50 tensors and parameter count, a strict converter, the README's small_288
preprocessing, GeM pooling, unit-norm [N, 512] descriptors equal to the torch reference's, weights read without
torch.

tests/data/sscd_random_features.npz was written by `bench/compare_sscd_torch.py reference` (torch 2.13.0+cpu):
the torch reference's outputs for two 16x16 images (small edge 64) under `random_state_dict(0)`, so CI compares
with torch without installing it. The test at the end runs the reference itself when torch is installed.
"""

import os
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import mismatched_state_dict
from jaxdiff.io import torch_weights
from jaxdiff.metrics import inception, sscd

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data')
# torchvision's resnet50() has 25,557,032 parameters with its 1000-way fc; SSCD's fc is 2048 -> 512.
TORCHVISION_RESNET50_PARAMS = 25_557_032 - (2048 * 1000 + 1000) + (2048 * 512 + 512)


@pytest.fixture(scope='module')
def state_dict():
  return sscd.random_state_dict(0)


@pytest.fixture(scope='module')
def weights_file(tmp_path_factory, state_dict):
  """The random weights written torch-free (np.savez of the state dict), as a user's weight file stands in."""
  path = str(tmp_path_factory.mktemp('sscd') / 'sscd_random.npz')
  np.savez(path, **state_dict)
  return path


def test_tensors_are_torchvision_resnet50_under_backbone_with_a_512_fc(state_dict):
  model = sscd.sscd_skeleton()
  assert sscd.parameter_count(model) == TORCHVISION_RESNET50_PARAMS == 24_557_120
  shapes = {k: v.shape for k, v in state_dict.items()}
  assert len(shapes) == 320   # torchvision resnet50's state_dict: 267 tensors + 53 BatchNorm step counters
  assert shapes['backbone.conv1.weight'] == (64, 3, 7, 7)
  assert shapes['backbone.layer1.0.downsample.0.weight'] == (256, 64, 1, 1)
  assert shapes['backbone.layer3.0.conv2.weight'] == (256, 256, 3, 3)
  assert shapes['backbone.layer4.2.bn3.running_var'] == (2048,)
  assert shapes['backbone.layer2.3.bn1.num_batches_tracked'] == ()
  assert shapes['backbone.fc.weight'] == (512, 2048) and shapes['backbone.fc.bias'] == (512,)
  # Only the first block of each stage changes the shape, so only it has a downsample branch.
  assert sorted({k.split('.')[1] + '.' + k.split('.')[2] for k in shapes if 'downsample' in k}) == [
      'layer1.0', 'layer2.0', 'layer3.0', 'layer4.0']
  blocks = {'.'.join(k.split('.')[1:3]) for k in shapes if k.startswith('backbone.layer')}
  assert len(blocks) == 3 + 4 + 6 + 3


def test_weight_file_loads_each_tensor_into_its_place(weights_file, state_dict):
  net = sscd.load_sscd_weights(weights_file)
  sd = state_dict
  w = sd['backbone.layer3.0.conv2.weight']                      # OIHW [256, 256, 3, 3]
  k = np.asarray(net.backbone.layer3[0].conv2.kernel[...])      # HWIO
  assert k[2, 0, 7, 11] == w[11, 7, 2, 0]
  np.testing.assert_array_equal(np.asarray(net.backbone.fc.kernel[...]), sd['backbone.fc.weight'].T)
  np.testing.assert_array_equal(np.asarray(net.backbone.fc.bias[...]), sd['backbone.fc.bias'])
  bn = net.backbone.layer4[0].downsample[1]
  np.testing.assert_array_equal(bn.scale[...], sd['backbone.layer4.0.downsample.1.weight'])
  np.testing.assert_array_equal(bn.mean[...], sd['backbone.layer4.0.downsample.1.running_mean'])
  np.testing.assert_array_equal(bn.var[...], sd['backbone.layer4.0.downsample.1.running_var'])
  assert bn.epsilon == 1e-5 and bn.use_running_average
  assert net.backbone.layer4[1].downsample is None
  # Written back by name, the same tensors (without the step counters): the mapping is one-to-one.
  back = torch_weights.to_state_dict(net)
  assert set(back) == {k for k in sd if 'num_batches_tracked' not in k}
  for name, value in back.items():
    np.testing.assert_array_equal(value, sd[name], err_msg=name)


def test_a_bare_trunk_state_dict_is_read_under_backbone(state_dict):
  bare = {k[len('backbone.'):]: v for k, v in state_dict.items()}
  net = sscd.convert_state_dict(bare)
  np.testing.assert_array_equal(np.asarray(net.backbone.conv1.kernel[...]),
                                state_dict['backbone.conv1.weight'].transpose(2, 3, 1, 0))


@pytest.mark.parametrize('edit, named', [
    ('remove', 'backbone.layer2.1.conv2.weight'),
    ('remove', 'backbone.fc.bias'),
    ('reshape', 'backbone.layer1.0.downsample.1.running_mean'),
    ('reshape', 'backbone.fc.weight'),
    ('add', 'backbone.layer4.3.conv1.weight'),
    ('add', 'head.weight'),
])
def test_a_mismatched_weight_file_is_refused_naming_the_tensor(tmp_path, state_dict, edit, named):
  sd, word = mismatched_state_dict(state_dict, edit, named)
  path = str(tmp_path / 'my_sscd.npz')
  np.savez(path, **sd)
  with pytest.raises(ValueError, match=word) as info:
    sscd.load_sscd_weights(path)
  assert named in str(info.value) and path in str(info.value) and 'SSCD' in str(info.value)


def test_other_sscd_files_and_missing_files_fail_with_clear_errors(tmp_path):
  torchscript = str(tmp_path / 'sscd_disc_mixup.torchscript.pt')
  with zipfile.ZipFile(torchscript, 'w') as zf:   # the layout of a TorchScript archive
    zf.writestr('archive/data.pkl', b'')
    zf.writestr('archive/constants.pkl', b'')
    zf.writestr('archive/code/__torch__/model.py', b'')
  with pytest.raises(ValueError, match='TorchScript archive.*sscd_disc_mixup.torchvision.pt'):
    sscd.load_sscd_weights(torchscript)
  with pytest.raises(FileNotFoundError, match='nowhere.pt'):
    sscd.load_sscd_weights(str(tmp_path / 'nowhere.pt'))
  with pytest.raises(FileNotFoundError, match=sscd.WEIGHTS_URL):
    sscd.make_sscd_features(None)


def test_resize_is_bilinear_upsampling_and_antialiased_downsampling():
  # Upsampling (CIFAR-10's 32 -> 288): torch's plain bilinear interpolation, as the Inception port's (whose
  # coordinates are float32 as ATen's: weights agree to float32 rounding).
  for n_in, n_out in ((32, 288), (7, 64), (5, 5)):
    np.testing.assert_allclose(sscd.antialiased_resize_matrix(n_in, n_out),
                               inception.bilinear_resize_matrix(n_in, n_out), atol=2e-6)
  # Downsampling by 2: PIL's bilinear filter widened to 4 pixels, weights 1/8 3/8 3/8 1/8 (at an edge,
  # the weights inside the image renormalised: 3/7 3/7 1/7).
  m = sscd.antialiased_resize_matrix(8, 4)
  np.testing.assert_allclose(m[1, 1:5], [1 / 8, 3 / 8, 3 / 8, 1 / 8], atol=1e-7)
  np.testing.assert_allclose(m[0, :3], [3 / 7, 3 / 7, 1 / 7], atol=1e-7)
  np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-6)   # constant images stay constant
  # The small edge becomes 288, the long one int(288 * long / short), as torchvision's Resize(288).
  assert sscd.resized_shape(32, 32) == (288, 288)
  assert sscd.resized_shape(600, 450) == (384, 288) and sscd.resized_shape(450, 600) == (288, 384)
  assert sscd.resized_shape(100, 333) == (288, 959)


def test_preprocessing_repeats_grayscale_and_normalizes_with_imagenet_statistics():
  mean = np.asarray(sscd.IMAGENET_MEAN, np.float32)
  gray = jnp.full((1, 10, 10, 1), 0.456, jnp.float32)
  x = np.asarray(sscd.preprocess(gray, 20))
  assert x.shape == (1, 20, 20, 3)
  np.testing.assert_allclose(x[0, 7, 3], (0.456 - mean) / np.asarray(sscd.IMAGENET_STD), atol=1e-6)
  assert abs(x[0, 7, 3, 1]) < 1e-6
  with pytest.raises(ValueError, match='channels'):
    sscd.preprocess(jnp.zeros((1, 8, 8, 4)))


def test_gem_pooling_is_the_cubic_mean_of_positive_parts():
  x = jnp.asarray(np.array([1.0, 2.0, 0.0, -5.0], np.float32).reshape(1, 2, 2, 1))
  np.testing.assert_allclose(np.asarray(sscd.gem_pool(x))[0, 0], ((1 + 8 + 2e-18) / 4) ** (1 / 3), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(sscd.gem_pool(jnp.full((1, 3, 5, 2), 0.7)))[0], 0.7, rtol=1e-6)


def test_descriptors_match_the_torch_reference_and_are_unit_norm(weights_file):
  ref = np.load(os.path.join(DATA, 'sscd_random_features.npz'))
  a, b = ref['images']
  features = sscd.make_sscd_features(weights_file, size=int(ref['size']), batch_size=2)
  out = np.asarray(features(jnp.asarray(np.stack([a, b, a]))))   # 3 images in batches of 2 (one padded)
  assert out.shape == (3, sscd.FEATURE_DIM)
  np.testing.assert_allclose(out[:2], ref['embedding'], atol=1e-5, rtol=0)
  np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
  np.testing.assert_allclose(out[2], out[0], atol=1e-6)
  assert np.abs(out[1] - out[0]).max() > 1e-2   # two random images have different descriptors


def test_every_stage_equals_the_torch_reference_on_a_torch_saved_file(tmp_path, state_dict):
  torch = pytest.importorskip('torch')
  ref = pytest.importorskip('bench.compare_sscd_torch')
  model = ref.reference_model(state_dict)
  assert sum(p.numel() for p in model.parameters()) == TORCHVISION_RESNET50_PARAMS
  images = np.random.default_rng(3).uniform(0, 1, (2, 32, 32, 3)).astype(np.float32)
  want = ref.torch_stages(model, images, 64)
  for fmt in ('zip', 'legacy'):   # the two formats torch.save writes, read without torch
    path = str(tmp_path / f'sscd_{fmt}.torchvision.pt')
    torch.save({k: torch.from_numpy(v) for k, v in state_dict.items()}, path,
               _use_new_zipfile_serialization=fmt == 'zip')
    net = sscd.load_sscd_weights(path, size=64, precision='highest')
    got = jax.device_get(jax.jit(lambda m, x: m.stages(x))(net, jnp.asarray(images)))
    for stage, (err, rel) in ref.stage_errors(got, want).items():
      assert rel < 1e-5, (fmt, stage, err, rel)


def test_sscd_is_a_feature_extractor_by_name(monkeypatch):
  from jaxdiff.metrics import quality  # pylint: disable=g-import-not-at-top
  assert 'sscd' in quality.feature_extractor_names()
  monkeypatch.setattr(sscd, 'make_sscd_features', lambda **kw: ('built', kw))
  assert quality.feature_extractor('sscd', weights_path='w.pt', size=64) == ('built', {'weights_path': 'w.pt',
                                                                                      'size': 64})
