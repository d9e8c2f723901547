"""Evaluator 'losses': the training loss at a fixed diffusion time on all n training examples and on the test
set, `loss_train_t`, `loss_test_t` and `loss_gap_t` = their difference (SPEC "Definitions").
`eval.loss_train_examples` > 0 measures the training loss on the first that many training examples only (paper
3: one batch).

The time is `eval.loss_t_ou` in OU time, mapped by the family (`family.loss_time`: for DDPM the nearest step);
`family.loss_at(model, x, t, key, y=labels)` gives the per-example losses. Each example's loss is averaged over
`eval.loss_noise_draws` noise draws of a key that is the same at every milestone, so L_test - L_train is a smooth
curve. The sets are cut into chunks of `eval.loss_batch_size` (split over the mesh) and summed in one compiled
`lax.map`.

Subclasses evaluate several time sets at once (`time_sets`: e.g. the windows of diffusion time of
`jaxdiff.evaluators.window_losses`) with the same chunks, masks and keys.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff import distributed, sharding


def _pad_to(x: np.ndarray, multiple: int) -> tuple[np.ndarray, int]:
  n = x.shape[0]
  pad = (-n) % multiple
  if pad:
    x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
  return x, n


class Evaluator:
  needs_samples = False

  def __init__(self, ctx):
    ec = ctx.config.eval
    self.ctx, self.draws = ctx, ec.loss_noise_draws
    self.time = ctx.family.loss_time(ec.loss_t_ou)
    lb = max(ctx.num_devices, ec.loss_batch_size - ec.loss_batch_size % ctx.num_devices)
    spec = jax.sharding.NamedSharding(ctx.mesh, jax.sharding.PartitionSpec(None, sharding.DATA))
    self.sets = {}
    for name in ('train', 'test'):
      x = np.asarray(getattr(ctx.data, name), np.float32)
      if x.shape[0] == 0:
        continue
      y = getattr(ctx.data, f'{name}_labels', None)
      y = np.zeros(x.shape[0], np.int32) if y is None else np.asarray(y, np.int32)
      if name == 'train' and ec.loss_train_examples > 0:   # paper 3: one training batch
        x, y = x[:ec.loss_train_examples], y[:ec.loss_train_examples]
      padded, n = _pad_to(x, lb)
      labels, _ = _pad_to(y, lb)
      chunks = (padded.reshape(-1, lb, *x.shape[1:]), labels.reshape(-1, lb))
      mask = (np.arange(padded.shape[0]) < n).reshape(-1, lb).astype(np.float32)
      self.sets[name] = (distributed.put(chunks, spec), distributed.put(mask, spec))
    self._loss = jax.jit(self._mean_losses, compiler_options=ctx.compiler_options)

  def time_sets(self, key, batch: int) -> jax.Array:
    """[K, batch] diffusion times of the K losses this evaluator averages (here K = 1: the fixed time)."""
    del key
    return jnp.full((1, batch), self.time)

  def _mean_losses(self, params, chunks, mask, key):
    """chunks: ([C, b, ...] examples, [C, b] labels); mask: [C, b] (0 on padding) -> [K] mean losses, one per
    time set."""
    model = self.ctx.model(params)
    xs, ys = chunks

    def one(args):
      x, y, m, i = args
      ki = jax.random.fold_in(key, i)
      ts = self.time_sets(jax.random.fold_in(ki, self.draws), x.shape[0])   # draw index `draws` is unused
      sums = []
      for k in range(ts.shape[0]):
        keys = [jax.random.fold_in(ki, d) for d in range(self.draws)]
        keys = keys if ts.shape[0] == 1 else [jax.random.fold_in(kd, k) for kd in keys]
        per_draw = [self.ctx.family.loss_at(model, x, ts[k], kd, y=y) for kd in keys]
        sums.append(jnp.sum(jnp.mean(jnp.stack(per_draw), axis=0) * m))
      return jnp.stack(sums)

    sums = jax.lax.map(one, (xs, ys, mask, jnp.arange(xs.shape[0])))
    return jnp.sum(sums, axis=0) / jnp.sum(mask)

  def __call__(self, params, keys, samples):
    del samples
    out = {f'loss_{name}_t': self._loss(params, chunks, mask, keys.loss)[0]
           for name, (chunks, mask) in self.sets.items()}
    out = {k: float(v) for k, v in distributed.fetch(out).items()}
    if 'loss_test_t' in out:
      out['loss_gap_t'] = out['loss_test_t'] - out['loss_train_t']
    return out, {}
