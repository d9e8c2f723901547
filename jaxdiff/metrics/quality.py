"""Sample quality: Frechet distance, KID and sliced Wasserstein distance on a pluggable feature space.

- Frechet distance (Heusel et al. 2017, the "FID" formula): ||mu1 - mu2||^2 + tr S1 + tr S2
  - 2 tr (S1^1/2 S2 S1^1/2)^1/2. The statistics accumulate in-graph (Chan et al.'s pairwise update, stable
  in float32); the final d x d step runs on the host in float64 with symmetric eigendecompositions, clipping
  the tiny negative eigenvalues that rounding leaves in near-singular covariances (fewer samples than
  feature dimensions), where the generic sqrtm(S1 S2) of pytorch-fid can return complex or NaN values.
- KID (Binkowski et al. 2018, Eq. 2 and Sec. 3): the unbiased MMD^2 with the cubic polynomial kernel
  k(x, y) = (x.y / d + 1)^3, averaged over random subsets drawn without replacement.
- Sliced Wasserstein distance (paper 3, "SW", 2000 samples of Inception features; its exponent p is not
  stated in our notes, p = 2 by default, unverified): SW_p = (E_theta W_p^p(theta#x, theta#y))^(1/p), theta
  uniform on the unit sphere, W_p in 1-D from sorted projections (exact for unequal sample sizes).
- Feature extractors by name (`feature_extractor`): 'pixels', 'random_projection' (weights-free, offline),
  'inception' (pytorch-fid's network, jaxdiff.metrics.inception) and 'sscd' (the copy-detection descriptor of
  paper 3, jaxdiff.metrics.sscd), the networks imported only when asked for.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

Extractor = Callable[[jax.Array], jax.Array]


# --------------------------------------------------------------------------------------------------------
# Feature statistics (in-graph) and the Frechet distance (host, float64).

class FeatureStats(NamedTuple):
  """Running count, mean [D] and sum of squared deviations M2 [D, D] of a feature stream."""
  count: jax.Array
  mean: jax.Array
  m2: jax.Array


def stats_init(dim: int) -> FeatureStats:
  return FeatureStats(jnp.zeros((), jnp.float32), jnp.zeros((dim,), jnp.float32),
                      jnp.zeros((dim, dim), jnp.float32))


def stats_merge(a: FeatureStats, b: FeatureStats) -> FeatureStats:
  """Chan, Golub & LeVeque (1979) pairwise update: exact, no E[xx^T] - mu mu^T cancellation."""
  n = a.count + b.count
  safe = jnp.maximum(n, 1.0)
  delta = b.mean - a.mean
  mean = a.mean + delta * (b.count / safe)
  m2 = a.m2 + b.m2 + jnp.outer(delta, delta) * (a.count * b.count / safe)
  return FeatureStats(n, mean, m2)


def stats_update(stats: FeatureStats, feats: jax.Array) -> FeatureStats:
  """Add a batch feats: [B, D]. Jittable (use in a scan over sample batches)."""
  feats = feats.astype(jnp.float32)
  mean = jnp.mean(feats, axis=0)
  centred = feats - mean
  batch = FeatureStats(jnp.asarray(feats.shape[0], jnp.float32), mean,
                       jnp.dot(centred.T, centred, precision=jax.lax.Precision.HIGHEST))
  return stats_merge(stats, batch)


def stats_finalize(stats: FeatureStats) -> tuple[jax.Array, jax.Array]:
  """(mean [D], unbiased covariance [D, D]) as numpy.cov (ddof = 1)."""
  return stats.mean, stats.m2 / jnp.maximum(stats.count - 1.0, 1.0)


def feature_statistics(feats: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(mean [D], covariance [D, D]) of feats: [N, D] with N >= 2."""
  if feats.ndim != 2 or feats.shape[0] < 2:
    raise ValueError(f'features must be [N >= 2, D], got shape {feats.shape}')
  return stats_finalize(stats_update(stats_init(feats.shape[1]), feats))


def _sym_sqrt_psd(s: np.ndarray) -> np.ndarray:
  """Symmetric square root of a symmetric PSD matrix, negative rounding eigenvalues clipped to 0."""
  w, v = np.linalg.eigh((s + s.T) / 2)
  return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(cov1, cov2) -> float:
  """tr (S1^1/2 S2 S1^1/2)^1/2 = tr sqrtm(S1 S2) for symmetric PSD S1, S2, in float64."""
  s1 = np.asarray(cov1, np.float64)
  s2 = np.asarray(cov2, np.float64)
  r = _sym_sqrt_psd(s1)
  inner = r @ s2 @ r
  w = np.linalg.eigvalsh((inner + inner.T) / 2)
  return float(np.sum(np.sqrt(np.clip(w, 0.0, None))))


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
  """Frechet distance between N(mu1, cov1) and N(mu2, cov2) (mu: [D], cov: [D, D]), float64 on the host."""
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
  d = mu1.shape[0]
  if mu1.shape != (d,) or mu2.shape != (d,) or cov1.shape != (d, d) or cov2.shape != (d, d):
    raise ValueError(f'frechet_distance: need mu [D] and cov [D, D] for both, got {mu1.shape}, {cov1.shape}, '
                     f'{mu2.shape}, {cov2.shape}')
  if not all(np.all(np.isfinite(a)) for a in (mu1, mu2, cov1, cov2)):
    raise ValueError('frechet_distance: statistics contain NaN or inf')
  diff = mu1 - mu2
  fd = diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * trace_sqrt_product(cov1, cov2)
  return float(max(fd, 0.0))  # >= 0 mathematically; rounding can leave -1e-12


def frechet_distance_from_features(feats1: jax.Array, feats2: jax.Array) -> float:
  """Frechet distance between the Gaussian fits of feats1: [N1, D] and feats2: [N2, D]."""
  if feats1.ndim != 2 or feats2.ndim != 2 or feats1.shape[1] != feats2.shape[1]:
    raise ValueError(f'features must be [N, D] with the same D, got {feats1.shape} and {feats2.shape}')
  mu1, c1 = feature_statistics(feats1)
  mu2, c2 = feature_statistics(feats2)
  return frechet_distance(mu1, c1, mu2, c2)


# --------------------------------------------------------------------------------------------------------
# KID.

def polynomial_kernel(a: jax.Array, b: jax.Array) -> jax.Array:
  """k(x, y) = (x.y / d + 1)^3 (KID's kernel). a: [N, D], b: [M, D] -> [N, M]."""
  d = a.shape[1]
  return (jnp.dot(a, b.T, precision=jax.lax.Precision.HIGHEST) / d + 1.0) ** 3


def mmd2_unbiased(a: jax.Array, b: jax.Array) -> jax.Array:
  """Unbiased MMD^2 with the cubic polynomial kernel: off-diagonal means of k(a, a), k(b, b), minus
  twice the mean of k(a, b). a: [m, D], b: [n, D]; m, n >= 2."""
  m, n = a.shape[0], b.shape[0]
  kaa, kbb, kab = polynomial_kernel(a, a), polynomial_kernel(b, b), polynomial_kernel(a, b)
  saa = (jnp.sum(kaa) - jnp.trace(kaa)) / (m * (m - 1))
  sbb = (jnp.sum(kbb) - jnp.trace(kbb)) / (n * (n - 1))
  return saa + sbb - 2.0 * jnp.mean(kab)


@functools.partial(jax.jit, static_argnames=('n_a', 'n_b', 'num_subsets', 'subset_size'))
def kid_subset_indices(key: jax.Array, n_a: int, n_b: int, num_subsets: int,
                       subset_size: int) -> tuple[jax.Array, jax.Array]:
  """Indices [num_subsets, subset_size] into each set, each subset drawn without replacement."""
  if subset_size < 2 or subset_size > min(n_a, n_b):
    raise ValueError(f'KID subset_size must be in [2, min(N_a, N_b) = {min(n_a, n_b)}], got {subset_size}')
  ka, kb = jax.random.split(key)

  def draw(k, n):  # the first subset_size entries of a uniformly random permutation (argsort of uniforms)
    return jnp.argsort(jax.random.uniform(k, (num_subsets, n)), axis=1)[:, :subset_size].astype(jnp.int32)

  return draw(ka, n_a), draw(kb, n_b)


@functools.partial(jax.jit, static_argnames=('num_subsets', 'subset_size'))
def kid(feats_a: jax.Array, feats_b: jax.Array, num_subsets: int, subset_size: int,
        key: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Kernel Inception Distance: mean and standard deviation of the unbiased MMD^2 over random subsets.

  feats_a: [N_a, D], feats_b: [N_b, D]; subsets of `subset_size` from each (the KID paper's estimator; the
  usual settings are 100 subsets of 1000). Returns (mean, std) float32 scalars.
  """
  if feats_a.ndim != 2 or feats_b.ndim != 2 or feats_a.shape[1] != feats_b.shape[1]:
    raise ValueError(f'features must be [N, D] with the same D, got {feats_a.shape} and {feats_b.shape}')
  ia, ib = kid_subset_indices(key, feats_a.shape[0], feats_b.shape[0], num_subsets, subset_size)
  a, b = feats_a.astype(jnp.float32), feats_b.astype(jnp.float32)
  vals = jax.lax.map(lambda ij: mmd2_unbiased(a[ij[0]], b[ij[1]]), (ia, ib))
  return jnp.mean(vals), jnp.std(vals)


# --------------------------------------------------------------------------------------------------------
# Sliced Wasserstein.

def random_directions(key: jax.Array, num_projections: int, dim: int) -> jax.Array:
  """[num_projections, dim] uniform on the unit sphere (normalised Gaussians)."""
  g = jax.random.normal(key, (num_projections, dim), jnp.float32)
  return g / jnp.linalg.norm(g, axis=1, keepdims=True)


def wasserstein_1d(x_sorted: jax.Array, y_sorted: jax.Array, p: float = 2.0) -> jax.Array:
  """W_p^p between the empirical measures of sorted samples x: [..., n] and y: [..., m] (uniform weights).

  Exact for n != m: W_p^p = int_0^1 |F^-1(u) - G^-1(u)|^p du over the merged breakpoints {i/n} U {j/m},
  on each interval of which both quantile functions are constant.
  """
  n, m = x_sorted.shape[-1], y_sorted.shape[-1]
  if n == m:
    return jnp.mean(jnp.abs(x_sorted - y_sorted) ** p, axis=-1)
  u = jnp.sort(jnp.concatenate([jnp.arange(1, n + 1) / n, jnp.arange(1, m + 1) / m]))
  w = jnp.diff(u, prepend=0.0)
  mid = u - w / 2
  ix = jnp.clip(jnp.floor(mid * n).astype(jnp.int32), 0, n - 1)
  iy = jnp.clip(jnp.floor(mid * m).astype(jnp.int32), 0, m - 1)
  return jnp.sum(w * jnp.abs(x_sorted[..., ix] - y_sorted[..., iy]) ** p, axis=-1)


@functools.partial(jax.jit, static_argnames=('num_projections', 'p'))
def sliced_wasserstein(x: jax.Array, y: jax.Array, key: jax.Array, num_projections: int = 1024,
                       p: float = 2.0) -> jax.Array:
  """SW_p between the empirical measures of x: [N, D] and y: [M, D] (Monte Carlo over directions)."""
  if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
    raise ValueError(f'sliced_wasserstein: need [N, D] and [M, D], got {x.shape} and {y.shape}')
  theta = random_directions(key, num_projections, x.shape[1])
  hp = jax.lax.Precision.HIGHEST
  px = jnp.sort(jnp.dot(theta, x.astype(jnp.float32).T, precision=hp), axis=1)   # [P, N]
  py = jnp.sort(jnp.dot(theta, y.astype(jnp.float32).T, precision=hp), axis=1)   # [P, M]
  return jnp.mean(wasserstein_1d(px, py, p)) ** (1.0 / p)


# --------------------------------------------------------------------------------------------------------
# Feature extractors.

def _check_images(images: jax.Array) -> None:
  if images.ndim != 4:
    raise ValueError(f'feature extractors take images [N, H, W, C], got shape {images.shape}')


def pixel_features() -> Extractor:
  """Flattened pixels: [N, H, W, C] -> [N, H*W*C]."""
  def fn(images):
    _check_images(images)
    return images.reshape(images.shape[0], -1).astype(jnp.float32)
  return fn


_NONLINEARITIES = {'none': lambda h: h, 'relu': jax.nn.relu, 'tanh': jnp.tanh}


def random_projection_features(dim: int = 256, seed: int = 0, nonlinearity: str = 'relu') -> Extractor:
  """A fixed Gaussian random projection of the flattened pixels, then a nonlinearity.

  h = sigma(x W / sqrt(D) + b), W [D, dim] and b [dim] i.i.d. N(0, 1) from `seed` (the same for every call
  with the same seed and image size). The nonlinearity makes the Frechet distance see more than the first
  two pixel moments; 'none' gives a plain Johnson-Lindenstrauss sketch.
  """
  if nonlinearity not in _NONLINEARITIES:
    raise ValueError(f'random_projection: nonlinearity must be one of {sorted(_NONLINEARITIES)}, '
                     f'got {nonlinearity!r}')
  if dim < 1:
    raise ValueError(f'random_projection: dim must be >= 1, got {dim}')
  act = _NONLINEARITIES[nonlinearity]

  def fn(images):
    _check_images(images)
    x = images.reshape(images.shape[0], -1).astype(jnp.float32)
    d = x.shape[1]
    kw, kb = jax.random.split(jax.random.key(seed))
    w = jax.random.normal(kw, (d, dim), jnp.float32)
    b = jax.random.normal(kb, (dim,), jnp.float32)
    return act(jnp.dot(x, w, precision=jax.lax.Precision.HIGHEST) / np.sqrt(d) + b)
  return fn


def network_features_fn(model: nnx.Module, *, feature_dim: int, batch_size: int = 100) -> Extractor:
  """Jitted images [N, ...] -> model(images) [N, feature_dim], `batch_size` images at a time.

  Batches run sequentially (lax.map) to bound activation memory; N need not divide batch_size (the last
  batch is zero-padded and the padding dropped). The weights are an argument of the jitted function, not
  constants baked into the executable.
  """
  if batch_size < 1:
    raise ValueError(f'batch_size must be positive, got {batch_size}')
  graphdef, state = nnx.split(model)

  @jax.jit
  def features(state, images: jax.Array) -> jax.Array:
    net = nnx.merge(graphdef, state)
    n = images.shape[0]
    if n == 0:
      return jnp.zeros((0, feature_dim), jnp.float32)
    bs = min(batch_size, n)
    pad = (-n) % bs
    x = jnp.pad(images, ((0, pad),) + ((0, 0),) * (images.ndim - 1)) if pad else images
    x = x.reshape((-1, bs) + images.shape[1:])
    return jax.lax.map(net, x).reshape(-1, feature_dim)[:n]

  fn = functools.partial(features, state)
  fn.jitted = True   # see `jit_extractor`
  return fn


def jit_extractor(fn: Extractor) -> Extractor:
  """`fn` jitted, unless it already is (`network_features_fn`: jitting it again would bake its weights into the
  outer program as constants, slow to compile)."""
  return fn if getattr(fn, 'jitted', False) else jax.jit(fn)


def _inception(**kw) -> Extractor:
  from jaxdiff.metrics import inception  # pylint: disable=g-import-not-at-top  (heavy; only when asked)
  return inception.make_inception_features(**kw)


def _sscd(**kw) -> Extractor:
  from jaxdiff.metrics import sscd  # pylint: disable=g-import-not-at-top  (heavy; only when asked)
  return sscd.make_sscd_features(**kw)


_EXTRACTORS: dict[str, Callable[..., Extractor]] = {
    'pixels': pixel_features,
    'random_projection': random_projection_features,
    'inception': _inception,
    'sscd': _sscd,
}


def register_feature_extractor(name: str, factory: Callable[..., Extractor]) -> None:
  """Make `feature_extractor(name, **kw)` call `factory(**kw)`."""
  _EXTRACTORS[name] = factory


def feature_extractor_names() -> list[str]:
  """The names `feature_extractor` knows."""
  return sorted(_EXTRACTORS)


def feature_extractor(name: str, **kwargs: Any) -> Extractor:
  """The extractor `name` built with kwargs: a function images [N, H, W, C] -> features [N, D].

  'pixels'; 'random_projection' (dim=256, seed=0, nonlinearity='relu'); 'inception' (weights_path=...);
  'sscd' (weights_path=sscd_disc_mixup.torchvision.pt, size=288: unit-norm copy-detection descriptors).
  """
  if name not in _EXTRACTORS:
    raise ValueError(f'unknown feature extractor {name!r}; known: {sorted(_EXTRACTORS)}')
  return _EXTRACTORS[name](**kwargs)


def quality_metrics(feats_gen: jax.Array, feats_ref: jax.Array, key: jax.Array, *,
                    kid_num_subsets: int = 100, kid_subset_size: int = 1000,
                    sw_num_projections: int = 1024, sw_p: float = 2.0) -> dict[str, float]:
  """Frechet distance, KID (mean, std) and sliced Wasserstein between two feature sets [N, D].

  The KID subset size is capped at the smaller set's size. Returns host floats {'fd', 'kid', 'kid_std',
  'sw'}.
  """
  k_kid, k_sw = jax.random.split(key)
  size = min(kid_subset_size, feats_gen.shape[0], feats_ref.shape[0])
  kid_mean, kid_std = kid(feats_gen, feats_ref, kid_num_subsets, size, k_kid)
  return {'fd': frechet_distance_from_features(feats_gen, feats_ref), 'kid': float(kid_mean),
          'kid_std': float(kid_std),
          'sw': float(sliced_wasserstein(feats_gen, feats_ref, k_sw, sw_num_projections, sw_p))}
