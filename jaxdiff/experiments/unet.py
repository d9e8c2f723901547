"""The U-Net experiment of paper 1: DDPM U-Nets on images (SPEC section 1), solo runs and vectorized ensembles.

    python -m jaxdiff.main --config=configs/quickstart.py --workdir=DIR
    python -m jaxdiff.main --config=configs/quickstart.py --workdir=DIR --config.ensemble.n='(8,16,32,64)'

Data: the first `data.n` images of `data.name` (jaxdiff.data: embedded digits, or MNIST / CIFAR-10 / CelebA
through TFDS), scaled and centred with their own mean, and `data.n_test` held-out images. Model: the U-Net of
`config.model` (jaxdiff.models.unet) predicting the noise of the DDPM schedule of `config.diffusion`
(jaxdiff.diffusion.ddpm); class-conditional with `model.num_classes` > 0 (the null class samples
unconditionally). Training, evaluation and summaries are those of every network family
(jaxdiff.experiments.base).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from jaxdiff import data as data_lib
from jaxdiff.config import require
from jaxdiff.diffusion import ddpm
from jaxdiff.experiments.base import NetworkExperiment
from jaxdiff.models import build_network, initializers, kernels, unet

Batch = dict[str, jax.Array]  # 'x': [B, ...] data, 'y': [B] int labels


MODELS = ('unet',)


class ImageFamily:
  """What every family of image networks shares: the U-Net of `config.model` for images [H, W, C] and the XLA
  options of the programs that run it."""

  def __init__(self, config: ml_collections.ConfigDict, data_shape: tuple[int, ...]):
    self.config = config
    self.data_shape = tuple(data_shape)  # [H, W, C]
    # XLA options for every compiled program that runs the network (jaxdiff/models/kernels.py).
    self.compiler_options = kernels.compiler_options(config.model.kernels)

  def init(self, key: jax.Array) -> nnx.Module:
    h, _, c = self.data_shape
    return build_network(self.config.model, image_size=h, channels=c, rngs=nnx.Rngs(params=key))


class DDPM(ImageFamily):
  """Epsilon-prediction DDPM with an image network (the U-Net of paper 1)."""

  def __init__(self, config: ml_collections.ConfigDict, data_shape: tuple[int, ...], data_range=None):
    super().__init__(config, data_shape)
    # (lo, hi) broadcastable to [H, W, C]: the sampler clips its x0 estimates to it (ddpm._denoise).
    self.clip = None
    if config.diffusion.clip_denoised and data_range is not None:
      self.clip = tuple(jnp.asarray(v, jnp.float32) for v in data_range)
    df = config.diffusion
    self.schedule = ddpm.linear_schedule(df.num_steps, df.beta_min, df.beta_max)

  def _eps_fn(self, model, y, *, train: bool, key=None):
    y = y if self.config.model.num_classes > 0 else None
    return lambda x, t: model(x, t, y, train=train, key=key)

  def losses(self, model, batch: Batch, key, *, train: bool):
    """Per-example training losses [B] (an ensemble member weights them to mask its padding)."""
    k_loss, k_drop = jax.random.split(key)
    eps_fn = self._eps_fn(model, batch.get('y'), train=train, key=k_drop)
    return ddpm.ddpm_losses(self.schedule, eps_fn, batch['x'], k_loss, fixed_step=self.config.diffusion.fixed_step)

  def loss_time(self, t_ou: float) -> int:
    """The DDPM step nearest to OU time t_ou (the 'losses' evaluator's fixed time)."""
    return int(ddpm.step_from_ou_time(self.schedule, t_ou))

  def loss_at(self, model, x, t, key, y=None):
    """Per-example eps-MSE at steps t, without dropout (evaluation). x: [B, H, W, C], t: [B] -> [B].
    y: ignored; a class-conditional model is evaluated on its null class."""
    del y
    y = None
    if self.config.model.num_classes > 0:
      y = jnp.full((x.shape[0],), self.config.model.num_classes, jnp.int32)
    return ddpm.eps_loss_at(self.schedule, self._eps_fn(model, y, train=False), x, t, key)

  def sample(self, model, key, num: int, y=None):
    df = self.config.diffusion
    if y is None and self.config.model.num_classes > 0:
      y = jnp.full((num,), self.config.model.num_classes, jnp.int32)  # the unconditional ("null") class
    return ddpm.sample(self.schedule, self._eps_fn(model, y, train=False), (num, *self.data_shape), key,
                            sampler=df.sampler, sample_steps=df.sample_steps, eta=df.eta, clip=self.clip)


def validate_network(config: ml_collections.ConfigDict, metrics: tuple[str, ...]) -> None:
  """The checks of the U-Net (`model`), the image size and the reference sets of 'quality' (every image family)."""
  d, m, e = config.data, config.model, config.eval
  for field, value in [('model.width', m.width), ('model.num_res_blocks', m.num_res_blocks),
                       ('model.num_heads', m.num_heads), ('model.groups', m.groups)]:
    require(value > 0, field, f'must be positive, got {value}')
  require(m.name in MODELS, 'model.name', f'must be one of {MODELS}, got {m.name!r}')
  require(len(m.channel_mult) >= 1 and all(x > 0 for x in m.channel_mult), 'model.channel_mult',
          f'must be a non-empty tuple of positive ints, got {m.channel_mult}')
  require(m.head_dim >= 0, 'model.head_dim', f'must be >= 0, got {m.head_dim}')
  for mult in m.channel_mult:
    ch = m.width * mult
    require(ch % m.groups == 0, 'model.groups',
            f'{m.groups} groups do not divide the {ch} channels of a level (width {m.width} x {mult})')
    heads = max(1, ch // m.head_dim) if m.head_dim > 0 else m.num_heads
    require(ch % heads == 0, 'model.head_dim' if m.head_dim > 0 else 'model.num_heads',
            f'{heads} heads do not divide the {ch} channels of a level')
  down = 2 ** (len(m.channel_mult) - 1)
  require(d.image_size % down == 0, 'data.image_size',
          f'{d.image_size} is not divisible by {down}, the downsampling of {len(m.channel_mult)} levels')
  require(m.kernels in ('auto', 'xla', 'cpu'), 'model.kernels',
          f"must be 'auto', 'xla' or 'cpu', got {m.kernels!r}")
  require(0.0 <= m.dropout < 1.0, 'model.dropout', f'must be in [0, 1), got {m.dropout}')
  require(m.num_classes >= 0, 'model.num_classes', f'must be >= 0, got {m.num_classes}')
  require(m.init in initializers.INITS, 'model.init', f'must be one of {initializers.INITS}, got {m.init!r}')
  require(m.time_activation in unet.ACTIVATIONS, 'model.time_activation',
          f'must be one of {tuple(unet.ACTIVATIONS)}, got {m.time_activation!r}')
  require(m.downsample_padding in unet.DOWNSAMPLE_PADDINGS, 'model.downsample_padding',
          f'must be one of {tuple(unet.DOWNSAMPLE_PADDINGS)}, got {m.downsample_padding!r}')
  require(m.resample in unet.RESAMPLES, 'model.resample', f'must be one of {unet.RESAMPLES}, got {m.resample!r}')
  require(m.emb_dim >= 0, 'model.emb_dim', f'must be >= 0 (0: 4 x model.width), got {m.emb_dim}')
  require(m.freq_shift in (0, 1) and m.freq_shift < (m.emb_dim or m.width) // 2, 'model.freq_shift',
          f'must be 0 or 1 (and below the time features / 2), got {m.freq_shift}')
  require(m.norm_eps > 0, 'model.norm_eps', f'must be positive, got {m.norm_eps}')
  quality_on = e.enabled and e.features and 'quality' in metrics
  if quality_on and 'train' in e.quality_references:
    smallest = min(config.ensemble.n) if config.ensemble.n else d.n
    require(smallest >= 2, 'eval.quality_references',
            f"'train' needs training sets of >= 2 images, the smallest has {smallest}")
  if quality_on and 'test' in e.quality_references:
    sets, per_set = e.num_reference_sets, e.num_reference or d.n_test // e.num_reference_sets
    require(sets * per_set <= d.n_test, 'eval.num_reference',
            f'{sets} disjoint reference set(s) of {per_set} test images need data.n_test >= {sets * per_set}, '
            f'got {d.n_test}')
    require(sets == 1 or per_set >= 2, 'eval.num_reference_sets',
            f'{sets} disjoint reference sets of data.n_test = {d.n_test} images leave {per_set} image(s) per '
            'set (need >= 2)')


class UNetExperiment(NetworkExperiment):
  """Family 'ddpm': DDPM U-Nets on images."""

  default_metrics = ('memorization', 'losses', 'quality')

  def validate(self, config: ml_collections.ConfigDict) -> None:
    """The checks of the U-Net (`model`), the DDPM schedule and sampler (`diffusion`), the reference sets."""
    validate_network(config, self.metrics(config))
    df = config.diffusion
    require(df.sample_steps > 0, 'diffusion.sample_steps', f'must be positive, got {df.sample_steps}')
    require(df.num_steps >= 2, 'diffusion.num_steps', f'must be >= 2, got {df.num_steps}')
    require(0 < df.beta_min <= df.beta_max < 1, 'diffusion.beta_min',
            f'need 0 < beta_min <= beta_max < 1, got {df.beta_min}, {df.beta_max}')
    require(df.sampler in ('ddim', 'ddpm'), 'diffusion.sampler', f"must be 'ddim' or 'ddpm', got {df.sampler!r}")
    require(df.sample_steps <= df.num_steps, 'diffusion.sample_steps',
            f'must be <= diffusion.num_steps ({df.num_steps}), got {df.sample_steps}')
    require(df.eta >= 0, 'diffusion.eta', f'must be >= 0, got {df.eta}')
    require(-1 <= df.fixed_step < df.num_steps, 'diffusion.fixed_step',
            f'must be -1 (steps uniform in 1..T-1) or a step in 0..{df.num_steps - 1}, got {df.fixed_step}')

  def load_data(self, config: ml_collections.ConfigDict) -> data_lib.ImageData:
    images = data_lib.load_images(config.data)
    if config.model.num_classes > 0 and images.num_classes > config.model.num_classes:
      raise ValueError(f"config field 'model.num_classes': {config.model.num_classes} is fewer than the "
                       f"{images.num_classes} classes of data set {config.data.name!r}")
    return images

  def build_family(self, config: ml_collections.ConfigDict, data: data_lib.ImageData) -> DDPM:
    return DDPM(config, data.train.shape[1:], data.value_range)

  def summary_info(self, config: ml_collections.ConfigDict) -> dict:
    return dict(super().summary_info(config), width=config.model.width)


EXPERIMENT = UNetExperiment()

__all__ = ['ImageFamily', 'DDPM', 'UNetExperiment', 'EXPERIMENT', 'validate_network']
