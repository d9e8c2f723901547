"""Parameter initialization of the dense and convolution layers: Flax's defaults or PyTorch's (`model.init`).

- 'flax': Flax's defaults, kernels LeCun normal (std 1/sqrt(fan_in)), biases 0.
- 'torch': PyTorch's defaults, which paper 1's code uses: `nn.Linear` / `nn.Conv2d` kernels kaiming-uniform
  with a = sqrt(5), i.e. uniform in +-1/sqrt(fan_in) (std 1/sqrt(3 fan_in)), biases uniform in
  +-1/sqrt(fan_in); `nn.MultiheadAttention` its own: the stacked [3C, C] input projection Xavier-uniform
  (+-sqrt(6 / 4C)), the output projection kaiming-uniform as a Linear, both biases 0; `nn.Embedding` N(0, 1).

With SGD the scale of the initial weights sets the effective learning rate of each layer, so it moves the
absolute tau_gen / tau_mem of a run (not the laws). fan_in of a convolution is in_channels x kernel area.
Each function returns the keyword arguments for the Flax layer (empty for 'flax', so that the default
initializers, and the keys they draw, stay exactly those of Flax).
"""

from __future__ import annotations

import math
from typing import Any

import jax
from flax import nnx

INITS = ('flax', 'torch')


def uniform(bound: float):
  """Initializer: uniform in [-bound, bound] (Flax's `uniform` draws in [0, scale))."""

  def init(key, shape, dtype=jax.numpy.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def _check(init: str) -> None:
  if init not in INITS:
    raise ValueError(f"config field 'model.init': must be one of {INITS}, got {init!r}")


def dense(init: str, fan_in: int) -> dict[str, Any]:
  """kernel_init / bias_init of an `nnx.Linear` or `nnx.Conv` with this fan_in (in features x kernel area)."""
  _check(init)
  if init == 'flax':
    return {}
  bound = 1.0 / math.sqrt(fan_in)
  return dict(kernel_init=uniform(bound), bias_init=uniform(bound))


def attention(init: str, features: int) -> dict[str, Any]:
  """Initializers of an `nnx.MultiHeadAttention` over `features` channels (query/key/value and output)."""
  _check(init)
  if init == 'flax':
    return {}
  return dict(kernel_init=uniform(math.sqrt(6.0 / (features + 3 * features))), bias_init=nnx.initializers.zeros,
              out_kernel_init=uniform(1.0 / math.sqrt(features)), out_bias_init=nnx.initializers.zeros)


def embedding(init: str) -> dict[str, Any]:
  """embedding_init of an `nnx.Embed`."""
  _check(init)
  return {} if init == 'flax' else dict(embedding_init=nnx.initializers.normal(1.0))


__all__ = ['INITS', 'uniform', 'dense', 'attention', 'embedding']
