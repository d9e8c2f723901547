"""Training throughput of the paper-1 U-Net: seconds per step, images/s and FLOP/s, K=1 vs K=32.

    python bench/train_throughput.py                      # W in {8, 16, 32}, 32x32x1, batch 64, Adam
    python bench/train_throughput.py --widths=8 --steps=64
    python bench/train_throughput.py --torch_python=/tmp/torchenv/bin/python   # + PyTorch, same run

Each width is timed, in the same run, with the 'device' loop at 1 step per dispatch and at K steps per
dispatch (one `lax.fori_loop` call), so the dispatch overhead shows as their ratio, and with the 'host' loop
(one compiled step dispatched per step). FLOPs per step come from XLA's cost analysis of one lowered train
step (before the backend's passes: library calls such as cuDNN's are counted), and a large matmul timed in the
same run gives the machine's practical peak, hence a floor on the step time. Reference: issue 2 quotes 0.97 s,
1.14 s and 1.57 s per step for paper 1's PyTorch code at W = 8, 16, 32, batch 64, on a 2-core CPU (the
"quoted" column). With `--torch_python` (a Python that has torch) the same network in PyTorch
(bench/torch_unet_baseline.py) is timed in the same run, before the JAX timings, and the table compares
against it too; on a CUDA GPU PyTorch runs on the GPU. Measured results: bench/README.md.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import time

import jax
import jax.numpy as jnp
from flax import nnx

from jaxdiff import sharding
from jaxdiff.config import default_config
from jaxdiff.experiments.unet import DDPM
from jaxdiff.train import steps as train_steps

PYTORCH_CPU_SEC = {8: 0.97, 16: 1.14, 32: 1.57}


def bench_width(width: int, batch: int, k: int, steps: int, image_size: int) -> dict:
  c = default_config()
  c.model.width = width
  c.data.image_size = image_size
  c.optimizer.name = 'adam'
  c.optimizer.learning_rate = 1e-4
  mesh = sharding.make_mesh(c.mesh)
  family = DDPM(c, (image_size, image_size, 1))
  tx = train_steps.make_optimizer(c.optimizer)
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: family.init(jax.random.key(0))), nnx.Param)
  loss_fn = train_steps.network_loss_fn(family.losses, graphdef)
  key = jax.random.key_data(jax.random.key(0))   # seed 0, as a solo run with config.seed = 0
  state = train_steps.init_state(train_steps.network_init_fn(family.init), tx, key)
  rep = sharding.replicated(mesh)
  state_sharding = train_steps.state_sharding(state, mesh)
  state = jax.device_put(state, state_sharding)
  n = max(4 * batch, 256)
  data = jax.device_put({'x': jax.random.normal(jax.random.PRNGKey(0), (n, image_size, image_size, 1)),
                         'y': jnp.zeros((n,), jnp.int32)}, rep)

  one = jax.jit(functools.partial(train_steps.train_step, loss_fn=loss_fn, tx=tx, batch_size=batch,
                                  ema_decay=0.0, batch_sharding=sharding.batch_sharded(mesh)),
                compiler_options=family.compiler_options)
  flops = step_flops(one.lower(state, data, None))

  rows = {}
  for loop, per_dispatch in (('device', 1), ('device', k), ('host', k)):
    chunk = train_steps.make_train_chunk(loss_fn=loss_fn, tx=tx, batch_size=batch, loop=loop, ema_decay=0.0,
                                         compiler_options=family.compiler_options, mesh=mesh,
                                         shardings=state_sharding)
    # Warm up (compiles once: the trip count is an argument), then time `steps` steps.
    state = chunk(state, data, None, jnp.int32(per_dispatch), jnp.bool_(True))
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    done = 0
    while done < steps:
      state = chunk(state, data, None, jnp.int32(per_dispatch), jnp.bool_(False))
      done += per_dispatch
    jax.block_until_ready(state)
    rows[f'{loop}_k{per_dispatch}'] = (time.perf_counter() - t0) / done
  return {'flops': flops, **rows}


def _flops(cost) -> float:
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get('flops', float('nan'))) if cost else float('nan')


def step_flops(lowered) -> float:
  """FLOPs of one train step: XLA's cost analysis of the program as lowered, before the backend's passes.

  The compiled program's analysis does not count work in library calls: on a GPU the convolutions become
  cuDNN custom calls and drop out of the count (the CPU, where convolutions stay HLO convolutions, counts the
  same either way; numbers in bench/README.md).
  """
  try:
    return _flops(lowered.cost_analysis())
  except Exception:  # pylint: disable=broad-except  (a backend without pre-compilation cost analysis)
    return _flops(lowered.compile().cost_analysis())


def matmul_peak(n: int = 2048, reps: int = 5) -> float:
  """FLOP/s of a large f32 matrix product on the default device: what this machine can do at best, so the
  table can show the fastest a step of F FLOPs could possibly run (F / peak)."""
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
  mm = jax.jit(lambda x: x @ x)
  jax.block_until_ready(mm(a))
  best = float('inf')
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(mm(a))
    best = min(best, time.perf_counter() - t0)
  return 2 * n ** 3 / best


def torch_baseline(python: str, widths: list[int], batch: int, image_size: int, steps: int,
                   device: str) -> dict[int, float]:
  """Seconds per Adam step of the same U-Net in PyTorch, run by `python` (bench/torch_unet_baseline.py)."""
  script = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'torch_unet_baseline.py')
  cmd = [python, script, f'--widths={",".join(map(str, widths))}', f'--batch={batch}',
         f'--image_size={image_size}', f'--steps={steps}', f'--device={device}']
  proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
  if proc.returncode != 0:
    raise SystemExit(f'PyTorch baseline failed ({" ".join(cmd)}):\n{proc.stderr[-2000:]}')
  print(proc.stdout.strip())
  return {int(w): r['sec_per_step'] for w, r in json.loads(proc.stdout.strip().splitlines()[-1]).items()}


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--widths', default='8,16,32')
  p.add_argument('--batch', type=int, default=64)
  p.add_argument('--k', type=int, default=32, help='steps per dispatch to compare with 1')
  p.add_argument('--steps', type=int, default=64, help='timed steps per setting (rounded up to K)')
  p.add_argument('--image_size', type=int, default=32)
  p.add_argument('--torch_python', default='',
                 help='a Python with torch: time the same U-Net in PyTorch first, and compare')
  p.add_argument('--torch_steps', type=int, default=10, help='timed PyTorch steps per width')
  args = p.parse_args()
  widths = [int(x) for x in args.widths.split(',')]
  # PyTorch runs on the accelerator JAX uses (a CUDA GPU) or on the CPU.
  torch_device = 'cuda' if jax.default_backend() == 'gpu' else 'cpu'
  torch_sec = (torch_baseline(args.torch_python, widths, args.batch, args.image_size, args.torch_steps,
                              torch_device) if args.torch_python else {})
  peak = matmul_peak()
  print(f'JAX {jax.__version__} on {jax.devices()[0].platform}: {jax.devices()[0].device_kind} '
        f'x{jax.device_count()}; U-Net {args.image_size}x{args.image_size}x1, batch {args.batch}, Adam; '
        f'f32 2048x2048 matmul: {peak / 1e12:.3f} TFLOP/s')
  head = (f"{'W':>3} {'s/step K=1':>11} {f's/step K={args.k}':>12} {'K=1/K':>6} {'s/step host':>12} "
          f"{'img/s best':>10} {'GFLOP/step':>11} {'TFLOP/s':>8} {'of matmul':>9} {'floor s':>8} "
          f"{'quoted PyTorch/best':>20} {'PyTorch same run/best':>22}")
  print(head)
  print('-' * len(head))
  for w in widths:
    r = bench_width(w, args.batch, args.k, args.steps, args.image_size)
    k1, kk, host = r['device_k1'], r[f'device_k{args.k}'], r[f'host_k{args.k}']
    best = min(kk, host)
    ref = PYTORCH_CPU_SEC.get(w) if args.batch == 64 and args.image_size == 32 else None
    vs = f'{ref / best:.2f}x' if ref else '-'   # > 1: jaxdiff is faster
    vs_run = f'{torch_sec[w] / best:.2f}x ({torch_sec[w]:.2f} s)' if w in torch_sec else '-'
    print(f"{w:>3} {k1:>11.4f} {kk:>12.4f} {k1 / kk:>6.2f} {host:>12.4f} {args.batch / best:>10.1f} "
          f"{r['flops'] / 1e9:>11.2f} {r['flops'] / best / 1e12:>8.3f} {r['flops'] / best / peak:>9.0%} "
          f"{r['flops'] / peak:>8.4f} {vs:>20} {vs_run:>22}", flush=True)
  print('(ratios > 1: jaxdiff is faster than PyTorch. Quoted PyTorch: issue 2\'s numbers for paper-1 code on a '
        '2-core CPU; compare only CPU rows with them. "of matmul": achieved FLOP/s as a share of the large '
        'matmul\'s; "floor s": the step\'s FLOPs at that rate, about the fastest it could run here)')


if __name__ == '__main__':
  main()
