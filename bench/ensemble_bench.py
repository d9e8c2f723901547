"""Vectorized ensemble vs one after another: E Gaussian-mixture MLPs trained as one `vmap`ped step against
the same E models trained solo, one after another (jaxdiff/ensemble.py, jaxdiff/gmm.py).

    python bench/ensemble_bench.py                       # E = 8: n in {64, 128, 256, 512} x 2 seeds, W = 128
    python bench/ensemble_bench.py --width=64 --batch=0 --steps=200   # full batch (members padded to max n)

Both sides run the same compiled chunk (`ensemble.make_train_chunk`, `--loop`, `--chunk` steps per call):
the ensemble with E members, each solo run with one. Compilation is excluded (one warm-up chunk each).
Throughput is member-steps per second: E x steps / seconds for the ensemble, the same steps summed over the
E solo runs. Target: >= 4x at E = 8.

Measured (member-steps/s, vectorized vs one after another):
- one H200, JAX 0.11.2: default 46,340 vs 5,404: 8.6x. Paper-size full batch (--n=512,1024,2048,4096
  --batch=0 --width=256): 3,386 vs 2,450: 1.4x (compute-bound, and the padding to n = 4096 doubles the rows).
- 2-core CPU, JAX 0.10.2: default 356 vs 328: 1.1x; --width=32 --batch=32: 1.2x; --width=64 --batch=0
  --n=32,64,128,256: 0.7x. One small model already keeps both cores busy (XLA:CPU threads its matrix
  products), so batching members gains only dispatch overhead there; the gain is on accelerators.
"""

from __future__ import annotations

import argparse
import time

import jax

from jaxdiff import config as config_lib
from jaxdiff import gmm


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


def time_trainer(trainer: gmm.Trainer, steps: int, chunk: int) -> float:
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
  args = parser.parse_args()
  ns = [int(v) for v in args.n.split(',')]
  config = make_config(args, ns)
  config_lib.validate(config)

  vec = gmm.Trainer(config)
  num = len(vec.members)
  t_vec = time_trainer(vec, args.steps, args.chunk)
  t_seq = 0.0
  for m in vec.members:
    solo = gmm.Trainer(gmm.member_config(config, m))
    t_seq += time_trainer(solo, args.steps, args.chunk)

  vec_rate = num * args.steps / t_vec
  seq_rate = num * args.steps / t_seq
  batch = 'full' if args.batch <= 0 else args.batch
  print(f'JAX {jax.__version__} on {jax.devices()[0].device_kind} ({jax.default_backend()}), '
        f'{jax.device_count()} device(s)')
  print(f'E = {num} GMM MLPs (d={args.d}, W={args.width}, {gmm.parameter_count(vec.problem)} parameters each, '
        f'n = {ns} x {args.seeds} seeds, batch {batch}, Adam), {args.steps} steps each, '
        f'loop={args.loop}, {args.chunk} steps per call')
  print(f'  vectorized ensemble: {t_vec:8.2f} s  {vec_rate:9.1f} member-steps/s')
  print(f'  one after another:   {t_seq:8.2f} s  {seq_rate:9.1f} member-steps/s')
  print(f'  speedup: {vec_rate / seq_rate:.2f}x (target >= 4x)')


if __name__ == '__main__':
  main()
