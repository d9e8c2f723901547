"""Data loading: the embedded digits, TFDS without TensorFlow (mocked), preprocessing, the cache, errors."""

import glob
import json
import logging
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import run_python
from jaxdiff import data as data_lib
from jaxdiff.data import images as images_lib


def data_config(tmp_path, **overrides) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(dict(
      name='digits', n=64, block=0, n_test=100, image_size=16, grayscale=True, center_crop=False,
      centering='pixel', scale=1.0, data_dir='', cache_dir=str(tmp_path / 'cache'), test_split='test'))
  c.update(overrides)
  return c


def raw_digits():
  """The embedded digits after the fixed permutation, as floats in [0, 1] [5000, 28, 28, 1], and labels."""
  raw, labels, max_value = images_lib._embedded_raw('digits')
  perm = np.random.default_rng(0).permutation(len(raw))
  return raw[perm] / max_value, labels[perm]


def as_rows(x):
  """Images as a set of byte strings (for disjointness checks); pixels rounded to 8 bits."""
  q = np.rint(np.asarray(x) * 255).astype(np.uint8)
  return {row.tobytes() for row in q.reshape(len(q), -1)}


# ------------------------------------------------------------------------------------------- embedded digits


def test_digits_shapes_classes_centering_and_inverse(tmp_path):
  d = data_lib.load_images(data_config(tmp_path, n=64, n_test=100, image_size=16))
  assert d.train.shape == (64, 16, 16, 1) and d.train.dtype == np.float32
  assert d.test.shape == (100, 16, 16, 1) and d.test.dtype == np.float32
  assert d.train_labels.shape == (64,) and d.train_labels.dtype == np.int32
  assert d.test_labels.shape == (100,) and d.test_labels.dtype == np.int32
  assert d.name == 'digits' and d.num_classes == 10 and d.scale == 1.0
  # The raw digits are sorted by class; the fixed permutation mixes them.
  assert len(np.unique(d.train_labels)) >= 8
  # 'pixel' centring: the training mean is ~0 and the subtracted mean is one scalar.
  assert abs(float(d.train.mean())) < 1e-6
  assert d.mean.size == 1 and 0.05 < float(d.mean.ravel()[0]) < 0.3
  # to_pixels inverts the transform exactly onto the preprocessed raw pixels, in [0, 1].
  raw, labels = raw_digits()
  expected = data_lib.preprocess(raw[:64], image_size=16, grayscale=True, center_crop=False, max_value=1.0)
  pixels = d.to_pixels(d.train)
  assert pixels.min() >= 0.0 and pixels.max() <= 1.0 and pixels.max() > 0.9
  np.testing.assert_allclose(pixels, expected, atol=1e-6)
  np.testing.assert_array_equal(d.train_labels, labels[:64])
  # The test set gets the same transform (the training mean, not its own).
  test_pixels = data_lib.preprocess(raw[-100:], image_size=16, grayscale=True, center_crop=False, max_value=1.0)
  np.testing.assert_allclose(d.to_pixels(d.test), test_pixels, atol=1e-6)
  np.testing.assert_array_equal(d.test_labels, labels[-100:])
  assert float(d.mean.ravel()[0]) == pytest.approx(float(expected.mean()), abs=1e-6)
  assert float(d.test.mean()) == pytest.approx(float(test_pixels.mean() - expected.mean()), abs=1e-6)


def test_digits_blocks_and_test_set_are_disjoint(tmp_path):
  cfg = dict(n=200, n_test=500, image_size=28, centering='none')
  b0 = data_lib.load_images(data_config(tmp_path, block=0, **cfg))
  b1 = data_lib.load_images(data_config(tmp_path, block=1, **cfg))
  raw, _ = raw_digits()
  # image_size 28 is the native size: the images are the raw pixels of the permuted array.
  np.testing.assert_allclose(b0.train, raw[0:200], atol=1e-6)
  np.testing.assert_allclose(b1.train, raw[200:400], atol=1e-6)
  np.testing.assert_allclose(b0.test, b1.test)  # the test set does not depend on the block
  r0, r1, rt = as_rows(b0.train), as_rows(b1.train), as_rows(b0.test)
  assert len(r0) == 200 and len(r1) == 200 and len(rt) == 500
  assert not r0 & r1 and not r0 & rt and not r1 & rt
  # The last possible block ends right before the held-out images.
  last = data_lib.load_images(data_config(tmp_path, block=(5000 - 500) // 200 - 1, **cfg))
  assert not as_rows(last.train) & rt


def test_centering_modes_and_scale(tmp_path):
  raw, _ = raw_digits()
  raw_train, raw_test = raw[:128], raw[-64:]
  kw = dict(n=128, n_test=64, image_size=28, scale=2.0)
  none = data_lib.load_images(data_config(tmp_path, centering='none', **kw))
  np.testing.assert_allclose(none.train, 2.0 * raw_train, atol=1e-5)
  np.testing.assert_allclose(none.test, 2.0 * raw_test, atol=1e-5)
  assert none.train.max() == pytest.approx(2.0) and none.train.min() == 0.0
  assert np.all(none.mean == 0.0)

  pixel = data_lib.load_images(data_config(tmp_path, centering='pixel', **kw))
  assert pixel.mean.shape == (1, 1, 1)
  assert float(pixel.mean[0, 0, 0]) == pytest.approx(2.0 * raw_train.mean(), rel=1e-5)
  assert abs(float(pixel.train.mean())) < 1e-5
  np.testing.assert_allclose(pixel.test, 2.0 * raw_test - 2.0 * raw_train.mean(), atol=1e-5)

  image = data_lib.load_images(data_config(tmp_path, centering='image', **kw))
  assert image.mean.shape == (28, 28, 1)
  np.testing.assert_allclose(image.mean, 2.0 * raw_train.mean(axis=0), atol=1e-5)
  np.testing.assert_allclose(image.train.mean(axis=0), 0.0, atol=1e-5)
  np.testing.assert_allclose(image.test, 2.0 * raw_test - 2.0 * raw_train.mean(axis=0), atol=1e-5)

  for d in (none, pixel, image):
    np.testing.assert_allclose(d.to_pixels(d.train), raw_train, atol=1e-5)


def test_sklearn_digits(tmp_path):
  d = data_lib.load_images(data_config(tmp_path, name='sklearn_digits', n=100, n_test=50, image_size=8,
                                       centering='none'))
  assert d.train.shape == (100, 8, 8, 1) and d.test.shape == (50, 8, 8, 1)
  assert d.train.min() == 0.0 and d.train.max() == 1.0  # values 0..16 scaled to [0, 1]
  assert np.all(np.isclose(d.train * 16, np.rint(d.train * 16), atol=1e-5))  # untouched at native size
  assert len(np.unique(d.train_labels)) == 10 and d.num_classes == 10
  with pytest.raises(ValueError, match='data.n'):
    data_lib.load_images(data_config(tmp_path, name='sklearn_digits', n=1000, n_test=1000, image_size=8))


@pytest.mark.parametrize('overrides, field', [
    (dict(n=8000), 'data.n'),
    (dict(n=1000, block=3, n_test=2048), 'data.n'),
    (dict(n_test=6000), 'data.n_test'),
    (dict(name='imagenet'), 'data.name'),
    (dict(centering='median'), 'data.centering'),
    (dict(n=0), 'data.n'),
    (dict(n_test=-1), 'data.n_test'),
    (dict(block=-1), 'data.block'),
    (dict(image_size=0), 'data.image_size'),
    (dict(name='cifar10', n=50001), 'data.n'),
])
def test_bad_config_raises_before_loading(tmp_path, monkeypatch, overrides, field):
  def fail(*args, **kwargs):
    raise AssertionError('data was loaded before the config was checked')
  monkeypatch.setattr(images_lib, '_embedded_raw', fail)
  monkeypatch.setattr(images_lib, '_load_tfds', fail)
  with pytest.raises(ValueError, match=field) as info:
    data_lib.load_images(data_config(tmp_path, **overrides))
  msg = str(info.value)
  if overrides.get('n') == 8000:
    assert "needs 8000 training images but 'digits' has only 5000" in msg
  if 'name' in overrides and overrides['name'] == 'imagenet':
    assert all(name in msg for name in data_lib.DATASETS)


# -------------------------------------------------------------------------------------------- preprocessing


def test_resize_matches_jax_image_resize():
  rng = np.random.default_rng(1)
  for (h, w), size in [((28, 28), 32), ((178, 178), 32), ((28, 28), 16), ((32, 32), 32), ((21, 35), 8)]:
    x = rng.uniform(size=(3, h, w, 1)).astype(np.float32)
    ours = data_lib.preprocess(x, image_size=size, grayscale=True, center_crop=False, max_value=1.0)
    ref = jax.image.resize(jnp.asarray(x), (3, size, size, 1), method='linear', antialias=True)
    np.testing.assert_allclose(ours, np.clip(np.asarray(ref), 0, 1), atol=2e-5)
  # The native size is the identity.
  np.testing.assert_allclose(data_lib.resize_weights(9, 9), np.eye(9), atol=1e-12)


def test_preprocess_known_values():
  # A constant colour stays that colour (as luma) through crop, grayscale and resize.
  img = np.zeros((2, 218, 178, 3), np.uint8)
  img[...] = (200, 100, 50)
  out = data_lib.preprocess(img, image_size=32, grayscale=True, center_crop=True)
  assert out.shape == (2, 32, 32, 1)
  np.testing.assert_allclose(out, (0.299 * 200 + 0.587 * 100 + 0.114 * 50) / 255, atol=1e-5)
  rgb = data_lib.preprocess(img, image_size=32, grayscale=False, center_crop=True)
  assert rgb.shape == (2, 32, 32, 3)
  np.testing.assert_allclose(rgb, np.broadcast_to(np.array([200, 100, 50]) / 255, rgb.shape), atol=1e-5)
  # The largest centred square of a 60x40 (H x W) image is rows 10..50.
  tall = np.zeros((1, 60, 40, 1), np.uint8)
  tall[:, 10:50] = 255
  tall[:, 10:50, :20] = 100
  cropped = data_lib.preprocess(tall, image_size=40, grayscale=True, center_crop=True)
  assert cropped.shape == (1, 40, 40, 1)
  np.testing.assert_allclose(cropped[0, :, :20], 100 / 255, atol=1e-6)
  np.testing.assert_allclose(cropped[0, :, 20:], 1.0, atol=1e-6)
  assert data_lib.center_crop_square(np.zeros((1, 40, 60, 3))).shape == (1, 40, 40, 3)


# ------------------------------------------------------------------------------------------ TFDS (mocked)

tfds = pytest.importorskip('tensorflow_datasets')


def test_loading_through_tfds_does_not_import_tensorflow(tmp_path):
  """jaxdiff.data reads TFDS's array_record sources without TensorFlow: importing it and loading a (mocked)
  TFDS data set leaves `tensorflow` unimported. Checked in a fresh interpreter: in this one, other tests may
  have imported TensorFlow (the TensorBoard writers do where it is installed)."""
  cfg = dict(data_config(tmp_path, name='celeb_a', n=8, block=1, n_test=4, image_size=16, center_crop=True))
  code = f"""
import json
import sys
import ml_collections
import tensorflow_datasets as tfds
from jaxdiff import data
cfg = ml_collections.ConfigDict({cfg!r})
with tfds.testing.mock_data(num_examples=20):
  d = data.load_images(cfg)
print(json.dumps({{'shape': d.train.shape, 'tensorflow_imported': 'tensorflow' in sys.modules}}))
"""
  proc = run_python(code, timeout=120)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out == {'shape': [8, 16, 16, 1], 'tensorflow_imported': False}, out


class FakeSource:
  """A random-access data source of hand-made records (what tfds.data_source returns)."""

  def __init__(self, records):
    self.records = records

  def __len__(self):
    return len(self.records)

  def __getitem__(self, i):
    return self.records[i]

  def __getitems__(self, keys):
    return [self.records[k] for k in keys]


def test_tfds_celeb_a_crop_resize_grayscale(tmp_path):
  cfg = data_config(tmp_path, name='celeb_a', n=8, block=1, n_test=4, image_size=32, center_crop=True)
  with tfds.testing.mock_data(num_examples=20):
    d = data_lib.load_images(cfg)
    source = tfds.data_source('celeb_a', split='train', download=False)
    raw = np.stack([source[i]['image'] for i in range(8, 16)])
  assert raw.shape == (8, 218, 178, 3)
  assert d.train.shape == (8, 32, 32, 1) and d.test.shape == (4, 32, 32, 1)
  assert d.num_classes == 1 and np.all(d.train_labels == 0) and np.all(d.test_labels == 0)
  assert abs(float(d.train.mean())) < 1e-6
  # Block 1 is records 8..15 of split 'train', prepared (then stored as 8 bits).
  expected = data_lib.preprocess(raw, image_size=32, grayscale=True, center_crop=True)
  np.testing.assert_allclose(d.to_pixels(d.train), expected, atol=0.5 / 255 + 1e-6)


def test_test_images_held_out_from_the_end_of_the_train_split(tmp_path):
  """data.test_split='train': the test images are the last n_test records of split 'train' (CelebA's test
  split is too small for paper 1's 5 x 10,000 FID references); cached; too many asked names the fields."""
  cfg = data_config(tmp_path, name='celeb_a', n=8, block=1, n_test=3, image_size=16, center_crop=True,
                    test_split='train')
  with tfds.testing.mock_data(num_examples=20):
    d = data_lib.load_images(cfg)
    source = tfds.data_source('celeb_a', split='train', download=False)
    raw = np.stack([source[i]['image'] for i in range(17, 20)])
    with pytest.raises(ValueError, match=r"'data.n_test'.*data.n=8, data.block=1"):
      data_lib.load_images(data_config(tmp_path, name='celeb_a', n=8, block=1, n_test=5, image_size=16,
                                       center_crop=True, test_split='train'))
  expected = data_lib.preprocess(raw, image_size=16, grayscale=True, center_crop=True)
  np.testing.assert_allclose(d.to_pixels(d.test), expected, atol=0.5 / 255 + 1e-6)
  # A second load, with no TFDS data at all, comes from the cache (the tail's own cache file).
  again = data_lib.load_images(cfg)
  np.testing.assert_array_equal(again.test, d.test)
  with pytest.raises(ValueError, match="'data.n'.*minus data.n_test=100000"):
    data_lib.load_images(data_config(tmp_path, name='celeb_a', n=65536, n_test=100_000, test_split='train'))
  with pytest.raises(ValueError, match="'data.test_split'"):
    data_lib.load_images(data_config(tmp_path, name='celeb_a', test_split='validation'))


def test_tfds_cifar10_color_and_labels(tmp_path):
  cfg = data_config(tmp_path, name='cifar10', n=16, n_test=8, image_size=32, grayscale=False,
                    centering='none')
  with tfds.testing.mock_data(num_examples=16):
    d = data_lib.load_images(cfg)
    train = tfds.data_source('cifar10', split='train', download=False)
    test = tfds.data_source('cifar10', split='test', download=False)
    raw = np.stack([train[i]['image'] for i in range(16)])
    labels = np.array([train[i]['label'] for i in range(16)])
    test_labels = np.array([test[i]['label'] for i in range(8)])
  assert d.train.shape == (16, 32, 32, 3) and d.test.shape == (8, 32, 32, 3)
  np.testing.assert_allclose(d.train, raw / 255.0, atol=1e-6)  # native size, no crop: the raw pixels
  np.testing.assert_array_equal(d.train_labels, labels)
  np.testing.assert_array_equal(d.test_labels, test_labels)
  assert d.num_classes == 10 and d.train_labels.dtype == np.int32


def test_tfds_known_values_through_loader(tmp_path, monkeypatch):
  """Hand-made records: a constant colour and a tall image with a known centre square."""
  const = np.zeros((218, 178, 3), np.uint8)
  const[...] = (200, 100, 50)
  tall = np.zeros((218, 178, 3), np.uint8)
  tall[20:198] = 255  # the centre square (rows 20..198) is white, the rest black
  records = {'train': [{'image': const, 'label': 3}, {'image': tall, 'label': 7}],
             'test': [{'image': tall, 'label': 1}]}
  monkeypatch.setattr(tfds, 'data_source', lambda name, split, **kw: FakeSource(records[split]))
  d = data_lib.load_images(data_config(tmp_path, name='mnist', n=2, n_test=1, image_size=32,
                                       center_crop=True, centering='none'))
  luma = np.rint(0.299 * 200 + 0.587 * 100 + 0.114 * 50) / 255
  np.testing.assert_allclose(d.train[0], luma, atol=1e-6)
  np.testing.assert_allclose(d.train[1], 1.0, atol=1e-6)
  np.testing.assert_allclose(d.test[0], 1.0, atol=1e-6)
  np.testing.assert_array_equal(d.train_labels, [3, 7])
  np.testing.assert_array_equal(d.test_labels, [1])
  # Without the crop the black bands come back into the picture.
  d = data_lib.load_images(data_config(tmp_path, name='mnist', n=2, n_test=0, image_size=32,
                                       center_crop=False, centering='none'))
  assert d.train[1, 0].max() < 0.5 and d.train[1, 16].min() == 1.0 and d.test.shape == (0, 32, 32, 1)


def test_tfds_too_few_records(tmp_path):
  with tfds.testing.mock_data(num_examples=10):
    with pytest.raises(ValueError, match='data.n'):
      data_lib.load_images(data_config(tmp_path, name='mnist', n=8, block=1, n_test=2))


def test_cache_second_load_does_not_touch_tfds(tmp_path, monkeypatch, caplog):
  cfg = data_config(tmp_path, name='celeb_a', n=8, block=0, n_test=4, image_size=32, center_crop=True)
  with tfds.testing.mock_data(num_examples=12):
    first = data_lib.load_images(cfg)
  files = sorted(os.path.basename(p) for p in glob.glob(str(tmp_path / 'cache' / '*.npy')))
  assert files == ['celeb_a-test-32px-gray-crop-n4.v1.images.npy', 'celeb_a-test-32px-gray-crop-n4.v1.labels.npy',
                   'celeb_a-train-32px-gray-crop-n8.v1.images.npy', 'celeb_a-train-32px-gray-crop-n8.v1.labels.npy']
  assert not glob.glob(str(tmp_path / 'cache' / '*tmp*'))
  cached = np.load(tmp_path / 'cache' / files[2])
  assert cached.dtype == np.uint8 and cached.shape == (8, 32, 32, 1)

  def no_tfds(*args, **kwargs):
    raise AssertionError('TFDS was touched although the cache holds the data')
  monkeypatch.setattr(tfds, 'data_source', no_tfds)
  monkeypatch.setattr(tfds, 'builder', no_tfds)
  second = data_lib.load_images(cfg)
  for field in ('train', 'test', 'train_labels', 'test_labels', 'mean'):
    np.testing.assert_array_equal(getattr(first, field), getattr(second, field))
  # A smaller training set (or an earlier block) is served by the larger cache file.
  small = data_lib.load_images(data_config(tmp_path, name='celeb_a', n=4, block=1, n_test=2, image_size=32,
                                           center_crop=True, centering='none'))
  np.testing.assert_allclose(small.train, first.to_pixels(first.train)[4:8], atol=1e-6)
  # Other preprocessing settings do not reuse it.
  with pytest.raises(data_lib.DataNotPreparedError, match='TFDS was touched'):
    data_lib.load_images(data_config(tmp_path, name='celeb_a', n=8, n_test=4, image_size=16, center_crop=True))
  monkeypatch.undo()

  # A corrupt cache file is ignored with a warning and rebuilt.
  with open(tmp_path / 'cache' / files[2], 'wb') as f:
    f.write(b'not a numpy file')
  with caplog.at_level(logging.WARNING), tfds.testing.mock_data(num_examples=12):
    rebuilt = data_lib.load_images(cfg)
  assert 'unreadable cache' in caplog.text
  np.testing.assert_array_equal(rebuilt.train, first.train)
  assert np.load(tmp_path / 'cache' / files[2]).shape == (8, 32, 32, 1)


def test_unprepared_dataset_fails_fast(tmp_path):
  data_dir = tmp_path / 'tfds'
  data_dir.mkdir()
  cfg = data_config(tmp_path, name='celeb_a', n=8, n_test=4, image_size=32, center_crop=True,
                    data_dir=str(data_dir))
  start = time.time()
  with pytest.raises(data_lib.DataNotPreparedError) as info:
    data_lib.load_images(cfg)
  assert time.time() - start < 10
  msg = str(info.value)
  assert f'tfds build celeb_a --file_format=array_record --data_dir={data_dir}' in msg
  assert "pip install 'jaxdiff[tf]'" in msg and 'manual download' in msg and "'celeb_a'" in msg
  assert isinstance(info.value, RuntimeError)
  assert not list(data_dir.iterdir())  # nothing downloaded or created
  assert not glob.glob(str(tmp_path / 'cache' / '*'))


def test_tfrecord_without_tensorflow_says_rebuild(tmp_path, monkeypatch):
  class FakeBuilder:
    data_path = '/data/mnist/3.0.1'
    info = type('Info', (), {'file_format': 'tfrecord'})()

    def is_prepared(self):
      return True

  def data_source(*args, **kwargs):
    raise NotImplementedError('Random access data source for file format FileFormat.TFRECORD is not supported.')
  monkeypatch.setattr(tfds, 'data_source', data_source)
  monkeypatch.setattr(tfds, 'builder', lambda *args, **kwargs: FakeBuilder())
  monkeypatch.setattr(images_lib, '_tf_available', lambda: False)
  with pytest.raises(data_lib.DataNotPreparedError, match='tfrecord format') as info:
    data_lib.load_images(data_config(tmp_path, name='mnist', n=8, n_test=4, data_dir='/data'))
  assert 'tfds build mnist --file_format=array_record --data_dir=/data' in str(info.value)
