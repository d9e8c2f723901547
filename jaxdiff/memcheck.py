"""Is a diffusion model copying its training data? The memorization check for anyone's samples.

    python -m jaxdiff.memcheck --samples=PATH --train=PATH [--test=PATH] --out=DIR [--image_size=S]
        [--features=pixels|random_projection|inception|sscd [--features_weights=FILE] [--copy_threshold=0.6]]

PATH is a folder of images (PNG or JPEG, any size, grayscale or colour), an `.npy` / `.npz` array of images
([N, H, W] or [N, H, W, C], any value scale), or `tfds:NAME[:split]` (a prepared TFDS data set, read without
TensorFlow). Images are compared as given (pixel values 0-255 for files), resized to S x S when
`--image_size` is set (needed when sizes differ), colour when any input is.

The test is paper 1's ratio test (jaxdiff.metrics.memorization: exact nearest and second-nearest training
image of every sample in L2 pixel distance, for raw pixels and large offsets alike): a sample is memorized when
d1/d2 < k (k = 1/3, also reported at 1/2 and 1/4). With `--test` (real images held out from training) the same
test on them measures the chance level: how often a fresh real image looks "memorized".

With `--features`, also the copy-detection score of paper 3 (jaxdiff.metrics.copy_detection): the fraction of
samples whose features have a cosine similarity above `--copy_threshold` (0.6) to some training image's, with
its interval and chance level. The features are any extractor of jaxdiff.metrics.quality (images mapped to
[0, 1] first: `pixel_range`): 'sscd' (paper 3's: the SSCD copy-detection descriptor, jaxdiff.metrics.sscd;
`--features_weights` = sscd_disc_mixup.torchvision.pt, read without torch), 'pixels' (pixel cosine, the
feature-free fallback), 'random_projection', 'inception' (the FID network; `--features_weights` = the
pytorch-fid .pth file). report.json names the features and the weight file used.

Writes into --out:
- report.json: f_mem with its bootstrap interval, the fractions at each k, the chance level, and per sample the
  nearest and second-nearest training indices, distances and the ratio;
- neighbours.png: the most-copied samples above their nearest training images (ratio in the title);
- ratios.png: histograms of d1/d2 for the samples (and the held-out images), with the thresholds;
- copies.png (with --features): the samples most similar in feature space above their most similar training images.
Samples are searched in blocks of `--block_size` with progress in the log, so 50,000 samples against 50,000
images fit a laptop's memory.
"""

from __future__ import annotations

import glob
import os
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging
from PIL import Image

from jaxdiff import data as data_lib
from jaxdiff.io import figures
from jaxdiff.io.rundir import RunDir
from jaxdiff.metrics import copy_detection, memorization, quality

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg')
THRESHOLDS = (1 / 4, 1 / 3, 1 / 2)


class InputError(ValueError):
  """Bad input: the message names the path."""


# ------------------------------------------------------------------------------------------------------------
# Reading images


def _decode(path: str) -> np.ndarray:
  try:
    with Image.open(path) as im:
      im = im.convert('RGB') if im.mode not in ('L', 'RGB') else im
      return np.asarray(im)
  except Exception as e:   # PIL raises several types for unreadable files
    raise InputError(f'{path}: not a readable image ({type(e).__name__}: {e})') from e


def _read_array(path: str) -> list[np.ndarray]:
  try:
    arr = np.load(path)
  except Exception as e:
    raise InputError(f'{path}: not a readable .npy/.npz file ({type(e).__name__}: {e})') from e
  if isinstance(arr, np.lib.npyio.NpzFile):
    with arr:
      keys = [k for k in ('images', 'x', 'arr_0') if k in arr.files] or list(arr.files)
      if not keys:
        raise InputError(f'{path}: the .npz file holds no array')
      arr = arr[keys[0]]
  if arr.ndim not in (3, 4) or (arr.ndim == 4 and arr.shape[-1] not in (1, 3, 4)):
    raise InputError(f'{path}: expected images [N, H, W] or [N, H, W, C] with C in 1, 3, 4; got shape {arr.shape}')
  return list(arr)


def read_images(spec: str) -> list[np.ndarray]:
  """The images of a folder, an .npy/.npz file or tfds:NAME[:split], as arrays [H, W] or [H, W, C]."""
  if spec.startswith('tfds:'):
    name, _, split = spec[len('tfds:'):].partition(':')
    return data_lib.tfds_images(name, split or 'train')
  if os.path.isdir(spec):
    files = sorted(f for f in glob.glob(os.path.join(spec, '*')) if f.lower().endswith(IMAGE_SUFFIXES))
    if not files:
      raise InputError(f'{spec}: no {"/".join(IMAGE_SUFFIXES)} images in this folder')
    return [_decode(f) for f in files]
  if spec.lower().endswith(('.npy', '.npz')):
    if not os.path.exists(spec):
      raise InputError(f'{spec}: no such file')
    return _read_array(spec)
  if not os.path.exists(spec):
    raise InputError(f'{spec}: no such file or folder')
  raise InputError(f'{spec}: not a folder of images, an .npy/.npz file or tfds:NAME[:split]')


def to_batch(images: list[np.ndarray], spec: str, *, image_size: int = 0, colour: bool = False) -> np.ndarray:
  """[N, S, S, C] float32: channels made alike (RGBA -> RGB; grayscale repeated when colour), resized to
  image_size (antialiased, PIL) when given; otherwise every image must have the same size."""
  out = []
  for img in images:
    a = np.asarray(img)
    a = a[..., None] if a.ndim == 2 else a[..., :3]
    if colour and a.shape[-1] == 1:
      a = np.repeat(a, 3, axis=-1)
    if image_size:
      a = np.stack([np.asarray(Image.fromarray(a[..., c].astype(np.float32), mode='F').resize(
          (image_size, image_size), Image.BILINEAR, reducing_gap=None)) for c in range(a.shape[-1])], axis=-1)
    out.append(a.astype(np.float32))
  sizes = sorted({x.shape for x in out})
  if len(sizes) > 1:
    raise InputError(f'{spec}: images of different sizes {sizes[:4]}{"..." if len(sizes) > 4 else ""}; pass '
                     '--image_size to resize them to one size')
  return np.stack(out)


def load_sets(samples: str, train: str, test: str | None = None, *, image_size: int = 0
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
  """(samples, train, test or None) as float32 [N, S, S, C] arrays of one per-image shape; clear errors."""
  raw = {'samples': (samples, read_images(samples)), 'train': (train, read_images(train))}
  if test:
    raw['test'] = (test, read_images(test))
  colour = any(np.ndim(img) == 3 and np.shape(img)[-1] >= 3 for _, imgs in raw.values() for img in imgs)
  sets = {k: to_batch(imgs, spec, image_size=image_size, colour=colour) for k, (spec, imgs) in raw.items()}
  if sets['train'].shape[0] < 2:
    raise InputError(f'{train}: the ratio test needs at least 2 training images, found {sets["train"].shape[0]}')
  for k in ('samples', 'test'):
    if k in sets and sets[k].shape[1:] != sets['train'].shape[1:]:
      raise InputError(f'{raw[k][0]}: images of shape {sets[k].shape[1:]} but the training images ({train}) are '
                       f'{sets["train"].shape[1:]}; pass --image_size to resize both')
  return sets['samples'], sets['train'], sets.get('test')


# ------------------------------------------------------------------------------------------------------------
# The check


def nearest_two_in_blocks(samples: np.ndarray, train: np.ndarray, *, block_size: int = 1024,
                          chunk_size: int = memorization.CHUNK_SIZE, log_every: float = 10.0) -> dict[str, np.ndarray]:
  """`memorization.nearest_two` over blocks of samples (one compiled shape; the last block padded), with
  progress in the log. Returns host arrays d1, d2, index, index2, certified ([M] each)."""
  y = jnp.asarray(train)
  m = samples.shape[0]
  block = max(1, min(block_size, m))
  parts, t0, last = [], time.perf_counter(), time.perf_counter()
  for start in range(0, m, block):
    x = samples[start:start + block]
    pad = block - x.shape[0]
    if pad:
      x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
    out = jax.device_get(memorization.nearest_two(jnp.asarray(x), y, chunk_size=chunk_size))  # compiled once
    parts.append({k: v[:block - pad] for k, v in out.items()})
    done = min(start + block, m)
    now = time.perf_counter()
    if now - last >= log_every or done == m:
      rate = done / max(now - t0, 1e-9)
      logging.info('memcheck: %d/%d samples searched (%.0f%%), %.0f samples/s, ETA %.0f s', done, m, 100 * done / m,
                   rate, (m - done) / max(rate, 1e-9))
      last = now
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def ratio_report(nn: dict[str, np.ndarray], key: jax.Array, *, k: float, num_resamples: int) -> dict[str, Any]:
  """f_mem at k with its bootstrap interval, and the fractions at every threshold of THRESHOLDS."""
  r = memorization.memorization_ratio({'d1': jnp.asarray(nn['d1']), 'd2': jnp.asarray(nn['d2'])}, k=k)
  f, lo, hi = memorization.f_mem_bootstrap(r['memorized'], key, num_resamples=num_resamples)
  fractions = memorization.ratio_threshold_fractions(r['ratio'], ks=tuple(sorted({*THRESHOLDS, k})))
  return {'f_mem': float(f), 'f_mem_lo': float(lo), 'f_mem_hi': float(hi), 'k': k,
          'fractions': {name: float(v) for name, v in fractions.items()}, 'ratio': np.asarray(r['ratio'])}


def pixel_range(train: np.ndarray) -> tuple[float, float]:
  """The value range images are mapped from to [0, 1] for features and figures: [0, 255] when the training
  images exceed 1.5 (8-bit values), else [0, 1], or [-1, 1] when they go below -0.01 (model space)."""
  lo = -1.0 if float(np.min(train)) < -0.01 else 0.0
  hi = 255.0 if float(np.max(train)) > 1.5 else 1.0
  return lo, hi


def extract_features(extractor, images: np.ndarray, value_range: tuple[float, float], *,
                     block_size: int = 1024) -> np.ndarray:
  """extractor(images in [0, 1]) in blocks of block_size -> host features [N, D] float32."""
  lo, hi = value_range
  out = []
  for start in range(0, images.shape[0], block_size):
    unit = np.clip((images[start:start + block_size] - lo) / (hi - lo), 0.0, 1.0)
    out.append(np.asarray(jax.device_get(extractor(jnp.asarray(unit, jnp.float32))), np.float32))
  return np.concatenate(out)


def copy_report(similarity: np.ndarray, key: jax.Array, *, threshold: float, num_resamples: int) -> dict[str, Any]:
  """The copy score (fraction with cosine similarity above threshold) with its bootstrap interval."""
  r = copy_detection.copy_score(jnp.asarray(similarity), key, threshold=threshold, num_resamples=num_resamples)
  return {'score': float(r['copy_score']), 'score_lo': float(r['copy_score_lo']),
          'score_hi': float(r['copy_score_hi'])}


def check_copies(samples: np.ndarray, train: np.ndarray, test: np.ndarray | None, key: jax.Array, *,
                 features: str, threshold: float = copy_detection.THRESHOLD, num_resamples: int = 1000,
                 block_size: int = 1024, extractor=None, **extractor_kwargs) -> dict[str, Any]:
  """The feature-space copy score of the samples (and of held-out real images: its chance level).

  features: a name of `jaxdiff.metrics.quality.feature_extractor` ('sscd' with weights_path=..., 'pixels' is
  the pixel cosine, 'random_projection', 'inception' with weights_path=...), built with extractor_kwargs unless
  `extractor` (already built) is given; images are mapped to [0, 1] (`pixel_range`).
  Returns {'features', 'features_weights' (the weights_path or None), 'threshold', 'score', 'score_lo',
  'score_hi', 'samples': {'index', 'similarity'}, 'chance': {...} when test is given}.
  """
  extractor = quality.jit_extractor(extractor or quality.feature_extractor(features, **extractor_kwargs))
  value_range = pixel_range(train)
  feats = {name: extract_features(extractor, a, value_range, block_size=block_size)
           for name, a in (('samples', samples), ('train', train), ('test', test)) if a is not None}
  out: dict[str, Any] = {'features': features, 'features_weights': extractor_kwargs.get('weights_path'),
                         'threshold': threshold, 'pixel_range': list(value_range)}
  for i, name in enumerate(('samples', 'test')):
    if name not in feats:
      continue
    nn = jax.device_get(copy_detection.nearest_cosine(jnp.asarray(feats[name]), jnp.asarray(feats['train'])))
    r = copy_report(nn['similarity'], jax.random.fold_in(key, i), threshold=threshold, num_resamples=num_resamples)
    if name == 'samples':
      out.update(r)
      out['samples'] = {'index': nn['index'], 'similarity': nn['similarity']}
    else:
      out['chance'] = {'num_test': int(test.shape[0]), **r}
  return out


def check(samples: np.ndarray, train: np.ndarray, test: np.ndarray | None = None, *, k: float = 1 / 3,
          num_resamples: int = 1000, seed: int = 0, block_size: int = 1024, features: str | None = None,
          copy_threshold: float = copy_detection.THRESHOLD, extractor=None, **extractor_kwargs) -> dict[str, Any]:
  """The report (without figures): f_mem of the samples, the chance level of held-out real images, and the
  per-sample neighbours; with `features`, also the feature-space copy score (`check_copies`, its extractor
  `extractor` or built from extractor_kwargs) under 'copy'. samples, train, test: [N, ...] float arrays of one
  per-image shape."""
  key = jax.random.key(seed)
  t0 = time.perf_counter()
  nn = nearest_two_in_blocks(samples, train, block_size=block_size)
  report: dict[str, Any] = {'num_samples': int(samples.shape[0]), 'num_train': int(train.shape[0]),
                            'image_shape': list(samples.shape[1:])}
  main = ratio_report(nn, jax.random.fold_in(key, 0), k=k, num_resamples=num_resamples)
  report.update({kk: v for kk, v in main.items() if kk != 'ratio'})
  report['num_uncertified'] = int(np.sum(~nn['certified']))
  report['samples'] = {'index': nn['index'], 'index2': nn['index2'], 'd1': nn['d1'], 'd2': nn['d2'],
                       'ratio': main['ratio']}
  if test is not None:
    nn_test = nearest_two_in_blocks(test, train, block_size=block_size)
    chance = ratio_report(nn_test, jax.random.fold_in(key, 1), k=k, num_resamples=num_resamples)
    report['chance'] = {'num_test': int(test.shape[0]), **{kk: v for kk, v in chance.items() if kk != 'ratio'}}
    report['test_ratio'] = chance['ratio']
  if features:
    report['copy'] = check_copies(samples, train, test, jax.random.fold_in(key, 2), features=features,
                                  threshold=copy_threshold, num_resamples=num_resamples, block_size=block_size,
                                  extractor=extractor, **extractor_kwargs)
  report['seconds'] = time.perf_counter() - t0
  return report


def write_figures(out: RunDir, samples: np.ndarray, train: np.ndarray, report: dict[str, Any], *,
                  num_pairs: int = 32) -> list[str]:
  """neighbours.png (the samples with the smallest ratios above their nearest training images) and ratios.png."""
  ratio = np.asarray(report['samples']['ratio'])
  order = np.argsort(ratio, kind='stable')[:num_pairs]
  lo, hi = pixel_range(train)
  to_unit = lambda a: np.clip((a - lo) / (hi - lo), 0.0, 1.0)  # noqa: E731
  paths = [figures.save_neighbour_pairs(
      to_unit(samples[order]), to_unit(train[np.asarray(report['samples']['index'])[order]]), ratio[order],
      ratio[order] < report['k'], out.file('neighbours.png'),
      title=f"the {len(order)} most-copied of {len(ratio)} samples, f_mem {report['f_mem']:.3f}")]
  plt = figures.pyplot()
  fig, ax = plt.subplots(figsize=(6, 4))
  bins = np.linspace(0, 1, 41)
  ax.hist(ratio, bins=bins, alpha=0.6, density=True, label=f'samples ({len(ratio)})')
  if 'test_ratio' in report:
    ax.hist(report['test_ratio'], bins=bins, alpha=0.6, density=True,
            label=f"held-out real images ({len(report['test_ratio'])})")
  for t in THRESHOLDS:
    ax.axvline(t, color='k', ls=':' if t != report['k'] else '-', lw=1)
  ax.set_xlabel('d1 / d2 (nearest / second-nearest training image)')
  ax.set_ylabel('density')
  ax.legend(fontsize=8)
  ax.set_title('memorized: d1 / d2 < k (solid line)', fontsize=10)
  paths.append(figures.save_figure(fig, out.file('ratios.png')))
  if 'copy' in report:   # the samples most similar in feature space above their most similar training images
    copy = report['copy']
    sim = np.asarray(copy['samples']['similarity'])
    order = np.argsort(-sim, kind='stable')[:num_pairs]
    paths.append(figures.save_neighbour_pairs(
        to_unit(samples[order]), to_unit(train[np.asarray(copy['samples']['index'])[order]]), sim[order],
        sim[order] > copy['threshold'], out.file('copies.png'),
        title=f"the {len(order)} most similar of {len(sim)} samples ({copy['features']} cosine), "
              f"copy score {copy['score']:.3f}",
        caption='(top: sample, bottom: most similar training image, title: cosine similarity)'))
  return paths


def run(samples: str, train: str, out: str, test: str | None = None, *, image_size: int = 0, k: float = 1 / 3,
        num_resamples: int = 1000, seed: int = 0, block_size: int = 1024, features: str | None = None,
        copy_threshold: float = copy_detection.THRESHOLD, features_weights: str | None = None) -> dict[str, Any]:
  """Load, check, write report.json and the figures into `out`. Returns the report."""
  if not 0 < k < 1:
    raise InputError(f'--k must be in (0, 1), got {k}')
  extractor_kwargs = {}
  if features:
    if features not in quality.feature_extractor_names():
      raise InputError(f'--features must be one of {quality.feature_extractor_names()}, got {features!r}')
    if not -1 <= copy_threshold < 1:
      raise InputError(f'--copy_threshold must be in [-1, 1), got {copy_threshold}')
    if features_weights:
      if not os.path.exists(features_weights):
        raise InputError(f'{features_weights}: no such weights file (--features_weights)')
      extractor_kwargs['weights_path'] = features_weights
  # Built before the images are read and searched: a missing or mismatched weight file fails at once.
  extractor = None
  if features:
    try:
      extractor = quality.feature_extractor(features, **extractor_kwargs)
    except ValueError as e:   # a weight file of another network, or of wrong tensors: the message names them
      raise InputError(f'--features={features} --features_weights={features_weights}: {e}') from e
  x, y, t = load_sets(samples, train, test, image_size=image_size)
  logging.info('memcheck: %d samples against %d training images of shape %s%s', len(x), len(y), x.shape[1:],
               f', chance level from {len(t)} held-out images' if t is not None else '')
  report = check(x, y, t, k=k, num_resamples=num_resamples, seed=seed, block_size=block_size, features=features,
                 copy_threshold=copy_threshold, extractor=extractor, **extractor_kwargs)
  report['inputs'] = {'samples': samples, 'train': train, 'test': test, 'image_size': image_size}
  rundir = RunDir(out, primary=True).makedirs()
  report['figures'] = write_figures(rundir, x, y, report)
  path = rundir.write_json('report.json', {kk: v for kk, v in report.items() if kk != 'test_ratio'})
  chance = report.get('chance')
  if 'copy' in report:
    c = report['copy']
    logging.info('memcheck: copy score (%s cosine > %.3g) = %.4f [%.4f, %.4f]%s', c['features'], c['threshold'],
                 c['score'], c['score_lo'], c['score_hi'],
                 f", chance level {c['chance']['score']:.4f}" if 'chance' in c else '')
  logging.info('memcheck: f_mem = %.4f [%.4f, %.4f] at k = %.3g%s; wrote %s', report['f_mem'], report['f_mem_lo'],
               report['f_mem_hi'], k, f", chance level {chance['f_mem']:.4f}" if chance else '', path)
  return report


_SAMPLES = flags.DEFINE_string('samples', None, 'Generated images: a folder, .npy/.npz, or tfds:NAME[:split].')
_TRAIN = flags.DEFINE_string('train', None, 'The training images, in any of the same forms.')
_TEST = flags.DEFINE_string('test', None, 'Held-out real images (optional): the chance level of the test.')
_OUT = flags.DEFINE_string('out', None, 'Output folder (report.json, neighbours.png, ratios.png).')
_SIZE = flags.DEFINE_integer('image_size', 0, 'Resize every image to this size (0: keep; all sizes must agree).')
_K = flags.DEFINE_float('k', 1 / 3, 'Memorized when d1/d2 < k (paper 1: 1/3).')
_RESAMPLES = flags.DEFINE_integer('bootstrap_resamples', 1000, 'Bootstrap resamples of the f_mem interval.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the bootstrap.')
_BLOCK = flags.DEFINE_integer('block_size', 1024, 'Samples searched per compiled call (bounds memory).')
_FEATURES = flags.DEFINE_string('features', None, 'Also the copy score: cosine similarity of these features '
                                '(sscd, pixels, random_projection, inception; jaxdiff.metrics.quality).')
_COPY = flags.DEFINE_float('copy_threshold', copy_detection.THRESHOLD, 'A copy when the cosine similarity exceeds this.')
_WEIGHTS = flags.DEFINE_string('features_weights', None, 'Weights file of the feature network '
                               '(sscd_disc_mixup.torchvision.pt for --features=sscd, the pytorch-fid .pth for '
                               '--features=inception).')


def main(argv):
  del argv
  try:
    run(_SAMPLES.value, _TRAIN.value, _OUT.value, _TEST.value, image_size=_SIZE.value, k=_K.value,
        num_resamples=_RESAMPLES.value, seed=_SEED.value, block_size=_BLOCK.value, features=_FEATURES.value,
        copy_threshold=_COPY.value, features_weights=_WEIGHTS.value)
  except (InputError, data_lib.DataNotPreparedError, FileNotFoundError) as e:   # missing feature weights too
    logging.error('%s', e)
    sys.exit(f'jaxdiff.memcheck: error: {e}')


if __name__ == '__main__':
  flags.mark_flags_as_required(['samples', 'train', 'out'])
  app.run(main)
