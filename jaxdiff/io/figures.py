"""Figures: headless matplotlib (`pyplot`), PNGs written whole to local or gs:// paths (`save_figure`), and
the figures every image run writes (sample grids, samples above their nearest training images), and metric
curves against training time (`save_curves`)."""

from __future__ import annotations

import io
import math
import os

import matplotlib
import numpy as np

from jaxdiff.io import paths


def pyplot():
  """matplotlib.pyplot on the headless Agg backend."""
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top  (after choosing the backend)
  return plt


def image_grid(images: np.ndarray, ncol: int | None = None, pad: int = 1) -> np.ndarray:
  """Tile images [N, H, W, C] (values in [0, 1]) into one array [rows*(H+pad)+pad, cols*(W+pad)+pad, C]."""
  images = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
  n, h, w, c = images.shape
  ncol = ncol or int(math.ceil(math.sqrt(n)))
  nrow = int(math.ceil(n / ncol))
  grid = np.ones((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), np.float32)
  for i in range(n):
    r, q = divmod(i, ncol)
    grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + q * (w + pad):pad + q * (w + pad) + w] = images[i]
  return grid


def save_image_grid(images: np.ndarray, path: str, ncol: int | None = None, title: str | None = None) -> str:
  """Write images [N, H, W, C] in [0, 1] as a PNG grid; returns the path."""
  plt = pyplot()
  grid = image_grid(images, ncol)
  fig, ax = plt.subplots(figsize=(max(3.0, grid.shape[1] / 24), max(3.0, grid.shape[0] / 24)))
  if grid.shape[-1] == 1:
    ax.imshow(grid[..., 0], cmap='gray', vmin=0, vmax=1, interpolation='nearest')
  else:
    ax.imshow(grid, interpolation='nearest')
  ax.axis('off')
  if title:
    ax.set_title(title, fontsize=9)
  return save_figure(fig, path, dpi=100, tight=True)


NEIGHBOURS_CAPTION = '(top: sample, bottom: nearest training image, title: d1/d2)'


def save_neighbour_pairs(samples: np.ndarray, neighbours: np.ndarray, ratios: np.ndarray,
                         memorized: np.ndarray, path: str, *, ncol: int = 8, title: str | None = None,
                         caption: str = NEIGHBOURS_CAPTION) -> str:
  """Generated samples (upper image of each pair) above their nearest training images (lower), with the
  ratio d1/d2 of each (red: memorized). samples, neighbours: [N, H, W, C] in [0, 1]; ratios, memorized: [N].
  Any image pairs with a score each: `caption` says what the rows and titles are."""
  plt = pyplot()
  n = samples.shape[0]
  ncol = min(ncol, n)
  nrow = int(math.ceil(n / ncol))
  fig, axes = plt.subplots(2 * nrow, ncol, figsize=(1.1 * ncol, 2.3 * nrow), squeeze=False)
  for ax in axes.flat:
    ax.axis('off')
  for i in range(n):
    r, q = divmod(i, ncol)
    for row, img in ((2 * r, samples[i]), (2 * r + 1, neighbours[i])):
      img = np.clip(img, 0, 1)
      ax = axes[row, q]
      if img.shape[-1] == 1:
        ax.imshow(img[..., 0], cmap='gray', vmin=0, vmax=1, interpolation='nearest')
      else:
        ax.imshow(img, interpolation='nearest')
    axes[2 * r, q].set_title(f'{float(ratios[i]):.2f}', fontsize=8, color='red' if memorized[i] else 'black')
  if title:
    fig.suptitle(f'{title}  {caption}', fontsize=9)
  return save_figure(fig, path, dpi=100, tight=True)


def save_paired_samples(a: np.ndarray, b: np.ndarray, ratios: np.ndarray, agreed: np.ndarray, path: str, *,
                        title: str) -> str:
  """Samples of two models from the same noise: images ([N, H, W, C] in [0, 1]) one above the other with the
  pair ratio (red: the pair agrees); points ([N, D]) as a scatter of the first two coordinates with a segment
  joining each pair (red: agrees)."""
  if a.ndim == 4:
    return save_neighbour_pairs(a, b, ratios, agreed, path, title=title,
                                caption='(top: half 0, bottom: half 1, title: pair ratio)')
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(5, 5))
  x, y = a.reshape(len(a), -1), b.reshape(len(b), -1)
  j = 1 if x.shape[1] > 1 else 0
  for i in range(len(x)):
    ax.plot([x[i, 0], y[i, 0]], [x[i, j], y[i, j]], color='red' if agreed[i] else '0.6', lw=0.8)
  ax.scatter(x[:, 0], x[:, j], s=10, label='half 0')
  ax.scatter(y[:, 0], y[:, j], s=10, marker='x', label='half 1')
  ax.set_xlabel('coordinate 0')
  ax.set_ylabel(f'coordinate {j}')
  ax.legend(fontsize=8)
  ax.set_title(title, fontsize=9)
  return save_figure(fig, path)


def save_agreement_curves(curves: list[dict], path: str) -> str:
  """agreement.png of a disjoint-halves run: per pair (one column per n), the fraction of agreeing sample
  pairs with its interval and each half's f_mem against the step (log axis, tau_mem dotted); below, the mean
  distance of the pairs and of unpaired samples. curves: `halves_curve` dicts."""
  plt = pyplot()
  fig, axes = plt.subplots(2, len(curves), figsize=(4 * len(curves), 6), squeeze=False, sharex='col')
  for c, ax_top, ax_bot in zip(curves, axes[0], axes[1]):
    steps = np.maximum(np.asarray(c['steps'], float), 1)
    ax_top.plot(steps, c['agree'], 'o-', color='k', label='halves agree')
    ax_top.fill_between(steps, c['agree_lo'], c['agree_hi'], color='k', alpha=0.15)
    for h, colour in ((0, 'C0'), (1, 'C1')):
      ax_top.plot(steps, c['f_mem'][h], '.--', color=colour, label=f'f_mem, half {h}')
      if c['tau_mem'][h]:
        ax_top.axvline(c['tau_mem'][h], color=colour, ls=':', lw=1)
    ax_top.set_title(f"n = {c['n']} per half (seeds {c['seeds'][0]}, {c['seeds'][1]})", fontsize=9)
    ax_top.set_ylim(-0.02, 1.02)
    ax_top.legend(fontsize=7)
    ax_bot.plot(steps, c['l2'], 'o-', label='paired (same noise)')
    ax_bot.plot(steps, c['l2_unpaired'], 's--', label='unpaired')
    ax_bot.set_ylabel('mean L2 distance')
    ax_bot.set_xlabel('training step')
    ax_bot.set_xscale('log')
    ax_bot.legend(fontsize=7)
  return save_figure(fig, path)


def save_curves(panels, path: str, *, title: str | None = None, xlabel: str = 'training step',
                logx: bool = True) -> str:
  """Curves against training time, one panel per entry of `panels`: (panel title, y label, [(label, x [M],
  y [M], style), ...]); style a matplotlib format string ('-o', '--'); x on a log scale with logx."""
  plt = pyplot()
  fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False)
  for ax, (name, ylabel, curves) in zip(axes[0], panels):
    for label, x, y, style in curves:
      x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
      keep = np.isfinite(y) & (x > 0 if logx else np.isfinite(x))
      if keep.any():
        ax.plot(x[keep], y[keep], style, label=label, lw=1.2, ms=3)
    if logx:
      ax.set_xscale('log')
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(name, fontsize=10)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=7)
  if title:
    fig.suptitle(title, fontsize=10)
  return save_figure(fig, path)


def save_figure(fig, path: str, *, dpi: int = 110, tight: bool = False) -> str:
  """Write `fig` as a PNG to a local or object-store path (whole-file write, jaxdiff.io.paths) and close it.
  tight: crop to the drawn area (bbox_inches='tight'); otherwise the figure's own layout (tight_layout)."""
  buf = io.BytesIO()
  if tight:
    fig.savefig(buf, format='png', dpi=dpi, bbox_inches='tight')
  else:
    fig.tight_layout()
    fig.savefig(buf, format='png', dpi=dpi)
  pyplot().close(fig)
  paths.makedirs(os.path.dirname(path) or '.')
  paths.write_bytes(path, buf.getvalue())
  return path
