"""Time `jaxdiff.memcheck` (the check of anyone's samples) against a bare matrix product of the same shape.

Raw 0-255 pixel values (as memcheck reads image files), half the samples near-copies of training images. The
check (`memcheck.check`: blocks of samples, exact nearest two, ratios, f_mem with its bootstrap interval) and
the bare [M, D] x [D, N] product are timed in the same run; the ratio is what the check costs beyond the one
product it cannot avoid.

    python bench/memcheck_bench.py                                  # 10,000 samples vs 50,000 images, 32x32x3
    python bench/memcheck_bench.py --num_samples=1000 --num_train=5000  # a quick CPU run

Measured results: bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from jaxdiff import memcheck  # pylint: disable=g-import-not-at-top


def main(argv=None) -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument('--num_samples', type=int, default=10_000)
  ap.add_argument('--num_train', type=int, default=50_000)
  ap.add_argument('--image_size', type=int, default=32)
  ap.add_argument('--channels', type=int, default=3)
  ap.add_argument('--block_size', type=int, default=1024, help="memcheck's samples per compiled call")
  args = ap.parse_args(argv)

  m, n = args.num_samples, args.num_train
  shape = (args.image_size, args.image_size, args.channels)
  d = int(np.prod(shape))
  rng = np.random.default_rng(0)
  train = np.floor(256 * rng.random((n, *shape), dtype=np.float32))
  copies = np.clip(train[rng.integers(0, n, m // 2)] + rng.integers(-3, 4, (m // 2, *shape)), 0, 255)
  samples = np.concatenate([copies, np.floor(256 * rng.random((m - m // 2, *shape), dtype=np.float32))])
  samples = samples.astype(np.float32)

  x, y = jnp.asarray(samples.reshape(m, d)), jnp.asarray(train.reshape(n, d))
  bare = jax.jit(lambda a, b: a @ b.T)
  jax.block_until_ready(bare(x, y))
  t0 = time.perf_counter()
  jax.block_until_ready(bare(x, y))
  t_bare = time.perf_counter() - t0

  memcheck.check(samples[:args.block_size], train, num_resamples=1000, block_size=args.block_size)  # compile
  t0 = time.perf_counter()
  report = memcheck.check(samples, train, num_resamples=1000, block_size=args.block_size)
  t_check = time.perf_counter() - t0

  print(f'device: {jax.devices()[0].device_kind} x{jax.device_count()} ({jax.default_backend()}), '
        f'jax {jax.__version__}')
  print(f'M = {m} samples, N = {n} training images, D = {d} ({"x".join(map(str, shape))}, raw 0-255)')
  print(f'{"what":<34} {"time (s)":>9} {"x matmul":>9}')
  print(f'{"bare matmul [M,D]x[D,N]":<34} {t_bare:>9.2f} {1.0:>9.2f}')
  print(f'{"memcheck.check (blocks of " + str(args.block_size) + ")":<34} {t_check:>9.2f} {t_check / t_bare:>9.2f}')
  print(f"f_mem = {report['f_mem']:.4f} [{report['f_mem_lo']:.4f}, {report['f_mem_hi']:.4f}] (expected 0.5), "
        f"searched exhaustively: {report['num_uncertified']}")


if __name__ == '__main__':
  main()
