"""Time to generate samples with DDIM from the paper-1 U-Net (issue 3: 10,000 samples, 100 steps, W = 32).

    python bench/sampling_bench.py                                   # accelerator: 10,000 samples, W = 32
    python bench/sampling_bench.py --num_samples=256 --widths=8      # CPU-sized

Uses the evaluator's own compiled sampler (batches of --batch, sharded over all devices), with random
weights: the cost of sampling does not depend on them. Prints seconds per run, samples/s and network
evaluations (NFE) per second.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import types

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
from flax import nnx  # pylint: disable=g-import-not-at-top

from jaxdiff import evaluators, sharding  # pylint: disable=g-import-not-at-top
from jaxdiff.config import default_config  # pylint: disable=g-import-not-at-top
from jaxdiff.experiments.unet import DDPM  # pylint: disable=g-import-not-at-top


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--widths', default='32')
  p.add_argument('--num_samples', type=int, default=10_000)
  p.add_argument('--batch', type=int, default=2_500, help='samples per compiled call')
  p.add_argument('--steps', type=int, default=100, help='DDIM steps')
  p.add_argument('--image_size', type=int, default=32)
  args = p.parse_args()
  print(f'JAX {jax.__version__} on {jax.devices()[0].platform}: {jax.devices()[0].device_kind} '
        f'x{jax.device_count()}; {args.num_samples} samples of {args.image_size}x{args.image_size}x1, '
        f'DDIM {args.steps} steps, batches of {args.batch}')
  print(f"{'W':>3} {'compile+1st s':>14} {'s/run':>8} {'samples/s':>10} {'NFE img/s':>10}")
  for w in [int(x) for x in args.widths.split(',')]:
    c = default_config()
    c.model.width = w
    c.data.image_size = args.image_size
    c.diffusion.sample_steps = args.steps
    mesh = sharding.make_mesh(c.mesh)
    # One batch per `generate` call (a multiple of the devices, as the evaluator's batches are); no evaluator
    # (eval.metrics empty): only the sampler is compiled.
    n_data = mesh.shape[sharding.DATA]
    batch = min(args.batch, args.num_samples)
    batch = max(n_data, batch - batch % n_data)
    c.eval.num_samples = c.eval.sample_batch_size = batch
    c.eval.metrics = ()
    value_range = (-0.5, 0.5)
    family = DDPM(c, (args.image_size, args.image_size, 1), value_range)
    graphdef, params = nnx.split(family.init(jax.random.key(0)), nnx.Param)
    data = types.SimpleNamespace(value_range=value_range, scale=value_range[1] - value_range[0])
    sampler = evaluators.Evaluation(c, family, graphdef, data, mesh).generate
    runs = -(-args.num_samples // batch)
    t0 = time.perf_counter()
    jax.block_until_ready(sampler(params, jax.random.PRNGKey(0)))
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = [sampler(params, jax.random.PRNGKey(i + 1)) for i in range(runs)]
    jax.block_until_ready(out)
    sec = time.perf_counter() - t0
    n = runs * batch
    print(f'{w:>3} {first:>14.2f} {sec:>8.2f} {n / sec:>10.1f} {n * args.steps / sec:>10.0f}', flush=True)


if __name__ == '__main__':
  main()
