"""Evaluator 'quality': FD / KID / sliced Wasserstein between samples and test images in a feature space.

`eval.features`: 'random_projection' and 'pixels' need no weights; 'inception' is the pytorch-fid network
(jaxdiff.metrics.inception). The metrics are averaged over `eval.num_reference_sets` disjoint blocks of the
test set, with `<metric>_set_std` their spread when there are several (paper 1: 10,000 samples against 5
disjoint sets of 10,000 test images). Keys are `fd_<features>`, `kid_<features>`, `kid_std_<features>`,
`sw_<features>`; tau_gen is read from `fd_<features>`. Does not apply without features or test images.

`eval.quality_references` lists the references: 'test' (the blocks above) and 'train' (the member's whole
training set as one more reference, paper 3: train and test FID/SW, which a memorizing model moves apart
little while its loss gap grows); the train-reference metrics are `fd_train_<features>`,
`kid_train_<features>`, `kid_std_train_<features>`, `sw_train_<features>`, from the same samples and features.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff import distributed
from jaxdiff.metrics import quality


def reference_blocks(n_test: int, num_reference: int, num_sets: int) -> list[slice]:
  """Disjoint consecutive blocks of the test set: `num_sets` of `num_reference` images each (0: as many as fit
  evenly). Raises ValueError naming the field when the test set is too small."""
  per_set = num_reference or n_test // num_sets
  if num_sets * per_set > n_test or per_set < 2:
    raise ValueError(f"config field 'eval.num_reference': {num_sets} disjoint reference set(s) of {per_set} "
                     f'test images need {num_sets * max(per_set, 2)} test images, the data has {n_test}')
  return [slice(j * per_set, (j + 1) * per_set) for j in range(num_sets)]


class Evaluator:
  needs_samples = True

  def __new__(cls, ctx):
    ec = ctx.config.eval
    refs = set(ec.quality_references) - ({'test'} if ctx.data.test.shape[0] < 2 else set())
    if not ec.features or not refs:
      return None   # nothing to compare with
    return super().__new__(cls)

  def __init__(self, ctx):
    self.ec = ec = ctx.config.eval
    self.ctx = ctx
    kw = {'weights_path': ec.inception_weights or None} if ec.features == 'inception' else {}
    self.extractor = jax.jit(quality.feature_extractor(ec.features, **kw))
    self.ref_features, self.train_features = [], None
    if 'test' in ec.quality_references and ctx.data.test.shape[0] >= 2:
      test = ctx.data.test
      self.ref_features = [self._features(ctx.data.to_pixels(test[block]))
                           for block in reference_blocks(test.shape[0], ec.num_reference, ec.num_reference_sets)]
    if 'train' in ec.quality_references:
      self.train_features = self._features(ctx.data.to_pixels(ctx.data.train))
    # tau_gen is read from the test-reference FD (the train-reference one when it is the only reference).
    self.key = f'fd_{ec.features}' if self.ref_features else f'fd_train_{ec.features}'

  def _features(self, pixels) -> jax.Array:
    b = self.ec.sample_batch_size or pixels.shape[0]
    return jnp.concatenate([self.extractor(jnp.asarray(pixels[i:i + b])) for i in range(0, pixels.shape[0], b)])

  def __call__(self, params, keys, samples):
    """fd / kid / kid_std / sw of the samples against each test reference set: their mean, and with several
    sets `<metric>_set_std`, the standard deviation across sets (paper 1 reports FID as mean +- std over 5);
    against the training set: `<metric>_train_<features>`."""
    del params
    feats = distributed.fetch(self._features(self.ctx.to_pixels(samples)))
    f = self.ec.features
    per_set = [quality.quality_metrics(feats, distributed.fetch(ref), jax.random.fold_in(keys.quality, j),
                                       kid_subset_size=self.ec.kid_subset_size)
               for j, ref in enumerate(self.ref_features)]
    out = {}
    for k in per_set[0] if per_set else ():
      values = np.array([q[k] for q in per_set], np.float64)
      out[f'{k}_{f}'] = float(values.mean())
      if len(per_set) > 1 and k != 'kid_std':
        out[f'{k}_{f}_set_std'] = float(values.std(ddof=1))
    if self.train_features is not None:
      train = quality.quality_metrics(feats, distributed.fetch(self.train_features),
                                      jax.random.fold_in(keys.quality, len(per_set)),
                                      kid_subset_size=self.ec.kid_subset_size)
      out.update({f'{k}_train_{f}': v for k, v in train.items()})
    return out, {}
