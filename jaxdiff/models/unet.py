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

Paper 3's class-conditional U-Net (Marion & Wu; SPEC section 5) is the same network with the fields of an
ADM-style U-Net (Dhariwal & Nichol 2021) switched on: `emb_dim` (the sinusoidal time features, the time MLP and
the label embedding all of width 512 instead of W and 4W), `scale_shift` (each ResNet block's embedding gives
a scale and a shift of its second GroupNorm: h = norm(h) (1 + scale) + shift), `resample='resblock'` (down and
up sampling by ResNet blocks that average-pool / nearest-upsample inside, instead of convolutions), `head_dim`
(heads = channels / 64). With 3 blocks per level, multipliers (1, 2, 4), attention at 16x16 and 8x8 and a
label embedding of 10 rows, that network has 5090 W^2 + 68529 W + 530435 parameters; paper 3's five counts
(W = 16 ... 192) are exactly 5090 W^2 + 68325 W + 530450. The remaining -204 W + 15 are two details inferred
from the counts alone (no code of paper 3 is public): GroupNorms with a scale and no bias (`norm_bias=False`:
-204 W over the network's norms) and one learned scalar gate on the output of each of the 15 attention blocks
(`attention_gate=True`: +15). With both, and the null label as a zero embedding instead of an 11th learned
row (`learned_null=False`), the counts are paper 3's exactly; with the defaults (affine GroupNorms, no gate,
a learned null row) they are 0.02-0.13% above (tests/test_flow.py checks both).
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
RESAMPLES = ('conv', 'resblock')


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

  def __init__(self, *, kernels: str, init: str, norm_eps: float, rngs: nnx.Rngs, norm_bias: bool = True):
    self.kernels, self.init, self.norm_eps, self.rngs, self.norm_bias = kernels, init, norm_eps, rngs, norm_bias

  def conv(self, cin: int, cout: int, size: tuple[int, int], **kw) -> nnx.Conv:
    return nnx.Conv(cin, cout, size, conv_general_dilated=conv_function(self.kernels), rngs=self.rngs,
                    **initializers.dense(self.init, cin * size[0] * size[1]), **kw)

  def linear(self, cin: int, cout: int) -> nnx.Linear:
    return nnx.Linear(cin, cout, rngs=self.rngs, **initializers.dense(self.init, cin))

  def norm(self, ch: int, groups: int) -> nnx.GroupNorm:
    return nnx.GroupNorm(ch, num_groups=groups, epsilon=self.norm_eps, use_bias=self.norm_bias, rngs=self.rngs)


class ResBlock(nnx.Module):
  """GroupNorm-SiLU-Conv, + time embedding, GroupNorm-SiLU-Dropout-Conv, residual (1x1 conv if needed).

  scale_shift: the embedding gives (scale, shift) of the second GroupNorm instead of a sum (ADM). resample
  'down' / 'up': halve (2x2 mean) or double (nearest) the resolution of h and x after the first norm (ADM's
  resblock_updown)."""

  def __init__(self, in_ch: int, out_ch: int, temb_dim: int, *, dropout: float, groups: int, layers: Layers,
               scale_shift: bool = False, resample: str | None = None):
    self.scale_shift, self.resample = scale_shift, resample
    self.norm1 = layers.norm(in_ch, groups)
    self.conv1 = layers.conv(in_ch, out_ch, (3, 3))
    self.temb_proj = layers.linear(temb_dim, 2 * out_ch if scale_shift else out_ch)
    self.norm2 = layers.norm(out_ch, groups)
    # Channel dropout (whole feature maps), as paper 1's nn.Dropout2d.
    self.dropout = nnx.Dropout(dropout, broadcast_dims=(1, 2))
    self.conv2 = layers.conv(out_ch, out_ch, (3, 3))
    self.skip = layers.conv(in_ch, out_ch, (1, 1)) if in_ch != out_ch else None

  def __call__(self, x, temb, *, train: bool, key: jax.Array | None):
    h = nnx.silu(self.norm1(x))
    if self.resample is not None:
      h, x = _resample(h, self.resample), _resample(x, self.resample)
    h = self.conv1(h)
    emb = self.temb_proj(nnx.silu(temb))[:, None, None, :]
    if self.scale_shift:
      scale, shift = jnp.split(emb, 2, axis=-1)
      h = self.norm2(h) * (1 + scale) + shift
    else:
      h = self.norm2(h + emb)
    h = nnx.silu(h)
    h = self.dropout(h, deterministic=not train or key is None, rngs=key)
    h = self.conv2(h)
    return h + (self.skip(x) if self.skip is not None else x)


def _resample(x: jax.Array, how: str) -> jax.Array:
  """[B, H, W, C] -> [B, H/2, W/2, C] (2x2 mean, 'down') or [B, 2H, 2W, C] (nearest, 'up')."""
  b, h, w, c = x.shape
  if how == 'down':
    return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
  return jax.image.resize(x, (b, 2 * h, 2 * w, c), method='nearest')


class AttnBlock(nnx.Module):
  """Multi-head self-attention over the H*W positions, with a residual connection."""

  def __init__(self, ch: int, *, heads: int, groups: int, layers: Layers, gate: bool = False):
    self.norm = layers.norm(ch, groups)
    # A learned scalar on the attention output (paper 3's counts; see the module docstring), zero at the start
    # so the block starts as the identity, as ADM's zero-initialized output projection does.
    self.gate = nnx.Param(jnp.zeros((), jnp.float32)) if gate else None
    self.attn = nnx.MultiHeadAttention(
        num_heads=heads, in_features=ch, qkv_features=ch, out_features=ch, decode=False,
        attention_fn=attention_function(layers.kernels), rngs=layers.rngs,
        **initializers.attention(layers.init, ch))

  def __call__(self, x):
    b, h, w, c = x.shape
    y = self.norm(x).reshape(b, h * w, c)
    y = self.attn(y, deterministic=True).reshape(b, h, w, c)
    return x + (self.gate[...] * y if self.gate is not None else y)


class UNet(nnx.Module):
  """Epsilon-prediction U-Net. __call__(x: [B, H, W, C], t: [B], y: [B] | None) -> [B, H, W, C]."""

  def __init__(self, *, image_size: int, channels: int, width: int = 32,
               channel_mult: Sequence[int] = (1, 2, 4), num_res_blocks: int = 2,
               attention_resolutions: Sequence[int] = (16, 8), num_heads: int = 4,
               dropout: float = 0.1, groups: int = 8, num_classes: int = 0, kernels: str = 'auto',
               time_activation: str = 'silu', freq_shift: int = 0, downsample_padding: str = 'same',
               norm_eps: float = 1e-6, init: str = 'flax', emb_dim: int = 0, scale_shift: bool = False,
               resample: str = 'conv', head_dim: int = 0, norm_bias: bool = True, attention_gate: bool = False,
               learned_null: bool = True, rngs: nnx.Rngs):
    for name, value, known in (('time_activation', time_activation, ACTIVATIONS),
                               ('downsample_padding', downsample_padding, DOWNSAMPLE_PADDINGS),
                               ('init', init, initializers.INITS), ('resample', resample, RESAMPLES)):
      if value not in known:
        raise ValueError(f"config field 'model.{name}': must be one of {tuple(known)}, got {value!r}")
    self.image_size = image_size
    self.width = width
    self.num_classes = num_classes
    self.num_levels = len(channel_mult)
    self.num_res_blocks = num_res_blocks
    self.freq_shift = freq_shift
    self.time_activation = time_activation
    self.learned_null = learned_null
    layers = Layers(kernels=kernels, init=init, norm_eps=norm_eps, rngs=rngs, norm_bias=norm_bias)
    # Paper 1: sinusoidal features of dimension W, an MLP to 4W. emb_dim > 0 (paper 3: 512): all of emb_dim.
    self.time_features = emb_dim or width
    temb_dim = emb_dim or 4 * width
    self.temb1 = layers.linear(self.time_features, temb_dim)
    self.temb2 = layers.linear(temb_dim, temb_dim)
    # Class conditioning: the "null" class (index num_classes) of classifier-free guidance is one more learned
    # row, or (learned_null=False) a zero embedding: the network then sees the time embedding alone.
    rows = num_classes + 1 if learned_null else num_classes
    self.class_emb = (nnx.Embed(rows, temb_dim, rngs=rngs, **initializers.embedding(init))
                      if num_classes > 0 else None)
    conv = layers.conv
    self.conv_in = conv(channels, width, (3, 3))

    res_kw = dict(temb_dim=temb_dim, dropout=dropout, groups=groups, layers=layers, scale_shift=scale_shift)

    def attention(ch):
      heads = max(1, ch // head_dim) if head_dim > 0 else num_heads
      return AttnBlock(ch, heads=heads, groups=groups, layers=layers, gate=attention_gate)

    def resampler(ch, how):
      if resample == 'resblock':
        return ResBlock(ch, ch, resample=how, **res_kw)
      if how == 'down':
        return conv(ch, ch, (3, 3), strides=(2, 2), padding=DOWNSAMPLE_PADDINGS[downsample_padding])
      return conv(ch, ch, (3, 3))   # after a nearest x2 (in __call__)

    skip_chs = [width]
    ch, res = width, image_size
    down = []
    for level, mult in enumerate(channel_mult):
      for _ in range(num_res_blocks):
        block = ResBlock(ch, width * mult, **res_kw)
        ch = width * mult
        down.append(nnx.List([block, attention(ch) if res in attention_resolutions else None]))
        skip_chs.append(ch)
      if level != len(channel_mult) - 1:
        down.append(resampler(ch, 'down'))
        skip_chs.append(ch)
        res //= 2
    self.down = nnx.List(down)

    self.mid1 = ResBlock(ch, ch, **res_kw)
    self.mid_attn = attention(ch)
    self.mid2 = ResBlock(ch, ch, **res_kw)

    up = []
    for level, mult in reversed(list(enumerate(channel_mult))):
      for _ in range(num_res_blocks + 1):
        block = ResBlock(ch + skip_chs.pop(), width * mult, **res_kw)
        ch = width * mult
        up.append(nnx.List([block, attention(ch) if res in attention_resolutions else None]))
      if level != 0:
        up.append(resampler(ch, 'up'))
        res *= 2
    self.up = nnx.List(up)
    self.norm_out = layers.norm(ch, groups)
    self.conv_out = conv(ch, channels, (3, 3))

  def __call__(self, x: jax.Array, t: jax.Array, y: jax.Array | None = None, *, train: bool = False,
               key: jax.Array | None = None) -> jax.Array:
    keys = iter(jax.random.split(key, 64)) if (train and key is not None) else None
    next_key = (lambda: next(keys)) if keys is not None else (lambda: None)

    temb = timestep_embedding(t, self.time_features, freq_shift=self.freq_shift)
    temb = self.temb2(ACTIVATIONS[self.time_activation](self.temb1(temb)))
    if self.class_emb is not None:
      if y is None:
        y = jnp.full((x.shape[0],), self.num_classes, jnp.int32)
      if self.learned_null:
        temb = temb + self.class_emb(y)
      else:
        temb = temb + jnp.where((y < self.num_classes)[:, None],
                                self.class_emb(jnp.minimum(y, self.num_classes - 1)), 0.0)

    h = self.conv_in(x)
    hs = [h]
    for layer in self.down:
      if isinstance(layer, nnx.Conv):
        h = layer(h)
      elif isinstance(layer, ResBlock):   # resample='resblock'
        h = layer(h, temb, train=train, key=next_key())
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
        h = layer(_resample(h, 'up'))
      elif isinstance(layer, ResBlock):
        h = layer(h, temb, train=train, key=next_key())
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
