"""Train steps: the state, in-graph batch draws, one optimizer step, and the compiled chunk of steps.

One `TrainState` and one chunk builder serve a solo run and a vectorized ensemble. A solo run's state has
unbatched leaves and its batch is split over the mesh's 'data' axis (data parallelism: XLA inserts the
gradient all-reduce). An ensemble trains E small models together, each with its own training set, seed and
batch draws, by one compiled step (`vmap` over the member axis; the state's leaves are [E, ...]).

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

A solo run draws its batches with the same `batch_indices` (n = n_max), so an ensemble member trains exactly
like the solo run with its key. The optimizer is any optax transformation; its state is per member.
`make_train_chunk` runs several steps per compiled call (`lax.fori_loop`), or one step per dispatch
(`loop='host'`).
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

import ml_collections
from flax import nnx

from jaxdiff import sharding

# loss_fn(params, batch, weight, key) -> scalar: the weighted mean loss of one member on its batch
# (batch: dict of [B, ...] arrays; weight: [B] float, 0 on padding).
LossFn = Callable[[Any, dict[str, jax.Array], jax.Array, jax.Array], jax.Array]


@flax.struct.dataclass
class TrainState:
  """A solo run (leaves unbatched) or an ensemble (leading member axis E on rng, params, opt_state, ema_params,
  loss_sum)."""
  step: jax.Array             # int32 scalar: steps taken (the same for every member)
  rng: jax.Array              # uint32 [2] or [E, 2]: the base key; per-step keys are folded from it
  params: Any                 # nnx.State of the network's parameters
  opt_state: Any
  ema_params: Any = None      # the parameters' exponential moving average, or None without EMA
  # Training loss summed over the steps since the last log row, and their count: part of the checkpoint so
  # that a resumed run logs exactly the rows an uninterrupted one would.
  loss_sum: Any = None        # float32 [] or [E]
  loss_count: Any = None      # int32 scalar

  @property
  def num_members(self) -> int:
    """E for an ensemble, 0 for a solo run."""
    return int(self.rng.shape[0]) if self.rng.ndim == 2 else 0


def make_optimizer(opt: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """config.optimizer -> an optax transformation (SGD with momentum or Adam; optional global-norm clip)."""
  if opt.name == 'sgd':
    tx = optax.sgd(opt.learning_rate, momentum=opt.momentum or None)
  elif opt.name == 'adam':
    tx = optax.adam(opt.learning_rate, b1=opt.b1, b2=opt.b2, eps=opt.eps)
  else:
    raise ValueError(f"config field 'optimizer.name': unknown optimizer {opt.name!r}")
  if opt.grad_clip > 0:
    tx = optax.chain(optax.clip_by_global_norm(opt.grad_clip), tx)
  return tx


def log_spaced_milestones(num_steps: int, count: int) -> np.ndarray:
  """About `count` distinct integer steps log-spaced in [1, num_steps], always including num_steps."""
  if count <= 0:
    return np.array([], np.int64)
  steps = np.unique(np.round(np.logspace(0, np.log10(num_steps), count)).astype(np.int64))
  return np.unique(np.append(steps[(steps >= 1) & (steps <= num_steps)], num_steps))


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
                batch_size: int, batch_sharding: NamedSharding | None = None):
  """One optimizer step of one model; data: its (padded) training set {k: [n_max, ...]}, n its size.

  batch_sharding: split the drawn batch over the mesh (a solo run's data parallelism). Returns (params,
  opt_state, loss). The step key is fold_in(fold_in(rng, 2), step).
  """
  idx, weight = batch_indices(rng, step, n, n_max=n_max, batch_size=batch_size)
  batch = {k: v[idx] for k, v in data.items()}
  if batch_sharding is not None:
    batch, weight = jax.lax.with_sharding_constraint((batch, weight), batch_sharding)
  key = jax.random.fold_in(jax.random.fold_in(rng, 2), step)
  loss, grads = jax.value_and_grad(loss_fn)(params, batch, weight, key)
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, loss


def init_state(init_fn: Callable[[jax.Array], Any], tx: optax.GradientTransformation,
               keys: jax.Array, ema: bool = False) -> TrainState:
  """Initial state of a solo run (keys: [2], one raw key) or of E members (keys: [E, 2]).

  init_fn(key) -> the parameters of one model, drawn from fold_in(key, 0). ema: keep a moving average of
  the parameters (updated by `train_step` with its ema_decay), starting at the initial parameters.
  """
  keys = jnp.array(keys, copy=True)   # the state is donated to the train step: never alias the caller's keys
  if keys.ndim not in (1, 2) or keys.shape[-1] != 2:
    raise ValueError(f'keys must be [2] or [E, 2] raw PRNG keys (jax.random.key_data), got shape {keys.shape}')
  one = lambda k: init_fn(jax.random.fold_in(k, 0))
  params = one(keys) if keys.ndim == 1 else jax.vmap(one)(keys)
  opt_state = tx.init(params) if keys.ndim == 1 else jax.vmap(tx.init)(params)
  return TrainState(step=jnp.zeros((), jnp.int32), rng=keys, params=params, opt_state=opt_state,
                    ema_params=jax.tree.map(jnp.copy, params) if ema else None,
                    loss_sum=jnp.zeros(keys.shape[:-1], jnp.float32), loss_count=jnp.zeros((), jnp.int32))


def train_step(state: TrainState, data: dict[str, jax.Array], sizes: jax.Array | None, *, loss_fn: LossFn,
               tx: optax.GradientTransformation, batch_size: int, ema_decay: float = 0.0,
               ema_debias: bool = False, batch_sharding: NamedSharding | None = None) -> TrainState:
  """One step of a solo run (sizes None; data {k: [n, ...]}) or of every member of an ensemble (sizes [E];
  data {k: [E, n_max, ...]}: a vmap of `member_step`). Then the moving average and the loss sums.

  The moving average starts at the initial parameters. ema_debias: weigh the k-th update by
  (1 - decay) / (1 - decay^k) instead of 1 - decay, which is the bias-corrected average of the trained
  parameters alone (Adam's correction; optax.ema(debias=True) computes the same from a zero start): the
  first ~1 / (1 - decay) steps' averages no longer carry a seed-dependent share of the initial weights."""
  if sizes is None:
    n_max = jax.tree.leaves(data)[0].shape[0]
    params, opt_state, loss = member_step(state.params, state.opt_state, state.rng, data, jnp.int32(n_max),
                                          state.step, loss_fn=loss_fn, tx=tx, n_max=n_max,
                                          batch_size=batch_size, batch_sharding=batch_sharding)
  else:
    n_max = jax.tree.leaves(data)[0].shape[1]
    one = functools.partial(member_step, loss_fn=loss_fn, tx=tx, n_max=n_max, batch_size=batch_size)
    params, opt_state, loss = jax.vmap(one, in_axes=(0, 0, 0, 0, 0, None))(
        state.params, state.opt_state, state.rng, data, sizes, state.step)
  ema_params = state.ema_params
  if ema_params is not None:
    rate = 1.0 - ema_decay
    if ema_debias:
      rate = rate / (1.0 - jnp.power(jnp.float32(ema_decay), (state.step + 1).astype(jnp.float32)))
    ema_params = optax.incremental_update(params, ema_params, rate)
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema_params,
                       loss_sum=state.loss_sum + loss, loss_count=state.loss_count + 1)


def member_sharding(mesh: Mesh | None, num_members: int) -> NamedSharding | None:
  """Members split over the mesh's 'data' axis when it divides E (else replicated); None without a mesh."""
  if mesh is None:
    return None
  if num_members % mesh.shape[sharding.DATA] == 0:
    return NamedSharding(mesh, P(sharding.DATA))
  return sharding.replicated(mesh)


def state_sharding(state: TrainState, mesh: Mesh) -> Any:
  """Shardings of a state on `mesh`: a solo run's replicated; an ensemble's members as `member_sharding`."""
  rep = sharding.replicated(mesh)
  if not state.num_members:
    return jax.tree.map(lambda _: rep, state)
  shard = member_sharding(mesh, state.num_members)
  return jax.tree.map(lambda x: shard if x.ndim and x.shape[0] == state.num_members else rep, state)


LOOPS = ('auto', 'device', 'host')


def resolve_loop(loop: str) -> str:
  """config.train.loop -> 'device' or 'host'. 'auto' is 'device' on every backend: with the convolution
  gradients in XLA:CPU's canonical form (models/kernels.py) a while-loop body runs as fast as the same step
  compiled alone, and there is one dispatch per chunk (bench/README.md). 'host' (one compiled step
  dispatched per step) computes the same steps."""
  if loop not in LOOPS:
    raise ValueError(f"config field 'train.loop': must be one of {LOOPS}, got {loop!r}")
  return 'device' if loop == 'auto' else loop


def make_train_chunk(*, loss_fn: LossFn, tx: optax.GradientTransformation, batch_size: int,
                     loop: str = 'device', ema_decay: float = 0.0, ema_debias: bool = False,
                     compiler_options: dict | None = None, mesh: Mesh | None = None, shardings: Any = None):
  """`chunk(state, data, sizes, num_steps, reset) -> state`: num_steps steps (`train_step`).

  sizes: None for a solo run, [E] for an ensemble. reset: zero the loss accumulators first (the previous
  chunk ended with a log row). loop 'device': the steps run in one compiled `lax.fori_loop` (trip count an
  argument: one compilation for all chunk lengths, one dispatch per chunk); 'host': one compiled step
  dispatched num_steps times (asynchronously: the host runs ahead of the device). Both compute the same
  steps. mesh: a solo run's batch is split over its 'data' axis. shardings: the state's (`state_sharding`),
  pinned on the output; by default shardings follow the inputs. compiler_options: for `jax.jit` (a family's
  `compiler_options`).
  """
  batch_sharding = sharding.batch_sharded(mesh) if mesh is not None else None
  step = functools.partial(train_step, loss_fn=loss_fn, tx=tx, batch_size=batch_size, ema_decay=ema_decay,
                           ema_debias=ema_debias, batch_sharding=batch_sharding)
  out = {} if shardings is None else {'out_shardings': shardings}

  def reset_sums(state, reset):
    return state.replace(loss_sum=jnp.where(reset, 0.0, state.loss_sum),
                         loss_count=jnp.where(reset, 0, state.loss_count))

  if resolve_loop(loop) == 'host':
    reset_fn = jax.jit(reset_sums, donate_argnums=0, **out)
    one = jax.jit(step, donate_argnums=0, compiler_options=compiler_options, **out)

    def host_chunk(state, data, sizes, num_steps, reset):
      state = reset_fn(state, reset)
      for _ in range(int(num_steps)):
        state = one(state, data, sizes)
      return state
    return host_chunk

  def chunk(state, data, sizes, num_steps, reset):
    return jax.lax.fori_loop(0, num_steps, lambda _, st: step(st, data, sizes), reset_sums(state, reset))

  return jax.jit(chunk, donate_argnums=0, compiler_options=compiler_options, **out)


def network_loss_fn(per_example_losses, graphdef) -> LossFn:
  """The LossFn of a network whose parameters are the `nnx.Param` state of `graphdef`:
  per_example_losses(model, batch, key, train=True) -> [B], weighted by the batch mask. With every weight 1
  it is the plain mean, so a member follows the solo run with its key."""

  def loss_fn(params, batch, weight, key):
    return weighted_mean(per_example_losses(nnx.merge(graphdef, params), batch, key, train=True), weight)
  return loss_fn


def network_init_fn(init) -> Callable[[jax.Array], Any]:
  """init_fn(key) -> the network's parameters (`nnx.Param` state) for `init_state`; init(key) -> nnx.Module."""
  def init_fn(key):
    model = init(key)
    if jax.tree.leaves(nnx.state(model, nnx.Not(nnx.Param))):
      raise NotImplementedError('networks with non-parameter state (e.g. batch statistics) are not supported')
    return nnx.state(model, nnx.Param)
  return init_fn


def member(tree: Any, i: int) -> Any:
  """Member i of a stacked pytree (leaves [E, ...] -> [...])."""
  return jax.tree.map(lambda x: x[i], tree)
