"""The 1-D convolutional U-Net of paper 2's grammar diffusion (SPEC section 4): its levels mirror the tree of
the Random Hierarchy Model (kernel = stride = s, so each down block merges the s children of a node).

  embed:   1x1 conv v -> W, GELU                                       h_0 [B, s^L, W]
  down l:  conv kernel = stride = s, W -> W, LayerNorm, GELU           h_l [B, s^(L-l), W], l = 1..L
  up l:    transposed conv kernel = stride = s on [h, h_(L-l+1)],      [B, s^(l), W], l = 1..L
           2W -> W, LayerNorm, GELU   (h starts at h_L: the first up block sees [h_L, h_L])
  readout: 1x1 conv on [h, h_0], 2W -> v: the x_0 logits [B, s^L, v]

No biases in the convolutions (LayerNorm has its scale and offset: 18,911,232 parameters at W = 1024, v = 8,
s = 2, L = 3). Weights are N(0, 1) and scaled in the forward pass by 1/sqrt(fan_in), the readout by 1/fan_in
(fan_in: the products summed per output, in_channels x kernel for a conv, in_channels for the transposed conv
whose kernel = stride taps do not overlap). Convolutions with kernel = stride are reshapes and matrix products.
The network has no time input: the family rescales its one-hot input (time enters through the input).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx


class _Weight(nnx.Module):
  """A bias-free linear map [..., fan_in] -> [..., out] with N(0, 1) weights scaled by `scale` / fan_in^power."""

  def __init__(self, fan_in: int, out: int, power: float, rngs: nnx.Rngs):
    self.w = nnx.Param(jax.random.normal(rngs.params(), (fan_in, out), jnp.float32))
    self.scale = 1.0 / fan_in ** power

  def __call__(self, x: jax.Array) -> jax.Array:
    return (x @ self.w[...]) * self.scale


class Conv1dUNet(nnx.Module):
  """x_0 logits of a sequence. __call__(x [B, s^L, v]) -> [B, s^L, v]."""

  def __init__(self, *, v: int, width: int, s: int, L: int, rngs: nnx.Rngs):
    self.v, self.width, self.s, self.L = v, width, s, L
    self.embed = _Weight(v, width, 0.5, rngs)
    self.down = nnx.List([_Weight(s * width, width, 0.5, rngs) for _ in range(L)])
    self.down_norm = nnx.List([nnx.LayerNorm(width, rngs=rngs) for _ in range(L)])
    self.up = nnx.List([_Weight(2 * width, s * width, 0.5, rngs) for _ in range(L)])
    self.up_norm = nnx.List([nnx.LayerNorm(width, rngs=rngs) for _ in range(L)])
    self.readout = _Weight(2 * width, v, 1.0, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    b, length, _ = x.shape
    if length % self.s ** self.L:
      raise ValueError(f'sequence length {length} is not a multiple of s^L = {self.s ** self.L}')
    h0 = h = jax.nn.gelu(self.embed(x))
    skips = []
    for conv, norm in zip(self.down, self.down_norm):
      h = jax.nn.gelu(norm(conv(h.reshape(b, h.shape[1] // self.s, self.s * self.width))))
      skips.append(h)
    for conv, norm, skip in zip(self.up, self.up_norm, reversed(skips)):
      h = conv(jnp.concatenate([h, skip], axis=-1)).reshape(b, h.shape[1] * self.s, self.width)
      h = jax.nn.gelu(norm(h))
    return self.readout(jnp.concatenate([h, h0], axis=-1))


def parameter_count(*, v: int, width: int, s: int, L: int) -> int:
  """The network's parameter count from its shapes (nothing allocated)."""
  abstract = nnx.eval_shape(lambda: Conv1dUNet(v=v, width=width, s=s, L=L, rngs=nnx.Rngs(0)))
  return int(sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(abstract, nnx.Param))))


__all__ = ['Conv1dUNet', 'parameter_count']
