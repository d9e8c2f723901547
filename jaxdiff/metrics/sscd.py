"""SSCD, the copy-detection descriptor of Pizzi et al. (CVPR 2022), in Flax NNX, with its weights read without torch.

Paper 3 (after Somepalli et al. 2023) calls a generated image a copy when the cosine similarity of its SSCD
descriptor to some training image's exceeds 0.6 (jaxdiff.metrics.copy_detection). This module rebuilds the
network of facebookresearch/sscd-copy-detection's `Model("TV_RESNET50", 512, 3.0)`, the one its
`sscd_disc_mixup.torchvision.pt` weight file belongs to:

- preprocessing as that README's `small_288` transform: the small edge resized to 288 (bilinear with
  antialiasing, as torchvision's Resize and PIL; the long edge int(288 * long / short)), then ImageNet
  mean/std normalisation. The README offers a square 320 x 320 resize as the alternative; for the square images
  of diffusion models both keep the aspect ratio, and 288 is the transform its own inference example uses
  (`size=` picks another). Input [N, H, W, C] in [0, 1], C = 1 repeated to RGB; unlike the PIL path there is
  no rounding to 8 bits between resize and normalisation;
- torchvision's ResNet-50 trunk (v1.5: the stride of a bottleneck on its 3 x 3 convolution; BatchNorm in eval
  mode, eps 1e-5), whose average pool SSCD replaces by generalized-mean pooling with p = 3
  (mean(max(x, 1e-6)^3)^(1/3) over positions), then the trunk's `fc` 2048 -> 512 and L2 normalisation.

Attribute names are torchvision's under SSCD's `backbone.` (`backbone.layer3.4.conv2`, `backbone.fc`, ...), so a
state-dict name maps to the Flax state by name alone (jaxdiff.io.torch_weights). The weight file is what the
SSCD README calls a "weight file using Torchvision ResNet backbones": a torch state dict (torch.save of
`Model.state_dict()`), read with torch's zip or legacy format, or an .npz of the same names. A state dict of
the bare trunk (names without `backbone.`) is accepted too. Not read: the `.torchscript.pt` and `.classy.pt`
files (other archive and network layouts; the error says so). bench/compare_sscd_torch.py checks the port
stage by stage against a torch reference with shared random weights.
"""

from __future__ import annotations

import functools
import zipfile
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxdiff.io import torch_weights
from jaxdiff.metrics import inception, quality

FEATURE_DIM = 512          # SSCD's descriptor
TRUNK_DIM = 2048           # ResNet-50's last stage
GEM_P = 3.0                # `Model(..., pool_param=3.0)`
GEM_EPS = 1e-6             # GlobalGeMPool2d clamps at 1e-6 before the power
BN_EPS = 1e-5
INPUT_SIZE = 288           # the README's small_288: the small edge resized to 288
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# torchvision's resnet50: Bottleneck blocks per stage, and their widths (output = 4 x width).
STAGES = ((3, 64), (4, 128), (6, 256), (3, 512))
EXPANSION = 4
WEIGHTS_FILENAME = 'sscd_disc_mixup.torchvision.pt'
WEIGHTS_URL = 'https://dl.fbaipublicfiles.com/sscd-copy-detection/sscd_disc_mixup.torchvision.pt'


# --------------------------------------------------------------------------------------------------
# Preprocessing: torchvision's Resize(288) with antialiasing, then ImageNet normalisation.


def antialiased_resize_matrix(in_size: int, out_size: int) -> np.ndarray:
  """[out_size, in_size] matrix of bilinear resizing with antialiasing along one axis (PIL's and torch's
  `interpolate(mode='bilinear', antialias=True, align_corners=False)`).

  A triangle filter centred on the source position (i + 0.5) * in/out, widened by in/out when downsampling,
  its weights normalised over the source pixels inside the image. When upsampling it is the plain bilinear
  interpolation of `inception.bilinear_resize_matrix`.
  """
  if in_size < 1 or out_size < 1:
    raise ValueError(f'resize sizes must be positive, got in_size={in_size}, out_size={out_size}')
  scale = in_size / out_size
  support = max(scale, 1.0)          # the filter's half-width in source pixels
  inv = 1.0 / max(scale, 1.0)
  m = np.zeros((out_size, in_size), np.float64)
  for i in range(out_size):
    centre = scale * (i + 0.5)
    lo = max(int(centre - support + 0.5), 0)
    hi = min(int(centre + support + 0.5), in_size)
    j = np.arange(lo, hi)
    w = np.maximum(0.0, 1.0 - np.abs((j - centre + 0.5) * inv))
    m[i, lo:hi] = w / w.sum()
  return m.astype(np.float32)


def resized_shape(height: int, width: int, size: int = INPUT_SIZE) -> tuple[int, int]:
  """torchvision's Resize(size) output: the small edge becomes `size`, the long edge int(size * long / short)."""
  short, long = min(height, width), max(height, width)
  new_long = int(size * long / short)
  return (size, new_long) if height <= width else (new_long, size)


def preprocess(images: jax.Array, size: int = INPUT_SIZE) -> jax.Array:
  """[N, H, W, C] in [0, 1], C in {1, 3} -> [N, h, w, 3] resized (small edge `size`) and ImageNet-normalised."""
  x = inception.rgb_float32(images, 'SSCD')
  _, h, w, _ = x.shape
  oh, ow = resized_shape(h, w, size)
  if (oh, ow) != (h, w):   # torchvision returns the image untouched when its small edge is `size`
    x = inception.resize_separable(x, antialiased_resize_matrix(h, oh), antialiased_resize_matrix(w, ow))
  mean = jnp.asarray(IMAGENET_MEAN, jnp.float32)
  std = jnp.asarray(IMAGENET_STD, jnp.float32)
  return (x - mean) / std


# --------------------------------------------------------------------------------------------------
# The network.


def max_pool_3x3_stride_2(x: jax.Array) -> jax.Array:
  """torchvision ResNet's stem pool: 3x3, stride 2, padding 1 (padding never wins: -inf). NHWC."""
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1),
                               ((0, 0), (1, 1), (1, 1), (0, 0)))


def gem_pool(x: jax.Array, p: float = GEM_P, eps: float = GEM_EPS) -> jax.Array:
  """Generalized-mean pooling over positions: [N, H, W, C] -> [N, C] = mean(max(x, eps)^p)^(1/p)."""
  return jnp.mean(jnp.maximum(x, eps) ** p, axis=(1, 2)) ** (1.0 / p)


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """torch's F.normalize: x / max(||x||, eps) along the last axis."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def _conv(in_ch: int, out_ch: int, kernel: int, *, stride: int = 1, padding: int = 0, precision: Any,
          zero_init: bool, rngs: nnx.Rngs) -> nnx.Conv:
  init = dict(kernel_init=torch_weights.placeholder_init(0.0)) if zero_init else {}
  return nnx.Conv(in_ch, out_ch, (kernel, kernel), strides=(stride, stride), padding=((padding, padding),) * 2,
                  use_bias=False, precision=precision, rngs=rngs, **init)


def _bn(ch: int, *, zero_init: bool, rngs: nnx.Rngs, **unused: Any) -> nnx.BatchNorm:
  init = dict(scale_init=torch_weights.placeholder_init(1.0),
              bias_init=torch_weights.placeholder_init(0.0)) if zero_init else {}
  return nnx.BatchNorm(ch, use_running_average=True, epsilon=BN_EPS, rngs=rngs, **init)


class Bottleneck(nnx.Module):
  """torchvision's Bottleneck: 1x1 -> 3x3 (stride here) -> 1x1 (x4 channels), each BN; plus the shortcut
  (`downsample` = [1x1 conv with the stride, BN] when the shape changes), then ReLU."""

  def __init__(self, in_ch: int, width: int, stride: int, **kw: Any):
    out_ch = width * EXPANSION
    self.conv1 = _conv(in_ch, width, 1, **kw)
    self.bn1 = _bn(width, **kw)
    self.conv2 = _conv(width, width, 3, stride=stride, padding=1, **kw)
    self.bn2 = _bn(width, **kw)
    self.conv3 = _conv(width, out_ch, 1, **kw)
    self.bn3 = _bn(out_ch, **kw)
    self.downsample = (nnx.List([_conv(in_ch, out_ch, 1, stride=stride, **kw), _bn(out_ch, **kw)])
                       if stride != 1 or in_ch != out_ch else None)

  def __call__(self, x: jax.Array) -> jax.Array:
    y = jax.nn.relu(self.bn1(self.conv1(x)))
    y = jax.nn.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    shortcut = x if self.downsample is None else self.downsample[1](self.downsample[0](x))
    return jax.nn.relu(y + shortcut)


class ResNet50(nnx.Module):
  """torchvision's resnet50(num_classes=512) with SSCD's GeM pool in place of the average pool.

  __call__(x: [N, H, W, 3] normalised) -> [N, 512] (before L2 normalisation).
  """

  def __init__(self, *, num_classes: int = FEATURE_DIM, precision: Any = None, zero_init: bool = False,
               rngs: nnx.Rngs):
    kw = dict(precision=precision, zero_init=zero_init, rngs=rngs)
    self.conv1 = _conv(3, 64, 7, stride=2, padding=3, **kw)
    self.bn1 = _bn(64, **kw)
    in_ch = 64
    for i, (blocks, width) in enumerate(STAGES):
      stage = []
      for b in range(blocks):
        stage.append(Bottleneck(in_ch, width, 2 if (b == 0 and i > 0) else 1, **kw))
        in_ch = width * EXPANSION
      setattr(self, f'layer{i + 1}', nnx.List(stage))
    fc_init = dict(kernel_init=torch_weights.placeholder_init(0.0),
                   bias_init=torch_weights.placeholder_init(0.0)) if zero_init else {}
    self.fc = nnx.Linear(TRUNK_DIM, num_classes, precision=precision, rngs=rngs, **fc_init)

  def stages(self, x: jax.Array) -> dict[str, jax.Array]:
    """The output of each stage: 'stem' (after the max pool), 'layer1'..'layer4', 'gem' [N, 2048], 'fc'."""
    out = {}
    x = max_pool_3x3_stride_2(jax.nn.relu(self.bn1(self.conv1(x))))
    out['stem'] = x
    for name in ('layer1', 'layer2', 'layer3', 'layer4'):
      for block in getattr(self, name):
        x = block(x)
      out[name] = x
    out['gem'] = gem_pool(x)
    out['fc'] = self.fc(out['gem'])
    return out

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.stages(x)['fc']


class SSCD(nnx.Module):
  """SSCD's `Model("TV_RESNET50", 512, 3.0)`: preprocessing, `backbone` (ResNet50 with GeM), L2 normalisation.

  __call__(images: [N, H, W, C] float in [0, 1], C in {1, 3}) -> [N, 512] unit-norm descriptors.
  `size`: the small edge after resizing (288, the README's small_288). `precision` is passed to every
  convolution and the fc layer ('highest' keeps float32 accumulation on accelerators). Without `rngs` the
  weights are placeholders (zeros) to be filled from a state dict (`convert_state_dict`).
  """

  def __init__(self, *, size: int = INPUT_SIZE, precision: Any = None, rngs: nnx.Rngs | None = None):
    self.size = size
    self.backbone = ResNet50(precision=precision, zero_init=rngs is None, rngs=rngs or nnx.Rngs(0))

  def stages(self, images: jax.Array) -> dict[str, jax.Array]:
    """Every stage's output, from 'input' (preprocessed) through the backbone's to 'embedding'."""
    x = preprocess(images, self.size)
    out = {'input': x, **self.backbone.stages(x)}
    out['embedding'] = l2_normalize(out['fc'])
    return out

  def __call__(self, images: jax.Array) -> jax.Array:
    return l2_normalize(self.backbone(preprocess(images, self.size)))


def parameter_count(model: nnx.Module) -> int:
  """Trainable parameters (kernels, biases, BN scales and offsets; not the BN running statistics)."""
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


@functools.lru_cache(maxsize=4)
def _placeholder_split(size: int, precision: Any) -> tuple[nnx.GraphDef, nnx.State]:
  return nnx.split(SSCD(size=size, precision=precision))


def sscd_skeleton(*, size: int = INPUT_SIZE, precision: Any = None) -> SSCD:
  """A placeholder-weight SSCD to fill with a state dict; built once per process, then copied."""
  graphdef, state = _placeholder_split(size, precision)
  return nnx.merge(graphdef, jax.tree.map(lambda x: x, state))


# --------------------------------------------------------------------------------------------------
# Weights.

BACKBONE = 'backbone.'
NETWORK = "SSCD's ResNet-50 (sscd_disc_mixup.torchvision.pt)"


def convert_state_dict(state_dict: Mapping[str, Any], *, size: int = INPUT_SIZE, precision: Any = None,
                       source: str = 'state dict') -> SSCD:
  """SSCD state dict {name: array} (names `backbone.conv1.weight`, ...) -> SSCD holding exactly those weights.

  A bare trunk's state dict (no name starts with `backbone.`) is read as if each name had the prefix. Every
  tensor must be present with its torch shape; anything else is refused except the BatchNorm
  `num_batches_tracked` counters; the ValueError names the offending tensors and `source`.
  """
  if state_dict and not any(str(k).startswith(BACKBONE) for k in state_dict):
    state_dict = {BACKBONE + str(k): v for k, v in state_dict.items()}
  return torch_weights.load_state_dict(sscd_skeleton(size=size, precision=precision), state_dict, source=source,
                                       network=NETWORK)


def random_state_dict(seed: int = 0) -> dict[str, np.ndarray]:
  """A seeded random SSCD state dict (every tensor of the weight file), for checks without the weights.

  He-scaled kernels, BN scales and variances in [0.5, 1.5], small BN offsets and means, the last BN of each
  block scaled by 0.2 (so the residual sums stay O(1) through the 16 blocks), an fc of scale 1/sqrt(2048).
  Drawn with NumPy's Generator, so torch and JAX load the same numbers.
  """
  rng = np.random.default_rng(seed)
  needed = torch_weights.torch_tensor_map(sscd_skeleton())
  shapes = {name: shape for name, (_, shape) in needed.items()}
  shapes.update(torch_weights.batch_norm_counters(shapes))
  out = {}
  for name in sorted(shapes):
    shape = shapes[name]
    if name.endswith('num_batches_tracked'):
      out[name] = np.zeros(shape, np.int64)
    elif len(shape) >= 2:   # conv OIHW or fc [out, in]: fan-in scaling
      out[name] = rng.standard_normal(shape, np.float32) * np.float32(np.sqrt(2.0 / np.prod(shape[1:])))
    elif name.endswith('bn3.weight'):
      out[name] = rng.uniform(0.1, 0.3, shape).astype(np.float32)
    elif name.endswith(('running_var', 'weight')):   # the other BatchNorm scales
      out[name] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
    else:
      out[name] = np.float32(0.1) * rng.standard_normal(shape, np.float32)
  return out


def _refuse_other_formats(path: str) -> None:
  """A clear error for SSCD's other files: TorchScript archives (code/ + constants.pkl) are not state dicts."""
  if zipfile.is_zipfile(path):
    with zipfile.ZipFile(path) as zf:
      names = zf.namelist()
    if any(n.endswith('constants.pkl') or '/code/' in n for n in names):
      raise ValueError(f'{path} is a TorchScript archive (e.g. sscd_disc_mixup.torchscript.pt), which is not '
                       f'read; pass the weight file {WEIGHTS_FILENAME} ({WEIGHTS_URL})')


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """An SSCD state dict from a torch file (.pt/.pth, zip or legacy) or a NumPy .npz of the same names."""
  if path.endswith(('.pt', '.pth')) and zipfile.is_zipfile(path):
    _refuse_other_formats(path)
  return torch_weights.read_state_dict(path, network='SSCD')


def load_sscd_weights(path: str, *, size: int = INPUT_SIZE, precision: Any = None) -> SSCD:
  """sscd_disc_mixup.torchvision.pt (or an .npz of its state dict) -> SSCD."""
  return convert_state_dict(read_state_dict(path), size=size, precision=precision, source=path)


# --------------------------------------------------------------------------------------------------
# Feature extraction.


def make_sscd_features(weights_path: str | None = None, *, size: int | None = None, batch_size: int = 64,
                       precision: Any = 'highest') -> Callable[[jax.Array], jax.Array]:
  """Copy-detection feature extractor: fn(images [N, H, W, C] in [0, 1]) -> [N, 512] unit-norm SSCD descriptors.

  weights_path: `sscd_disc_mixup.torchvision.pt` (or an .npz of its state dict); there is no download, a
  missing path raises FileNotFoundError saying where to get the file. size: the small edge after resizing
  (None: INPUT_SIZE, 288).
  """
  size = size or INPUT_SIZE
  if not weights_path:
    raise FileNotFoundError(f'SSCD needs its weight file: download {WEIGHTS_URL} and pass its path '
                            '(memcheck --features_weights=..., config eval.copy_weights)')
  model = load_sscd_weights(weights_path, size=size, precision=precision)
  return quality.network_features_fn(model, feature_dim=FEATURE_DIM, batch_size=batch_size)
