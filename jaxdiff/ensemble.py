"""Vectorized ensembles: E small models, each with its own training set, seed and batch draws, trained
together by one compiled step (`vmap` over the member axis).

Member e has a training set of n_e examples. The sets are padded to n_max = max_e n_e and stacked
(`pad_stack`: data [E, n_max, ...], sizes [E]); a member only ever reads its first n_e rows:

- its batch of step s is drawn by `batch_indices` from (its key, s, n_e) exactly as a solo run with the same
  key draws it, epoch by epoch without replacement (train.draw_batch's scheme): the per-epoch permutation is
  the argsort of uniform keys with the padding rows sent last, and the batch has min(n_e, batch_size) valid
  entries followed by masked ones (weight 0) up to the static batch size min(n_max, batch_size);
- the loss is the weighted mean over the batch, so padding never enters a gradient;
- every random draw of a step (batch order, noise, diffusion times) has the static batch size as its leading
  axis. JAX's counter-based threefry (`jax_threefry_partitionable`, the default) makes the first b rows of a
  draw of shape [B, ...] equal to a draw of shape [b, ...] from the same key, so a member and a solo run
  with the same key see the same numbers, not merely numbers of the same distribution
  (tests/test_ensemble.py compares them step by step; they differ only by float rounding of padded sums).

The optimizer is any optax transformation; its state is per member. `make_train_chunk` runs several steps per
compiled call (`lax.fori_loop`), or one step per dispatch (`loop='host'`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxdiff import sharding

# loss_fn(params, batch, weight, key) -> scalar: the weighted mean loss of one member on its batch
# (batch: dict of [B, ...] arrays; weight: [B] float, 0 on padding).
LossFn = Callable[[Any, dict[str, jax.Array], jax.Array, jax.Array], jax.Array]


@flax.struct.dataclass
class EnsembleState:
  step: jax.Array         # int32 scalar: steps taken (the same for every member)
  rng: jax.Array          # uint32 [E, 2]: each member's base key
  params: Any             # pytree, leaves [E, ...]
  opt_state: Any          # pytree, leaves [E, ...]
  loss_sum: jax.Array     # float32 [E]: training loss summed since the last log row
  loss_count: jax.Array   # int32 scalar
  ema_params: Any = None  # pytree, leaves [E, ...]: each member's exponential moving average, or None

  @property
  def num_members(self) -> int:
    return int(self.rng.shape[0])


def pad_stack(arrays: Sequence[np.ndarray | jax.Array]) -> tuple[np.ndarray, np.ndarray]:
  """Stack training sets of different sizes: [n_e, ...] each -> ([E, n_max, ...] zero-padded, sizes [E])."""
  if not arrays:
    raise ValueError('pad_stack needs at least one array')
  arrays = [np.asarray(a) for a in arrays]
  tail = arrays[0].shape[1:]
  for i, a in enumerate(arrays):
    if a.ndim < 1 or a.shape[1:] != tail:
      raise ValueError(f'pad_stack: array {i} has shape {a.shape}, expected [n, *{tail}]')
    if a.shape[0] < 1:
      raise ValueError(f'pad_stack: array {i} is empty')
  sizes = np.array([a.shape[0] for a in arrays], np.int32)
  out = np.zeros((len(arrays), int(sizes.max()), *tail), arrays[0].dtype)
  for i, a in enumerate(arrays):
    out[i, :a.shape[0]] = a
  return out, sizes


def static_batch_size(n_max: int, batch_size: int) -> int:
  """The batch axis every member computes on: min(n_max, batch_size) (full batch when batch_size >= n)."""
  if n_max < 1 or batch_size < 1:
    raise ValueError(f'need n_max >= 1 and batch_size >= 1, got {n_max} and {batch_size}')
  return min(n_max, batch_size)


def batch_indices(rng: jax.Array, step: jax.Array, n: jax.Array, *, n_max: int,
                  batch_size: int) -> tuple[jax.Array, jax.Array]:
  """The batch of `step` for a member with n valid rows out of n_max (vmappable over rng and n).

  The member's batch size is b = min(n, batch_size); epoch e = step // (n // b) uses the permutation of
  0..n-1 given by argsort(uniform(fold_in(fold_in(rng, 1), e), [n_max])) with padding rows sent last (the
  identity when b = n: full batch). Returns (idx [B] int32, weight [B] float32) with B =
  `static_batch_size(n_max, batch_size)`: the first b entries are valid (weight 1), the rest weight 0.
  """
  big = static_batch_size(n_max, batch_size)
  n = jnp.asarray(n, jnp.int32)
  b = jnp.minimum(n, batch_size)
  arange = jnp.arange(n_max, dtype=jnp.int32)
  if batch_size >= n_max:  # every member trains full batch: no permutation needed
    perm, start = arange, jnp.int32(0)
  else:
    steps_per_epoch = n // b
    epoch, pos = step // steps_per_epoch, step % steps_per_epoch
    u = jax.random.uniform(jax.random.fold_in(jax.random.fold_in(rng, 1), epoch), (n_max,))
    # Padding rows get key 2 > any uniform: they sort last, the valid rows keep the solo run's order.
    perm = jnp.argsort(jnp.where(arange < n, u, 2.0)).astype(jnp.int32)
    perm = jnp.where(b >= n, arange, perm)
    start = pos * b
  # Pad so that a slice of `big` from any valid start stays in range (dynamic_slice would clamp it).
  perm = jnp.concatenate([perm, jnp.zeros((big,), jnp.int32)])
  idx = jax.lax.dynamic_slice_in_dim(perm, start, big)
  weight = (jnp.arange(big) < b).astype(jnp.float32)
  return idx, weight


def weighted_mean(values: jax.Array, weight: jax.Array) -> jax.Array:
  """sum(w v) / sum(w) over the batch axis. values: [B]; weight: [B]."""
  return jnp.sum(values * weight) / jnp.sum(weight)


def member_step(params, opt_state, rng: jax.Array, data: dict[str, jax.Array], n: jax.Array,
                step: jax.Array, *, loss_fn: LossFn, tx: optax.GradientTransformation, n_max: int,
                batch_size: int):
  """One optimizer step of one member; data: its padded training set {k: [n_max, ...]}, n its size.

  Returns (params, opt_state, loss). The step key is fold_in(fold_in(rng, 2), step), as in train.train_step.
  """
  idx, weight = batch_indices(rng, step, n, n_max=n_max, batch_size=batch_size)
  batch = {k: v[idx] for k, v in data.items()}
  key = jax.random.fold_in(jax.random.fold_in(rng, 2), step)
  loss, grads = jax.value_and_grad(loss_fn)(params, batch, weight, key)
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, loss


def init_state(init_fn: Callable[[jax.Array], Any], tx: optax.GradientTransformation,
               keys: jax.Array, ema: bool = False) -> EnsembleState:
  """Initial state of E members. init_fn(key) -> params of one member; keys: [E] member keys (the
  parameters come from fold_in(key, 0), as train.create_train_state). ema: keep a moving average of the
  parameters (updated by `ensemble_step` with its ema_decay), starting at the initial parameters."""
  keys = jnp.array(keys, copy=True)   # the state is donated to the train step: never alias the caller's keys
  if keys.ndim != 2:
    raise ValueError(f'keys must be [E, 2] raw PRNG keys (jax.random.PRNGKey), got shape {keys.shape}')
  params = jax.vmap(lambda k: init_fn(jax.random.fold_in(k, 0)))(keys)
  return EnsembleState(step=jnp.zeros((), jnp.int32), rng=keys, params=params,
                       opt_state=jax.vmap(tx.init)(params),
                       loss_sum=jnp.zeros((keys.shape[0],), jnp.float32), loss_count=jnp.zeros((), jnp.int32),
                       ema_params=jax.tree.map(jnp.copy, params) if ema else None)


def ensemble_step(state: EnsembleState, data: dict[str, jax.Array], sizes: jax.Array, *, loss_fn: LossFn,
                  tx: optax.GradientTransformation, batch_size: int, ema_decay: float = 0.0) -> EnsembleState:
  """One step of every member (vmap of `member_step`). data: {k: [E, n_max, ...]}; sizes: [E].
  The moving average (if the state keeps one) is updated as train.train_step updates a solo run's."""
  n_max = jax.tree.leaves(data)[0].shape[1]
  one = functools.partial(member_step, loss_fn=loss_fn, tx=tx, n_max=n_max, batch_size=batch_size)
  params, opt_state, loss = jax.vmap(one, in_axes=(0, 0, 0, 0, 0, None))(
      state.params, state.opt_state, state.rng, data, sizes, state.step)
  ema_params = state.ema_params
  if ema_params is not None:
    ema_params = optax.incremental_update(params, ema_params, 1.0 - ema_decay)
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema_params,
                       loss_sum=state.loss_sum + loss, loss_count=state.loss_count + 1)


def member_sharding(mesh: Mesh | None, num_members: int) -> NamedSharding | None:
  """Members split over the mesh's 'data' axis when it divides E (else replicated); None without a mesh."""
  if mesh is None:
    return None
  if num_members % mesh.shape[sharding.DATA] == 0:
    return NamedSharding(mesh, P(sharding.DATA))
  return sharding.replicated(mesh)


LOOPS = ('auto', 'device', 'host')


def resolve_loop(loop: str) -> str:
  """config.train.loop -> 'device' or 'host'. 'auto' is 'device' on every backend: with the convolution
  gradients in XLA:CPU's canonical form (models/kernels.py) a while-loop body runs as fast as the same step
  compiled alone, and there is one dispatch per chunk (quickstart U-Net on a 2-core CPU: 27 ms per step in
  the device loop, 56 ms dispatched step by step; paper-1 U-Net W = 8/16/32: 1.13/1.93/4.37 s against
  1.27/2.24/4.55 s). 'host' (one compiled step dispatched per step) computes the same steps."""
  if loop not in LOOPS:
    raise ValueError(f"config field 'train.loop': must be one of {LOOPS}, got {loop!r}")
  return 'device' if loop == 'auto' else loop


def make_train_chunk(*, loss_fn: LossFn, tx: optax.GradientTransformation, batch_size: int,
                     loop: str = 'device', ema_decay: float = 0.0, compiler_options: dict | None = None):
  """`chunk(state, data, sizes, num_steps, reset) -> state`: num_steps steps of every member.

  reset: zero the loss accumulators first. loop 'device': the steps run in one compiled `lax.fori_loop`
  (trip count an argument: one compilation for all chunk lengths); 'host': one compiled step dispatched
  num_steps times. Both compute the same steps. Shardings follow the inputs (see `member_sharding`).
  compiler_options: for `jax.jit` (a family's `compiler_options`).
  """
  step = functools.partial(ensemble_step, loss_fn=loss_fn, tx=tx, batch_size=batch_size, ema_decay=ema_decay)

  def reset_sums(state, reset):
    return state.replace(loss_sum=jnp.where(reset, 0.0, state.loss_sum),
                         loss_count=jnp.where(reset, 0, state.loss_count))

  if loop == 'host':
    reset_fn = jax.jit(reset_sums, donate_argnums=0)
    one = jax.jit(step, donate_argnums=0, compiler_options=compiler_options)

    def host_chunk(state, data, sizes, num_steps, reset):
      state = reset_fn(state, reset)
      for _ in range(int(num_steps)):
        state = one(state, data, sizes)
      return state
    return host_chunk
  if loop != 'device':
    raise ValueError(f"loop must be 'device' or 'host', got {loop!r}")

  def chunk(state, data, sizes, num_steps, reset):
    return jax.lax.fori_loop(0, num_steps, lambda _, st: step(st, data, sizes), reset_sums(state, reset))

  return jax.jit(chunk, donate_argnums=0, compiler_options=compiler_options)


def family_loss_fn(family, graphdef) -> LossFn:
  """The LossFn of a model family (jaxdiff.families, e.g. the DDPM U-Net) whose parameters are the `nnx.Param`
  state of `graphdef`: per-example losses weighted by the member's batch mask. With every weight 1 it is
  the family's own training loss, so a member follows the solo run of `train.train_step` with its key."""
  from flax import nnx  # pylint: disable=g-import-not-at-top

  def loss_fn(params, batch, weight, key):
    return weighted_mean(family.losses(nnx.merge(graphdef, params), batch, key, train=True), weight)
  return loss_fn


def family_init_fn(family) -> Callable[[jax.Array], Any]:
  """init_fn(key) -> the family network's parameters (`nnx.Param` state), for `init_state`."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  return lambda key: nnx.state(family.init(key), nnx.Param)


def member(tree: Any, i: int) -> Any:
  """Member i of a stacked pytree (leaves [E, ...] -> [...])."""
  return jax.tree.map(lambda x: x[i], tree)


def stack(trees: Sequence[Any]) -> Any:
  """Stack per-member pytrees into one with leaves [E, ...]."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


__all__ = ['EnsembleState', 'LossFn', 'pad_stack', 'static_batch_size', 'batch_indices', 'weighted_mean',
           'member_step', 'init_state', 'ensemble_step', 'member_sharding', 'make_train_chunk',
           'family_loss_fn', 'family_init_fn', 'member', 'stack']
