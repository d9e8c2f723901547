"""Check jaxdiff's Flax FID Inception-v3 against pytorch-fid's, with random weights (scratch script, not CI).

Needs torch, torchvision and pytorch-fid next to jaxdiff's own dependencies, e.g.

  python -m venv /tmp/torchenv --system-site-packages
  /tmp/torchenv/bin/pip install torch==2.14.1 torchvision==0.29.1 pytorch-fid
  /tmp/torchenv/bin/python bench/compare_inception_torch.py compare

No weights are downloaded: pytorch-fid's network is built with its weight loading patched out, then given
random conv kernels (He scale), random BatchNorm affine parameters and BatchNorm running statistics
calibrated on random images (so that activations stay O(1) through the 94 layers), then perturbed. The
same state dict is written with torch.save (zip and legacy formats), read back by jaxdiff's torch-free
reader, converted, and both networks embed the same random images (upsampled and downsampled to 299,
RGB). Reported: the largest |jax - torch| relative to the largest |torch| feature of the image.

Subcommands:
  compare    the check above (prints the numbers)
  manifest   writes tests/data/pytorch_fid_manifest.json (names, shapes, kinds of pytorch-fid's tensors)
  testfiles  writes tests/data/torch_state_dict_{zip,legacy}.pth, tiny genuine torch files that
             tests/test_inception.py reads with the torch-free reader
  reference  writes tests/data/pytorch_fid_random_features.npz: pytorch-fid's features of two 16x16
             images under jaxdiff's seeded `random_state_dict(0)`, so CI compares against torch without it
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch
import torchvision

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
DATA = os.path.join(ROOT, 'tests', 'data')


def fid_inception_without_weights():
  """pytorch-fid's FID Inception-v3 (Inception3 with the FID blocks), skipping its weight download."""
  import pytorch_fid.inception as pfi
  saved_url, saved_load = pfi.load_state_dict_from_url, torchvision.models.Inception3.load_state_dict
  pfi.load_state_dict_from_url = lambda *a, **k: None
  torchvision.models.Inception3.load_state_dict = lambda self, *a, **k: None
  try:
    return pfi.fid_inception_v3()
  finally:
    pfi.load_state_dict_from_url = saved_url
    torchvision.models.Inception3.load_state_dict = saved_load


def pytorch_fid_model(inception):
  """pytorch-fid's InceptionV3 (block 3, resize + normalize) wrapping the given Inception3."""
  import pytorch_fid.inception as pfi
  saved = pfi.fid_inception_v3
  pfi.fid_inception_v3 = lambda: inception
  try:
    return pfi.InceptionV3([3], resize_input=True, normalize_input=True).eval()
  finally:
    pfi.fid_inception_v3 = saved


def write_manifest():
  inception = fid_inception_without_weights()
  params = {n for n, _ in inception.named_parameters()}
  tensors = collections.OrderedDict()
  for name, t in inception.state_dict().items():
    tensors[name] = {'shape': list(t.shape), 'dtype': str(t.dtype).replace('torch.', ''),
                     'kind': 'parameter' if name in params else 'buffer'}
  import pytorch_fid
  manifest = {
      'description': "state_dict() of pytorch-fid's fid_inception_v3() (the tensors of "
                     'pt_inception-2015-12-05-6726825d.pth), written by bench/compare_inception_torch.py',
      'versions': {'torch': torch.__version__, 'torchvision': torchvision.__version__,
                   'pytorch_fid': pytorch_fid.__version__},
      'tensors': tensors,
  }
  path = os.path.join(DATA, 'pytorch_fid_manifest.json')
  os.makedirs(DATA, exist_ok=True)
  # One tensor per line: small, and diffs show which tensor changed.
  body = json.dumps({k: v for k, v in manifest.items() if k != 'tensors'}, indent=1)[:-2]
  lines = [f'  {json.dumps(k)}: {json.dumps(v)}' for k, v in tensors.items()]
  with open(path, 'w') as f:
    f.write(body + ',\n "tensors": {\n' + ',\n'.join(lines) + '\n }\n}\n')
  n_param = sum(int(np.prod(v['shape'])) for k, v in tensors.items()
                if v['kind'] == 'parameter' and not k.startswith('fc.'))
  print(f'wrote {path}: {len(tensors)} tensors, {n_param} parameters without fc')


def test_state_dict():
  """Small state dict exercising what the reader must handle. tests/test_inception.py rebuilds the values."""
  block = torch.nn.Sequential(torch.nn.Conv2d(2, 3, (1, 2), bias=False), torch.nn.BatchNorm2d(3))
  with torch.no_grad():
    block[0].weight.copy_(torch.arange(12, dtype=torch.float32).reshape(3, 2, 1, 2) / 7)
    block[1].weight.copy_(torch.tensor([0.5, 1.0, 1.5]))
    block[1].bias.copy_(torch.tensor([-1.0, 0.0, 1.0]))
    block[1].running_mean.copy_(torch.tensor([0.1, 0.2, 0.3]))
    block[1].running_var.copy_(torch.tensor([1.0, 2.0, 4.0]))
    block[1].num_batches_tracked.fill_(7)
  sd = block.state_dict()  # an OrderedDict with _metadata, as pytorch-fid's file
  base = torch.arange(10, dtype=torch.int64)
  sd['base'] = base
  sd['slice'] = base[3:7]  # shares base's storage at offset 3
  sd['transposed'] = torch.arange(12, dtype=torch.float64).reshape(3, 4).t()  # strides (1, 4)
  sd['half'] = torch.linspace(-1, 1, 5).half()
  sd['bfloat16'] = torch.tensor([1.0, -2.5, 0.15625], dtype=torch.bfloat16)
  sd['bool'] = torch.tensor([True, False, True])
  sd['int32'] = torch.tensor([[-1, 2], [3, -4]], dtype=torch.int32)
  sd['scalar'] = torch.tensor(3.5)
  sd['empty'] = torch.zeros(0, 3)
  sd['param'] = torch.nn.Parameter(torch.full((2,), 0.25))
  return sd


def write_test_files():
  sd = test_state_dict()
  for name, zip_format in (('zip', True), ('legacy', False)):
    path = os.path.join(DATA, f'torch_state_dict_{name}.pth')
    torch.save(sd, path, _use_new_zipfile_serialization=zip_format)
    print(f'wrote {path} ({os.path.getsize(path)} bytes)')


def write_reference():
  """Features of pytorch-fid's network under `random_state_dict(0)` on two small images, for CI."""
  from jaxdiff.metrics import inception as I
  inception = fid_inception_without_weights()
  inception.load_state_dict({k: torch.from_numpy(v) for k, v in I.random_state_dict(0).items()}, strict=True)
  model = pytorch_fid_model(inception)
  images = np.random.default_rng(1).uniform(0, 1, (2, 16, 16, 3)).astype(np.float32)
  with torch.no_grad():
    features = model(torch.from_numpy(images).permute(0, 3, 1, 2))[0].reshape(2, -1).numpy()
  path = os.path.join(DATA, 'pytorch_fid_random_features.npz')
  np.savez_compressed(path, images=images, features=features)
  print(f'wrote {path} ({os.path.getsize(path)} bytes): features mean {features.mean():.4f}, '
        f'max {features.max():.4f}, fraction zero {np.mean(features == 0):.2f}')


def randomize(inception, seed: int):
  """Random He-scaled kernels, random BN affine, BN stats calibrated on random images then perturbed."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in inception.modules():
      if isinstance(m, torch.nn.Conv2d):
        fan_in = m.weight[0].numel()
        m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
      elif isinstance(m, torch.nn.BatchNorm2d):
        m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
        m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batch
    model = pytorch_fid_model(inception).train()
    model(torch.rand(8, 3, 96, 96, generator=g))
    model.eval()
    for m in inception.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.running_mean.add_(0.1 * torch.randn(m.running_mean.shape, generator=g) * m.running_var.sqrt())
        m.running_var.mul_(0.8 + 0.4 * torch.rand(m.running_var.shape, generator=g))
    inception.fc.weight.copy_(0.01 * torch.randn(inception.fc.weight.shape, generator=g))
  return model


def compare(n: int, seed: int, controls: bool = False):
  import jax
  jax.config.update('jax_default_matmul_precision', 'highest')
  import jax.numpy as jnp
  from jaxdiff.metrics import inception as I

  torch.set_num_threads(os.cpu_count() or 1)
  torch.manual_seed(seed)
  inception = fid_inception_without_weights()
  model = randomize(inception, seed)
  sd = inception.state_dict()
  rng = np.random.default_rng(seed)
  with tempfile.TemporaryDirectory() as tmp:
    t = time.time()
    paths = {}
    for fmt, zip_format in (('zip', True), ('legacy', False)):
      paths[fmt] = os.path.join(tmp, f'random_fid_inception_{fmt}.pth')
      torch.save(sd, paths[fmt], _use_new_zipfile_serialization=zip_format)
    read = {fmt: I.read_torch_state_dict(p) for fmt, p in paths.items()}
    for fmt, got in read.items():
      assert set(got) == set(sd), fmt
      worst = max(float(np.abs(got[k] - sd[k].numpy()).max()) for k in sd if sd[k].numel())
      print(f'torch-free reader ({fmt} format, {os.path.getsize(paths[fmt]) / 2**20:.1f} MiB): '
            f'{len(got)} tensors, max |diff| vs torch = {worst:g}')
    net = I.load_pytorch_fid_weights(paths['zip'], precision='highest')
    print(f'read + convert: {time.time() - t:.1f} s; Flax parameters: {I.parameter_count(net)}, '
          f'torch parameters without fc: '
          f'{sum(p.numel() for k, p in inception.named_parameters() if not k.startswith("fc."))}')
  features = I.inception_features_fn(net, batch_size=n)

  worst = 0.0
  for size in (64, 299, 512):
    images = rng.uniform(0, 1, (n, size, size, 3)).astype(np.float32)
    with torch.no_grad():
      ref = model(torch.from_numpy(images).permute(0, 3, 1, 2))[0].reshape(n, -1).numpy()
    got = np.asarray(features(jnp.asarray(images)))
    scale = np.abs(ref).max(axis=1)
    rel = (np.abs(got - ref).max(axis=1) / scale).max()
    rel_norm = (np.linalg.norm(got - ref, axis=1) / np.linalg.norm(ref, axis=1)).max()
    worst = max(worst, rel)
    print(f'{n} random RGB images {size}x{size} -> 299: features {got.shape}, mean {ref.mean():.4f}, '
          f'max|jax-torch|/max|torch| = {rel:.2e}, max ||jax-torch||/||torch|| = {rel_norm:.2e}, '
          f'fraction of zero features {np.mean(ref == 0):.2f}')
  # Grayscale: jaxdiff repeats the channel, the same as feeding pytorch-fid the RGB image.
  gray = rng.uniform(0, 1, (n, 28, 28, 1)).astype(np.float32)
  with torch.no_grad():
    ref = model(torch.from_numpy(np.repeat(gray, 3, -1)).permute(0, 3, 1, 2))[0].reshape(n, -1).numpy()
  got = np.asarray(features(jnp.asarray(gray)))
  rel = (np.abs(got - ref).max(axis=1) / np.abs(ref).max(axis=1)).max()
  worst = max(worst, rel)
  print(f'{n} random grayscale 28x28 -> 299: max|jax-torch|/max|torch| = {rel:.2e}')
  print(f'WORST max relative difference: {worst:.2e}')
  if controls:
    run_controls(I, net, model, rng, n)
  return worst


def run_controls(I, net, model, rng, n):
  """Negative controls: the check must see the details it claims to test (each changes one detail)."""
  import jax
  import jax.numpy as jnp
  images = rng.uniform(0, 1, (n, 512, 512, 3)).astype(np.float32)
  with torch.no_grad():
    ref = model(torch.from_numpy(images).permute(0, 3, 1, 2))[0].reshape(n, -1).numpy()

  def counting_pad(x):  # torchvision's InceptionA/C/E average pool: the zero padding counts
    return jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1),
                                 ((0, 0), (1, 1), (1, 1), (0, 0))) / 9.0

  def antialiased(images, size=I.INPUT_SIZE):  # jax.image.resize: antialiasing when downsampling
    x = jax.image.resize(images, images.shape[:1] + (size, size, 3), 'bilinear')
    return 2.0 * x - 1.0

  for label, name, fake in (('avg pools count the padding', '_avg_pool_exclude_pad', counting_pad),
                            ('jax.image.resize (antialiased) instead of torch bilinear', 'preprocess',
                             antialiased)):
    saved = getattr(I, name)
    setattr(I, name, fake)
    try:
      got = np.asarray(I.inception_features_fn(net, batch_size=n)(jnp.asarray(images)))
    finally:
      setattr(I, name, saved)
    rel = (np.abs(got - ref).max(axis=1) / np.abs(ref).max(axis=1)).max()
    print(f'control, {label}: max|jax-torch|/max|torch| = {rel:.2e} (512x512 inputs)')


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('command', choices=['compare', 'manifest', 'testfiles', 'reference'])
  parser.add_argument('--n', type=int, default=4, help='images per comparison')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--controls', action='store_true',
                      help='also run negative controls (one FID detail changed) to show the check can fail')
  args = parser.parse_args()
  print(f'torch {torch.__version__}, torchvision {torchvision.__version__}')
  if args.command == 'manifest':
    write_manifest()
  elif args.command == 'testfiles':
    write_test_files()
  elif args.command == 'reference':
    write_reference()
  else:
    compare(args.n, args.seed, args.controls)


if __name__ == '__main__':
  main()
