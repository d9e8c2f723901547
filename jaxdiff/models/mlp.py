"""The residual MLP score models of paper 1's Gaussian-mixture experiment (SPEC section 2), in Flax NNX.

Two networks (`gmm.network`): jaxdiff's `ResidualMLP` ('pre_ln') and the authors' `PostLNMLP` ('post_ln').

ResidualMLP: x [B, d] -> Linear(d, W) -> `num_blocks` pre-LayerNorm residual blocks -> LayerNorm, SiLU -> Linear(W, d).
A block is h + Linear(SiLU(Linear(LN(h)) + time/class embedding)). The diffusion time enters through a
sinusoidal encoding (as the U-Net's) mapped by a two-layer MLP to W and added in every block; a class label
(classifier-free guidance variant) adds a learned embedding, with index `num_classes` as the "no label" token.
The output is the noise estimate eps(x_t, t) (epsilon prediction); the score is -eps / sqrt(Delta_t).

The last layer starts at zero, so an untrained model predicts eps = 0 (score 0): the loss starts at 1 per
coordinate, whatever the width.

PostLNMLP (paper 1's code, Experiments/src/Utils/TinyModels.py: `SimpleTimeModel`): x -> Linear(d, W) ->
`num_blocks` blocks h -> LayerNorm(h + Linear(GELU(Linear(h + e(t))))) -> Linear(W, d), with e(t) the fixed
(untrained) sinusoidal encoding of the integer DDPM step t (`positional_encoding`) added to every block's input,
GELU in its erf form and PyTorch's LayerNorm epsilon 1e-5. At d = 8 it has 400,648 parameters for W = 256
(102,024 for W = 128), all in its linear layers and LayerNorms.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxdiff.models import initializers
from jaxdiff.models.unet import timestep_embedding


def _trunk(model, x: jax.Array, emb: jax.Array, y: jax.Array | None) -> jax.Array:
  """model.inp(x) through model.blocks, each given emb plus the label embedding (the null label when y is
  None) of a class-conditional model. x: [B, d]; emb: [B, W] -> [B, W]."""
  if model.label is not None:
    if y is None:
      y = jnp.full(x.shape[:1], model.num_classes, jnp.int32)
    emb = emb + model.label(y)
  h = model.inp(x)
  for block in model.blocks:
    h = block(h, emb)
  return h


class ResidualBlock(nnx.Module):
  """h + Linear(SiLU(Linear(LayerNorm(h)) + emb)). h: [B, W]; emb: [B, W]."""

  def __init__(self, width: int, *, rngs: nnx.Rngs, init: str = 'flax'):
    lin = initializers.dense(init, width)
    self.norm = nnx.LayerNorm(width, rngs=rngs)
    self.fc1 = nnx.Linear(width, width, rngs=rngs, **lin)
    self.emb = nnx.Linear(width, width, rngs=rngs, **lin)
    self.fc2 = nnx.Linear(width, width, rngs=rngs, **lin)

  def __call__(self, h: jax.Array, emb: jax.Array) -> jax.Array:
    return h + self.fc2(nnx.silu(self.fc1(self.norm(h)) + self.emb(emb)))


class ResidualMLP(nnx.Module):
  """eps-prediction MLP. __call__(x: [B, d], t: [B] time code, y: [B] int | None) -> [B, d].

  `t` is any real time code (the GMM experiment passes a log-time index in [0, 1000]); it is encoded
  sinusoidally with `time_dim` features.
  """

  def __init__(self, *, dim: int, width: int = 256, num_blocks: int = 3, time_dim: int | None = None,
               num_classes: int = 0, init: str = 'flax', rngs: nnx.Rngs):
    if dim < 1 or width < 1 or num_blocks < 0:
      raise ValueError(f'ResidualMLP needs dim >= 1, width >= 1, num_blocks >= 0; got {dim}, {width}, '
                       f'{num_blocks}')
    if num_classes < 0:
      raise ValueError(f'num_classes must be >= 0, got {num_classes}')
    self.dim, self.width, self.num_classes = dim, width, num_classes
    self.time_dim = time_dim or width
    self.inp = nnx.Linear(dim, width, rngs=rngs, **initializers.dense(init, dim))
    self.time1 = nnx.Linear(self.time_dim, width, rngs=rngs, **initializers.dense(init, self.time_dim))
    self.time2 = nnx.Linear(width, width, rngs=rngs, **initializers.dense(init, width))
    # num_classes + 1 rows: the last one is the unconditional ("null") label of classifier-free guidance.
    self.label = (nnx.Embed(num_classes + 1, width, rngs=rngs, **initializers.embedding(init))
                  if num_classes > 0 else None)
    self.blocks = nnx.List([ResidualBlock(width, rngs=rngs, init=init) for _ in range(num_blocks)])
    self.out_norm = nnx.LayerNorm(width, rngs=rngs)
    self.out = nnx.Linear(width, dim, kernel_init=nnx.initializers.zeros, rngs=rngs)

  def __call__(self, x: jax.Array, t: jax.Array, y: jax.Array | None = None) -> jax.Array:
    if x.ndim != 2 or x.shape[1] != self.dim:
      raise ValueError(f'ResidualMLP expects x of shape [B, {self.dim}], got {x.shape}')
    emb = self.time2(nnx.silu(self.time1(timestep_embedding(jnp.broadcast_to(t, x.shape[:1]),
                                                             self.time_dim))))
    return self.out(nnx.silu(self.out_norm(_trunk(self, x, emb, y))))


def positional_encoding(t: jax.Array, dim: int, min_freq: float = 1e-4) -> jax.Array:
  """The authors' sinusoidal step encoding. t: [B] -> [B, dim]: feature i is cos(t f_i) (i even) or
  sin(t f_i) (i odd), f_i = min_freq^(2 floor(i / 2) / dim) (interleaved, unlike `timestep_embedding`)."""
  i = jnp.arange(dim)
  freqs = min_freq ** (2.0 * (i // 2) / dim)
  args = t.astype(jnp.float32)[:, None] * freqs[None, :].astype(jnp.float32)
  return jnp.where(i % 2 == 0, jnp.cos(args), jnp.sin(args))


class PostLNBlock(nnx.Module):
  """LayerNorm(h + Linear(GELU(Linear(h + emb)))). h, emb: [B, W]."""

  def __init__(self, width: int, *, rngs: nnx.Rngs, init: str = 'flax'):
    lin = initializers.dense(init, width)
    self.fc1 = nnx.Linear(width, width, rngs=rngs, **lin)
    self.fc2 = nnx.Linear(width, width, rngs=rngs, **lin)
    self.norm = nnx.LayerNorm(width, epsilon=1e-5, rngs=rngs)

  def __call__(self, h: jax.Array, emb: jax.Array) -> jax.Array:
    return self.norm(h + self.fc2(nnx.gelu(self.fc1(h + emb), approximate=False)))


class PostLNMLP(nnx.Module):
  """Paper 1's GMM network. __call__(x: [B, d], t: [B] DDPM steps, y: [B] int | None) -> [B, d] (eps).

  A class label (the classifier-free-guidance variant, which the authors' network lacks) adds a learned
  embedding to the encoding; index `num_classes` is the null label.
  """

  def __init__(self, *, dim: int, width: int = 256, num_blocks: int = 3, num_classes: int = 0,
               init: str = 'flax', rngs: nnx.Rngs):
    if dim < 1 or width < 2 or width % 2 or num_blocks < 0:
      raise ValueError(f'PostLNMLP needs dim >= 1, an even width, num_blocks >= 0; got {dim}, {width}, {num_blocks}')
    self.dim, self.width, self.num_classes = dim, width, num_classes
    self.inp = nnx.Linear(dim, width, rngs=rngs, **initializers.dense(init, dim))
    self.blocks = nnx.List([PostLNBlock(width, rngs=rngs, init=init) for _ in range(num_blocks)])
    self.out = nnx.Linear(width, dim, rngs=rngs, **initializers.dense(init, width))
    self.label = (nnx.Embed(num_classes + 1, width, rngs=rngs, **initializers.embedding(init))
                  if num_classes > 0 else None)

  def __call__(self, x: jax.Array, t: jax.Array, y: jax.Array | None = None) -> jax.Array:
    if x.ndim != 2 or x.shape[1] != self.dim:
      raise ValueError(f'PostLNMLP expects x of shape [B, {self.dim}], got {x.shape}')
    return self.out(_trunk(self, x, positional_encoding(jnp.broadcast_to(t, x.shape[:1]), self.width), y))


NETWORKS = {'pre_ln': ResidualMLP, 'post_ln': PostLNMLP}   # gmm.network -> class


def build(network: str, **kw) -> ResidualMLP | PostLNMLP:
  """The network named by `gmm.network`: 'pre_ln' (`ResidualMLP`) or 'post_ln' (`PostLNMLP`)."""
  if network not in NETWORKS:
    raise ValueError(f"config field 'gmm.network': must be one of {tuple(NETWORKS)}, got {network!r}")
  return NETWORKS[network](**kw)


def parameter_count(*, dim: int, width: int, num_blocks: int = 3, time_dim: int | None = None,
                    num_classes: int = 0, network: str = 'pre_ln') -> int:
  """Trainable parameters of the `network` with these sizes (closed form, checked against the modules)."""
  lin = lambda i, o: i * o + o  # noqa: E731
  label = (num_classes + 1) * width if num_classes > 0 else 0
  if network == 'post_ln':
    return lin(dim, width) + num_blocks * (2 * lin(width, width) + 2 * width) + lin(width, dim) + label
  tdim = time_dim or width
  count = lin(dim, width) + lin(tdim, width) + lin(width, width)
  count += num_blocks * (2 * width + 3 * lin(width, width))
  count += 2 * width + lin(width, dim)
  if num_classes > 0:
    count += (num_classes + 1) * width
  return count
