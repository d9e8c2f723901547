"""Evaluation at milestones: samples, memorization, losses at a fixed diffusion time, sample quality.

`Evaluator(config, family, graphdef, images, mesh)` compiles everything once; calling it with parameters and
a step returns the scalars of one metrics.jsonl row (SPEC "Definitions"):

- `f_mem`, `f_mem_lo`, `f_mem_hi`: fraction of generated samples whose nearest/second-nearest training-image
  distance ratio is below `eval.memorization_k`, with its bootstrap interval (jaxdiff.metrics.memorization);
- `loss_train_t`, `loss_test_t`: the DDPM loss at OU time `eval.loss_t_ou` on all n training images and on the
  held-out test set, averaged over `eval.loss_noise_draws` fixed noise draws (the same at every milestone, so
  L_test - L_train is a smooth curve);
- quality (`fd`, `kid`, `kid_std`, `sw`) between samples and test images in the feature space
  `eval.features` ('random_projection' and 'pixels' need no weights; 'inception' is the pytorch-fid network),
  averaged over `eval.num_reference_sets` disjoint blocks of the test set, with `<metric>_set_std` their spread
  when there are several (paper 1: 10,000 samples against 5 disjoint sets of 10,000 test images).

Every random draw comes from (config.seed, step), so an evaluation is reproducible and a resumed run writes
the rows an uninterrupted one would. The host only gathers scalars and the few images of the figures.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from jaxdiff import diffusion, distributed, families, paths, sharding
from jaxdiff import timescales
from jaxdiff.metrics import memorization, quality

SUMMARY_FILE = 'summary.json'


def _pad_to(x: np.ndarray, multiple: int) -> tuple[np.ndarray, int]:
  n = x.shape[0]
  pad = (-n) % multiple
  if pad:
    x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
  return x, n


class Evaluator:
  """The compiled evaluation of one run. Call `evaluate(params, step)` at milestones."""

  def __init__(self, config: ml_collections.ConfigDict, family, graphdef, images, mesh):
    self.config = config
    self.ec = ec = config.eval
    self.family = family
    self.graphdef = graphdef
    self.images = images
    self.mesh = mesh
    self.base_key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 5)
    n_dev = mesh.shape[sharding.DATA]
    rep = sharding.replicated(mesh)
    self._rep = rep
    lo, hi = images.value_range
    self._pix_lo, self._pix_scale = jnp.asarray(lo, jnp.float32), jnp.float32(images.scale)

    # Samples: generated in batches of `sample_batch`, a multiple of the data-parallel devices, sharded.
    self.num_samples = ec.num_samples
    batch = min(ec.sample_batch_size or ec.num_samples, ec.num_samples)
    self.sample_batch = max(n_dev, batch - batch % n_dev)
    out = sharding.batch_sharded(mesh)
    self._sample = jax.jit(lambda params, key: family.sample(nnx.merge(graphdef, params), key, self.sample_batch),
                           out_shardings=out, compiler_options=families.compiler_options(family))

    # The training set stays on the devices (replicated) for the neighbour search; samples are split.
    self.train = distributed.put(images.train, rep)
    mesh_arg = mesh if n_dev > 1 else None
    self._memorization = jax.jit(lambda s, t, key: memorization.memorization_metrics(
        s, t, key, k=ec.memorization_k, num_resamples=ec.bootstrap_resamples, mesh=mesh_arg,
        shard='samples', chunk_size=ec.nn_chunk_size))

    # Losses at a fixed OU time, over fixed chunks of the data and fixed noise keys.
    self.loss_step = int(diffusion.step_from_ou_time(family.schedule, ec.loss_t_ou))
    lb = max(n_dev, ec.loss_batch_size - ec.loss_batch_size % n_dev)
    self._loss_sets = {}
    for name, x in (('train', images.train), ('test', images.test)):
      if x.shape[0] == 0:
        continue
      padded, n = _pad_to(np.asarray(x, np.float32), lb)
      chunks = padded.reshape(-1, lb, *x.shape[1:])
      mask = (np.arange(padded.shape[0]) < n).reshape(-1, lb).astype(np.float32)
      spec = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, sharding.DATA))
      self._loss_sets[name] = (distributed.put(chunks, spec), distributed.put(mask, spec), n)
    self._loss = jax.jit(self._fixed_time_loss, compiler_options=families.compiler_options(family))

    # Quality: features of `num_reference_sets` disjoint blocks of the test images, once.
    self.extractor = None
    self.ref_features: list[jax.Array] = []
    if ec.features and images.test.shape[0] >= 2:
      kw = {'weights_path': ec.inception_weights or None} if ec.features == 'inception' else {}
      self.extractor = jax.jit(quality.feature_extractor(ec.features, **kw))
      for block in reference_blocks(images.test.shape[0], ec.num_reference, ec.num_reference_sets):
        self.ref_features.append(self._features(images.to_pixels(images.test[block])))

  # ------------------------------------------------------------------ pieces

  def _features(self, pixels: np.ndarray | jax.Array) -> jax.Array:
    b = self.ec.sample_batch_size or pixels.shape[0]
    return jnp.concatenate([self.extractor(jnp.asarray(pixels[i:i + b])) for i in range(0, pixels.shape[0], b)])

  def _fixed_time_loss(self, params, chunks, mask, key):
    model = nnx.merge(self.graphdef, params)
    t = jnp.full((chunks.shape[1],), self.loss_step, jnp.int32)

    def one(args):
      x, m, i = args
      per_draw = [self.family.loss_at(model, x, t, jax.random.fold_in(jax.random.fold_in(key, i), d))
                  for d in range(self.ec.loss_noise_draws)]
      return jnp.sum(jnp.mean(jnp.stack(per_draw), axis=0) * m)

    sums = jax.lax.map(one, (chunks, mask, jnp.arange(chunks.shape[0])))
    return jnp.sum(sums) / jnp.sum(mask)

  def generate(self, params, key: jax.Array) -> jax.Array:
    """`eval.num_samples` samples [N, H, W, C] (model space), in batches, sharded over the mesh."""
    num_batches = math.ceil(self.num_samples / self.sample_batch)
    out = [self._sample(params, jax.random.fold_in(key, i)) for i in range(num_batches)]
    return jnp.concatenate(out)[:self.num_samples] if num_batches > 1 else out[0][:self.num_samples]

  def to_pixels(self, x: jax.Array) -> jax.Array:
    return jnp.clip((x - self._pix_lo) / self._pix_scale, 0.0, 1.0)

  # ------------------------------------------------------------------ the row

  def evaluate(self, params, step: int, seed: int | None = None) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Scalars of the metrics row at `step`, and arrays for the figures (a few samples and neighbours).

    seed: evaluate as a run with that `config.seed` would (members of an ensemble that share the training
    set share one Evaluator); default the config's."""
    base_key = self.base_key if seed is None else jax.random.fold_in(jax.random.PRNGKey(seed), 5)
    key = jax.random.fold_in(base_key, step)
    k_sample, k_mem, k_quality = jax.random.split(key, 3)
    loss_key = jax.random.fold_in(base_key, 0)  # the same noise at every milestone
    samples = self.generate(params, k_sample)
    mem = self._memorization(samples, self.train, k_mem)
    scalars: dict[str, Any] = {k: mem[k] for k in ('f_mem', 'f_mem_lo', 'f_mem_hi', 'num_uncertified')}
    for name, (chunks, mask, _) in self._loss_sets.items():
      scalars[f'loss_{name}_t'] = self._loss(params, chunks, mask, loss_key)
    scalars = {k: float(v) for k, v in distributed.fetch(scalars).items()}
    if 'loss_test_t' in scalars:
      scalars['loss_gap_t'] = scalars['loss_test_t'] - scalars['loss_train_t']
    if self.extractor is not None:
      scalars.update(self._quality(samples, k_quality))
    g = min(self.ec.grid_samples, self.num_samples)
    figs = distributed.fetch({'samples': self.to_pixels(samples[:g]), 'ratio': mem['ratio'][:g],
                           'index': mem['index'][:g], 'memorized': mem['memorized'][:g]})
    figs = {k: np.asarray(v) for k, v in figs.items()}
    figs['neighbours'] = self.images.to_pixels(self.images.train[figs['index']])
    return scalars, figs

  def _quality(self, samples: jax.Array, key: jax.Array) -> dict[str, float]:
    """fd / kid / kid_std / sw of the samples against each reference set: their mean, and with several sets
    `<metric>_set_std`, the standard deviation across sets (paper 1 reports FID as mean +- std over 5)."""
    feats = distributed.fetch(self._features(self.to_pixels(samples)))
    per_set = [quality.quality_metrics(feats, distributed.fetch(ref), jax.random.fold_in(key, j),
                                       kid_subset_size=self.ec.kid_subset_size)
               for j, ref in enumerate(self.ref_features)]
    out = {}
    for k in per_set[0]:
      values = np.array([q[k] for q in per_set], np.float64)
      out[f'{k}_{self.ec.features}'] = float(values.mean())
      if len(per_set) > 1 and k != 'kid_std':
        out[f'{k}_{self.ec.features}_set_std'] = float(values.std(ddof=1))
    return out

  @property
  def quality_key(self) -> str | None:
    return f'fd_{self.ec.features}' if self.extractor is not None else None


def reference_blocks(n_test: int, num_reference: int, num_sets: int) -> list[slice]:
  """Disjoint consecutive blocks of the test set: `num_sets` of `num_reference` images each (0: as many as fit
  evenly). Raises ValueError naming the field when the test set is too small."""
  per_set = num_reference or n_test // num_sets
  if num_sets * per_set > n_test or per_set < 2:
    raise ValueError(f"config field 'eval.num_reference': {num_sets} disjoint reference set(s) of {per_set} "
                     f'test images need {num_sets * max(per_set, 2)} test images, the data has {n_test}')
  return [slice(j * per_set, (j + 1) * per_set) for j in range(num_sets)]


def write_figures(workdir: str, step: int, figs: dict[str, np.ndarray], *, name_suffix: str = '') -> list[str]:
  """samples.png (a grid) and neighbours.png (samples above their nearest training images, with d1/d2)."""
  from jaxdiff import figures  # pylint: disable=g-import-not-at-top
  paths = [figures.save_image_grid(figs['samples'], os.path.join(workdir, f'samples{name_suffix}.png'),
                                   title=f"{len(figs['samples'])} samples at step {step}")]
  paths.append(figures.save_neighbour_pairs(
      figs['samples'], figs['neighbours'], figs['ratio'], figs['memorized'],
      os.path.join(workdir, f'neighbours{name_suffix}.png'), title=f'nearest training images at step {step}'))
  return paths


def write_summary(workdir: str, history: list[dict[str, Any]], config: ml_collections.ConfigDict,
                  quality_key: str | None, num_params: int | None = None) -> dict[str, Any]:
  """tau_gen and tau_mem of the run (jaxdiff.timescales) into `<workdir>/summary.json`, with what the
  analysis groups runs by (n, width, num_params, batch size, learning rate, optimizer, seed)."""
  ec = config.eval
  summary = timescales.summarize(history, quality_key=quality_key, rel_tol=ec.tau_gen_rel_tol,
                                 f_mem_threshold=ec.f_mem_threshold, loss_gap_threshold=ec.loss_gap_threshold,
                                 loss_gap_relative=ec.loss_gap_relative)
  summary.update(n=config.data.n, width=config.model.width, seed=config.seed, dataset=config.data.name,
                 batch_size=config.train.batch_size, learning_rate=config.optimizer.learning_rate,
                 optimizer=config.optimizer.name, num_params=None if num_params is None else int(num_params))
  path = os.path.join(workdir, SUMMARY_FILE)
  paths.write_text(path, json.dumps(summary, indent=2))
  logging.info('wrote %s: tau_gen %s, tau_mem (f_mem) %s, tau_mem (loss) %s', path, summary.get('tau_gen'),
               summary.get('tau_mem_fmem'), summary.get('tau_mem_loss'))
  return summary
