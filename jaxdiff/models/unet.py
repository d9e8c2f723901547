"""The DDPM U-Net of paper 1 (Bonnaire et al. 2025, section 1 of SPEC.md), in Flax NNX.

Ho et al.'s architecture: levels at resolutions (R, R/2, R/4, ...) with channels width * multiplier,
`num_res_blocks` ResNet blocks per level on the way down and `num_res_blocks + 1` on the way up (each
consuming a skip connection by concatenation), self-attention at the resolutions listed in
`attention_resolutions`, a bottleneck ResBlock-Attention-ResBlock, GroupNorm + SiLU, dropout inside the
ResNet blocks, and a sinusoidal time embedding of dimension `width` mapped by an MLP to 4 * width and added
in every ResNet block. Stride-2 convolutions go down, nearest x2 + conv go up.

With the defaults at 32x32x1 this is paper 1's network layer for layer. Its reported parameter counts for
W = 8, 16, 32, 48, 64 (0.263M, 1.027M, 4.055M, 9.086M, 16.12M) include the frozen 1000 x W sinusoidal table
that its PyTorch code stores as an nn.Embedding; we compute the embedding on the fly (t may be fractional),
so `paper_parameter_count` adds that table back. `tests/test_models.py` checks the counts.

Paper 1's network function differs from these defaults in four details, each a constructor argument (config
field): its time MLP uses GELU (`time_activation`; erf form, as torch's nn.GELU), its embedding frequencies are
10000^(-i / (half - 1)) (`freq_shift=1`; ours 10000^(-i / half)), its stride-2 convolutions pad (1, 1) (
`downsample_padding='symmetric'`; ours 'same' pads (0, 1) at even sizes: the same output size, a one-pixel
shift of the sampling grid), and its GroupNorm epsilon is PyTorch's 1e-5 (`norm_eps`; Flax's 1e-6). With those
and PyTorch's initialization (`init='torch'`, jaxdiff/models/initializers.py) the network is the authors' one:
bench/torch_unet_baseline.py writes it in PyTorch and tests/test_torch_unet.py loads the same weights into
both and compares the outputs.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxdiff.models import initializers
from jaxdiff.models.kernels import attention_function, conv_function

ACTIVATIONS = {'silu': nnx.silu, 'gelu': functools.partial(nnx.gelu, approximate=False)}
DOWNSAMPLE_PADDINGS = {'same': 'SAME', 'symmetric': ((1, 1), (1, 1))}


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10000.0, freq_shift: int = 0) -> jax.Array:
  """Sinusoidal embedding of (possibly fractional) timesteps. t: [B] -> [B, dim]: [sin(t f_i), cos(t f_i)] with
  f_i = max_period^(-i / (half - freq_shift)), i < half = dim // 2 (freq_shift 1: paper 1's code)."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / (half - freq_shift))
  args = t.astype(jnp.float32)[:, None] * freqs[None, :]
  emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
  if dim % 2:
    emb = jnp.pad(emb, ((0, 0), (0, 1)))
  return emb


class Layers:
  """Convolutions, dense layers and GroupNorms of one U-Net: its kernels, initialization and norm epsilon."""

  def __init__(self, *, kernels: str, init: str, norm_eps: float, rngs: nnx.Rngs):
    self.kernels, self.init, self.norm_eps, self.rngs = kernels, init, norm_eps, rngs

  def conv(self, cin: int, cout: int, size: tuple[int, int], **kw) -> nnx.Conv:
    return nnx.Conv(cin, cout, size, conv_general_dilated=conv_function(self.kernels), rngs=self.rngs,
                    **initializers.dense(self.init, cin * size[0] * size[1]), **kw)

  def linear(self, cin: int, cout: int) -> nnx.Linear:
    return nnx.Linear(cin, cout, rngs=self.rngs, **initializers.dense(self.init, cin))

  def norm(self, ch: int, groups: int) -> nnx.GroupNorm:
    return nnx.GroupNorm(ch, num_groups=groups, epsilon=self.norm_eps, rngs=self.rngs)


class ResBlock(nnx.Module):
  """GroupNorm-SiLU-Conv, + time embedding, GroupNorm-SiLU-Dropout-Conv, residual (1x1 conv if needed)."""

  def __init__(self, in_ch: int, out_ch: int, temb_dim: int, *, dropout: float, groups: int, layers: Layers):
    self.norm1 = layers.norm(in_ch, groups)
    self.conv1 = layers.conv(in_ch, out_ch, (3, 3))
    self.temb_proj = layers.linear(temb_dim, out_ch)
    self.norm2 = layers.norm(out_ch, groups)
    # Channel dropout (whole feature maps), as paper 1's nn.Dropout2d.
    self.dropout = nnx.Dropout(dropout, broadcast_dims=(1, 2))
    self.conv2 = layers.conv(out_ch, out_ch, (3, 3))
    self.skip = layers.conv(in_ch, out_ch, (1, 1)) if in_ch != out_ch else None

  def __call__(self, x, temb, *, train: bool, key: jax.Array | None):
    h = self.conv1(nnx.silu(self.norm1(x)))
    h = h + self.temb_proj(nnx.silu(temb))[:, None, None, :]
    h = nnx.silu(self.norm2(h))
    h = self.dropout(h, deterministic=not train or key is None, rngs=key)
    h = self.conv2(h)
    return h + (self.skip(x) if self.skip is not None else x)


class AttnBlock(nnx.Module):
  """Multi-head self-attention over the H*W positions, with a residual connection."""

  def __init__(self, ch: int, *, heads: int, groups: int, layers: Layers):
    self.norm = layers.norm(ch, groups)
    self.attn = nnx.MultiHeadAttention(
        num_heads=heads, in_features=ch, qkv_features=ch, out_features=ch, decode=False,
        attention_fn=attention_function(layers.kernels), rngs=layers.rngs,
        **initializers.attention(layers.init, ch))

  def __call__(self, x):
    b, h, w, c = x.shape
    y = self.norm(x).reshape(b, h * w, c)
    y = self.attn(y, deterministic=True)
    return x + y.reshape(b, h, w, c)


class UNet(nnx.Module):
  """Epsilon-prediction U-Net. __call__(x: [B, H, W, C], t: [B], y: [B] | None) -> [B, H, W, C]."""

  def __init__(self, *, image_size: int, channels: int, width: int = 32,
               channel_mult: Sequence[int] = (1, 2, 4), num_res_blocks: int = 2,
               attention_resolutions: Sequence[int] = (16, 8), num_heads: int = 4,
               dropout: float = 0.1, groups: int = 8, num_classes: int = 0, kernels: str = 'auto',
               time_activation: str = 'silu', freq_shift: int = 0, downsample_padding: str = 'same',
               norm_eps: float = 1e-6, init: str = 'flax', rngs: nnx.Rngs):
    for name, value, known in (('time_activation', time_activation, ACTIVATIONS),
                               ('downsample_padding', downsample_padding, DOWNSAMPLE_PADDINGS),
                               ('init', init, initializers.INITS)):
      if value not in known:
        raise ValueError(f"config field 'model.{name}': must be one of {tuple(known)}, got {value!r}")
    self.image_size = image_size
    self.width = width
    self.num_classes = num_classes
    self.num_levels = len(channel_mult)
    self.num_res_blocks = num_res_blocks
    self.freq_shift = freq_shift
    self.time_activation = time_activation
    layers = Layers(kernels=kernels, init=init, norm_eps=norm_eps, rngs=rngs)
    temb_dim = 4 * width
    self.temb1 = layers.linear(width, temb_dim)
    self.temb2 = layers.linear(temb_dim, temb_dim)
    # Class conditioning: one extra "null" class (index num_classes) for classifier-free guidance.
    self.class_emb = (nnx.Embed(num_classes + 1, temb_dim, rngs=rngs, **initializers.embedding(init))
                      if num_classes > 0 else None)
    conv = layers.conv
    self.conv_in = conv(channels, width, (3, 3))

    res_kw = dict(temb_dim=temb_dim, dropout=dropout, groups=groups, layers=layers)
    attn_kw = dict(heads=num_heads, groups=groups, layers=layers)
    skip_chs = [width]
    ch, res = width, image_size
    down = []
    for level, mult in enumerate(channel_mult):
      for _ in range(num_res_blocks):
        block = ResBlock(ch, width * mult, **res_kw)
        ch = width * mult
        attn = AttnBlock(ch, **attn_kw) if res in attention_resolutions else None
        down.append((block, attn))
        skip_chs.append(ch)
      if level != len(channel_mult) - 1:
        down.append(conv(ch, ch, (3, 3), strides=(2, 2), padding=DOWNSAMPLE_PADDINGS[downsample_padding]))
        skip_chs.append(ch)
        res //= 2
    self.down = nnx.List([d if isinstance(d, nnx.Conv) else nnx.List(list(d)) for d in down])

    self.mid1 = ResBlock(ch, ch, **res_kw)
    self.mid_attn = AttnBlock(ch, **attn_kw)
    self.mid2 = ResBlock(ch, ch, **res_kw)

    up = []
    for level, mult in reversed(list(enumerate(channel_mult))):
      for _ in range(num_res_blocks + 1):
        block = ResBlock(ch + skip_chs.pop(), width * mult, **res_kw)
        ch = width * mult
        attn = AttnBlock(ch, **attn_kw) if res in attention_resolutions else None
        up.append(nnx.List([block, attn]))
      if level != 0:
        up.append(conv(ch, ch, (3, 3)))
        res *= 2
    self.up = nnx.List(up)
    self.norm_out = layers.norm(ch, groups)
    self.conv_out = conv(ch, channels, (3, 3))

  def __call__(self, x: jax.Array, t: jax.Array, y: jax.Array | None = None, *, train: bool = False,
               key: jax.Array | None = None) -> jax.Array:
    keys = iter(jax.random.split(key, 64)) if (train and key is not None) else None
    next_key = (lambda: next(keys)) if keys is not None else (lambda: None)

    temb = timestep_embedding(t, self.width, freq_shift=self.freq_shift)
    temb = self.temb2(ACTIVATIONS[self.time_activation](self.temb1(temb)))
    if self.class_emb is not None:
      if y is None:
        y = jnp.full((x.shape[0],), self.num_classes, jnp.int32)
      temb = temb + self.class_emb(y)

    h = self.conv_in(x)
    hs = [h]
    for layer in self.down:
      if isinstance(layer, nnx.Conv):
        h = layer(h)
      else:
        block, attn = layer
        h = block(h, temb, train=train, key=next_key())
        if attn is not None:
          h = attn(h)
      hs.append(h)

    h = self.mid1(h, temb, train=train, key=next_key())
    h = self.mid_attn(h)
    h = self.mid2(h, temb, train=train, key=next_key())

    for layer in self.up:
      if isinstance(layer, nnx.Conv):
        b, hh, ww, c = h.shape
        h = layer(jax.image.resize(h, (b, 2 * hh, 2 * ww, c), method='nearest'))
      else:
        block, attn = layer
        h = block(jnp.concatenate([h, hs.pop()], axis=-1), temb, train=train, key=next_key())
        if attn is not None:
          h = attn(h)
    assert not hs
    return self.conv_out(nnx.silu(self.norm_out(h)))


def parameter_count(model: nnx.Module) -> int:
  """Number of trainable parameters."""
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def paper_parameter_count(model: UNet, num_timesteps: int = 1000) -> int:
  """Parameters as paper 1 counts them: trainable ones plus the frozen [T, width] sinusoidal table."""
  return parameter_count(model) + num_timesteps * model.width
