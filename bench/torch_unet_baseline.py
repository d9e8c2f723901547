"""PyTorch baseline for bench/train_throughput.py: paper 1's U-Net, one Adam step, seconds per step.

Runs under a Python that has torch (not a jaxdiff dependency), e.g.

    python -m venv /tmp/torchenv
    /tmp/torchenv/bin/pip install "torch==2.13.0+cpu" numpy --extra-index-url https://download.pytorch.org/whl/cpu
    /tmp/torchenv/bin/python bench/torch_unet_baseline.py --widths=8,16,32

and prints one JSON object {width: {"sec_per_step": s, "params": count}} on its last line.
`bench/train_throughput.py --torch_python=/tmp/torchenv/bin/python` runs it in the same session as the
jaxdiff timings, so the comparison is made on one machine under one load.

The network is the DDPM U-Net of Ho et al. as paper 1 uses it (SPEC.md section 1), written here from the
architecture description and checked by parameter count against jaxdiff.models.unet: 3 levels with channel
multipliers (1, 2, 4), 2 ResNet blocks down and 3 up with skip concatenation, attention with 4 heads at 16x16,
8x8 and in the bottleneck, GroupNorm(8), SiLU, channel dropout 0.1, sinusoidal time embedding into a 4W MLP,
stride-2 convolutions down, nearest x2 + conv up. The loss is jaxdiff's: epsilon-prediction MSE at a uniform
timestep of the linear schedule.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
from torch import nn
import torch.nn.functional as F


def timestep_embedding(t, dim):
  half = dim // 2
  freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
  args = t.float()[:, None] * freqs[None]
  return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)


class ResBlock(nn.Module):

  def __init__(self, cin, cout, temb, dropout=0.1, groups=8):
    super().__init__()
    self.norm1 = nn.GroupNorm(groups, cin)
    self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
    self.temb = nn.Linear(temb, cout)
    self.norm2 = nn.GroupNorm(groups, cout)
    self.drop = nn.Dropout2d(dropout)
    self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
    self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

  def forward(self, x, temb):
    h = self.conv1(F.silu(self.norm1(x)))
    h = h + self.temb(F.silu(temb))[:, :, None, None]
    h = self.conv2(self.drop(F.silu(self.norm2(h))))
    return h + self.skip(x)


class Attn(nn.Module):

  def __init__(self, ch, heads=4, groups=8):
    super().__init__()
    self.norm = nn.GroupNorm(groups, ch)
    self.attn = nn.MultiheadAttention(ch, heads, batch_first=True)

  def forward(self, x):
    b, c, h, w = x.shape
    y = self.norm(x).reshape(b, c, h * w).transpose(1, 2)
    y = self.attn(y, y, y, need_weights=False)[0]
    return x + y.transpose(1, 2).reshape(b, c, h, w)


class UNet(nn.Module):

  def __init__(self, width, channels=1, image_size=32, mult=(1, 2, 4), blocks=2, attn_res=(16, 8)):
    super().__init__()
    self.width = width
    temb = 4 * width
    self.temb = nn.Sequential(nn.Linear(width, temb), nn.SiLU(), nn.Linear(temb, temb))
    self.conv_in = nn.Conv2d(channels, width, 3, padding=1)
    skips, ch, res = [width], width, image_size
    self.down = nn.ModuleList()
    for level, m in enumerate(mult):
      for _ in range(blocks):
        self.down.append(nn.ModuleList([ResBlock(ch, width * m, temb),
                                        Attn(width * m) if res in attn_res else nn.Identity()]))
        ch = width * m
        skips.append(ch)
      if level != len(mult) - 1:
        self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
        skips.append(ch)
        res //= 2
    self.mid = nn.ModuleList([ResBlock(ch, ch, temb), Attn(ch), ResBlock(ch, ch, temb)])
    self.up = nn.ModuleList()
    for level, m in reversed(list(enumerate(mult))):
      for _ in range(blocks + 1):
        self.up.append(nn.ModuleList([ResBlock(ch + skips.pop(), width * m, temb),
                                      Attn(width * m) if res in attn_res else nn.Identity()]))
        ch = width * m
      if level != 0:
        self.up.append(nn.Conv2d(ch, ch, 3, padding=1))
        res *= 2
    self.out = nn.Sequential(nn.GroupNorm(8, ch), nn.SiLU(), nn.Conv2d(ch, channels, 3, padding=1))

  def forward(self, x, t):
    temb = self.temb(timestep_embedding(t, self.width))
    h = self.conv_in(x)
    hs = [h]
    for layer in self.down:
      if isinstance(layer, nn.Conv2d):
        h = layer(h)
      else:
        h = layer[1](layer[0](h, temb))
      hs.append(h)
    h = self.mid[2](self.mid[1](self.mid[0](h, temb)), temb)
    for layer in self.up:
      if isinstance(layer, nn.Conv2d):
        h = layer(F.interpolate(h, scale_factor=2, mode='nearest'))
      else:
        h = layer[1](layer[0](torch.cat([h, hs.pop()], dim=1), temb))
    return self.out(h)


def paper_parameter_count(model, num_timesteps=1000):
  """Trainable parameters plus the frozen [T, W] sinusoidal table paper 1's code stores (as jaxdiff counts)."""
  return sum(p.numel() for p in model.parameters()) + num_timesteps * model.width


def time_width(width, batch, image_size, steps, warmup, device='cpu'):
  torch.manual_seed(0)
  model = UNet(width, image_size=image_size).to(device)
  opt = torch.optim.Adam(model.parameters(), lr=1e-4)
  betas = torch.linspace(1e-4, 0.02, 1000, device=device)
  abar = torch.cumprod(1 - betas, 0)
  data = torch.randn(256, 1, image_size, image_size, device=device)
  sync = torch.cuda.synchronize if torch.device(device).type == 'cuda' else (lambda: None)

  def step():
    idx = torch.randint(0, data.shape[0], (batch,), device=device)
    x0 = data[idx]
    t = torch.randint(1, 1000, (batch,), device=device)
    eps = torch.randn_like(x0)
    a = abar[t][:, None, None, None]
    xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
    loss = F.mse_loss(model(xt, t), eps)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()

  model.train()
  for _ in range(warmup):
    step()
  sync()
  t0 = time.perf_counter()
  for _ in range(steps):
    step()
  sync()
  return (time.perf_counter() - t0) / steps, paper_parameter_count(model)


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--widths', default='8,16,32')
  p.add_argument('--batch', type=int, default=64)
  p.add_argument('--image_size', type=int, default=32)
  p.add_argument('--steps', type=int, default=10)
  p.add_argument('--warmup', type=int, default=2)
  p.add_argument('--device', default='cpu', help="torch device: 'cpu' or 'cuda'")
  args = p.parse_args()
  out = {}
  for w in [int(x) for x in args.widths.split(',')]:
    sec, count = time_width(w, args.batch, args.image_size, args.steps, args.warmup, args.device)
    out[w] = {'sec_per_step': sec, 'params': count}
    print(f'torch {torch.__version__} on {args.device} ({torch.get_num_threads()} threads): W={w} {sec:.3f} s/step, '
          f'{count / 1e6:.3f}M parameters', flush=True)
  print(json.dumps(out))


if __name__ == '__main__':
  main()
