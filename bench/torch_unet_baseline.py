"""Paper 1's U-Net in PyTorch, written from the authors' architecture for two uses: the PyTorch timing baseline
of bench/train_throughput.py (one Adam step, seconds per step) and the reference that jaxdiff's U-Net under the
paper protocol must compute exactly (tests/test_torch_unet.py loads the same weights into both).

Runs under a Python that has torch (not a jaxdiff dependency: the optional extra `pip install -e ".[torch]"`,
or its own environment), e.g.

    python -m venv /tmp/torchenv
    /tmp/torchenv/bin/pip install "torch==2.13.0+cpu" numpy --extra-index-url https://download.pytorch.org/whl/cpu
    /tmp/torchenv/bin/python bench/torch_unet_baseline.py --widths=8,16,32

and prints one JSON object {width: {"sec_per_step": s, "params": count}} on its last line.
`bench/train_throughput.py --torch_python=/tmp/torchenv/bin/python` runs it in the same session as the
jaxdiff timings, so the comparison is made on one machine under one load.

The network is the DDPM U-Net of Ho et al. as paper 1's code has it (SPEC.md section 1; the authors'
Experiments/src/Utils/Unet.py): 3 levels with channel multipliers (1, 2, 4), 2 ResNet blocks down and 3 up with
skip concatenation, attention (nn.MultiheadAttention, 4 heads, after the block's residual sum) at 16x16, 8x8
and after the first bottleneck block, GroupNorm(8) with PyTorch's epsilon 1e-5, SiLU, channel dropout 0.1
before the second convolution, a frozen sinusoidal table of the integer steps 0..T-1 (frequencies
10000^(-i / (W/2 - 1)), [sin, cos]) into a Linear-GELU-Linear MLP of width 4W, stride-2 convolutions padded
(1, 1) down, nearest x2 + conv up, and PyTorch's default initialization. The loss is epsilon-prediction MSE at
a uniform step of the linear schedule. `load_jaxdiff_params` copies a jaxdiff U-Net's parameters into it.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F


def sinusoidal_table(num_steps, dim):
  """[num_steps, dim] embedding of the integer steps: [sin(t f_i), cos(t f_i)], f_i = 10000^(-i / (dim/2 - 1))."""
  half = dim // 2
  freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / (half - 1))
  args = torch.arange(num_steps, dtype=torch.float32)[:, None] * freqs[None]
  return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)


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


class ResBlock(nn.Module):
  """GroupNorm-SiLU-Conv, + Linear(SiLU(temb)), GroupNorm-SiLU-Dropout2d-Conv, + skip; then attention if asked."""

  def __init__(self, cin, cout, temb, dropout=0.1, groups=8, attention=False, heads=4):
    super().__init__()
    self.norm1 = nn.GroupNorm(groups, cin)
    self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
    self.temb = nn.Linear(temb, cout)
    self.norm2 = nn.GroupNorm(groups, cout)
    self.drop = nn.Dropout2d(dropout)
    self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
    self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
    self.attn = Attn(cout, heads, groups) if attention else nn.Identity()

  def forward(self, x, temb):
    h = self.conv1(F.silu(self.norm1(x)))
    h = h + self.temb(F.silu(temb))[:, :, None, None]
    h = self.conv2(self.drop(F.silu(self.norm2(h))))
    return self.attn(h + self.skip(x))


class Down(nn.Module):

  def __init__(self, ch):
    super().__init__()
    self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

  def forward(self, x, temb):
    return self.conv(x)


class Up(nn.Module):

  def __init__(self, ch):
    super().__init__()
    self.conv = nn.Conv2d(ch, ch, 3, padding=1)

  def forward(self, x, temb):
    return self.conv(F.interpolate(x, scale_factor=2, mode='nearest'))


class UNet(nn.Module):
  """forward(x: [B, C, H, W], t: [B] integer steps) -> eps [B, C, H, W]."""

  def __init__(self, width, channels=1, image_size=32, mult=(1, 2, 4), blocks=2, attn_res=(16, 8), heads=4,
               groups=8, dropout=0.1, num_steps=1000):
    super().__init__()
    self.width = width
    temb = 4 * width
    self.time = nn.Sequential(nn.Embedding.from_pretrained(sinusoidal_table(num_steps, width)),
                              nn.Linear(width, temb), nn.GELU(), nn.Linear(temb, temb))
    self.conv_in = nn.Conv2d(channels, width, 3, padding=1)
    kw = dict(temb=temb, dropout=dropout, groups=groups, heads=heads)
    skips, ch, res = [width], width, image_size
    self.down = nn.ModuleList()
    for level, m in enumerate(mult):
      for _ in range(blocks):
        self.down.append(ResBlock(ch, width * m, attention=res in attn_res, **kw))
        ch = width * m
        skips.append(ch)
      if level != len(mult) - 1:
        self.down.append(Down(ch))
        skips.append(ch)
        res //= 2
    self.mid = nn.ModuleList([ResBlock(ch, ch, attention=True, **kw), ResBlock(ch, ch, **kw)])
    self.up = nn.ModuleList()
    for level, m in reversed(list(enumerate(mult))):
      for _ in range(blocks + 1):
        self.up.append(ResBlock(ch + skips.pop(), width * m, attention=res in attn_res, **kw))
        ch = width * m
      if level != 0:
        self.up.append(Up(ch))
        res *= 2
    self.out = nn.Sequential(nn.GroupNorm(groups, ch), nn.SiLU(), nn.Conv2d(ch, channels, 3, padding=1))

  def forward(self, x, t):
    temb = self.time(t.long())
    h = self.conv_in(x)
    hs = [h]
    for layer in self.down:
      h = layer(h, temb)
      hs.append(h)
    for layer in self.mid:
      h = layer(h, temb)
    for layer in self.up:
      h = layer(torch.cat([h, hs.pop()], dim=1) if isinstance(layer, ResBlock) else h, temb)
    return self.out(h)


def load_jaxdiff_params(model, params):
  """Copy a jaxdiff U-Net's parameters into `model` (the same sizes).

  params: {path: array} with the '/'-joined paths of `nnx.state(unet, nnx.Param)` (e.g. 'down/0/0/conv1/kernel',
  'mid_attn/attn/query/kernel'), numpy arrays. Conv kernels HWIO -> OIHW, dense kernels [in, out] -> [out, in],
  the attention's [C, heads, head_dim] projections -> the stacked [3C, C] input projection of nn.MultiheadAttention.
  """
  p = {k: torch.from_numpy(np.array(v, np.float32)) for k, v in params.items()}
  out = {}

  def conv(dst, src):
    out[f'{dst}.weight'] = p[f'{src}/kernel'].permute(3, 2, 0, 1)
    out[f'{dst}.bias'] = p[f'{src}/bias']

  def dense(dst, src):
    out[f'{dst}.weight'] = p[f'{src}/kernel'].T
    out[f'{dst}.bias'] = p[f'{src}/bias']

  def norm(dst, src):
    out[f'{dst}.weight'] = p[f'{src}/scale']
    out[f'{dst}.bias'] = p[f'{src}/bias']

  def attn(dst, src):
    norm(f'{dst}.norm', f'{src}/norm')
    c = p[f'{src}/attn/query/kernel'].shape[0]
    w = [p[f'{src}/attn/{n}/kernel'].reshape(c, c).T for n in ('query', 'key', 'value')]
    out[f'{dst}.attn.in_proj_weight'] = torch.cat(w)
    out[f'{dst}.attn.in_proj_bias'] = torch.cat([p[f'{src}/attn/{n}/bias'].reshape(c) for n in ('query', 'key', 'value')])
    out[f'{dst}.attn.out_proj.weight'] = p[f'{src}/attn/out/kernel'].reshape(c, c).T
    out[f'{dst}.attn.out_proj.bias'] = p[f'{src}/attn/out/bias']

  def block(dst, src, attn_src=None):
    norm(f'{dst}.norm1', f'{src}/norm1')
    conv(f'{dst}.conv1', f'{src}/conv1')
    dense(f'{dst}.temb', f'{src}/temb_proj')
    norm(f'{dst}.norm2', f'{src}/norm2')
    conv(f'{dst}.conv2', f'{src}/conv2')
    if f'{src}/skip/kernel' in p:
      conv(f'{dst}.skip', f'{src}/skip')
    if attn_src is not None:
      attn(f'{dst}.attn', attn_src)

  dense('time.1', 'temb1')
  dense('time.3', 'temb2')
  conv('conv_in', 'conv_in')
  for name, layers in (('down', model.down), ('up', model.up)):
    for i, layer in enumerate(layers):
      if isinstance(layer, ResBlock):
        has_attn = not isinstance(layer.attn, nn.Identity)
        block(f'{name}.{i}', f'{name}/{i}/0', f'{name}/{i}/1' if has_attn else None)
      else:
        conv(f'{name}.{i}.conv', f'{name}/{i}')
  block('mid.0', 'mid1', 'mid_attn')
  block('mid.1', 'mid2')
  norm('out.0', 'norm_out')
  conv('out.2', 'conv_out')
  missing, unexpected = model.load_state_dict(out, strict=False)
  missing = [k for k in missing if k != 'time.0.weight']   # the frozen table is not a jaxdiff parameter
  if missing or unexpected:
    raise ValueError(f'parameters not matched: missing {missing}, unexpected {unexpected}')
  return model


def paper_parameter_count(model):
  """Parameters as paper 1's code counts them: the trainable ones and its frozen [T, W] sinusoidal table."""
  return sum(p.numel() for p in model.parameters())


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
