"""Check jaxdiff's Flax SSCD (jaxdiff.metrics.sscd) against a torch reference, stage by stage, with random weights.

Needs torch (not a jaxdiff dependency; `pip install -e ".[torch]"`). torchvision is not needed: its CPU wheel
matching torch 2.13.0+cpu could not be installed where this was written, so the reference here is written in
plain torch.nn after torchvision's `resnet50` (torchvision/models/resnet.py: Bottleneck v1.5 with the stride on
the 3x3 convolution, `downsample` = Sequential(conv1x1, BatchNorm2d), the same attribute names) and SSCD's
`Model("TV_RESNET50", 512, 3.0)` (sscd/models/model.py and gem_pooling.py: the trunk's average pool replaced
by GeM p = 3, L2 normalisation), preprocessed as SSCD's README `small_288` does with tensors
(`F.interpolate(mode='bilinear', antialias=True)`, what torchvision's Resize calls, then ImageNet
normalisation). Its state-dict names are torchvision's under `backbone.`; the parameter count of its trunk is
torchvision's resnet50 with a 512-way fc (24,557,120).

    PYTHONPATH=$PWD python bench/compare_sscd_torch.py compare [--size=288]
    PYTHONPATH=$PWD python bench/compare_sscd_torch.py reference   # writes tests/data/sscd_random_features.npz

`compare`: jaxdiff's seeded `sscd.random_state_dict(0)` is written with torch.save (zip and legacy formats),
read back by jaxdiff's torch-free reader and loaded into the Flax port; the torch reference loads the same
tensors (strict). Both embed random images upsampled (32x32, as CIFAR-10 samples) and downsampled (a 600x450
image, non-square) to the small edge 288; printed per stage: the largest |jax - torch| and that relative to
the largest |torch| of the stage.
`reference`: the torch reference's outputs for two 16x16 images at size 64 under `random_state_dict(0)`, so
tests/test_sscd.py compares with torch in CI without installing it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
DATA = os.path.join(ROOT, 'tests', 'data')
REFERENCE_FILE = os.path.join(DATA, 'sscd_random_features.npz')
STAGES = ('input', 'stem', 'layer1', 'layer2', 'layer3', 'layer4', 'gem', 'fc', 'embedding')


class Bottleneck(nn.Module):
  expansion = 4

  def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * self.expansion)
    self.relu = nn.ReLU(inplace=True)
    self.downsample = downsample

  def forward(self, x):
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    return self.relu(out + identity)


class GlobalGeMPool2d(nn.Module):
  def __init__(self, p: float):
    super().__init__()
    self.p = p

  def forward(self, x):
    n, c, h, w = x.size()
    return x.reshape(n, c, h * w).clamp(min=1e-6).pow(self.p).mean(dim=2).pow(1.0 / self.p)


class ResNet50(nn.Module):
  """torchvision's resnet50(num_classes) layout; `stages` returns every stage's output."""

  def __init__(self, num_classes: int = 512, pool: nn.Module | None = None):
    super().__init__()
    self.inplanes = 64
    self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
    self.bn1 = nn.BatchNorm2d(64)
    self.relu = nn.ReLU(inplace=True)
    self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
    self.layer1 = self._make_layer(64, 3)
    self.layer2 = self._make_layer(128, 4, stride=2)
    self.layer3 = self._make_layer(256, 6, stride=2)
    self.layer4 = self._make_layer(512, 3, stride=2)
    self.avgpool = pool if pool is not None else nn.AdaptiveAvgPool2d((1, 1))
    self.fc = nn.Linear(512 * Bottleneck.expansion, num_classes)

  def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
    downsample = None
    if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
      downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * Bottleneck.expansion, 1, stride=stride, bias=False),
                                 nn.BatchNorm2d(planes * Bottleneck.expansion))
    layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
    self.inplanes = planes * Bottleneck.expansion
    layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)

  def stages(self, x) -> dict:
    out = {'stem': self.maxpool(self.relu(self.bn1(self.conv1(x))))}
    x = out['stem']
    for name in ('layer1', 'layer2', 'layer3', 'layer4'):
      x = out[name] = getattr(self, name)(x)
    out['gem'] = torch.flatten(self.avgpool(x), 1)
    out['fc'] = self.fc(out['gem'])
    return out


class SSCDModel(nn.Module):
  """SSCD's Model("TV_RESNET50", 512, 3.0): the backbone with GeM, then L2 normalisation."""

  def __init__(self):
    super().__init__()
    self.backbone = ResNet50(512, pool=GlobalGeMPool2d(3.0))

  def stages(self, x) -> dict:
    out = self.backbone.stages(x)
    out['embedding'] = F.normalize(out['fc'])
    return out


def small_edge_transform(images: torch.Tensor, size: int) -> torch.Tensor:
  """README small_288 on tensors [N, 3, H, W] in [0, 1]: Resize(size) (bilinear, antialias) + Normalize."""
  _, _, h, w = images.shape
  short, long = min(h, w), max(h, w)
  if short != size:
    new = (size, int(size * long / short)) if h <= w else (int(size * long / short), size)
    images = F.interpolate(images, size=new, mode='bilinear', align_corners=False, antialias=True)
  mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
  std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
  return (images - mean) / std


def torch_stages(model: SSCDModel, images_nhwc: np.ndarray, size: int) -> dict[str, np.ndarray]:
  """Every stage's output for images [N, H, W, 3] in [0, 1], as NHWC / [N, D] numpy arrays."""
  with torch.no_grad():
    x = small_edge_transform(torch.from_numpy(np.ascontiguousarray(images_nhwc)).permute(0, 3, 1, 2), size)
    out = {'input': x, **model.stages(x)}
  return {k: (v.permute(0, 2, 3, 1) if v.ndim == 4 else v).numpy() for k, v in out.items()}


def reference_model(state_dict: dict[str, np.ndarray]) -> SSCDModel:
  model = SSCDModel().eval()
  model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state_dict.items()}, strict=True)
  return model


def stage_errors(got: dict, want: dict) -> dict[str, tuple[float, float]]:
  """stage -> (max |got - want|, that / max |want|)."""
  out = {}
  for k in STAGES:
    err = float(np.abs(np.asarray(got[k]) - want[k]).max())
    out[k] = (err, err / float(np.abs(want[k]).max()))
  return out


def compare(size: int) -> None:
  import jax
  from jaxdiff.metrics import sscd
  torch.set_num_threads(2)
  sd = sscd.random_state_dict(0)
  model = reference_model(sd)
  n_params = sum(p.numel() for p in model.parameters())
  print(f'torch {torch.__version__}, jax {jax.__version__}, reference parameters {n_params:,}')
  with tempfile.TemporaryDirectory() as tmp:
    nets = {}
    for fmt in ('zip', 'legacy'):
      path = os.path.join(tmp, f'sscd_{fmt}.torchvision.pt')
      torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, path,
                 _use_new_zipfile_serialization=(fmt == 'zip'))
      nets[fmt] = sscd.load_sscd_weights(path, size=size, precision='highest')
  net = nets['zip']
  for k, v in nnx_state_dict(nets['legacy']).items():
    assert np.array_equal(v, nnx_state_dict(net)[k]), k
  rng = np.random.default_rng(1)
  for name, shape in (('32x32 (upsampled)', (8, 32, 32, 3)), ('600x450 (downsampled)', (2, 600, 450, 3))):
    images = rng.uniform(0, 1, shape).astype(np.float32)
    stages = jax.jit(lambda m, x: m.stages(x))
    t0 = time.perf_counter()
    want = torch_stages(model, images, size)
    t1 = time.perf_counter()
    got = jax.device_get(stages(net, images))
    t2 = time.perf_counter()
    jax.block_until_ready(stages(net, images))
    t3 = time.perf_counter()
    print(f'\n{name} -> small edge {size}: {len(images)} images, torch {t1 - t0:.2f} s, jax {t3 - t2:.2f} s '
          f'({t2 - t1:.1f} s with compile)')
    print(f'{"stage":10s} {"shape":>22s} {"max |jax - torch|":>18s} {"relative":>10s}')
    for k, (err, rel) in stage_errors(got, want).items():
      print(f'{k:10s} {str(want[k].shape):>22s} {err:18.3e} {rel:10.3e}')
    cos = np.sum(got['embedding'] * want['embedding'], axis=1)
    print(f'cosine(jax, torch) of the embeddings: {cos}')


def nnx_state_dict(model) -> dict[str, np.ndarray]:
  from jaxdiff.io import torch_weights
  return torch_weights.to_state_dict(model)


def write_reference(path: str = REFERENCE_FILE) -> None:
  from jaxdiff.metrics import sscd
  rng = np.random.default_rng(7)
  images = rng.uniform(0, 1, (2, 16, 16, 3)).astype(np.float32)
  model = reference_model(sscd.random_state_dict(0))
  out = torch_stages(model, images, 64)
  np.savez_compressed(path, images=images, size=64, gem=out['gem'], fc=out['fc'], embedding=out['embedding'],
                      torch_version=torch.__version__)
  print(f'wrote {path}')


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('command', choices=('compare', 'reference'))
  parser.add_argument('--size', type=int, default=288)
  args = parser.parse_args()
  if args.command == 'compare':
    compare(args.size)
  else:
    write_reference()


if __name__ == '__main__':
  main()
