"""Model families: what the one training loop needs from a kind of model.

A family builds its network, defines its training loss on a batch, and samples. The loop in `train.py`
knows nothing else about it, so a new model family is a new class here, not a new loop.
"""

from __future__ import annotations

from typing import Protocol

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from jaxdiff import diffusion
from jaxdiff.models import build_network, kernels

Batch = dict[str, jax.Array]  # 'x': [B, ...] data, 'y': [B] int labels


class Family(Protocol):
  """What the loop calls. Optionally a `compiler_options` attribute: XLA options for the `jax.jit` of every
  program that runs the network (see `compiler_options` below)."""
  def init(self, key: jax.Array) -> nnx.Module: ...
  def loss(self, model: nnx.Module, batch: Batch, key: jax.Array, *, train: bool) -> jax.Array: ...
  def sample(self, model: nnx.Module, key: jax.Array, num: int, y: jax.Array | None = None) -> jax.Array: ...
  def loss_at(self, model: nnx.Module, x: jax.Array, t: jax.Array, key: jax.Array) -> jax.Array: ...


class DDPM:
  """Epsilon-prediction DDPM with an image network (the U-Net of paper 1)."""

  def __init__(self, config: ml_collections.ConfigDict, data_shape: tuple[int, ...], data_range=None):
    self.config = config
    self.data_shape = tuple(data_shape)  # [H, W, C]
    # (lo, hi) broadcastable to [H, W, C]: the sampler clips its x0 estimates to it (diffusion._denoise).
    self.clip = None
    if config.diffusion.clip_denoised and data_range is not None:
      self.clip = tuple(jnp.asarray(v, jnp.float32) for v in data_range)
    df = config.diffusion
    self.schedule = diffusion.linear_schedule(df.num_steps, df.beta_min, df.beta_max)
    # XLA options for every compiled program that runs the network (jaxdiff/models/kernels.py).
    self.compiler_options = kernels.compiler_options(config.model.kernels)

  def init(self, key: jax.Array) -> nnx.Module:
    h, _, c = self.data_shape
    return build_network(self.config.model, image_size=h, channels=c, rngs=nnx.Rngs(params=key))

  def _eps_fn(self, model, y, *, train: bool, key=None):
    y = y if self.config.model.num_classes > 0 else None
    return lambda x, t: model(x, t, y, train=train, key=key)

  def losses(self, model, batch: Batch, key, *, train: bool):
    """Per-example training losses [B] (an ensemble member weights them to mask its padding)."""
    k_loss, k_drop = jax.random.split(key)
    eps_fn = self._eps_fn(model, batch.get('y'), train=train, key=k_drop)
    return diffusion.ddpm_losses(self.schedule, eps_fn, batch['x'], k_loss)

  def loss(self, model, batch: Batch, key, *, train: bool):
    return jnp.mean(self.losses(model, batch, key, train=train))

  def loss_at(self, model, x, t, key):
    """Per-example eps-MSE at steps t, without dropout (evaluation). x: [B, H, W, C], t: [B] -> [B]."""
    y = None
    if self.config.model.num_classes > 0:
      y = jnp.full((x.shape[0],), self.config.model.num_classes, jnp.int32)
    return diffusion.eps_loss_at(self.schedule, self._eps_fn(model, y, train=False), x, t, key)

  def sample(self, model, key, num: int, y=None):
    df = self.config.diffusion
    if y is None and self.config.model.num_classes > 0:
      y = jnp.full((num,), self.config.model.num_classes, jnp.int32)  # the unconditional ("null") class
    return diffusion.sample(self.schedule, self._eps_fn(model, y, train=False), (num, *self.data_shape), key,
                            sampler=df.sampler, sample_steps=df.sample_steps, eta=df.eta, clip=self.clip)


def compiler_options(family) -> dict[str, str] | None:
  """The family's XLA compile options for programs that run its network (None: XLA's defaults)."""
  return getattr(family, 'compiler_options', None)


def build_family(config: ml_collections.ConfigDict, data_shape: tuple[int, ...], data_range=None) -> Family:
  """data_range: (lo, hi) of the data values, e.g. `ImageData.value_range`, for samplers that clip."""
  if config.family == 'ddpm':
    return DDPM(config, data_shape, data_range)
  raise ValueError(f"config field 'family': unknown model family {config.family!r}")
