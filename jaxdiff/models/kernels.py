"""Kernels for XLA:CPU: attention computed in a form XLA:CPU runs fast, and the compile options it needs.

Measured on the 2-core CPU (AMD EPYC, AVX2, jax 0.10.2) in the paper-1 U-Net's shapes, batch 64:
- jaxlib 0.10 routes XLA:CPU convolutions to YNNPACK by default, which is slow there: a 3x3 convolution
  64 -> 64 channels at 32x32 takes 96 ms forward, 87 ms for the input gradient and 1521 ms for the kernel
  gradient; with YNNPACK kept off convolutions (`xla_cpu_experimental_ynn_fusion_type`, XLA's own Eigen
  convolutions) 45 ms, 37 ms and 74 ms (PyTorch 2.13's oneDNN on the same CPU: 67 ms forward, 118 ms for
  both gradients). `compiler_options` gives that option to the jitted train steps, samplers and evaluators
  (per compilation, not process-wide); one paper-1 Adam step at W = 32 went from 6.0 s to 4.7 s.
- self-attention over 16x16 positions, 4 heads of 4 channels, forward + backward: 322 ms with
  `nnx.dot_product_attention`, 100 ms with `per_example_attention` (the [heads, L, L] scores of one example
  stay in cache instead of streaming the [B, heads, L, L] tensor through memory several times).

`attention_function(kind)` gives `nnx.MultiHeadAttention` its attention: 'xla' Flax's default, 'cpu' the
per-example one; `compiler_options(kind)` the XLA options ('cpu': Eigen convolutions, None otherwise). 'auto'
picks 'cpu' when JAX's default backend is the CPU (GPUs and TPUs run the defaults well). Parameters are the
same either way: only the computation differs.
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


# YNNPACK for dot fusions only, so convolutions go to Eigen (see the module docstring); jaxlib versions
# without this option compile with their defaults. Measured per Adam step (W = 8 / 32): YNNPACK's default
# fusions 1.42 / 5.97 s (with the custom kernel gradient this replaced), no YNNPACK at all 1.42 / 5.20 s,
# dots only 1.32 / 4.73 s, dots as single ops 1.32 / 4.83 s, elementwise and reductions only 1.40 / 5.36 s.
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


__all__ = ['KINDS', 'CPU_COMPILER_OPTIONS', 'per_example_attention', 'resolve', 'attention_function',
           'compiler_options']
