"""Evaluators by name: what a run measures at its milestones, chosen in the config (`eval.metrics`).

Each evaluator is a module here behind one small interface (big_vision's `evaluators/` pattern):

    class Evaluator:
      def __init__(self, context: Context): ...          # compile, put reference data on the devices
      def __call__(self, params, keys: Keys, samples) -> (scalars, figures)

`Context` holds what an evaluator may read (config, the model family and its graphdef, the data, the mesh).
`Evaluation` runs the evaluators of `eval.metrics` at a milestone: it draws the keys of the step from
(seed, step) alone (a resumed run writes the rows an uninterrupted one would), generates `eval.num_samples`
samples once when an evaluator asks for them (`needs_samples`), and returns one metrics row plus arrays for
the figures. The training loop never imports a metric: it calls `Evaluation.evaluate`.

Registered: 'memorization' (f_mem by the ratio test), 'losses' (the loss at a fixed diffusion time on the
training and test sets), 'quality' (FD / KID / sliced Wasserstein in a feature space), 'sliced_wasserstein'
(between samples and test points in data space), and for families that know their data distribution exactly
(the Gaussian mixture) 'score_error' and 'kl'; for grammar data (the D3PM family) 'validity' (valid@k per
level); for images 'copy_score' (paper 3's copy-detection score: samples whose SSCD or pixel features match a
training image's with cosine similarity above 0.6); for token sequences (the D3PM and masked-diffusion
families) 'copies' (exact copies of training sequences, as f_mem), 'substrings' (the longest common substring with the training set) and 'window_losses'
(the loss per window of diffusion time). An evaluator that does not apply to a run (no test images, no
exact distribution) declines when built. `register` adds one.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Callable
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from jaxdiff import distributed, sharding
from jaxdiff.io import figures

# name -> the module defining `Evaluator` (or a factory: Context -> Evaluator).
_REGISTRY: dict[str, str | Callable[..., Any]] = {
    'memorization': 'jaxdiff.evaluators.memorization',
    'losses': 'jaxdiff.evaluators.losses',
    'quality': 'jaxdiff.evaluators.quality',
    'sliced_wasserstein': 'jaxdiff.evaluators.sliced_wasserstein',
    'score_error': 'jaxdiff.evaluators.score_error',
    'kl': 'jaxdiff.evaluators.kl',
    'validity': 'jaxdiff.evaluators.validity',
    'copies': 'jaxdiff.evaluators.copies',
    'window_losses': 'jaxdiff.evaluators.window_losses',
    'copy_score': 'jaxdiff.evaluators.copy_score',
    'substrings': 'jaxdiff.evaluators.substrings',
}


def register(name: str, target: str | Callable[..., Any]) -> None:
  """Add an evaluator: a module path defining `Evaluator`, or a callable Context -> evaluator."""
  _REGISTRY[name] = target


def names() -> tuple[str, ...]:
  return tuple(_REGISTRY)


def _factory(name: str) -> Callable[..., Any]:
  if name not in _REGISTRY:
    raise ValueError(f"config field 'eval.metrics': unknown evaluator {name!r}; known: {sorted(_REGISTRY)}")
  target = _REGISTRY[name]
  return importlib.import_module(target).Evaluator if isinstance(target, str) else target


@dataclasses.dataclass(frozen=True)
class Keys:
  """The random keys of one evaluation: sample, memorization and quality keys of (seed, step); the loss key
  of (seed) alone, the same at every milestone (so L_test - L_train is a smooth curve)."""
  sample: jax.Array
  memorization: jax.Array
  quality: jax.Array
  loss: jax.Array

  @classmethod
  def of(cls, seed: int, step: int) -> Keys:
    base = jax.random.fold_in(jax.random.key(seed), 5)
    k_sample, k_mem, k_quality = jax.random.split(jax.random.fold_in(base, step), 3)
    return cls(k_sample, k_mem, k_quality, jax.random.fold_in(base, 0))


class Context:
  """What evaluators read: config, family (init / losses / sample / loss_at), graphdef, data, mesh.

  data: `train` [n, ...], `train_labels` [n], `test` [m, ...], `test_labels` [m] (host arrays); image data
  also `value_range` (lo, hi) and `scale` = hi - lo (the values pixels 0 and 1 map to) and `to_pixels(x)`
  (host: model space -> [0, 1]).
  """

  def __init__(self, config: ml_collections.ConfigDict, family, graphdef, data, mesh):
    self.config, self.family, self.graphdef, self.data, self.mesh = config, family, graphdef, data, mesh
    self.num_devices = mesh.shape[sharding.DATA]
    self.compiler_options = getattr(family, 'compiler_options', None)

    self.images = hasattr(data, 'value_range')
    if self.images:
      lo, _ = data.value_range
      self._pix_lo, self._pix_scale = jnp.asarray(lo, jnp.float32), jnp.float32(data.scale)

  def model(self, params) -> nnx.Module:
    return nnx.merge(self.graphdef, params)

  def to_pixels(self, x: jax.Array) -> jax.Array:
    """data.to_pixels on the devices (x may be sharded over several processes); identity for other data."""
    return jnp.clip((x - self._pix_lo) / self._pix_scale, 0.0, 1.0) if self.images else x


class Evaluator(Protocol):
  needs_samples: bool

  def __call__(self, params, keys: Keys, samples: jax.Array | None
               ) -> tuple[dict[str, float], dict[str, np.ndarray]]: ...


class Evaluation:
  """The evaluators `metrics` (default `config.eval.metrics`) of one run, compiled once; `evaluate(params, step)`
  at milestones."""

  def __init__(self, config: ml_collections.ConfigDict, family, graphdef, data, mesh,
               metrics: tuple[str, ...] | None = None):
    self.config = config
    self.ec = ec = config.eval
    self.context = ctx = Context(config, family, graphdef, data, mesh)
    self.evaluators = {}
    for name in (ec.metrics if metrics is None else metrics):
      ev = _factory(name)(ctx)
      if ev is not None:   # an evaluator may not apply (e.g. quality without test images)
        self.evaluators[name] = ev
    self.num_samples = ec.num_samples
    batch = min(ec.sample_batch_size or ec.num_samples, ec.num_samples)
    self.sample_batch = max(ctx.num_devices, batch - batch % ctx.num_devices)
    self._sample = jax.jit(lambda params, key: family.sample(ctx.model(params), key, self.sample_batch),
                           out_shardings=sharding.batch_sharded(mesh), compiler_options=ctx.compiler_options)

  def generate(self, params, key: jax.Array) -> jax.Array:
    """`eval.num_samples` samples [N, ...] (model space), in batches, sharded over the mesh."""
    num_batches = math.ceil(self.num_samples / self.sample_batch)
    out = [self._sample(params, jax.random.fold_in(key, i)) for i in range(num_batches)]
    return jnp.concatenate(out)[:self.num_samples] if num_batches > 1 else out[0][:self.num_samples]

  def evaluate(self, params, step: int, seed: int | None = None) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Scalars of the metrics row at `step`, and arrays for the figures (a few samples and neighbours).

    seed: evaluate as a run whose evaluation keys come from that seed would (ensemble members that share a
    training set share one Evaluation); default eval.seed, or config.seed when that is -1."""
    scalars, figs, _ = self.evaluate_with_samples(params, step, seed)
    return scalars, figs

  def evaluate_with_samples(self, params, step: int, seed: int | None = None, *, need_samples: bool = False):
    """`evaluate`, also returning the generated samples [eval.num_samples, ...] (device; None when no
    evaluator needed them and need_samples is False)."""
    if seed is None:
      seed = self.config.seed if self.ec.seed < 0 else self.ec.seed
    keys = Keys.of(seed, step)
    samples = None
    if need_samples or any(ev.needs_samples for ev in self.evaluators.values()):
      samples = self.generate(params, keys.sample)
    scalars, figs = {}, {}
    for ev in self.evaluators.values():
      s, f = ev(params, keys, samples)
      scalars.update(s)
      figs.update(f)
    if samples is not None:
      g = min(self.ec.grid_samples, self.num_samples)
      figs['samples'] = np.asarray(distributed.fetch(self.context.to_pixels(samples[:g])))
    return scalars, figs, samples

  @property
  def quality_key(self) -> str | None:
    """The metric tau_gen is read from (None: no quality evaluator)."""
    ev = self.evaluators.get('quality')
    return None if ev is None else ev.key


def write_figures(rundir, step: int, figs: dict[str, np.ndarray]) -> list[str]:
  """samples.png (a grid) and neighbours.png (samples above their nearest training images, with d1/d2) for
  image samples ([N, H, W, C]); nothing for other data."""
  if 'samples' not in figs or figs['samples'].ndim != 4:
    return []
  out = [figures.save_image_grid(figs['samples'], rundir.file('samples.png'),
                                 title=f"{len(figs['samples'])} samples at step {step}")]
  if 'neighbours' in figs:
    out.append(figures.save_neighbour_pairs(
        figs['samples'], figs['neighbours'], figs['ratio'], figs['memorized'], rundir.file('neighbours.png'),
        title=f'nearest training images at step {step}'))
  return out


__all__ = ['Context', 'Evaluation', 'Evaluator', 'Keys', 'register', 'names', 'write_figures']
