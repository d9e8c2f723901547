"""The nearest-neighbour memorization ratio of paper 1 (SPEC section 1, "Metrics"), exact and sharded.

A generated sample x is memorized when ||x - a1|| / ||x - a2|| < k, with a1, a2 its nearest and second
nearest training images in L2 pixel space (k = 1/3; paper 1). f_mem is the fraction of memorized samples,
reported with a 95% bootstrap interval (1000 resamples).

How the neighbours are found (samples [M, D] against training images [N, D], D = H*W*C):
1. Fast pass: ||x - y||^2 = |x|^2 - 2 x.y + |y|^2, as one matrix product per chunk of the training set
   (`lax.scan` over chunks keeps memory at [M, chunk]); a running top-k (k = `num_candidates` > 2) per
   sample, selected in two levels (group minima, then the members of the best groups) so that selection
   costs about one extra read of the product. |x|^2 is common to a row and is left out of the ranking.
   The fast pass works on both sets centred on the training set's mean (distances are translation invariant),
   so that raw 0-255 pixels or a large common offset do not inflate |x|^2 + |y|^2; the exact passes below use
   the data as given (differences of nearby values are exact in float32, differences of centred values not).
2. Exact pass: the k candidates' distances are recomputed as sums of squared differences and re-ranked. The
   fast pass loses digits when |x|^2 + |y|^2 >> ||x - y||^2 (a near-copy of a bright image), which is exactly
   where the memorization decision is made; the exact pass cannot be fooled by that cancellation as long as
   the true top-2 are among the k candidates. `certified` says, per sample, that they provably are: the exact
   second distance is below the fast k-th distance minus a bound on the fast pass's rounding error.
3. Exact fallback: a sample without the certificate is searched again by brute force, as sums of squared
   differences over every training image (`lax.map` over the samples, a `lax.cond` per sample, so certified
   samples cost nothing), so every decision is exact; `num_uncertified` counts the samples that needed it.
4. Sharded (`nearest_two_sharded`): the training set is split over the mesh axis 'data'; each device finds
   the exact top-2 of its shard (global indices), an all_gather brings the [devices, M, 2] candidates to
   every device and they are merged by exact distance (each shard's fallback covers its own images). Or the
   samples are split and the training set is replicated (no collective).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec as P

from jaxdiff.sharding import DATA

# Defaults, chosen with bench/memorization_bench.py so that the whole metric costs little more than the bare
# [M, D] x [D, N] product (measured ratios: bench/README.md).
CHUNK_SIZE = 32768     # training images per matmul: memory ~ M * CHUNK_SIZE floats
NUM_CANDIDATES = 8     # fast-pass candidates re-ranked exactly
GROUP_SIZE = 64        # two-level selection (see _fast_candidates)
FALLBACK_FLOATS = 2 ** 22   # the exact fallback reads training images in blocks of ~this many floats (16 MB)


def _fast_pass_rel_error(precision, dim: int) -> float:
  """A bound e with |error of a fast-pass score| <= e (|x|^2 + |y|^2), for the certificate.

  Each product x_i y_i carries the rounding of its inputs (float32: none; TF32, the GPU default: 2^-10;
  bfloat16, the TPU default: 2^-7), the float32 sum of D terms at most D 2^-24 (recursive summation), and
  score = |y|^2 - 2 x.y a few ulps more; doubled for margin.
  """
  p = jax.lax.Precision(precision) if precision is not None else None
  if p == jax.lax.Precision.HIGHEST or (p is None and jax.default_backend() == 'cpu'):
    e_prod = 0.0
  elif p is None and jax.default_backend() == 'gpu':
    e_prod = 2.0 ** -10
  else:  # DEFAULT or HIGH on accelerators, or a backend whose default we do not know: assume bfloat16 inputs
    e_prod = 2.0 ** -7
  return 2.0 * (e_prod + dim * 2.0 ** -24 + 2.0 ** -22)


def _flatten(name: str, a: jax.Array) -> jax.Array:
  if a.ndim < 2:
    raise ValueError(f'{name} must be [count, ...] with at least 2 dimensions, got shape {a.shape}')
  return jnp.reshape(a, (a.shape[0], -1)).astype(jnp.float32)


def _check(samples: jax.Array, train: jax.Array, num_candidates: int) -> tuple[jax.Array, jax.Array]:
  x, y = _flatten('samples', samples), _flatten('train', train)
  if x.shape[1] != y.shape[1]:
    raise ValueError(f'samples and train images differ in size: {samples.shape[1:]} vs {train.shape[1:]}')
  if y.shape[0] < 2:
    raise ValueError(f'the memorization ratio needs >= 2 training images, got {y.shape[0]}')
  if num_candidates < 2:
    raise ValueError(f'num_candidates must be >= 2, got {num_candidates}')
  return x, y


def _top_k_smallest(values: jax.Array, index: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  """The k smallest values along the last axis (ties: lower position first) and their `index` entries."""
  neg, pos = jax.lax.top_k(-values, k)
  return -neg, jnp.take_along_axis(index, pos, axis=-1)


def _fast_candidates(x: jax.Array, y: jax.Array, valid: jax.Array, index_offset: jax.Array | int,
                     centre: jax.Array, *, num_candidates: int, chunk_size: int, group_size: int,
                     precision) -> tuple[jax.Array, jax.Array]:
  """Fast pass. x: [M, D]; y: [N, D]; valid: [N] bool; centre: [D] subtracted from both (chunk by chunk, no
  copy of y). Returns (score [M, k], global index [M, k], yy_max) where score = ||x - y||^2 - |x - centre|^2
  (approximate), sorted ascending, invalid rows never winning unless k > #valid, and yy_max the largest
  |y - centre|^2 of a valid row (for the certificate).

  Selection per chunk [M, C] in two levels, because a full top-k over C costs several times the matmul on a
  GPU while a min-reduction is one read of the product: the minimum of each group of `group_size`
  consecutive scores, the k groups with the smallest minima, then the top-k of their k * group_size members.
  Exact: each of the k smallest scores lies in one of those k groups (a group whose minimum ranks below
  k-th holds no score of rank <= k, since each better-ranked group minimum is a distinct smaller score).
  """
  n, m = y.shape[0], x.shape[0]
  x = x - centre
  g = max(1, min(group_size, n))
  # Equal chunks of at most ~chunk_size, each a multiple of the group size (padding < one group per chunk).
  num_chunks = -(-n // max(1, min(chunk_size, n)))
  chunk = -(-(-(-n // num_chunks)) // g) * g
  pad = num_chunks * chunk - n
  if pad:
    y = jnp.pad(y, ((0, pad), (0, 0)))
    valid = jnp.pad(valid, (0, pad))
  y_chunks = y.reshape(num_chunks, chunk, y.shape[1])
  valid_chunks = valid.reshape(num_chunks, chunk)
  num_groups = chunk // g
  kg = min(num_candidates, num_groups)
  k = min(num_candidates, kg * g)

  def body(carry, inputs):
    best_s, best_i, yy_max = carry
    c, yc, vc = inputs
    yc = yc - centre                                  # one centred chunk at a time
    yyc = jnp.sum(yc * yc, axis=1)
    yy_max = jnp.maximum(yy_max, jnp.max(jnp.where(vc, yyc, 0.0)))
    # -2 x.y + |y|^2 (|x|^2 is common to the row and does not change the ranking).
    s = (jnp.where(vc, yyc, jnp.inf)[None, :] - 2.0 * jnp.dot(x, yc.T, precision=precision)
         ).reshape(m, num_groups, g)
    _, groups = jax.lax.top_k(-jnp.min(s, axis=2), kg)                          # [M, kg]
    members = jnp.take_along_axis(s, groups[:, :, None], axis=1).reshape(m, kg * g)
    member_i = (groups[:, :, None] * g + jnp.arange(g, dtype=jnp.int32)).reshape(m, kg * g)
    local_s, local_i = _top_k_smallest(members, member_i, k)
    local_i = local_i + c * chunk + index_offset
    # Merge the running top-k with this chunk's top-k.
    merged_s = jnp.concatenate([best_s, local_s], axis=1)
    merged_i = jnp.concatenate([best_i, local_i], axis=1)
    return (*_top_k_smallest(merged_s, merged_i, num_candidates), yy_max), None

  init = (jnp.full((m, num_candidates), jnp.inf, jnp.float32),
          jnp.full((m, num_candidates), -1, jnp.int32), jnp.float32(0.0))
  (best_s, best_i, yy_max), _ = jax.lax.scan(
      body, init, (jnp.arange(num_chunks, dtype=jnp.int32), y_chunks, valid_chunks))
  return best_s, best_i, yy_max


def _exact_top2(x: jax.Array, y_local: jax.Array, cand_i: jax.Array, cand_s: jax.Array, index_offset,
                xx: jax.Array, yy_max: jax.Array, *, sample_chunk_size: int | None,
                rel_error: float) -> dict[str, jax.Array]:
  """Exact pass on the candidates: squared distances as sums of squared differences, re-ranked. xx: [M] and
  yy_max: the fast pass's squared norms (of the centred data), for the certificate."""
  num_candidates = cand_i.shape[1]
  n_local = y_local.shape[0]

  def one(args):
    xi, ii = args                                   # [D], [k] (global indices; -1 = no candidate)
    local = jnp.clip(ii - index_offset, 0, n_local - 1)
    diff = y_local[local] - xi[None, :]
    return jnp.sum(diff * diff, axis=1)

  if sample_chunk_size is None:
    d2 = jax.vmap(one)((x, cand_i))                                     # [M, k]
  else:
    d2 = jax.lax.map(one, (x, cand_i), batch_size=sample_chunk_size)  # [M, k]
  # Padding rows and empty slots have an infinite fast score: never a neighbour.
  d2 = jnp.where(jnp.isfinite(cand_s) & (cand_i >= 0), d2, jnp.inf)
  if num_candidates < 2:  # a shard holding a single training image: pad with "no second neighbour"
    d2 = jnp.pad(d2, ((0, 0), (0, 2 - num_candidates)), constant_values=jnp.inf)
    cand_i = jnp.pad(cand_i, ((0, 0), (0, 2 - num_candidates)), constant_values=-1)
  # Sort by (distance, index): ties (duplicated training images) go to the lower index.
  top_d2, top_i = jax.lax.sort((d2, cand_i), dimension=1, num_keys=2)
  top_d2, top_i = top_d2[:, :2], top_i[:, :2]
  if num_candidates >= n_local:
    certified = jnp.ones(x.shape[0], bool)
  else:
    # Any non-candidate y has fast score >= the k-th fast score, so true ||x - y||^2 >= kth + |x|^2 - err.
    bound = rel_error * (xx + yy_max)
    certified = top_d2[:, 1] <= cand_s[:, -1] + xx - bound
  return {'d1_sq': top_d2[:, 0], 'd2_sq': top_d2[:, 1], 'index': top_i[:, 0], 'index2': top_i[:, 1],
          'certified': certified}


def _brute_top2(xi: jax.Array, y: jax.Array, valid: jax.Array, index_offset) -> tuple[jax.Array, jax.Array]:
  """Exact top-2 of one sample xi [D] over the valid rows of y [N, D]: (squared distances [2], indices [2]),
  ties to the lower index. Reads y in blocks of ~FALLBACK_FLOATS floats."""
  n, d = y.shape
  block = max(1, min(n, FALLBACK_FLOATS // max(d, 1)))
  num_blocks = -(-n // block)
  pad = num_blocks * block - n
  yb = jnp.pad(y, ((0, pad), (0, 0))).reshape(num_blocks, block, d)
  vb = jnp.pad(valid, (0, pad)).reshape(num_blocks, block)

  def body(carry, inputs):
    best_d, best_i = carry
    b, yc, vc = inputs
    diff = yc - xi[None, :]
    dist = jnp.where(vc, jnp.sum(diff * diff, axis=1), jnp.inf)
    idx = b * block + jnp.arange(block, dtype=jnp.int32) + index_offset
    merged = jax.lax.sort((jnp.concatenate([best_d, dist]), jnp.concatenate([best_i, idx])), num_keys=2)
    return (merged[0][:2], merged[1][:2]), None

  init = (jnp.full((2,), jnp.inf, jnp.float32), jnp.full((2,), -1, jnp.int32))
  (best_d, best_i), _ = jax.lax.scan(body, init, (jnp.arange(num_blocks, dtype=jnp.int32), yb, vb))
  return best_d, best_i


def _exact_fallback(x, y, valid, index_offset, r: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """Replace the top-2 of every uncertified sample by a brute-force exact search (certified ones unchanged)."""

  def one(args):
    xi, d1, d2, i1, i2, ok = args
    return jax.lax.cond(ok, lambda: (jnp.stack([d1, d2]), jnp.stack([i1, i2])),
                        lambda: _brute_top2(xi, y, valid, index_offset))

  def rerun(_):
    d, i = jax.lax.map(one, (x, r['d1_sq'], r['d2_sq'], r['index'], r['index2'], r['certified']))
    return dict(r, d1_sq=d[:, 0], d2_sq=d[:, 1], index=i[:, 0], index2=i[:, 1])

  return jax.lax.cond(jnp.all(r['certified']), lambda _: dict(r), rerun, None)


def _nearest_two_local(x, y, valid, index_offset, centre, *, num_candidates, chunk_size, group_size,
                       sample_chunk_size, precision):
  k = min(num_candidates, y.shape[0])
  cand_s, cand_i, yy_max = _fast_candidates(x, y, valid, index_offset, centre, num_candidates=k,
                                            chunk_size=chunk_size, group_size=group_size, precision=precision)
  xx = jnp.sum(jnp.square(x - centre), axis=1)
  r = _exact_top2(x, y, cand_i, cand_s, index_offset, xx, yy_max, sample_chunk_size=sample_chunk_size,
                  rel_error=_fast_pass_rel_error(precision, x.shape[1]))
  return _exact_fallback(x, y, valid, index_offset, r)


def _finish(r: dict[str, jax.Array]) -> dict[str, jax.Array]:
  return {'d1': jnp.sqrt(r['d1_sq']), 'd2': jnp.sqrt(r['d2_sq']), 'index': r['index'], 'index2': r['index2'],
          'certified': r['certified']}


@functools.partial(jax.jit, static_argnames=('chunk_size', 'num_candidates', 'group_size', 'sample_chunk_size',
                                             'precision'))
def nearest_two(samples: jax.Array, train: jax.Array, *, chunk_size: int = CHUNK_SIZE,
                num_candidates: int = NUM_CANDIDATES, group_size: int = GROUP_SIZE,
                sample_chunk_size: int | None = None, precision=None) -> dict[str, jax.Array]:
  """Nearest and second-nearest training images of each sample in L2 pixel space, exact.

  Args:
    samples: [M, ...] generated images (flattened to [M, D]).
    train: [N, ...] training images, same per-image shape, N >= 2.
    chunk_size: training images per matrix product (memory ~ M * chunk_size floats).
    num_candidates: candidates kept by the fast pass and re-ranked exactly (> 2 guards against rounding).
    group_size: consecutive training images per group in the two-level selection of the fast pass.
    sample_chunk_size: samples per step of the exact pass (memory ~ sample_chunk_size * k * D floats);
      None = all at once.
    precision: `jax.lax.Precision` of the fast-pass matmul (None: the backend default; TF32 on GPUs).

  Returns:
    {'d1': [M], 'd2': [M] exact L2 distances to the nearest / second nearest, 'index': [M], 'index2': [M]
     their training indices (int32), 'certified': [M] bool, True where the fast pass provably kept the true
     top-2; the others were searched exhaustively (see the module docstring), so every output is exact}.
  """
  x, y = _check(samples, train, num_candidates)
  valid = jnp.ones(y.shape[0], bool)
  centre = jnp.mean(y, axis=0)   # of the training set: the fast pass's origin
  return _finish(_nearest_two_local(x, y, valid, 0, centre, num_candidates=num_candidates, chunk_size=chunk_size,
                                    group_size=group_size, sample_chunk_size=sample_chunk_size,
                                    precision=precision))


def _merge_top2(d2: jax.Array, index: jax.Array, certified: jax.Array) -> dict[str, jax.Array]:
  """Merge per-shard exact top-2. d2, index: [S, M, 2]; certified: [S, M] -> global top-2 per sample."""
  s, m, _ = d2.shape
  d2 = jnp.moveaxis(d2, 0, 1).reshape(m, 2 * s)
  index = jnp.moveaxis(index, 0, 1).reshape(m, 2 * s)
  # Sort by (distance, index): the same tie-break as the single-device pass (lower index first).
  d2_sorted, index_sorted = jax.lax.sort((d2, index), dimension=1, num_keys=2)
  return {'d1_sq': d2_sorted[:, 0], 'd2_sq': d2_sorted[:, 1], 'index': index_sorted[:, 0],
          'index2': index_sorted[:, 1], 'certified': jnp.all(certified, axis=0)}


def nearest_two_sharded(samples: jax.Array, train: jax.Array, mesh: Mesh, *, shard: str = 'train',
                        chunk_size: int = CHUNK_SIZE, num_candidates: int = NUM_CANDIDATES,
                        group_size: int = GROUP_SIZE, sample_chunk_size: int | None = None,
                        precision=None) -> dict[str, jax.Array]:
  """`nearest_two` on a mesh with a 'data' axis (jaxdiff.sharding.make_mesh); same results and outputs.

  shard='train': the training set is split over 'data' (padded to a multiple of the device count), samples
    are replicated; per-shard exact top-2 are all-gathered and merged. Memory per device: N / devices images.
  shard='samples': the samples are split (padded), the training set is replicated; no collective.
  Outputs are replicated for 'train' and sharded along the samples for 'samples'. Jittable (mesh and the
  keyword arguments static).
  """
  x, y = _check(samples, train, num_candidates)
  centre = jnp.mean(y, axis=0)   # of the whole training set, before it is split
  if DATA not in mesh.axis_names:
    raise ValueError(f"the mesh must have an axis named {DATA!r}, got {mesh.axis_names}")
  ndev = mesh.shape[DATA]
  kw = dict(num_candidates=num_candidates, chunk_size=chunk_size, group_size=group_size,
            sample_chunk_size=sample_chunk_size, precision=precision)
  m, n = x.shape[0], y.shape[0]

  if shard == 'train':
    per = -(-n // ndev)
    y = jnp.pad(y, ((0, per * ndev - n), (0, 0)))

    def local(x, y_local, centre):
      offset = jax.lax.axis_index(DATA) * per
      valid = offset + jnp.arange(per) < n
      r = _nearest_two_local(x, y_local, valid, offset, centre, **kw)
      d2 = jnp.stack([r['d1_sq'], r['d2_sq']], axis=-1)
      index = jnp.stack([r['index'], r['index2']], axis=-1)
      gathered = jax.lax.all_gather((d2, index, r['certified']), DATA)
      return _merge_top2(*gathered)

    # check_vma=False: the scan carries start from constants that do not vary over 'data' while the
    # chunks do; the merged output is replicated by construction (all_gather, then the same sort).
    out = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(DATA), P()), out_specs=P(), check_vma=False)(
        x, y, centre)
    return _finish(out)

  if shard == 'samples':
    per = -(-m // ndev)
    x = jnp.pad(x, ((0, per * ndev - m), (0, 0)))

    def local(x_local, y, centre):
      return _nearest_two_local(x_local, y, jnp.ones(n, bool), 0, centre, **kw)

    out = jax.shard_map(local, mesh=mesh, in_specs=(P(DATA), P(), P()), out_specs=P(DATA), check_vma=False)(
        x, y, centre)
    return _finish(jax.tree.map(lambda a: a[:m], out))

  raise ValueError(f"shard must be 'train' or 'samples', got {shard!r}")


def memorization_ratio(nn: dict[str, jax.Array], *, k: float = 1 / 3) -> dict[str, jax.Array]:
  """Ratio d1/d2 and the memorized flag (ratio < k) from `nearest_two`'s output.

  A sample equal to an image that appears twice in the training set has d1 = d2 = 0: ratio 0, memorized.
  Returns {'ratio': [M], 'memorized': [M] bool}.
  """
  if not 0 < k <= 1:
    raise ValueError(f'the memorization threshold k must be in (0, 1], got {k}')
  d1, d2 = nn['d1'], nn['d2']
  ratio = jnp.where(d2 > 0, d1 / jnp.where(d2 > 0, d2, 1.0), 0.0)
  return {'ratio': ratio, 'memorized': ratio < k}


@functools.partial(jax.jit, static_argnames=('num_resamples', 'level', 'method'))
def f_mem_bootstrap(memorized: jax.Array, key: jax.Array, num_resamples: int = 1000, level: float = 0.95,
                    method: str = 'resample') -> tuple[jax.Array, jax.Array, jax.Array]:
  """f_mem = mean(memorized) and its percentile bootstrap interval at `level` (paper 1: 95%, 1000 resamples).

  Two samplers of the same bootstrap distribution:
  - 'resample' (default): each resample gathers M flags drawn with replacement; num_resamples * M draws
    (fast on accelerators, slower on CPUs: bench/README.md).
  - 'binomial': a resample of M flags holds Binomial(M, f_mem) memorized ones, so each bootstrap mean is
    drawn as a binomial count / M; O(num_resamples) cost and memory, for very large M on CPUs (its
    rejection sampler takes a few seconds to compile).
  The interval is the (1 - level)/2 and (1 + level)/2 quantiles (linear interpolation, as numpy) of the
  bootstrap means.

  Args:
    memorized: [M] bool (or 0/1) flags.
    key: PRNG key.
  Returns:
    (f, lo, hi) float32 scalars.
  """
  if memorized.ndim != 1 or memorized.shape[0] == 0:
    raise ValueError(f'memorized must be a non-empty 1-D array, got shape {memorized.shape}')
  if not 0 < level < 1:
    raise ValueError(f'level must be in (0, 1), got {level}')
  if num_resamples < 2:
    raise ValueError(f'num_resamples must be >= 2, got {num_resamples}')
  m = memorized.shape[0]
  flags = memorized.astype(jnp.float32)
  f = jnp.mean(flags)
  if method == 'resample':
    boot = jnp.mean(flags[jax.random.randint(key, (num_resamples, m), 0, m)], axis=1)
  elif method == 'binomial':
    boot = jax.random.binomial(key, jnp.float32(m), f, shape=(num_resamples,)) / m
  else:
    raise ValueError(f"method must be 'resample' or 'binomial', got {method!r}")
  alpha = (1.0 - level) / 2.0
  lo, hi = jnp.quantile(boot, jnp.array([alpha, 1.0 - alpha]))
  return f, lo, hi


def memorization_metrics(samples: jax.Array, train: jax.Array, key: jax.Array, *, k: float = 1 / 3,
                         num_resamples: int = 1000, level: float = 0.95, mesh: Mesh | None = None,
                         shard: str = 'train', chunk_size: int = CHUNK_SIZE,
                         num_candidates: int = NUM_CANDIDATES, group_size: int = GROUP_SIZE,
                         sample_chunk_size: int | None = None, precision=None,
                         bootstrap_method: str = 'resample') -> dict[str, jax.Array]:
  """The full metric: neighbours, ratios, f_mem with its bootstrap interval. Jittable (key explicit).

  Returns:
    scalars {'f_mem', 'f_mem_lo', 'f_mem_hi', 'num_uncertified' (samples whose fast candidates were not
    certified and that were searched exhaustively)} and per-sample arrays {'ratio',
    'memorized', 'd1', 'd2', 'index', 'index2', 'certified'} (for the nearest-neighbour figure).
  """
  kw = dict(chunk_size=chunk_size, num_candidates=num_candidates, group_size=group_size,
            sample_chunk_size=sample_chunk_size, precision=precision)
  nn = (nearest_two(samples, train, **kw) if mesh is None
        else nearest_two_sharded(samples, train, mesh, shard=shard, **kw))
  r = memorization_ratio(nn, k=k)
  f, lo, hi = f_mem_bootstrap(r['memorized'], key, num_resamples=num_resamples, level=level,
                              method=bootstrap_method)
  return {'f_mem': f, 'f_mem_lo': lo, 'f_mem_hi': hi,
          'num_uncertified': jnp.sum(~nn['certified']).astype(jnp.int32), **nn, **r}


def ratio_threshold_fractions(ratio: jax.Array, ks=(1 / 4, 1 / 3, 1 / 2)) -> dict[str, jax.Array]:
  """f_mem at several thresholds (paper 1: the claims hold for k = 1/2 and 1/4 as well)."""
  return {f'f_mem_k{k:.3g}': jnp.mean((ratio < k).astype(jnp.float32)) for k in ks}


__all__ = ['nearest_two', 'nearest_two_sharded', 'memorization_ratio', 'f_mem_bootstrap',
           'memorization_metrics', 'ratio_threshold_fractions']
