"""Time the full memorization metric against a bare matrix product of the same shape.

The metric (jaxdiff.metrics.memorization.memorization_metrics: chunked fast pass with a two-level running top-k, exact
re-ranking of the candidates, ratios, f_mem and its 1000-resample bootstrap) does the work of one
[M, D] x [D, N] matrix product plus O(M N) selection; the target is at most 1.5x the bare product.

Paper scale (issue 3), on an accelerator:
  python bench/memorization_bench.py                       # M = 10,000 samples, N = 32,768 images of 32x32x1
A CPU-sized run:
  python bench/memorization_bench.py --num_samples=1000 --num_train=4096

Measured results: bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from jaxdiff.metrics import memorization  # pylint: disable=g-import-not-at-top

PRECISIONS = {'default': None, 'high': jax.lax.Precision.HIGH, 'highest': jax.lax.Precision.HIGHEST}


def _time(fn, *args, repeats: int) -> float:
  """Median wall time in seconds of `fn(*args)` after one compile-and-run."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def main(argv=None) -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument('--num_samples', type=int, default=10_000)
  ap.add_argument('--num_train', type=int, default=32_768)
  ap.add_argument('--image_size', type=int, default=32)
  ap.add_argument('--channels', type=int, default=1)
  ap.add_argument('--chunk_size', type=int, nargs='+', default=[memorization.CHUNK_SIZE],
                  help='training images per matmul chunk (several values: one row each)')
  ap.add_argument('--group_size', type=int, nargs='+', default=[memorization.GROUP_SIZE],
                  help='group size of the two-level selection (several values: one row each)')
  ap.add_argument('--num_candidates', type=int, default=memorization.NUM_CANDIDATES)
  ap.add_argument('--sample_chunk_size', type=int, default=None)
  ap.add_argument('--precision', choices=sorted(PRECISIONS), default='default',
                  help='matmul precision, the same for the metric and the bare product')
  ap.add_argument('--repeats', type=int, default=5)
  args = ap.parse_args(argv)

  m, n = args.num_samples, args.num_train
  d = args.image_size * args.image_size * args.channels
  precision = PRECISIONS[args.precision]
  rng = np.random.default_rng(0)
  train = rng.random((n, args.image_size, args.image_size, args.channels), dtype=np.float32) - 0.5
  # Half the samples are near-copies of training images, half are fresh: both decisions are exercised.
  copies = train[rng.integers(0, n, m // 2)] + 0.01 * rng.standard_normal(
      (m // 2,) + train.shape[1:]).astype(np.float32)
  fresh = rng.random((m - m // 2,) + train.shape[1:], dtype=np.float32) - 0.5
  samples = jnp.asarray(np.concatenate([copies, fresh]))
  train = jnp.asarray(train)
  key = jax.random.key(0)

  x2, y2 = samples.reshape(m, d), train.reshape(n, d)
  bare = jax.jit(lambda a, b: jnp.dot(a, b.T, precision=precision))
  t_bare = _time(bare, x2, y2, repeats=args.repeats)

  print(f'device: {jax.devices()[0].device_kind} x{jax.device_count()} ({jax.default_backend()}), '
        f'jax {jax.__version__}, precision={args.precision}')
  print(f'M = {m} samples, N = {n} training images, D = {d}; num_candidates = {args.num_candidates}')
  flops = 2.0 * m * n * d
  rows = [('bare matmul [M,D]x[D,N]', '-', t_bare)]
  f_mem = None
  for chunk, group in [(c, g) for c in args.chunk_size for g in args.group_size]:
    kw = dict(chunk_size=chunk, group_size=group, num_candidates=args.num_candidates,
              sample_chunk_size=args.sample_chunk_size, precision=precision)
    metric = jax.jit(lambda s, t, k, kw=kw: memorization.memorization_metrics(s, t, k, **kw))
    nn = jax.jit(lambda s, t, kw=kw: memorization.nearest_two(s, t, **kw))
    tag = f'{chunk}/{group}'
    rows.append(('nearest_two (fast + exact)', tag, _time(nn, samples, train, repeats=args.repeats)))
    rows.append(('full memorization metric', tag, _time(metric, samples, train, key, repeats=args.repeats)))
    out = metric(samples, train, key)
    f_mem = (float(out['f_mem']), float(out['f_mem_lo']), float(out['f_mem_hi']), int(out['num_uncertified']))
  memorized = out['memorized']
  boot = jax.jit(lambda a, k: memorization.f_mem_bootstrap(a, k))
  rows.append(('f_mem_bootstrap alone', '-', _time(boot, memorized, key, repeats=args.repeats)))

  print(f'{"what":<30} {"chunk/group":>11} {"time (ms)":>10} {"x matmul":>9} {"TFLOP/s":>8}')
  for name, tag, t in rows:
    print(f'{name:<30} {tag:>11} {1e3 * t:>10.2f} {t / t_bare:>9.2f} {flops / t / 1e12:>8.2f}')
  print(f'f_mem = {f_mem[0]:.4f} [{f_mem[1]:.4f}, {f_mem[2]:.4f}] (expected 0.5: half are planted copies), '
        f'uncertified samples: {f_mem[3]}')


if __name__ == '__main__':
  main()
