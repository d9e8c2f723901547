"""Attention and convolution for XLA:CPU: the same functions as Flax's, computed in a form XLA:CPU runs fast.

Measured on the 2-core CPU (jax 0.10.2) in the paper-1 U-Net's shapes, batch 64:
- self-attention over 16x16 positions, 4 heads of 4 channels, forward + backward: 322 ms with
  `nnx.dot_product_attention`, 100 ms with `per_example_attention` (the [heads, L, L] scores of one example
  stay in cache instead of streaming the [B, heads, L, L] tensor through memory several times);
- a 3x3 convolution 32 -> 32 channels at 32x32: forward 31 ms, input gradient 37 ms, but the kernel gradient
  573 ms through XLA:CPU's convolution; `conv_general_dilated` computes it as kh x kw matrix products
  (inputs [B*H*W, C_in]^T x shifted output gradients [B*H*W, C_out]): 82 ms. At 64 -> 64 channels: 1627 ms
  through XLA, 257 ms with shifted inputs, 223 ms with shifted output gradients (the shifts are copies, and
  XLA:CPU copies at ~2 GB/s); 96 -> 32 channels: 202 ms -> 168 ms.

`kernel_functions(kind)` returns (attention_fn, conv_general_dilated) for `nnx.MultiHeadAttention` and
`nnx.Conv`: 'xla' gives Flax's defaults, 'cpu' the functions here, 'auto' picks by the default backend (GPUs
and TPUs run the defaults well). Parameters are the same either way: only the computation differs.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

KINDS = ('auto', 'xla', 'cpu')
_NHWC = ('NHWC', 'HWIO', 'NHWC')


def per_example_attention(query, key, value, mask=None, dropout_rate=0.0, deterministic=True, precision=None,
                          module=None, is_causal=False, **kwargs):
  """Softmax attention computed one example at a time (`lax.map`, rematerialized in the backward pass).

  The same function as `nnx.dot_product_attention` (query, key, value: [B, L, heads, head_dim]). Masks,
  dropout and weight sowing go to the standard function.
  """
  if mask is not None or is_causal or module is not None or (dropout_rate > 0 and not deterministic):
    return nnx.dot_product_attention(query, key, value, mask=mask, dropout_rate=dropout_rate,
                                     deterministic=deterministic, precision=precision, module=module,
                                     is_causal=is_causal, **kwargs)
  dtype = kwargs.get('dtype') or query.dtype
  scale = jnp.asarray(1.0 / math.sqrt(query.shape[-1]), dtype)

  def one(qkv):
    q, k, v = qkv    # [L, heads, head_dim]
    scores = jnp.einsum('qhd,khd->hqk', q * scale, k, precision=precision)
    weights = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(dtype)
    return jnp.einsum('hqk,khd->qhd', weights, v, precision=precision)

  return lax.map(jax.checkpoint(one), (query.astype(dtype), key.astype(dtype), value.astype(dtype)))


def _conv(x, w, strides, pads, precision):
  return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=_NHWC, precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv2d_nhwc(x, w, strides: tuple[int, int], pads: tuple[tuple[int, int], ...], precision=None):
  """A 2-D convolution (NHWC input, HWIO kernel, explicit non-negative padding) whose kernel gradient is
  computed as matrix products."""
  return _conv(x, w, strides, pads, precision)


def _conv_fwd(x, w, strides, pads, precision):
  return _conv(x, w, strides, pads, precision), (x, w)


def _conv_bwd(strides, pads, precision, res, g):
  x, w = res
  _, vjp_x = jax.vjp(lambda x_: _conv(x_, w, strides, pads, precision), x)
  (gx,) = vjp_x(g)
  kh, kw, cin, cout = w.shape
  b, ho, wo, _ = g.shape
  sh, sw = strides
  xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
  hp, wp = xp.shape[1:3]
  dot = functools.partial(lax.dot_general, dimension_numbers=(((0,), (0,)), ((), ())), precision=precision,
                          preferred_element_type=jnp.float32)
  taps = []
  if strides == (1, 1):
    # Tap (i, j) pairs x_pad[h + i, w + j] with g[h, w]: shift g instead (zero-pad it to x_pad's size at
    # offset (i, j)) and contract over the whole padded grid, so x is never copied -- the copies cost more
    # than the products on XLA:CPU, and g has no more channels than x in most U-Net layers.
    xf = xp.reshape(b * hp * wp, cin)
    for i in range(kh):
      for j in range(kw):
        gs = jnp.pad(g, ((0, 0), (i, hp - ho - i), (j, wp - wo - j), (0, 0)))
        taps.append(dot(xf, gs.reshape(b * hp * wp, cout)))
  else:
    g2 = g.reshape(b * ho * wo, cout)
    for i in range(kh):
      for j in range(kw):
        xs = lax.slice(xp, (0, i, j, 0), (b, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, cin), (1, sh, sw, 1))
        taps.append(dot(xs.reshape(b * ho * wo, cin), g2))
  gw = jnp.stack(taps).reshape(kh, kw, cin, cout).astype(w.dtype)
  return gx, gw


conv2d_nhwc.defvjp(_conv_fwd, _conv_bwd)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1, precision=None,
                         preferred_element_type=None, **kwargs):
  """`lax.conv_general_dilated` with the kernel gradient as matrix products (`conv2d_nhwc`) for plain 2-D
  NHWC/HWIO convolutions; anything else (dilation, groups, other layouts, negative padding) goes to lax."""
  def fallback():
    extra = {} if preferred_element_type is None else {'preferred_element_type': preferred_element_type}
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
                                    rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                                    feature_group_count=feature_group_count, batch_group_count=batch_group_count,
                                    precision=precision, **extra, **kwargs)
  if (lhs.ndim != 4 or feature_group_count != 1 or batch_group_count != 1 or preferred_element_type is not None
      or any(d != 1 for d in (lhs_dilation or ())) or any(d != 1 for d in (rhs_dilation or ()))
      or any(v is not None for v in kwargs.values())):
    return fallback()
  if lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) != \
     lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC):
    return fallback()
  strides = tuple(int(s) for s in window_strides)
  if isinstance(padding, str):
    pads = tuple(lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], strides, padding))
  else:
    pads = tuple((int(lo), int(hi)) for lo, hi in padding)
  if any(p < 0 for pair in pads for p in pair):
    return fallback()
  return conv2d_nhwc(lhs, rhs, strides, pads, precision)


def kernel_functions(kind: str):
  """(attention_fn, conv_general_dilated) for 'xla' (Flax's defaults), 'cpu' (this module's) or 'auto'
  ('cpu' when JAX's default backend is the CPU)."""
  if kind not in KINDS:
    raise ValueError(f"config field 'model.kernels': must be one of {KINDS}, got {kind!r}")
  if kind == 'auto':
    kind = 'cpu' if jax.default_backend() == 'cpu' else 'xla'
  if kind == 'cpu':
    return per_example_attention, conv_general_dilated
  return nnx.dot_product_attention, lax.conv_general_dilated


__all__ = ['KINDS', 'per_example_attention', 'conv2d_nhwc', 'conv_general_dilated', 'kernel_functions']
