"""The FID Inception-v3 of pytorch-fid, in Flax NNX, with a torch-free loader for its weights.

FID and KID (Heusel et al. 2017; Binkowski et al. 2018) are defined on the 2048-d pool features of one
particular network: the TensorFlow Inception graph of 2015-12-05, which pytorch-fid ports as
`pytorch_fid.inception.InceptionV3(output_blocks=(3,), resize_input=True, normalize_input=True)`. This
module rebuilds that network layer for layer, so that numbers computed here are comparable with published
FIDs once the same weights are loaded:

- input [N, H, W, C] in [0, 1] (C = 1 is repeated to 3 channels), resized to 299 x 299 with torch's
  bilinear `align_corners=False` (no antialiasing, also when downsampling), then mapped to [-1, 1] by 2x - 1;
- every convolution is bias-free and followed by BatchNorm in eval mode (eps = 0.001) and ReLU;
- the FID variant's blocks differ from torchvision's Inception-v3: the 3x3 average pools of Mixed_5b-d
  (FIDInceptionA), Mixed_6b-e (FIDInceptionC) and Mixed_7b (FIDInceptionE_1) exclude the zero padding from
  the average (TensorFlow's behaviour, `count_include_pad=False`), and Mixed_7c (FIDInceptionE_2) max-pools
  instead of average-pooling in its pool branch;
- the output is the global average pool after Mixed_7c; the 1008-way classifier is not built.

Attribute names follow torchvision's (`Mixed_5b.branch1x1.conv`, ...), so the converter maps a torch
state-dict name to the Flax state by name alone. The weight file is a torch pickle, read by
jaxdiff.io.torch_weights (torch's zip and "legacy" formats, a restricted unpickler), so neither torch nor
TensorFlow is needed. `bench/compare_inception_torch.py` checks the port against
pytorch-fid itself with random weights.
"""

from __future__ import annotations

import functools
import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxdiff.io import torch_weights
from jaxdiff.metrics import quality

FID_WEIGHTS_URL = ('https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/'
                   'pt_inception-2015-12-05-6726825d.pth')
FID_WEIGHTS_FILENAME = 'pt_inception-2015-12-05-6726825d.pth'
# torch.hub names files by the first 8 hex digits of their SHA-256; a download is checked against them.
FID_WEIGHTS_SHA256_PREFIX = '6726825d'
FEATURE_DIM = 2048
INPUT_SIZE = 299
BN_EPS = 1e-3
# The TF graph's classifier has 1008 classes; pytorch-fid's file carries it (fc.*), unused for pool features.
NUM_CLASSES = 1008


def default_cache_dir() -> str:
  """Where downloaded weights live: $JAXDIFF_CACHE_DIR/inception, else ~/.cache/jaxdiff/inception."""
  root = os.environ.get('JAXDIFF_CACHE_DIR', os.path.expanduser('~/.cache/jaxdiff'))
  return os.path.join(root, 'inception')


# --------------------------------------------------------------------------------------------------
# Preprocessing: torch's bilinear resize and the [0, 1] -> [-1, 1] map.


def bilinear_resize_matrix(in_size: int, out_size: int) -> np.ndarray:
  """[out_size, in_size] matrix of torch's bilinear `F.interpolate(align_corners=False)` along one axis.

  Mirrors ATen's CPU kernel in float32: source coordinate (i + 0.5) * in/out - 0.5 clamped at 0, the two
  neighbours floor(src) and floor(src) + 1 (the latter clamped to the last pixel), weights 1 - l and l.
  Unlike `jax.image.resize`, there is no antialiasing when downsampling.
  """
  if in_size < 1 or out_size < 1:
    raise ValueError(f'resize sizes must be positive, got in_size={in_size}, out_size={out_size}')
  scale = np.float32(in_size) / np.float32(out_size)
  src = scale * (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5)
  src = np.maximum(src, np.float32(0.0))
  i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
  lam = np.clip(src - i0.astype(np.float32), 0.0, 1.0).astype(np.float32)
  i1 = np.where(i0 < in_size - 1, i0 + 1, i0)
  m = np.zeros((out_size, in_size), np.float32)
  rows = np.arange(out_size)
  np.add.at(m, (rows, i0), 1.0 - lam)
  np.add.at(m, (rows, i1), lam)
  return m


def rgb_float32(images: jax.Array, network: str = 'Inception') -> jax.Array:
  """[N, H, W, C], C in {1, 3} -> [N, H, W, 3] float32 (grayscale repeated); the error names `network`."""
  if images.ndim != 4:
    raise ValueError(f'{network} expects images [N, H, W, C], got shape {images.shape}')
  c = images.shape[-1]
  if c == 1:
    images = jnp.repeat(images, 3, axis=-1)
  elif c != 3:
    raise ValueError(f'{network} expects 1 (grayscale) or 3 (RGB) channels, got {c} in shape {images.shape}')
  return images.astype(jnp.float32)


def resize_separable(x: jax.Array, mh: np.ndarray, mw: np.ndarray) -> jax.Array:
  """x: [N, H, W, C] -> [N, h, w, C] by the resize matrices mh: [h, H] (rows) and mw: [w, W] (columns)."""
  hi = jax.lax.Precision.HIGHEST  # a resize is cheap; keep it exact on accelerators too
  x = jnp.einsum('oh,nhwc->nowc', jnp.asarray(mh), x, precision=hi)
  return jnp.einsum('pw,nowc->nopc', jnp.asarray(mw), x, precision=hi)


def preprocess(images: jax.Array, size: int = INPUT_SIZE) -> jax.Array:
  """[N, H, W, C] in [0, 1], C in {1, 3} -> [N, size, size, 3] in [-1, 1], as pytorch-fid's InceptionV3.

  Resize first, then 2x - 1 (pytorch-fid's order; both are affine so the order only matters for rounding).
  """
  x = rgb_float32(images)
  _, h, w, _ = x.shape
  x = resize_separable(x, bilinear_resize_matrix(h, size), bilinear_resize_matrix(w, size))
  return 2.0 * x - 1.0


# --------------------------------------------------------------------------------------------------
# The network.


def _max_pool(x: jax.Array, *, stride: int, pad: int) -> jax.Array:
  """3x3 max pool, NHWC. Padding (if any) is -inf, as torch's implicit padding."""
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, stride, stride, 1),
                               ((0, 0), (pad, pad), (pad, pad), (0, 0)))


def _window_counts(n: int) -> np.ndarray:
  """Pixels of a size-3, stride-1, pad-1 window inside [0, n) at each of the n positions."""
  i = np.arange(n)
  return np.minimum(i + 1, n - 1) - np.maximum(i - 1, 0) + 1


def _avg_pool_exclude_pad(x: jax.Array) -> jax.Array:
  """3x3, stride 1, pad 1 average pool that divides by the number of real pixels (count_include_pad=False).

  This is TensorFlow's 'SAME' average pool, which the FID graph uses; torchvision's Inception counts the
  padded zeros (divides by 9 at the borders), one of the differences pytorch-fid patches.
  """
  window, strides, padding = (1, 3, 3, 1), (1, 1, 1, 1), ((0, 0), (1, 1), (1, 1), (0, 0))
  total = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, strides, padding)
  _, h, w, _ = x.shape
  # Counts are static (4 at corners, 6 on edges, 9 inside): computed in NumPy at trace time.
  count = np.outer(_window_counts(h), _window_counts(w)).astype(np.float32)
  return total / jnp.asarray(count[None, :, :, None], x.dtype)


class BasicConv2d(nnx.Module):
  """Bias-free conv, BatchNorm (eval mode, eps 0.001), ReLU: torchvision's BasicConv2d."""

  def __init__(self, in_ch: int, out_ch: int, kernel: int | tuple[int, int], *, stride: int = 1,
               padding: int | tuple[int, int] = 0, precision: Any = None, zero_init: bool = False,
               rngs: nnx.Rngs):
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    # Placeholders made in NumPy: jnp would compile one fill per distinct shape (seconds for the network).
    conv_init = dict(kernel_init=torch_weights.placeholder_init(0.0)) if zero_init else {}
    bn_init = dict(scale_init=torch_weights.placeholder_init(1.0), bias_init=torch_weights.placeholder_init(0.0)) if zero_init else {}
    self.conv = nnx.Conv(in_ch, out_ch, (kh, kw), strides=(stride, stride), padding=((ph, ph), (pw, pw)),
                         use_bias=False, precision=precision, rngs=rngs, **conv_init)
    self.bn = nnx.BatchNorm(out_ch, use_running_average=True, epsilon=BN_EPS, rngs=rngs, **bn_init)

  def __call__(self, x: jax.Array) -> jax.Array:
    return jax.nn.relu(self.bn(self.conv(x)))


class FIDInceptionA(nnx.Module):
  """Mixed_5b/c/d: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool(excl. pad)-1x1 -> 224 + pool_features channels."""

  def __init__(self, in_ch: int, pool_features: int, **kw: Any):
    self.branch1x1 = BasicConv2d(in_ch, 64, 1, **kw)
    self.branch5x5_1 = BasicConv2d(in_ch, 48, 1, **kw)
    self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2, **kw)
    self.branch3x3dbl_1 = BasicConv2d(in_ch, 64, 1, **kw)
    self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1, **kw)
    self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1, **kw)
    self.branch_pool = BasicConv2d(in_ch, pool_features, 1, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    b1 = self.branch1x1(x)
    b5 = self.branch5x5_2(self.branch5x5_1(x))
    b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
    bp = self.branch_pool(_avg_pool_exclude_pad(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nnx.Module):
  """Mixed_6a (grid reduction 35 -> 17): 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2 -> 480 + in channels."""

  def __init__(self, in_ch: int, **kw: Any):
    self.branch3x3 = BasicConv2d(in_ch, 384, 3, stride=2, **kw)
    self.branch3x3dbl_1 = BasicConv2d(in_ch, 64, 1, **kw)
    self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1, **kw)
    self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    b3 = self.branch3x3(x)
    bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
    bp = _max_pool(x, stride=2, pad=0)
    return jnp.concatenate([b3, bd, bp], axis=-1)


class FIDInceptionC(nnx.Module):
  """Mixed_6b-e: 1x1 | 1x1-1x7-7x1 | 1x1-7x1-1x7-7x1-1x7 | avgpool(excl. pad)-1x1 -> 768 channels."""

  def __init__(self, in_ch: int, channels_7x7: int, **kw: Any):
    c7 = channels_7x7
    self.branch1x1 = BasicConv2d(in_ch, 192, 1, **kw)
    self.branch7x7_1 = BasicConv2d(in_ch, c7, 1, **kw)
    self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3), **kw)
    self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0), **kw)
    self.branch7x7dbl_1 = BasicConv2d(in_ch, c7, 1, **kw)
    self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0), **kw)
    self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3), **kw)
    self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0), **kw)
    self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3), **kw)
    self.branch_pool = BasicConv2d(in_ch, 192, 1, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    b1 = self.branch1x1(x)
    b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
    bd = self.branch7x7dbl_1(x)
    for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
      bd = layer(bd)
    bp = self.branch_pool(_avg_pool_exclude_pad(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nnx.Module):
  """Mixed_7a (grid reduction 17 -> 8): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2 -> 512 + in channels."""

  def __init__(self, in_ch: int, **kw: Any):
    self.branch3x3_1 = BasicConv2d(in_ch, 192, 1, **kw)
    self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2, **kw)
    self.branch7x7x3_1 = BasicConv2d(in_ch, 192, 1, **kw)
    self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3), **kw)
    self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0), **kw)
    self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    b3 = self.branch3x3_2(self.branch3x3_1(x))
    b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
    bp = _max_pool(x, stride=2, pad=0)
    return jnp.concatenate([b3, b7, bp], axis=-1)


class FIDInceptionE(nnx.Module):
  """Mixed_7b/c: 1x1 | 1x1-(1x3, 3x1) | 1x1-3x3-(1x3, 3x1) | pool-1x1 -> 2048 channels.

  pool='avg' is FIDInceptionE_1 (Mixed_7b, average excluding padding); pool='max' is FIDInceptionE_2
  (Mixed_7c, 3x3 max pool, stride 1, pad 1), a quirk of the TF graph that FID scores depend on.
  """

  def __init__(self, in_ch: int, *, pool: str, **kw: Any):
    if pool not in ('avg', 'max'):
      raise ValueError(f"FIDInceptionE pool must be 'avg' or 'max', got {pool!r}")
    self.pool = pool
    self.branch1x1 = BasicConv2d(in_ch, 320, 1, **kw)
    self.branch3x3_1 = BasicConv2d(in_ch, 384, 1, **kw)
    self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1), **kw)
    self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0), **kw)
    self.branch3x3dbl_1 = BasicConv2d(in_ch, 448, 1, **kw)
    self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1, **kw)
    self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1), **kw)
    self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0), **kw)
    self.branch_pool = BasicConv2d(in_ch, 192, 1, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    b1 = self.branch1x1(x)
    b3 = self.branch3x3_1(x)
    b3 = jnp.concatenate([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], axis=-1)
    bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
    bd = jnp.concatenate([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], axis=-1)
    pooled = _avg_pool_exclude_pad(x) if self.pool == 'avg' else _max_pool(x, stride=1, pad=1)
    bp = self.branch_pool(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3(nnx.Module):
  """pytorch-fid's FID Inception-v3 up to the final average pool.

  __call__(images: [N, H, W, C] float in [0, 1], C in {1, 3}) -> [N, 2048] pool features.
  `precision` is passed to every convolution (e.g. 'highest' for float32 accumulation on GPU/TPU, where
  the default may use TF32/bfloat16 passes). Without `rngs` the weights are zeros, to be filled from
  pytorch-fid's state dict (`convert_state_dict`), which skips drawing 21.8M random numbers.
  """

  def __init__(self, *, precision: Any = None, rngs: nnx.Rngs | None = None):
    kw = dict(precision=precision, zero_init=rngs is None, rngs=rngs or nnx.Rngs(0))
    self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2, **kw)
    self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3, **kw)
    self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1, **kw)
    self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1, **kw)
    self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3, **kw)
    self.Mixed_5b = FIDInceptionA(192, pool_features=32, **kw)
    self.Mixed_5c = FIDInceptionA(256, pool_features=64, **kw)
    self.Mixed_5d = FIDInceptionA(288, pool_features=64, **kw)
    self.Mixed_6a = InceptionB(288, **kw)
    self.Mixed_6b = FIDInceptionC(768, channels_7x7=128, **kw)
    self.Mixed_6c = FIDInceptionC(768, channels_7x7=160, **kw)
    self.Mixed_6d = FIDInceptionC(768, channels_7x7=160, **kw)
    self.Mixed_6e = FIDInceptionC(768, channels_7x7=192, **kw)
    self.Mixed_7a = InceptionD(768, **kw)
    self.Mixed_7b = FIDInceptionE(1280, pool='avg', **kw)
    self.Mixed_7c = FIDInceptionE(2048, pool='max', **kw)

  def __call__(self, images: jax.Array) -> jax.Array:
    x = preprocess(images)
    # pytorch-fid's block 0: 299 -> 149 -> 147 -> 147 -> maxpool 73.
    x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
    x = _max_pool(x, stride=2, pad=0)
    # Block 1: 73 -> 73 -> 71 -> maxpool 35.
    x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
    x = _max_pool(x, stride=2, pad=0)
    # Block 2: 35x35x192 -> 17x17x768.
    for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b,
                  self.Mixed_6c, self.Mixed_6d, self.Mixed_6e):
      x = block(x)
    # Block 3: 17 -> 8x8x2048, then the global average pool.
    x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))
    return jnp.mean(x, axis=(1, 2))


def parameter_count(model: nnx.Module) -> int:
  """Trainable parameters (conv kernels, BN scales and offsets; BN running stats are not parameters)."""
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


@functools.lru_cache(maxsize=4)
def _zero_split(precision: Any) -> tuple[nnx.GraphDef, nnx.State]:
  return nnx.split(InceptionV3(precision=precision))


def inception_skeleton(precision: Any = None) -> InceptionV3:
  """A zero-weight InceptionV3 to fill with a state dict; built once per process (it takes seconds), then copied.

  (Not nnx.eval_shape: tracing 470 variable creations is slower than making them.)
  """
  graphdef, state = _zero_split(precision)
  return nnx.merge(graphdef, jax.tree.map(lambda x: x, state))


# --------------------------------------------------------------------------------------------------
# Name mapping and conversion from pytorch-fid's state dict.

def torch_tensor_map(model: InceptionV3) -> dict[str, tuple[tuple, tuple[int, ...]]]:
  """torch state-dict name -> (Flax state path, torch shape) for every tensor the network needs."""
  return torch_weights.torch_tensor_map(model)


def optional_torch_tensors(model: InceptionV3) -> dict[str, tuple[int, ...]]:
  """Tensors of pytorch-fid's state dict that the pool features do not use (accepted and ignored)."""
  return {'fc.weight': (NUM_CLASSES, FEATURE_DIM), 'fc.bias': (NUM_CLASSES,),
          **torch_weights.batch_norm_counters(torch_tensor_map(model))}


def convert_state_dict(state_dict: Mapping[str, Any], *, precision: Any = None,
                       source: str = 'state dict') -> InceptionV3:
  """pytorch-fid state dict {name: array} -> InceptionV3 holding exactly those weights.

  Every tensor the network needs must be present with its torch shape; anything else is refused, except
  the unused classifier `fc.*` and BatchNorm `num_batches_tracked` counters (shapes still checked). The
  error names the offending tensors (the first 8 of each kind, then a count).
  """
  model = inception_skeleton(precision)
  return torch_weights.load_state_dict(model, state_dict, optional=optional_torch_tensors(model), source=source,
                                       network="pytorch-fid's FID Inception-v3")


def random_state_dict(seed: int = 0) -> dict[str, np.ndarray]:
  """A seeded random state dict with every tensor of pytorch-fid's file, for checks without the weights.

  He-scaled kernels, BN scales and variances in [0.5, 1.5], small BN offsets and means: activations stay
  O(1) through the 94 layers. Drawn with NumPy's Generator, so torch and JAX can load the same numbers.
  """
  rng = np.random.default_rng(seed)
  model = inception_skeleton()
  shapes = {name: shape for name, (_, shape) in torch_tensor_map(model).items()}
  shapes.update(optional_torch_tensors(model))
  out = {}
  for name in sorted(shapes):
    shape = shapes[name]
    if name.endswith('num_batches_tracked'):
      out[name] = np.zeros(shape, np.int64)
    elif name.endswith('conv.weight'):
      out[name] = rng.standard_normal(shape, np.float32) * np.float32(np.sqrt(2.0 / np.prod(shape[1:])))
    elif name.endswith(('running_var', 'bn.weight')):
      out[name] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
    else:
      out[name] = np.float32(0.1) * rng.standard_normal(shape, np.float32)
  return out


read_torch_state_dict = torch_weights.read_torch_state_dict  # torch file -> {name: array}, without torch


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """A pytorch-fid state dict from a torch file (.pth/.pt) or a NumPy .npz of the same names."""
  return torch_weights.read_state_dict(path, network='Inception')


def load_pytorch_fid_weights(path: str, *, precision: Any = None) -> InceptionV3:
  """pytorch-fid weight file (pt_inception-2015-12-05-6726825d.pth, or an .npz of it) -> InceptionV3."""
  return convert_state_dict(read_state_dict(path), precision=precision, source=path)


def fid_weights_path(cache_dir: str | None = None, *, download: bool = True, timeout: float = 30.0) -> str:
  """Path of the pytorch-fid weights in `cache_dir`, downloading them there first if needed and possible.

  Without internet this fails at once with a message that says where to put the file.
  """
  cache_dir = cache_dir or default_cache_dir()
  path = os.path.join(cache_dir, FID_WEIGHTS_FILENAME)
  if os.path.isfile(path):
    return path
  how_to = (f'Download {FID_WEIGHTS_URL} on a machine with internet and copy it to {path} '
            '(or pass its path as weights_path).')
  if not download:
    raise FileNotFoundError(f'pytorch-fid Inception weights not found at {path}. {how_to}')
  os.makedirs(cache_dir, exist_ok=True)
  tmp = path + f'.part{os.getpid()}'
  try:
    with urllib.request.urlopen(FID_WEIGHTS_URL, timeout=timeout) as response, open(tmp, 'wb') as out:
      digest = hashlib.sha256()
      while chunk := response.read(1 << 20):
        digest.update(chunk)
        out.write(chunk)
  except (urllib.error.URLError, OSError) as e:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise FileNotFoundError(f'pytorch-fid Inception weights not found at {path} and could not be '
                            f'downloaded ({e}). {how_to}') from e
  if not digest.hexdigest().startswith(FID_WEIGHTS_SHA256_PREFIX):
    os.remove(tmp)
    raise ValueError(f'downloaded {FID_WEIGHTS_URL} has SHA-256 {digest.hexdigest()}, expected a digest '
                     f'starting with {FID_WEIGHTS_SHA256_PREFIX}')
  os.replace(tmp, path)
  return path


# --------------------------------------------------------------------------------------------------
# Feature extraction.


def inception_features_fn(model: InceptionV3, *, batch_size: int = 100) -> Callable[[jax.Array], jax.Array]:
  """Jitted images [N, H, W, C] in [0, 1] -> [N, 2048] pool features, `batch_size` images at a time
  (`quality.network_features_fn`)."""
  return quality.network_features_fn(model, feature_dim=FEATURE_DIM, batch_size=batch_size)


def make_inception_features(weights_path: str | None = None, *, batch_size: int = 100,
                            precision: Any = 'highest', cache_dir: str | None = None,
                            download: bool = True) -> Callable[[jax.Array], jax.Array]:
  """FID feature extractor: fn(images [N, H, W, C]) -> [N, 2048] pytorch-fid pool features.

  Input range: **pixels in [0, 1]** (float, any H x W, C = 1 or 3), exactly what pytorch-fid's
  InceptionV3 takes; it resizes to 299 x 299 and maps to [-1, 1] itself. Convert from model space
  (e.g. [-1, 1]) before calling: images01 = (x + 1) / 2, clipped to [0, 1] as an 8-bit image would be.

  weights_path: the pytorch-fid .pth (or an .npz of its state dict); None looks in `cache_dir` and
  downloads there when there is internet, else raises FileNotFoundError saying where to put the file.
  precision: convolution precision; 'highest' keeps float32 accumulation on accelerators (FID is
  sensitive to feature noise), None uses the backend default.
  """
  path = weights_path or fid_weights_path(cache_dir, download=download)
  return inception_features_fn(load_pytorch_fid_weights(path, precision=precision), batch_size=batch_size)
