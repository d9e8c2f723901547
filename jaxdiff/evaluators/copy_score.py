"""Evaluator 'copy_score': paper 3's copy-detection memorization score of the samples, at every milestone.

The fraction of generated images whose features have a cosine similarity above `eval.copy_threshold` (0.6) to
some training image's (jaxdiff.metrics.copy_detection), with its bootstrap interval. `eval.copy_features` picks
the features: 'sscd' (paper 3's copy-detection descriptor, weights `eval.copy_weights` =
sscd_disc_mixup.torchvision.pt; `eval.copy_input_size` its small edge after resizing, 0 = 288), 'pixels' (pixel
cosine, no weights), or any other extractor of jaxdiff.metrics.quality. The keys name the features:
`copy_score_<features>`, `copy_score_<features>_lo`, `copy_score_<features>_hi`, and
`copy_similarity_<features>`, the mean best similarity. The training features are computed once and stay on the
devices; with several devices they are split over the mesh and the best matches merged (exact either way).
Declines for data that are not images.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff import distributed, sharding
from jaxdiff.metrics import copy_detection, quality


def extractor_kwargs(ec) -> dict:
  """The keyword arguments of `quality.feature_extractor(eval.copy_features, ...)` from the eval config."""
  kw = {}
  if ec.copy_weights:
    kw['weights_path'] = ec.copy_weights
  if ec.copy_input_size:
    kw['size'] = ec.copy_input_size
  return kw


class Evaluator:
  needs_samples = True

  def __new__(cls, ctx):
    if not ctx.images:
      return None   # copies of what? (features are of images)
    return super().__new__(cls)

  def __init__(self, ctx):
    self.ec = ec = ctx.config.eval
    self.ctx = ctx
    self.name = ec.copy_features
    self.extractor = quality.jit_extractor(quality.feature_extractor(ec.copy_features, **extractor_kwargs(ec)))
    train = self._features(ctx.data.to_pixels(ctx.data.train))
    mesh = ctx.mesh if ctx.num_devices > 1 else None
    self.train = distributed.put(np.asarray(train), sharding.replicated(ctx.mesh))

    def metrics(feats, train, key):
      if mesh is None:
        nn = copy_detection.nearest_cosine(feats, train, chunk_size=ec.nn_chunk_size)
      else:
        nn = copy_detection.nearest_cosine_sharded(feats, train, mesh, chunk_size=ec.nn_chunk_size)
      r = copy_detection.copy_score(nn['similarity'], key, threshold=ec.copy_threshold,
                                    num_resamples=ec.bootstrap_resamples)
      return {'score': r['copy_score'], 'lo': r['copy_score_lo'], 'hi': r['copy_score_hi'],
              'similarity': jnp.mean(nn['similarity'])}

    self._metrics = jax.jit(metrics)

  def _features(self, pixels) -> jax.Array:
    b = self.ec.sample_batch_size or pixels.shape[0]
    return jnp.concatenate([self.extractor(jnp.asarray(pixels[i:i + b])) for i in range(0, pixels.shape[0], b)])

  def __call__(self, params, keys, samples):
    del params
    feats = self._features(self.ctx.to_pixels(samples))
    # A key of its own: the ratio test's bootstrap (keys.memorization) stays as it was.
    out = distributed.fetch(self._metrics(feats, self.train, jax.random.fold_in(keys.memorization, 1)))
    n = self.name
    return {f'copy_score_{n}': float(out['score']), f'copy_score_{n}_lo': float(out['lo']),
            f'copy_score_{n}_hi': float(out['hi']), f'copy_similarity_{n}': float(out['similarity'])}, {}
