"""The D3PM train step and sampler of paper 2's grammar diffusion (jaxdiff/experiments/d3pm.py), and a
vectorized ensemble of 4 training-set sizes against the same 4 runs one after another, in one process.

    python bench/d3pm_bench.py                                   # W = 128 and 1024, then the ensemble at W = 128
    python bench/d3pm_bench.py --widths=128 --steps=200 --samples=256 --ensemble_steps=200

Settings of configs/rhm_d3pm.py (v = 8, n_c = 8, m = 3, s = 2, L = 3, T = 200, Adam, batch 64, P = 1024)
at each width: train steps/s of a solo run (the shared trainer's compiled chunk, `train.loop = device`) and
samples/s of the ancestral sampler (200 network calls per sample, in one `lax.scan`). Ensemble: P in
{128, 256, 512, 1024} as one vmapped step against the four solo runs, in member-steps/s. Compilation is
excluded (one warm-up call each). W = 1024 is GPU work: on a CPU use few steps (`--steps_1024`,
`--samples_1024`). Measured results: bench/README.md ("RHM / D3PM").
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # configs/

from configs.rhm_d3pm import get_config  # noqa: E402
from jaxdiff import experiments  # noqa: E402

ENSEMBLE_P = (128, 256, 512, 1024)


def trainer_for(width: int, ns: tuple[int, ...] = (), n: int = 1024):
  c = get_config()
  c.d3pm.width = width
  c.data.n, c.ensemble.n = n, ns
  c.eval.enabled = False
  c.train.loop = 'device'
  exp = experiments.get('d3pm')
  return exp.trainer(c, exp.prepare(c))


def time_train(trainer, steps: int) -> float:
  """Seconds for `steps` steps (after a warm-up chunk that compiles)."""
  trainer.train(1, True)
  jax.block_until_ready(trainer.state.params)
  t = time.perf_counter()
  trainer.train(steps, True)
  jax.block_until_ready(trainer.state.params)
  return time.perf_counter() - t


def time_sampler(trainer, num: int) -> float:
  family, graphdef = trainer.family, trainer.graphdef
  sample = jax.jit(lambda p, k: family.sample(nnx.merge(graphdef, p), k, num))
  jax.block_until_ready(sample(trainer.state.params, jax.random.key(0)))
  t = time.perf_counter()
  jax.block_until_ready(sample(trainer.state.params, jax.random.key(1)))
  return time.perf_counter() - t


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--widths', default='128,1024')
  p.add_argument('--steps', type=int, default=200, help='train steps timed at W = 128 (and widths < 1024)')
  p.add_argument('--samples', type=int, default=256, help='samples timed at W = 128')
  p.add_argument('--steps_1024', type=int, default=5)
  p.add_argument('--samples_1024', type=int, default=8)
  p.add_argument('--ensemble_width', type=int, default=128)
  p.add_argument('--ensemble_steps', type=int, default=200, help='0: skip the ensemble comparison')
  args = p.parse_args(argv)
  print(f'jax {jax.__version__}, {jax.devices()}')
  for w in (int(x) for x in args.widths.split(',') if x):
    steps, num = (args.steps_1024, args.samples_1024) if w >= 1024 else (args.steps, args.samples)
    tr = trainer_for(w)
    dt = time_train(tr, steps)
    ds = time_sampler(tr, num)
    print(f'W={w} ({tr.num_params:,} parameters): train {steps / dt:.2f} steps/s ({dt / steps * 1e3:.1f} ms/step, '
          f'batch 64); sampler {num / ds:.2f} samples/s ({num} samples x 200 levels in {ds:.2f} s)')
  if args.ensemble_steps:
    w, steps = args.ensemble_width, args.ensemble_steps
    t_ens = time_train(trainer_for(w, ENSEMBLE_P), steps)
    t_seq = sum(time_train(trainer_for(w, (), n), steps) for n in ENSEMBLE_P)
    member_steps = len(ENSEMBLE_P) * steps
    print(f'ensemble P={ENSEMBLE_P} at W={w}, {steps} steps each: vectorized {member_steps / t_ens:.1f} '
          f'member-steps/s ({t_ens:.2f} s), one after another {member_steps / t_seq:.1f} member-steps/s '
          f'({t_seq:.2f} s): {t_seq / t_ens:.2f}x')


if __name__ == '__main__':
  main()
