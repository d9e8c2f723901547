"""Vectorized ensemble vs one after another: E Gaussian-mixture MLPs (or small U-Nets) trained as one
`vmap`ped step against the same E models trained solo, one after another (jaxdiff/train/steps.py,
jaxdiff/experiments/gmm.py, jaxdiff/experiments/unet.py).

    python bench/ensemble_bench.py                       # E = 8: n in {64, 128, 256, 512} x 2 seeds, W = 128
    python bench/ensemble_bench.py --width=64 --batch=0 --steps=200   # full batch (members padded to max n)
    python bench/ensemble_bench.py --family=unet --n=8,16,32,64 --width=8 --batch=64 --steps=100
        # U-Nets of configs/quickstart.py (16x16 digits), --width as model.width

Both sides run the same compiled chunk (`make_train_chunk`, `--loop`, `--chunk` steps per call):
the ensemble with E members, each solo run with one. Compilation is excluded (one warm-up chunk each).
Throughput is member-steps per second: E x steps / seconds for the ensemble, the same steps summed over the
E solo runs. Target: >= 4x at E = 8.

Measured results: bench/README.md. The gain is on accelerators: on a CPU one small model already keeps the
cores busy (XLA:CPU threads its matrix products), so batching members saves only dispatch overhead; at paper
size (full batch, n up to 4096) the step is compute-bound and the padding to the largest n adds rows.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # configs/

from jaxdiff import config as config_lib
from jaxdiff import experiments
from jaxdiff.experiments import gmm


def make_config(args, ns) -> config_lib.ml_collections.ConfigDict:
  c = config_lib.default_config()
  c.family = 'gmm'
  c.gmm.d = args.d
  c.gmm.n = tuple(ns)
  c.gmm.width = args.width
  c.gmm.num_seeds = args.seeds
  c.gmm.kl_samples = 0
  c.gmm.quality = 'sw'
  c.optimizer.name = 'adam'
  c.optimizer.learning_rate = 1e-3
  c.train.batch_size = args.batch if args.batch > 0 else max(ns)
  c.train.loop = args.loop
  return c


def make_unet_config(args, ns) -> config_lib.ml_collections.ConfigDict:
  from configs.quickstart import get_config  # pylint: disable=g-import-not-at-top
  c = get_config()
  c.ensemble.n = tuple(ns)
  c.ensemble.num_seeds = args.seeds
  c.model.width = args.width
  c.train.batch_size = args.batch if args.batch > 0 else max(ns)
  c.train.loop = args.loop
  c.eval.enabled = False
  return c


def time_trainer(trainer, steps: int, chunk: int) -> float:
  trainer.train(chunk)          # compile + warm up
  jax.block_until_ready(trainer.state)
  t0 = time.perf_counter()
  done = 0
  while done < steps:
    k = min(chunk, steps - done)
    trainer.train(k, reset=False)
    done += k
  jax.block_until_ready(trainer.state)
  return time.perf_counter() - t0


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--n', default='64,128,256,512', help='training-set sizes (x --seeds members)')
  parser.add_argument('--seeds', type=int, default=2)
  parser.add_argument('--width', type=int, default=128)
  parser.add_argument('--d', type=int, default=8)
  parser.add_argument('--batch', type=int, default=64, help='batch size (0: full batch)')
  parser.add_argument('--steps', type=int, default=400, help='timed steps per model')
  parser.add_argument('--chunk', type=int, default=100, help='steps per compiled call')
  parser.add_argument('--loop', default='device', choices=['device', 'host'])
  parser.add_argument('--family', default='gmm', choices=['gmm', 'unet'])
  args = parser.parse_args()
  ns = [int(v) for v in args.n.split(',')]
  unet = args.family == 'unet'
  config = make_unet_config(args, ns) if unet else make_config(args, ns)
  config_lib.validate(config)

  if unet:
    experiment = experiments.get('ddpm')
    mesh = experiment.prepare(config)
    vec = experiment.trainer(config, mesh)
    solo_trainer = lambda m: experiment.trainer(_solo_unet_config(experiment, config, m), mesh)
    params = vec.num_params
  else:
    vec = gmm.Trainer(config)
    solo_trainer = lambda m: gmm.Trainer(gmm.member_config(config, m))
    params = gmm.parameter_count(vec.problem)
  num = len(vec.members)
  t_vec = time_trainer(vec, args.steps, args.chunk)
  t_seq = 0.0
  for m in vec.members:
    t_seq += time_trainer(solo_trainer(m), args.steps, args.chunk)

  vec_rate = num * args.steps / t_vec
  seq_rate = num * args.steps / t_seq
  batch = 'full' if args.batch <= 0 else args.batch
  print(f'JAX {jax.__version__} on {jax.devices()[0].device_kind} ({jax.default_backend()}), '
        f'{jax.device_count()} device(s)')
  if unet:
    what = (f'U-Nets (16x16 digits, W={args.width}, {params} parameters each, '
            f'n = {ns} x {args.seeds} seeds, batch min(n, {batch}), Adam)')
  else:
    what = (f'GMM MLPs (d={args.d}, W={args.width}, {params} parameters each, '
            f'n = {ns} x {args.seeds} seeds, batch {batch}, Adam)')
  print(f'E = {num} {what}, {args.steps} steps each, loop={args.loop}, {args.chunk} steps per call')
  print(f'  vectorized ensemble: {t_vec:8.2f} s  {vec_rate:9.1f} member-steps/s')
  print(f'  one after another:   {t_seq:8.2f} s  {seq_rate:9.1f} member-steps/s')
  print(f'  speedup: {vec_rate / seq_rate:.2f}x (target >= 4x)')


def _solo_unet_config(experiment, config, m):
  """A one-member ensemble of member m: the solo run's model and data through the same code path."""
  c = experiment.member_config(config, m)
  c.ensemble.n = (m.n,)
  return c


if __name__ == '__main__':
  main()
