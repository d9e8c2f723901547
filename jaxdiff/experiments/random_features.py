"""Run driver of the 'random_features' family: the sweep of paper 1's random-features model (SPEC section 3).

    python -m jaxdiff.main --config=configs/rf_timescales.py --workdir=DIR

For every model size psi_p, all diffusion times t in the config and `num_seeds` independent (W, data, noise)
draws are built side by side (`vmap` over (t, seed), that axis sharded over the mesh's 'data' axis), each
with the nested training sets of every psi_n (one pass over the largest), and trained by the chosen trainer
(exact gradient flow, gradient descent or Adam) to the log-spaced times tau in [tau_min, tau_max].

Two time axes: jaxdiff's tau = k eta / d^2 (modes of U relax as exp(-2 Delta_t lambda tau / psi_p)) and the
authors' script's k eta = tau d / psi_p (its A is ours / sqrt(p)); metrics.jsonl has both (`tau`,
`tau_authors`), every tau_mem of summary.json is on jaxdiff's, and the figures use `rf.time_axis`.

Writes to `workdir`:
- metrics.jsonl: one row per (psi_p, t, psi_n, seed, evaluation time) with tau, tau_authors, loss_train,
  loss_test, loss_gen, loss_gen_modes (L_gen of the flow restricted to the top n eigenmodes of U; exact flow
  only), e_score (and `step`: the evaluation index for the exact flow, the step count otherwise);
- summary.json: tau_mem per psi_n: measured (psi_p / (2 Delta_t lambda_min), lambda_min the lower edge of the
  memorization bulk of each realized U; paper 1 writes psi_p / (Delta_t lambda_min), without the 2 of the flow),
  predicted (the same from the closed-form edge), curve (first crossing of the seed-averaged L_gen above its
  threshold, by `jaxdiff.timescales`, as for U-Net runs) and modes (the same on the top-n-mode L_gen); the
  fitted exponents of each against psi_n (`tau_mem_exponent` for the measured one, `tau_mem_exponent_predicted`,
  `tau_mem_exponent_curve`, `tau_mem_exponent_modes`), the best E_score per psi_n and its fit c psi_n^alpha
  (`best_e_score_fit`; paper 1: 0.20 psi_n^-0.59), the coefficients a_t, b_t, v_t^2, s_t^2, and the spectrum
  check (bulk edges, KS distance) of the first model;
- spectrum.png (eigenvalues of U of one model against the theoretical density), losses.png (L_train, L_test,
  L_gen with its top-n-mode part dotted, E_score against the training time on `rf.time_axis` and against
  tau / tau_mem predicted: the collapse), phase.png (L_gen over (psi_n, psi_p) at `heatmap_times` on
  `rf.time_axis`).

Why the L_gen curve's crossing grows slower than n at psi_p = 64: late in training most of L_gen sits in the
slow modes below the memorization bulk (a small bulk of weight d/p near s_t^2 and the point mass, spread at
finite d), which relax on psi_p / (2 Delta_t s_t^2) whatever n; read on the top n modes (the generalization
and memorization bulks) the crossing grows like n.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from jaxdiff import config as config_lib
from jaxdiff import sharding, theory, timescales
from jaxdiff.config import require
from jaxdiff.data import load_images
from jaxdiff.io.figures import pyplot, save_figure
from jaxdiff.io.rundir import RunDir
from jaxdiff.models import random_features as rf

METRICS = ('loss_train', 'loss_test', 'loss_gen', 'loss_gen_modes', 'e_score')
RF_TIME_AXES = ('jaxdiff', 'authors')
TIME_LABELS = {'jaxdiff': r'$\tau = k\eta/d^2$ (jaxdiff)', 'authors': r'$k\eta = \tau d/\psi_p$ (authors)'}
RF_ACTIVATIONS = tuple(rf.ACTIVATIONS)
RF_TRAINERS = ('exact', 'gd', 'adam')
RF_DATA = ('gaussian', 'images')


# ----------------------------------------------------------------------------------------------------------
# Data


def _image_data(config: ml_collections.ConfigDict, n_max: int) -> tuple[np.ndarray, np.ndarray]:
  """Flattened training images [n_max, d] and test images [num_test, d] from `config.data`."""
  data_cfg = ml_collections.ConfigDict(config.data.to_dict())
  data_cfg.n = n_max
  data_cfg.n_test = config.rf.num_test
  data = load_images(data_cfg)
  return data.train.reshape(n_max, -1), data.test.reshape(data.test.shape[0], -1)


# ----------------------------------------------------------------------------------------------------------
# One group of models: fixed psi_p and t, all seeds and psi_n


def build_problems(key: jax.Array, *, d: int, p: int, n_list: list[int], t: float, r: ml_collections.ConfigDict,
                   var_diag: jax.Array | None, x_train: jax.Array | None, x_test: jax.Array | None
                   ) -> tuple[rf.Problem, jax.Array]:
  """The problems of one seed for every n in n_list: (Problem [L, ...], W [p, d]).

  Gaussian data (var_diag given) is drawn from the key; image data (x_train, x_test) is shared by all seeds,
  which then differ by W and the noise.
  """
  k_w, k_x, k_noise, k_test, k_xi = jax.random.split(key, 5)
  w = rf.init_features(k_w, p, d)
  if var_diag is not None:
    x_train = rf.sample_gaussian(k_x, n_list[-1], var_diag)
    x_test = rf.sample_gaussian(k_test, r.num_test, var_diag)
  xi_test = jax.random.normal(k_xi, x_test.shape, jnp.float32)
  mom = rf.nested_moments(w, x_train, n_list, t, k_noise, activation=r.activation,
                          num_noise_draws=r.num_noise_draws, hermite_order=r.hermite_order,
                          quadrature_nodes=r.quadrature_nodes, chunk=r.chunk_size)
  return rf.make_problem(mom, w, x_test, xi_test, t, r.activation, var_diag), w


def _batch_sharding(mesh, size: int):
  """Split a leading batch axis over 'data' when it divides evenly, else replicate."""
  n_dev = mesh.shape[sharding.DATA]
  return sharding.batch_sharded(mesh) if size % n_dev == 0 else sharding.replicated(mesh)


def train_group(key: jax.Array, *, d: int, psi_p: float, ts: list[float], r: ml_collections.ConfigDict, mesh,
                taus: np.ndarray, var_diag: np.ndarray | None, x_train: np.ndarray | None,
                x_test: np.ndarray | None) -> list[dict[str, Any]]:
  """Build and train all models of one psi_p: every t, seed and psi_n side by side.

  The (t, seed) pairs are one `vmap` axis (the shapes only depend on psi_p), sharded over 'data'; each
  holds the nested training sets of every psi_n. Returns one dict per t: curves [S, L, T] per metric,
  times [T], the eigenvalues of the first model and lambda_n of every model.
  """
  p = max(1, round(psi_p * d))
  n_list = [max(1, round(x * d)) for x in r.psi_n]
  order = np.argsort(n_list)
  n_sorted = [n_list[i] for i in order]
  if x_train is not None and n_sorted[-1] > x_train.shape[0]:
    raise ValueError(f"config field 'rf.psi_n': n = {n_sorted[-1]} exceeds the {x_train.shape[0]} training images")
  s, nt, nl = r.num_seeds, len(ts), len(n_list)
  keys = jax.random.split(key, nt * s)
  t_arr = jnp.repeat(jnp.asarray(ts, jnp.float32), s)               # [T S]: t of each (t, seed) pair
  shard_s = _batch_sharding(mesh, nt * s)
  build = functools.partial(build_problems, d=d, p=p, n_list=n_sorted, r=r,
                            var_diag=None if var_diag is None else jnp.asarray(var_diag),
                            x_train=None if x_train is None else jnp.asarray(x_train),
                            x_test=None if x_test is None else jnp.asarray(x_test))
  t0 = time.time()
  probs, _ = jax.jit(jax.vmap(lambda k, t: build(k, t=t)), out_shardings=shard_s)(
      jax.device_put(keys, shard_s), jax.device_put(t_arr, shard_s))
  flat = jax.tree.map(lambda a: a.reshape((nt * s * nl,) + a.shape[2:]), probs)
  shard_b = _batch_sharding(mesh, nt * s * nl)
  flat = jax.device_put(flat, shard_b)
  jax.block_until_ready(flat)
  logging.info('random features: %d models on %s', nt * s * nl, flat.u.sharding)
  t_build = time.time() - t0
  t0 = time.time()
  if r.trainer == 'exact':
    eig = jax.jit(rf.eigh64, out_shardings=shard_b)(flat.u)
    sol = jax.jit(jax.vmap(rf.solve_flow), out_shardings=shard_b)(flat, eig)
    top = jnp.asarray(np.tile(n_sorted, nt * s), jnp.int32)   # L_gen on each model's top n modes
    curves = jax.jit(jax.vmap(rf.flow_losses, (0, None, 0)))(sol, jnp.asarray(taus, jnp.float32), top)
    times = np.asarray(taus, np.float64)
    steps = np.arange(len(taus))
    lam_all = eig[0]
  else:
    lr = r.learning_rate
    if lr == 0:
      lr = (float(jnp.min(jax.vmap(rf.stable_learning_rate)(flat))) if r.trainer == 'gd' else 1e-3)
    steps = rf.steps_for_times(taus, lr, d)
    logging.info('random features: %s with learning rate %.4g, %d steps to tau = %g', r.trainer, lr,
                 int(steps[-1]), float(taus[-1]))
    fn = functools.partial(rf.descent_losses, learning_rate=lr, eval_steps=steps, optimizer=r.trainer)
    curves = jax.jit(jax.vmap(fn))(flat)
    times = np.asarray(steps, np.float64) * lr / d ** 2
    curves.pop('tau')
    curves['loss_gen_modes'] = jnp.full_like(curves['loss_gen'], jnp.nan)   # needs the eigenbasis: exact flow
    lam_all = jax.jit(rf.eigvalsh64, out_shardings=shard_b)(flat.u)
  lam_all = np.asarray(lam_all, np.float64).reshape(nt, s * nl, p)     # ascending
  # The smallest eigenvalue of the memorization bulk of each realized U: the n-th largest (the top d are
  # rho_2, the next n - d rho_1); none unless d < n < p.
  n_flat = np.tile(n_sorted, s)
  inv = np.argsort(order)  # back to the config's order of psi_n
  curves = {k: np.asarray(v, np.float64).reshape(nt, s, nl, -1)[:, :, inv] for k, v in curves.items()}
  logging.info('random features psi_p=%g: %d models of p=%d built in %.1fs, trained (%s) in %.1fs',
               psi_p, nt * s * nl, p, t_build, r.trainer, time.time() - t0)
  out = []
  for i, t in enumerate(ts):
    lam = lam_all[i]
    lam_n = np.where((n_flat < p) & (n_flat > d), lam[np.arange(lam.shape[0]), np.clip(p - n_flat, 0, p - 1)],
                     np.nan).reshape(s, nl)[:, inv]
    out.append({'psi_p': psi_p, 't': float(t), 'p': p, 'n': list(n_list), 'times': times,
                'steps': np.asarray(steps), 'curves': {k: v[i] for k, v in curves.items()},
                'lam0': lam[0], 'lam0_psi_n': float(r.psi_n[order[0]]), 'lam_n': lam_n})
  return out


# ----------------------------------------------------------------------------------------------------------
# Analysis


def _log_interp(times: np.ndarray, values: np.ndarray, at: float) -> float:
  if not times[0] <= at <= times[-1]:
    return math.nan
  return float(np.interp(math.log(at), np.log(times), values))


def spectrum_check(lam: np.ndarray, coef: theory.Coefficients, psi_p: float, psi_n: float, d: int,
                   grid: np.ndarray, rho: np.ndarray) -> dict[str, Any]:
  """Compare the eigenvalues lam [p] of one U with the theoretical density rho on grid.

  The empirical bulks are chosen by rank (descending: the top d are rho_2, the next n - d rho_1), the
  theoretical ones are the support intervals of rho (rho_2: the last; rho_1: the one that overlaps the
  closed-form edges most). Reports both bulks' edges and the KS distance of each bulk's eigenvalues to rho
  restricted to its interval.
  """
  p = lam.size
  n = round(psi_n * d)
  desc = np.sort(lam)[::-1]
  out: dict[str, Any] = {'point_mass': theory.point_mass(psi_p, psi_n), 's2': coef.s2}
  intervals = theory.support_intervals(grid, rho, rel_tol=1e-6)
  bulks = []
  if intervals:
    bulks.append(('rho2', intervals[-1], desc[:min(d, p)]))
  edges = theory.memorization_edges(coef, psi_p, psi_n)
  if edges is not None and n > d and len(intervals) > 1:
    overlap = [max(0.0, min(b, edges[1]) - max(a, edges[0])) for a, b in intervals[:-1]]
    out['rho1_edges_closed_form'] = list(edges)
    bulks.append(('rho1', intervals[int(np.argmax(overlap))], desc[d:min(n, p)]))
  for name, (a, b), e in bulks:
    out[f'{name}_edges_theory'] = [a, b]
    if e.size:
      out[f'{name}_edges_empirical'] = [float(e.min()), float(e.max())]
      out[f'{name}_ks'] = theory.ks_distance(e, grid, rho, a, b)
  return out


def summarize_group(g: dict[str, Any], r: ml_collections.ConfigDict, coef: theory.Coefficients) -> dict[str, Any]:
  times, curves = g['times'], g['curves']
  out: dict[str, Any] = {'psi_p': g['psi_p'], 't': g['t'], 'p': g['p'], 'n': g['n'],
                         'psi_n': [float(x) for x in r.psi_n], 'tau_mem': {}, 'tau_mem_exponent': None}
  gen = curves['loss_gen'].mean(0)               # [L, T] seed average
  gen_modes = curves['loss_gen_modes'].mean(0)
  measured, predicted, curve, curve_modes = [], [], [], []
  for i, psi_n in enumerate(r.psi_n):
    level = r.tau_mem_threshold if r.tau_mem_threshold > 0 else r.tau_mem_fraction * gen[i, -1]
    crossing = timescales.first_crossing(times, gen[i], level) if level > 0 else None
    level_modes = r.tau_mem_threshold if r.tau_mem_threshold > 0 else r.tau_mem_fraction * gen_modes[i, -1]
    crossing_modes = (timescales.first_crossing(times, gen_modes[i], level_modes)
                      if np.isfinite(level_modes) and level_modes > 0 else None)
    crossing_per_seed = [timescales.first_crossing(times, curves['loss_gen'][s, i], level) if level > 0 else None
                         for s in range(curves['loss_gen'].shape[0])]
    pred = theory.predicted_tau_mem(coef, g['psi_p'], psi_n)
    # tau_mem = psi_p / (2 Delta_t lambda_min) (theory.mode_time), lambda_min the lower edge of the memorization
    # bulk: measured on each realized U as its n-th largest eigenvalue (None where psi_n >= psi_p: no bulk).
    with np.errstate(divide='ignore', invalid='ignore'):
      per_seed = theory.mode_time(g['psi_p'], coef.delta, g['lam_n'][:, i])
    ok = bool(psi_n < g['psi_p'] and np.all(np.isfinite(per_seed) & (per_seed > 0)))
    spec = float(np.exp(np.mean(np.log(per_seed)))) if ok else None
    e_score = curves['e_score'].mean(0)[i]
    best = int(np.nanargmin(e_score)) if np.isfinite(e_score).any() else None
    out['tau_mem'][f'{psi_n:g}'] = {
        'measured': spec, 'measured_per_seed': [float(x) for x in per_seed] if ok else None,
        'predicted': pred if math.isfinite(pred) else None,
        'predicted_asymptotic': theory.asymptotic_tau_mem(coef, psi_n),
        'curve': crossing, 'curve_per_seed': crossing_per_seed, 'curve_threshold': float(level),
        'curve_modes': crossing_modes,
        'best_e_score': None if best is None else float(e_score[best]),
        'tau_best_e_score': None if best is None else float(times[best]),
        'final_loss_gen': float(gen[i, -1]),
    }
    measured.append(spec)
    predicted.append(pred if math.isfinite(pred) else None)
    curve.append(crossing)
    curve_modes.append(crossing_modes)
  if len(r.psi_n) >= 2:
    for name, values in (('tau_mem_exponent', measured), ('tau_mem_exponent_predicted', predicted),
                         ('tau_mem_exponent_curve', curve), ('tau_mem_exponent_modes', curve_modes)):
      try:
        fit = timescales.fit_power_law(list(r.psi_n), values)
        out[name] = fit['alpha']
        out[name + '_interval'] = [fit['alpha_lo'], fit['alpha_hi']]
      except ValueError:
        out[name] = None
    # Paper 1's fit of the best score error, min_tau E_score ~ 0.20 psi_n^-0.59.
    try:
      fit = timescales.fit_power_law(list(r.psi_n), [out['tau_mem'][f'{x:g}']['best_e_score'] for x in r.psi_n])
      out['best_e_score_fit'] = {'c': fit['c'], 'alpha': fit['alpha'], 'alpha_interval': [fit['alpha_lo'],
                                                                                          fit['alpha_hi']]}
    except ValueError:
      out['best_e_score_fit'] = None
  axis = _axis_scale(r, g['psi_p'])
  out['heatmap'] = {f'{tau:g}': [_log_interp(times * axis, gen[i], tau) for i in range(len(r.psi_n))]
                    for tau in r.heatmap_times}
  return out


def _axis_scale(r: ml_collections.ConfigDict, psi_p: float) -> float:
  """The factor from jaxdiff's time tau = k eta / d^2 to the figures' axis `rf.time_axis`: 1 ('jaxdiff') or
  d / psi_p ('authors': the k eta of the authors' script, whose A is ours / sqrt(p))."""
  return 1.0 if r.time_axis == 'jaxdiff' else r.d / psi_p


# ----------------------------------------------------------------------------------------------------------
# Figures


def spectrum_figure(path: str, lam: np.ndarray, grid: np.ndarray, rho: np.ndarray, coef: theory.Coefficients,
                    psi_p: float, psi_n: float, d: int) -> str:
  """Histogram of the eigenvalues of one U against rho, around rho_1 (left) and rho_2 (right).

  The p - n - d smallest eigenvalues (the point mass at s_t^2, spread at finite d) are left out of the
  histogram and drawn as a line with their theoretical weight.
  """
  plt = pyplot()
  p = lam.size
  n = round(psi_n * d)
  keep = np.sort(lam)[::-1][:min(p, n + d)]
  edges = theory.memorization_edges(coef, psi_p, psi_n)
  intervals = theory.support_intervals(grid, rho, rel_tol=1e-6)
  windows = []
  if edges is not None:
    windows.append((0.0, 1.5 * edges[1], r'memorization bulk $\rho_1$ (and $d$ modes near $s_t^2$)'))
  if intervals:
    windows.append((0.5 * intervals[-1][0], 1.3 * intervals[-1][1], r'generalization bulk $\rho_2$'))
  fig, axes = plt.subplots(1, len(windows), figsize=(5.5 * len(windows), 4), squeeze=False)
  for ax, (lo, hi, title) in zip(axes[0], windows):
    e = keep[(keep > lo) & (keep < hi)]
    bins = np.linspace(lo, hi, int(np.clip(e.size // 4, 10, 60)))
    counts, _ = np.histogram(e, bins)
    ax.stairs(counts / p / np.diff(bins), bins, fill=True, alpha=0.4, label=f'eigenvalues of U (d={d})')
    m = (grid > lo) & (grid < hi)
    ax.plot(grid[m], rho[m], 'k', lw=1.5, label='theory')
    if m.any() and rho[m].max() > 0:
      ax.set_ylim(0, 1.8 * rho[m].max())
    if lo <= coef.s2 <= hi:
      ax.axvline(coef.s2, color='C3', ls=':', label=f'point mass {theory.point_mass(psi_p, psi_n):.3f} at $s_t^2$')
    ax.set_xlabel(r'$\lambda$')
    ax.set_ylabel(r'$\rho(\lambda)$')
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
  fig.suptitle(rf'spectrum of U: $\psi_p$={psi_p:g}, $\psi_n$={psi_n:g}, t={coef.t:g}', fontsize=11)
  return save_figure(fig, path)


def losses_figure(path: str, g: dict[str, Any], r: ml_collections.ConfigDict, coef: theory.Coefficients) -> str:
  """L_train / L_test, L_gen (dotted: on the top n modes) and E_score against the training time on the axis
  `rf.time_axis` (top) and tau / tau_mem predicted (bottom; the same on both axes)."""
  plt = pyplot()
  times, curves = g['times'], g['curves']
  axis = _axis_scale(r, g['psi_p'])
  fig, axes = plt.subplots(2, 3, figsize=(15, 8))
  for i, psi_n in enumerate(r.psi_n):
    tm = theory.predicted_tau_mem(coef, g['psi_p'], psi_n)
    color = f'C{i % 10}'
    for row, x in enumerate((times * axis, times / tm if math.isfinite(tm) else times * math.nan)):
      mean = {k: v.mean(0)[i] for k, v in curves.items()}
      ax = axes[row]
      ax[0].plot(x, mean['loss_train'], color=color, label=rf'$\psi_n$={psi_n:g} train')
      ax[0].plot(x, mean['loss_test'], color=color, ls='--', label='test' if i == 0 else None)
      ax[1].plot(x, np.where(mean['loss_gen'] > 0, mean['loss_gen'], np.nan), color=color,
                 label=rf'$\psi_n$={psi_n:g}')
      ax[1].plot(x, np.where(mean['loss_gen_modes'] > 0, mean['loss_gen_modes'], np.nan), color=color, ls=':',
                 label='top n modes' if i == 0 else None)
      ax[2].plot(x, mean['e_score'], color=color, label=rf'$\psi_n$={psi_n:g}')
  positive = {1: np.any(curves['loss_gen'] > 0), 2: np.any(np.isfinite(curves['e_score']))}
  for row, xlabel in enumerate((TIME_LABELS[r.time_axis], r'$\tau / \tau_{mem}$ (predicted)')):
    for j, ylabel in enumerate(('L_train (solid), L_test (dashed)', 'L_gen = L_test - L_train',
                                'E_score' if positive[2] else 'E_score (unknown score: image data)')):
      ax = axes[row, j]
      if not ax.has_data():
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        continue
      ax.set_xscale('log')
      if j > 0 and positive[j]:
        ax.set_yscale('log')
      ax.set_xlabel(xlabel)
      ax.set_ylabel(ylabel)
    axes[row, 0].legend(fontsize=7)
  fig.suptitle(rf'random features: $\psi_p$={g["psi_p"]:g}, t={g["t"]:g}, d={r.d}, trainer={r.trainer}, '
               f'{r.num_seeds} seed(s)', fontsize=11)
  return save_figure(fig, path)


def phase_figure(path: str, summaries: list[dict[str, Any]], r: ml_collections.ConfigDict, t: float) -> str:
  """Heatmaps of L_gen over (psi_n, psi_p) at each of `heatmap_times`, for diffusion time t."""
  plt = pyplot()
  rows = [s for s in summaries if s['t'] == t]
  psi_p = [s['psi_p'] for s in rows]
  fig, axes = plt.subplots(1, len(r.heatmap_times), figsize=(5 * len(r.heatmap_times), 4), squeeze=False)
  for ax, tau in zip(axes[0], r.heatmap_times):
    z = np.array([s['heatmap'][f'{tau:g}'] for s in rows], np.float64)
    im = ax.imshow(np.log10(np.clip(z, 1e-6, None)), origin='lower', aspect='auto', cmap='viridis')
    ax.set_xticks(range(len(r.psi_n)), [f'{x:g}' for x in r.psi_n])
    ax.set_yticks(range(len(psi_p)), [f'{x:g}' for x in psi_p])
    ax.set_xlabel(r'$\psi_n = n/d$')
    ax.set_ylabel(r'$\psi_p = p/d$')
    ax.set_title(rf'$\log_{{10}}$ L_gen at {TIME_LABELS[r.time_axis]} = {tau:g}', fontsize=10)
    fig.colorbar(im, ax=ax)
  fig.suptitle(f'generalization gap, t={t:g}', fontsize=11)
  return save_figure(fig, path)


# ----------------------------------------------------------------------------------------------------------
# The run


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Train the sweep of `config.rf`, write metrics.jsonl, summary.json and figures; returns the summary."""
  config_lib.validate(config, num_devices=jax.device_count())
  r = config.rf
  mesh = sharding.make_mesh(config.mesh)
  rundir = RunDir(workdir).makedirs()
  rundir.write_config(config)
  t_start = time.time()
  taus = np.geomspace(r.tau_min, r.tau_max, r.num_times)
  n_max = max(round(x * r.d) for x in r.psi_n)
  if r.data == 'images':
    x_train, x_test = _image_data(config, max(round(x * r.d) for x in r.psi_n))
    d, var_diag = x_train.shape[1], None
    if d != r.d:
      raise ValueError(f"config field 'rf.d': the images have d = {d} pixels, set rf.d = {d}")
    x_train = x_train[:n_max]
    sigma_eigs = np.clip(np.linalg.eigvalsh(np.cov(x_train, rowvar=False).astype(np.float64)), 0, None)
  else:
    d, x_train, x_test = r.d, None, None
    var_diag = rf.covariance_diagonal(d, r.sigma_x, tuple(r.spectrum), r.spectrum_fraction)
    sigma_eigs = var_diag.astype(np.float64)
  data_var = float(sigma_eigs.mean())

  writer = rundir.metrics_writer(resume_step=-1, tensorboard=False)
  key = jax.random.key(config.seed)
  groups, summaries, coefs = [], [], []
  for i, psi_p in enumerate(r.psi_p):
    per_t = train_group(jax.random.fold_in(key, i), d=d, psi_p=float(psi_p), ts=[float(t) for t in r.t], r=r,
                        mesh=mesh, taus=taus, var_diag=var_diag, x_train=x_train, x_test=x_test)
    for g in per_t:
      psi_p, t = g['psi_p'], g['t']
      coef = theory.coefficients(r.activation, t, data_var)
      groups.append(g)
      coefs.append(coef)
      summaries.append(summarize_group(g, r, coef))
      for s in range(r.num_seeds):
        for li, psi_n in enumerate(r.psi_n):
          for k, tau in enumerate(g['times']):
            row = {'tau': float(tau), 'tau_authors': float(tau) * d / float(psi_p), 'psi_p': float(psi_p),
                   'psi_n': float(psi_n), 't': float(t), 'seed': s, 'p': g['p'], 'n': g['n'][li]}
            row.update({m: float(g['curves'][m][s, li, k]) for m in METRICS})
            writer.write_scalars(int(g['steps'][k]), row)
  writer.close()

  # The spectrum of the first model (seed 0, smallest psi_n) against the theory.
  g0, coef0 = groups[0], coefs[0]
  grid = theory.density_grid(coef0, g0['psi_p'], g0['lam0_psi_n'], r.theory_grid,
                             sigma_eigs=sigma_eigs, upper=1.2 * float(g0['lam0'].max()))
  t0 = time.time()
  rho = theory.spectral_density(grid, coef0, g0['psi_p'], g0['lam0_psi_n'], sigma_eigs=sigma_eigs)
  t_theory = time.time() - t0
  check = spectrum_check(g0['lam0'], coef0, g0['psi_p'], g0['lam0_psi_n'], d, grid, rho)
  check['theory_seconds'] = t_theory
  figures = {'spectrum': spectrum_figure(rundir.file('spectrum.png'), g0['lam0'], grid, rho, coef0,
                                         g0['psi_p'], g0['lam0_psi_n'], d)}
  for g, coef in zip(groups, coefs):
    name = 'losses.png' if len(groups) == 1 else f'losses_psi_p{g["psi_p"]:g}_t{g["t"]:g}.png'
    figures[name[:-4]] = losses_figure(rundir.file(name), g, r, coef)
  for t in r.t:
    name = 'phase.png' if len(r.t) == 1 else f'phase_t{t:g}.png'
    figures[name[:-4]] = phase_figure(rundir.file(name), summaries, r, float(t))

  first = summaries[0]
  summary = {
      'family': 'random_features', 'd': d, 'trainer': r.trainer, 'num_seeds': r.num_seeds,
      'tau_mem': first['tau_mem'], 'tau_mem_exponent': first.get('tau_mem_exponent'),
      'tau_mem_exponent_interval': first.get('tau_mem_exponent_interval'),
      'tau_mem_exponent_predicted': first.get('tau_mem_exponent_predicted'),
      'tau_mem_exponent_curve': first.get('tau_mem_exponent_curve'),
      'tau_mem_exponent_curve_interval': first.get('tau_mem_exponent_curve_interval'),
      'tau_mem_exponent_modes': first.get('tau_mem_exponent_modes'),
      'tau_mem_exponent_modes_interval': first.get('tau_mem_exponent_modes_interval'),
      'best_e_score_fit': first.get('best_e_score_fit'),
      'time_axes': {'tau': "jaxdiff's k eta / d^2 (every tau_mem here, rf.tau_min/tau_max)",
                    'tau_authors': "the authors' script's k eta = tau d / psi_p",
                    'figures': f'rf.time_axis = {r.time_axis!r} (losses.png top row, phase.png, heatmap_times)'},
      'tau_mem_definition': {
          'measured': ('psi_p / (2 Delta_t lambda_n(U)), lambda_n the n-th largest eigenvalue of each realized U '
                       '(the lower edge of the memorization bulk rho_1; paper 1 writes psi_p / (Delta_t lambda), '
                       'without the 2 of the flow exp(-2 Delta_t lambda tau / psi_p)), geometric mean over seeds'),
          'predicted': ('psi_p / (2 Delta_t lambda_min), lambda_min = s_t^2 + v_t^2 (1 - sqrt(psi_p / psi_n))^2 '
                        '(high-dimensional limit)'),
          'modes': ('first tau where the seed-averaged L_gen of the flow restricted to the top n eigenmodes of U '
                    'exceeds the same threshold as curve'),
          'curve': ('first tau where the seed-averaged L_gen = L_test - L_train exceeds '
                    + (f'{r.tau_mem_threshold:g}' if r.tau_mem_threshold > 0
                       else f'{r.tau_mem_fraction:g} x its value at tau_max')
                    + ' (jaxdiff.timescales, as for U-Net runs); grows slower than n at psi_p = 64: late L_gen '
                    'sits in the slow modes below rho_1 (relaxing on psi_p / (2 Delta_t s_t^2), whatever n); '
                    'like n for psi_p >> psi_n'),
      },
      'groups': summaries,
      'coefficients': [dict(t=c.t, delta=c.delta, a=c.a, b=c.b, v2=c.v2, s2=c.s2, mu0=c.mu0) for c in coefs],
      'spectrum_check': check,
      'figures': figures,
      'seconds': time.time() - t_start,
  }
  rundir.write_summary(summary)
  logging.info('random features: tau_mem exponent %s, summary in %s (%.1fs)', summary['tau_mem_exponent'],
               workdir, summary['seconds'])
  return summary


# ----------------------------------------------------------------------------------------------------------
# The experiment (the table's entry 'random_features'): its own trainer (a closed-form flow), shared writers.


class Result:
  """What `train` returns: the summary ({} never: the sweep always finishes)."""

  def __init__(self, summary: dict[str, Any]):
    self.summary = summary


class RandomFeaturesExperiment:
  """Family 'random_features': the random-features score model of paper 1 (SPEC section 3)."""

  section = 'rf'

  def default_section(self) -> ml_collections.ConfigDict:
    """Sizes are ratios to d (psi_p = p / d, psi_n = n / d)."""
    return ml_collections.ConfigDict(dict(
        d=100,                   # data dimension (images: taken from the data set)
        psi_p=(64.0,),           # p / d, one model size per value
        psi_n=(4.0, 8.0, 16.0, 32.0),  # n / d, nested training sets x[:n]
        t=(0.1,),                # OU diffusion times of the score being learned
        activation='tanh',
        data='gaussian',         # 'gaussian': N(0, Sigma); 'images': flattened config.data images
        sigma_x=1.0,             # Sigma = sigma_x^2 I ...
        spectrum=(),             # ... or a two-level spectrum (l1, l2) of variances
        spectrum_fraction=0.5,   # fraction of the d directions with variance l1
        num_seeds=1,             # independent (W, data, noise) draws, trained side by side (vmap)
        trainer='exact',         # 'exact' gradient flow, 'gd' or 'adam'
        learning_rate=0.0,       # gd / adam; 0 = auto (gd: half the stable step; adam: 1e-3)
        tau_min=0.1,             # evaluation times tau = steps * lr / d^2 (jaxdiff's axis), log-spaced
        tau_max=1e6,
        num_times=200,
        num_noise_draws=0,       # xi draws per point for U, V; 0 = the exact E_xi (Hermite expansion)
        hermite_order=8,
        quadrature_nodes=32,
        chunk_size=256,          # training points per step of the scan that builds U
        num_test=2048,           # fresh test points for L_test and E_score
        tau_mem_threshold=0.0,   # L_gen level that defines tau_mem; 0 = tau_mem_fraction x final L_gen
        tau_mem_fraction=0.5,
        heatmap_times=(1e3, 1e4),  # training times of the L_gen heatmap over (psi_n, psi_p), on rf.time_axis
        # The time axis of losses.png (top row) and of heatmap_times: 'jaxdiff' (tau = k eta / d^2, modes relax
        # as exp(-2 Delta_t lambda tau / psi_p)) or 'authors' (their script's k eta = tau d / psi_p, for their A
        # without the 1/sqrt(p)). metrics.jsonl has both: tau and tau_authors.
        time_axis='jaxdiff',
        theory_grid=1000,        # lambda points of the theoretical density (spectrum figure)
    ))

  def validate(self, config: ml_collections.ConfigDict) -> None:
    _validate_rf(config.rf)

  def train(self, config: ml_collections.ConfigDict, workdir: str, *, stop_at_step: int | None = None) -> Result:
    if stop_at_step is not None:
      raise ValueError('random_features: the closed-form sweep has no steps to stop at (stop_at_step)')
    return Result(run(config, workdir))

  def evaluate(self, config: ml_collections.ConfigDict, workdir: str, out_dir: str | None = None):
    raise ValueError("family 'random_features' has nothing to re-evaluate: a run solves the gradient flow in "
                     'closed form and already writes every evaluation time (rf.tau_min .. rf.tau_max) into '
                     f'{workdir}/metrics.jsonl; run it again with --mode=train and other rf.* fields instead')


def _validate_rf(r: ml_collections.ConfigDict) -> None:
  require(r.d >= 1, 'rf.d', f'must be >= 1, got {r.d}')
  for field in ('psi_p', 'psi_n', 't', 'heatmap_times'):
    values = tuple(r[field])
    require(len(values) >= 1 and all(isinstance(v, (int, float)) and v > 0 for v in values), f'rf.{field}',
             f'must be a non-empty tuple of positive numbers, got {values}')
  require(r.activation in RF_ACTIVATIONS, 'rf.activation', f'must be one of {RF_ACTIVATIONS}, got {r.activation!r}')
  require(r.data in RF_DATA, 'rf.data', f'must be one of {RF_DATA}, got {r.data!r}')
  require(r.sigma_x > 0, 'rf.sigma_x', f'must be positive, got {r.sigma_x}')
  require(len(r.spectrum) in (0, 2) and all(v > 0 for v in r.spectrum), 'rf.spectrum',
          f'must be () or two positive variances (l1, l2), got {tuple(r.spectrum)}')
  require(0 < r.spectrum_fraction < 1, 'rf.spectrum_fraction', f'must be in (0, 1), got {r.spectrum_fraction}')
  require(r.num_seeds >= 1, 'rf.num_seeds', f'must be >= 1, got {r.num_seeds}')
  require(r.trainer in RF_TRAINERS, 'rf.trainer', f'must be one of {RF_TRAINERS}, got {r.trainer!r}')
  require(r.learning_rate >= 0, 'rf.learning_rate', f'must be >= 0 (0 = auto), got {r.learning_rate}')
  require(0 < r.tau_min < r.tau_max, 'rf.tau_min', f'need 0 < tau_min < tau_max, got {r.tau_min}, {r.tau_max}')
  require(r.num_times >= 2, 'rf.num_times', f'must be >= 2, got {r.num_times}')
  require(r.num_noise_draws >= 0, 'rf.num_noise_draws', f'must be >= 0 (0 = exact), got {r.num_noise_draws}')
  require(r.hermite_order >= 1, 'rf.hermite_order', f'must be >= 1, got {r.hermite_order}')
  require(r.quadrature_nodes >= 2, 'rf.quadrature_nodes', f'must be >= 2, got {r.quadrature_nodes}')
  require(r.chunk_size >= 1, 'rf.chunk_size', f'must be >= 1, got {r.chunk_size}')
  require(r.num_test >= 1, 'rf.num_test', f'must be >= 1, got {r.num_test}')
  require(r.tau_mem_threshold >= 0, 'rf.tau_mem_threshold', f'must be >= 0, got {r.tau_mem_threshold}')
  require(0 < r.tau_mem_fraction < 1, 'rf.tau_mem_fraction', f'must be in (0, 1), got {r.tau_mem_fraction}')
  require(r.theory_grid >= 10, 'rf.theory_grid', f'must be >= 10, got {r.theory_grid}')
  require(r.time_axis in RF_TIME_AXES, 'rf.time_axis', f'must be one of {RF_TIME_AXES}, got {r.time_axis!r}')
  for psi_p in r.psi_p:
    require(round(psi_p * r.d) >= 1, 'rf.psi_p', f'psi_p * d = {psi_p} * {r.d} gives no features')
  for psi_n in r.psi_n:
    require(round(psi_n * r.d) >= 1, 'rf.psi_n', f'psi_n * d = {psi_n} * {r.d} gives no training points')
  require(len(set(r.psi_n)) == len(tuple(r.psi_n)), 'rf.psi_n', f'must not repeat values, got {tuple(r.psi_n)}')

EXPERIMENT = RandomFeaturesExperiment()
