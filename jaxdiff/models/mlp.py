"""The residual MLP score model of paper 1's Gaussian-mixture experiment (SPEC section 2), in Flax NNX.

x [B, d] -> Linear(d, W) -> `num_blocks` pre-LayerNorm residual blocks -> LayerNorm, SiLU -> Linear(W, d).
A block is h + Linear(SiLU(Linear(LN(h)) + time/class embedding)). The diffusion time enters through a
sinusoidal encoding (as the U-Net's) mapped by a two-layer MLP to W and added in every block; a class label
(classifier-free guidance variant) adds a learned embedding, with index `num_classes` as the "no label" token.
The output is the noise estimate eps(x_t, t) (epsilon prediction); the score is -eps / sqrt(Delta_t).

The last layer starts at zero, so an untrained model predicts eps = 0 (score 0): the loss starts at 1 per
coordinate, whatever the width.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxdiff.models.unet import timestep_embedding


class ResidualBlock(nnx.Module):
  """h + Linear(SiLU(Linear(LayerNorm(h)) + emb)). h: [B, W]; emb: [B, W]."""

  def __init__(self, width: int, *, rngs: nnx.Rngs):
    self.norm = nnx.LayerNorm(width, rngs=rngs)
    self.fc1 = nnx.Linear(width, width, rngs=rngs)
    self.emb = nnx.Linear(width, width, rngs=rngs)
    self.fc2 = nnx.Linear(width, width, rngs=rngs)

  def __call__(self, h: jax.Array, emb: jax.Array) -> jax.Array:
    return h + self.fc2(nnx.silu(self.fc1(self.norm(h)) + self.emb(emb)))


class ResidualMLP(nnx.Module):
  """eps-prediction MLP. __call__(x: [B, d], t: [B] time code, y: [B] int | None) -> [B, d].

  `t` is any real time code (the GMM experiment passes a log-time index in [0, 1000]); it is encoded
  sinusoidally with `time_dim` features.
  """

  def __init__(self, *, dim: int, width: int = 256, num_blocks: int = 3, time_dim: int | None = None,
               num_classes: int = 0, rngs: nnx.Rngs):
    if dim < 1 or width < 1 or num_blocks < 0:
      raise ValueError(f'ResidualMLP needs dim >= 1, width >= 1, num_blocks >= 0; got {dim}, {width}, '
                       f'{num_blocks}')
    if num_classes < 0:
      raise ValueError(f'num_classes must be >= 0, got {num_classes}')
    self.dim, self.width, self.num_classes = dim, width, num_classes
    self.time_dim = time_dim or width
    self.inp = nnx.Linear(dim, width, rngs=rngs)
    self.time1 = nnx.Linear(self.time_dim, width, rngs=rngs)
    self.time2 = nnx.Linear(width, width, rngs=rngs)
    # num_classes + 1 rows: the last one is the unconditional ("null") label of classifier-free guidance.
    self.label = nnx.Embed(num_classes + 1, width, rngs=rngs) if num_classes > 0 else None
    self.blocks = nnx.List([ResidualBlock(width, rngs=rngs) for _ in range(num_blocks)])
    self.out_norm = nnx.LayerNorm(width, rngs=rngs)
    self.out = nnx.Linear(width, dim, kernel_init=nnx.initializers.zeros, rngs=rngs)

  def __call__(self, x: jax.Array, t: jax.Array, y: jax.Array | None = None) -> jax.Array:
    if x.ndim != 2 or x.shape[1] != self.dim:
      raise ValueError(f'ResidualMLP expects x of shape [B, {self.dim}], got {x.shape}')
    emb = self.time2(nnx.silu(self.time1(timestep_embedding(jnp.broadcast_to(t, x.shape[:1]),
                                                             self.time_dim))))
    if self.label is not None:
      if y is None:
        y = jnp.full(x.shape[:1], self.num_classes, jnp.int32)
      emb = emb + self.label(y)
    h = self.inp(x)
    for block in self.blocks:
      h = block(h, emb)
    return self.out(nnx.silu(self.out_norm(h)))


def parameter_count(*, dim: int, width: int, num_blocks: int = 3, time_dim: int | None = None,
                    num_classes: int = 0) -> int:
  """Trainable parameters of `ResidualMLP` with these sizes (closed form, checked against the module)."""
  tdim = time_dim or width
  lin = lambda i, o: i * o + o  # noqa: E731
  count = lin(dim, width) + lin(tdim, width) + lin(width, width)
  count += num_blocks * (2 * width + 3 * lin(width, width))
  count += 2 * width + lin(width, dim)
  if num_classes > 0:
    count += (num_classes + 1) * width
  return count
