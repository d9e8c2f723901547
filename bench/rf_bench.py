"""Random-features model: the vectorized exact trainer against a plain gradient-descent loop, and the theory.

    PYTHONPATH=. python bench/rf_bench.py                      # CPU default: d = 16, 2 seeds
    PYTHONPATH=. python bench/rf_bench.py --d=100 --seeds=5    # the rf_timescales sweep at paper scale (GPU)

(Run from the repository root; PYTHONPATH=. makes `configs` importable.)

Prints, in one run:
1. the wall time of the vectorized exact trainer for the rf_timescales sweep (psi_p = 64, psi_n in
   {4, 8, 16, 32}, t = 0.1, 200 evaluation times up to tau_max): building U, V for all seeds x psi_n (vmap,
   one pass over the largest training set), the float64 eigendecompositions, and the losses at all times;
   the first call (with compilation) and a second, warm call;
2. a straightforward loop of gradient-descent steps (one jitted step per Python iteration, at half the
   stable learning rate) for ONE model (psi_n = 4) reaching the same final time tau_max: the steps needed
   are k = tau_max d^2 / eta; at most --gd_steps are timed and the rest is extrapolated (marked 'est.');
3. the theory solver (Stieltjes equations, Newton with continuation) on 1000 grid points, cold and warm.
"""

from __future__ import annotations

import argparse
import functools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from configs.rf_timescales import get_config
from jaxdiff import theory
from jaxdiff.experiments import random_features as rf_experiment
from jaxdiff.models import random_features as rf


def _time(fn, *args):
  t0 = time.perf_counter()
  out = jax.block_until_ready(fn(*args))
  return out, time.perf_counter() - t0


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument('--d', type=int, default=16)
  ap.add_argument('--seeds', type=int, default=2)
  ap.add_argument('--psi_p', type=float, default=64.0)
  ap.add_argument('--t', type=float, default=0.1)
  ap.add_argument('--tau_max', type=float, default=1e6)
  ap.add_argument('--times', type=int, default=200)
  ap.add_argument('--gd_steps', type=int, default=2000, help='at most this many GD steps are timed')
  ap.add_argument('--grid', type=int, default=1000)
  args = ap.parse_args()

  c = get_config()
  r = c.rf
  r.d, r.num_seeds, r.psi_p, r.t, r.tau_max, r.num_times = args.d, args.seeds, (args.psi_p,), (args.t,), \
      args.tau_max, args.times
  d, p = r.d, round(args.psi_p * r.d)
  n_list = sorted(round(x * d) for x in r.psi_n)
  taus = jnp.asarray(np.geomspace(r.tau_min, r.tau_max, r.num_times), jnp.float32)
  print(f'JAX {jax.__version__} on {jax.devices()}; d={d}, p={p}, n={n_list}, seeds={args.seeds}, '
        f'{args.times} times to tau={args.tau_max:g}')

  # 1. The vectorized exact trainer.
  var = jnp.ones(d)
  build = jax.jit(jax.vmap(functools.partial(rf_experiment.build_problems, d=d, p=p, n_list=n_list,
                                             t=args.t, r=r, var_diag=var, x_train=None, x_test=None)))
  flatten = lambda probs: jax.tree.map(lambda a: a.reshape((-1,) + a.shape[2:]), probs)
  eigh = jax.jit(rf.eigh64)
  flow = jax.jit(lambda prob, eig: jax.vmap(rf.flow_losses, (0, None))(jax.vmap(rf.solve_flow)(prob, eig), taus))
  keys = jax.random.split(jax.random.key(0), args.seeds)
  for label in ('cold (with compilation)', 'warm'):
    (probs, _), t_build = _time(build, keys)
    flat = flatten(probs)
    eig, t_eig = _time(eigh, flat.u)
    curves, t_flow = _time(flow, flat, eig)
    total = t_build + t_eig + t_flow
    print(f'exact trainer, {args.seeds * len(n_list)} models x {args.times} times, {label}: {total:.2f} s '
          f'(build U,V {t_build:.2f} s, float64 eigh {t_eig:.2f} s, losses {t_flow:.2f} s)')
  prob = jax.tree.map(lambda a: a[0], flat)   # seed 0, psi_n = 4

  # 2. A straightforward GD loop for one model to the same final time.
  lr = float(rf.stable_learning_rate(prob, 0.5))
  need = int(math.ceil(args.tau_max * d * d / lr))
  step = jax.jit(lambda a: a - lr * rf.grad_train_loss(a, prob))
  a = jax.block_until_ready(step(jnp.zeros((d, p), jnp.float32)))   # compile
  k = min(need, args.gd_steps)
  t0 = time.perf_counter()
  for _ in range(k):
    a = step(a)
  a = jax.block_until_ready(a)
  t_gd = (time.perf_counter() - t0) * need / k
  mark = '' if k == need else f' (est. from {k} steps)'
  print(f'GD loop, 1 model, {need} steps of eta={lr:.3g} (d tau = {lr / d ** 2:.3g}) to tau={args.tau_max:g}: '
        f'{t_gd:.1f} s{mark}')
  print(f'  vs the exact trainer for all {args.seeds * len(n_list)} models at {args.times} times: '
        f'{t_gd / total:.0f}x')

  # 3. The theory solver on the grid of the spectrum figure.
  coef = theory.coefficients(r.activation, args.t)
  grid = theory.density_grid(coef, args.psi_p, r.psi_n[0], args.grid)
  for label in ('cold', 'warm'):
    t0 = time.perf_counter()
    rho = theory.spectral_density(grid, coef, args.psi_p, r.psi_n[0])
    print(f'theory solver, {args.grid} points, {label}: {time.perf_counter() - t0:.2f} s '
          f'(mass {np.trapezoid(rho, grid) + theory.point_mass(args.psi_p, r.psi_n[0]):.4f})')


if __name__ == '__main__':
  main()
