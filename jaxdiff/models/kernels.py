"""Kernels for XLA:CPU: attention computed in a form XLA:CPU runs fast, and the compile options it needs.

Why each piece exists (timings on a 2-core CPU: bench/README.md, "CPU kernels"):
- jaxlib 0.10 routes XLA:CPU convolutions to YNNPACK by default, which is slow there, the kernel gradient
  most of all. With YNNPACK kept off convolutions (`xla_cpu_experimental_ynn_fusion_type`) they run in
  XLA's own Eigen kernels, at about PyTorch's (oneDNN) speed. `compiler_options` gives that option to the
  jitted train steps, samplers and evaluators (per compilation, not process-wide).
- XLA:CPU rewrites convolutions into the form its Eigen kernels take only in a program's entry computation:
  inside a while loop (the device train loop, `lax.fori_loop`) the kernel gradient JAX emits runs as a naive
  loop nest, orders of magnitude slower. `canonical_conv` writes both gradients in that form itself.
- `vmap` over both operands of a convolution (an ensemble of U-Nets) makes one grouped convolution, which
  XLA:CPU runs slower than the members' convolutions one by one; on one device `canonical_conv` maps over
  the members.
- self-attention at 16x16 positions: `per_example_attention` keeps the [heads, L, L] scores of one example
  in cache instead of streaming the [B, heads, L, L] tensor through memory several times.

`attention_function(kind)` gives `nnx.MultiHeadAttention` its attention: 'xla' Flax's default, 'cpu' the
per-example one; `conv_function(kind)` gives `nnx.Conv` its convolution ('cpu': `canonical_conv`);
`compiler_options(kind)` the XLA options ('cpu': Eigen convolutions, None otherwise). 'auto' picks 'cpu' when
JAX's default backend is the CPU (GPUs and TPUs run the defaults well). Parameters are the same either way:
only the computation differs.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

KINDS = ('auto', 'xla', 'cpu')


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


_NHWC_HWIO = ('NHWC', 'HWIO', 'NHWC')


def _conv(x, w, strides, padding, lhs_dilation=None, rhs_dilation=None, precision=None):
  return lax.conv_general_dilated(x, w, strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
                                  dimension_numbers=_NHWC_HWIO, precision=precision)


@functools.cache
def _member_conv(strides, pads, lhs_dilation=None, rhs_dilation=None, precision=None):
  """`_conv` with these settings, as a function of (x, w) whose `vmap` over both operands (an ensemble of
  models, jaxdiff/experiments/base.py) maps over the members instead of making one grouped convolution:
  XLA:CPU runs grouped convolutions slower than the members' convolutions one after another
  (bench/README.md, "CPU kernels"). Writing the members out one by one (no loop) ran no faster in a U-Net
  ensemble's step and makes the program E times larger, so the members are mapped. Only on one device: see
  `_rule`."""

  def plain(x, w):
    return _conv(x, w, strides, pads, lhs_dilation, rhs_dilation, precision)

  conv = jax.custom_batching.custom_vmap(plain)

  @conv.def_vmap
  def _rule(axis_size, in_batched, x, w):
    del axis_size
    x_batched, w_batched = in_batched
    # With several devices the members may be split over them (the EnsembleTrainer of jaxdiff/experiments/base.py
    # shards them over 'data'); a loop over a split axis would gather every member onto every device, so there
    # lax's grouped convolution stays.
    if x_batched and w_batched and jax.device_count() == 1:
      return lax.map(lambda xw: conv(*xw), (x, w)), True
    if x_batched or w_batched:   # one operand shared: one convolution over a larger batch or more features
      return jax.vmap(plain, (0 if x_batched else None, 0 if w_batched else None))(x, w), True
    return plain(x, w), False

  return conv


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _canonical_conv(x, w, strides, pads, precision):
  return _member_conv(strides, pads, precision=precision)(x, w)


def _canonical_conv_fwd(x, w, strides, pads, precision):
  return _canonical_conv(x, w, strides, pads, precision), (x, w)


def _canonical_conv_bwd(strides, pads, precision, res, g):
  x, w = res
  ks, ins, outs = w.shape[:2], x.shape[1:3], g.shape[1:3]
  # Input gradient: the transposed convolution (g dilated by the strides, the kernel flipped with its
  # in/out features swapped), padded so that it gives back the input's size.
  dx_pads = []
  for k, n, o, s, (lo, _) in zip(ks, ins, outs, strides, pads):
    p_lo = k - 1 - lo
    dx_pads.append((p_lo, n + k - 1 - ((o - 1) * s + 1) - p_lo))
  dx = _member_conv((1, 1), tuple(dx_pads), lhs_dilation=strides, precision=precision)(
      g, jnp.flip(w, (0, 1)).swapaxes(2, 3))
  # Kernel gradient: a convolution with the input's channels as its batch, the batch as its features and the
  # output gradient as its kernel (dilated by the strides); rows past the kernel's size, left when the padded
  # input is not a whole number of strides, are dropped.
  lhs, dw_pads = x.transpose(3, 1, 2, 0), pads
  if any(o > n for o, n in zip(outs, ins)):
    # Padding that makes the output larger than the input: XLA would swap a kernel larger than its input
    # with it, out of the canonical form; the padding goes onto the input instead.
    lhs = lax.pad(lhs, jnp.zeros((), lhs.dtype), ((0, 0, 0), *((lo, hi, 0) for lo, hi in pads), (0, 0, 0)))
    dw_pads = ((0, 0), (0, 0))
  dw = _member_conv((1, 1), tuple(dw_pads), rhs_dilation=strides, precision=precision)(lhs, g.transpose(1, 2, 0, 3))
  return dx, dw[:, :ks[0], :ks[1]].transpose(1, 2, 0, 3)


_canonical_conv.defvjp(_canonical_conv_fwd, _canonical_conv_bwd)


def canonical_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                   dimension_numbers=None, feature_group_count=1, batch_group_count=1, precision=None,
                   preferred_element_type=None, **kwargs):
  """`lax.conv_general_dilated` whose gradients are convolutions in XLA:CPU's canonical form.

  XLA:CPU rewrites convolutions into the form its fast (Eigen) kernels take only in a program's entry
  computation; inside a while loop's body (`lax.fori_loop`/`lax.scan`: the device train loop) the kernel
  gradient JAX emits stays a naive loop nest, orders of magnitude slower, and the input gradient is slower
  too (bench/README.md, "CPU kernels"). Here both gradients are written in the
  canonical form (NHWC input, HWIO kernel), so they run the same in and out of loops. Under `vmap` over both
  operands the members' convolutions run one by one (`_member_conv`). Plain 2-D NHWC/HWIO convolutions take
  this path; anything else (grouped, dilated, other layouts, shardings) goes to `lax`.
  """
  dn = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  plain = (lhs.ndim == 4 and dn == lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC_HWIO)
           and feature_group_count == 1 and batch_group_count == 1 and preferred_element_type is None
           and all(v is None for v in kwargs.values())    # nnx.Conv passes out_sharding=None
           and all(d == 1 for d in (lhs_dilation or (1, 1))) and all(d == 1 for d in (rhs_dilation or (1, 1))))
  if not plain:
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
                                    rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                                    feature_group_count=feature_group_count,
                                    batch_group_count=batch_group_count, precision=precision,
                                    preferred_element_type=preferred_element_type, **kwargs)
  strides = tuple(window_strides)
  if isinstance(padding, str):
    pads = tuple(lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], strides, padding))
  else:
    pads = tuple(tuple(p) for p in padding)
  return _canonical_conv(lhs, rhs, strides, pads, precision)


def resolve(kind: str) -> str:
  """'xla' or 'cpu' ('auto': 'cpu' when JAX's default backend is the CPU)."""
  if kind not in KINDS:
    raise ValueError(f"config field 'model.kernels': must be one of {KINDS}, got {kind!r}")
  if kind == 'auto':
    return 'cpu' if jax.default_backend() == 'cpu' else 'xla'
  return kind


def attention_function(kind: str):
  """The attention_fn for `nnx.MultiHeadAttention`: the per-example one for 'cpu', Flax's for 'xla'."""
  return per_example_attention if resolve(kind) == 'cpu' else nnx.dot_product_attention


def conv_function(kind: str):
  """The conv_general_dilated for `nnx.Conv`: `canonical_conv` for 'cpu', `lax`'s for 'xla'."""
  return canonical_conv if resolve(kind) == 'cpu' else lax.conv_general_dilated


# YNNPACK for dot fusions only, so convolutions go to Eigen (see the module docstring); jaxlib versions
# without this option compile with their defaults. Of the settings tried, dots only gave the fastest Adam step
# (bench/README.md, "CPU kernels").
CPU_COMPILER_OPTIONS = {'xla_cpu_experimental_ynn_fusion_type': 'LIBRARY_FUSION_TYPE_DOT'}


@functools.cache
def _cpu_options_supported() -> bool:
  if jax.default_backend() != 'cpu':
    return False
  try:
    jax.jit(lambda a: a + 1, compiler_options=CPU_COMPILER_OPTIONS).lower(jnp.float32(0)).compile()
  except Exception:  # pylint: disable=broad-except  (an XLA without the option: INVALID_ARGUMENT)
    return False
  return True


def compiler_options(kind: str) -> dict[str, str] | None:
  """`jax.jit(..., compiler_options=...)` for programs that run the network: the CPU options for 'cpu'
  (when the default backend is the CPU and XLA knows them), None otherwise."""
  if resolve(kind) == 'cpu' and _cpu_options_supported():
    return dict(CPU_COMPILER_OPTIONS)
  return None


__all__ = ['KINDS', 'CPU_COMPILER_OPTIONS', 'per_example_attention', 'canonical_conv', 'resolve',
           'attention_function', 'conv_function', 'compiler_options']
