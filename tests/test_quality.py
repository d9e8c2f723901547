"""Frechet distance, KID and sliced Wasserstein agree with float64 references; extractors by name."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.stats

from jaxdiff.metrics import quality


def _random_cov(rng, d, rank=None):
  a = rng.standard_normal((d, rank or 2 * d))
  return a @ a.T / a.shape[1]


def _fd_scipy(mu1, c1, mu2, c2):
  """pytorch-fid's formula in float64 with scipy's generic sqrtm of the (non-symmetric) product."""
  covmean = scipy.linalg.sqrtm(c1 @ c2)
  return float(((mu1 - mu2) ** 2).sum() + np.trace(c1) + np.trace(c2) - 2 * np.trace(covmean).real)


def test_frechet_distance_matches_scipy_on_well_conditioned_covariances():
  rng = np.random.default_rng(0)
  for d in (3, 20, 64):
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    c1, c2 = _random_cov(rng, d), _random_cov(rng, d)
    assert quality.frechet_distance(mu1, c1, mu2, c2) == pytest.approx(_fd_scipy(mu1, c1, mu2, c2), rel=1e-9)


def test_frechet_distance_is_sound_on_near_singular_covariances():
  rng = np.random.default_rng(1)
  d = 32
  # Fewer features than dimensions: rank-9 sample covariances (the case of 10 samples of 32-d features).
  f1, f2 = rng.standard_normal((10, d)), rng.standard_normal((10, d)) + 0.5
  mu1, c1 = f1.mean(0), np.cov(f1, rowvar=False)
  mu2, c2 = f2.mean(0), np.cov(f2, rowvar=False)
  # Reference: tr sqrt(S1 S2) = sum of sqrt of the (real, >= 0) eigenvalues of S1 S2, in float64.
  ev = np.linalg.eigvals(c1 @ c2)
  ref = ((mu1 - mu2) ** 2).sum() + np.trace(c1) + np.trace(c2) - 2 * np.sqrt(np.clip(ev.real, 0, None)).sum()
  assert quality.frechet_distance(mu1, c1, mu2, c2) == pytest.approx(ref, rel=1e-6)
  # A distribution is at distance 0 from itself even when its covariance is singular.
  assert quality.frechet_distance(mu1, c1, mu1, c1) == pytest.approx(0.0, abs=1e-8)
  # Commuting (diagonal) covariances with zero variances: closed form sum (sqrt a - sqrt b)^2.
  a, b = np.array([0.0, 1.0, 4.0, 1e-12]), np.array([1.0, 0.0, 9.0, 0.0])
  assert quality.frechet_distance(np.zeros(4), np.diag(a), np.zeros(4), np.diag(b)) == pytest.approx(
      ((np.sqrt(a) - np.sqrt(b)) ** 2).sum(), abs=1e-9)


def test_feature_statistics_accumulate_in_graph_as_numpy():
  rng = np.random.default_rng(2)
  feats = (1e3 + rng.standard_normal((600, 8)) * np.arange(1, 9)).astype(np.float32)  # large mean
  mu, cov = jax.jit(quality.feature_statistics)(feats)
  np.testing.assert_allclose(mu, feats.astype(np.float64).mean(0), rtol=1e-6)
  np.testing.assert_allclose(cov, np.cov(feats.astype(np.float64), rowvar=False), rtol=1e-4, atol=1e-3)

  # Streaming over batches (a scan, as during evaluation) gives the same statistics.
  def body(stats, batch):
    return quality.stats_update(stats, batch), None
  stats, _ = jax.lax.scan(body, quality.stats_init(8), jnp.asarray(feats).reshape(6, 100, 8))
  mu_s, cov_s = quality.stats_finalize(stats)
  np.testing.assert_allclose(mu_s, mu, rtol=1e-6)
  np.testing.assert_allclose(cov_s, cov, rtol=1e-4, atol=1e-3)
  fd = quality.frechet_distance_from_features(feats, feats + 1.0)
  assert fd == pytest.approx(8.0, rel=1e-4)  # a shift by 1 in 8 dimensions


def _mmd2_reference(a, b):
  a, b = a.astype(np.float64), b.astype(np.float64)
  d = a.shape[1]
  k = lambda u, v: (u @ v.T / d + 1) ** 3
  m, n = len(a), len(b)
  kaa, kbb = k(a, a), k(b, b)
  return ((kaa.sum() - np.trace(kaa)) / (m * (m - 1)) + (kbb.sum() - np.trace(kbb)) / (n * (n - 1))
          - 2 * k(a, b).mean())


def test_kid_matches_float64_reference():
  rng = np.random.default_rng(3)
  a = rng.random((300, 16)).astype(np.float32)
  b = (rng.random((250, 16)) * 1.2).astype(np.float32)
  key = jax.random.key(7)
  mean, std = quality.kid(a, b, 10, 100, key)
  ia, ib = quality.kid_subset_indices(key, n_a=300, n_b=250, num_subsets=10, subset_size=100)
  ia, ib = np.asarray(ia), np.asarray(ib)
  assert all(len(set(row)) == 100 for row in ia)  # without replacement
  ref = np.array([_mmd2_reference(a[i], b[j]) for i, j in zip(ia, ib)])
  assert float(mean) == pytest.approx(ref.mean(), rel=1e-4)
  assert float(std) == pytest.approx(ref.std(), rel=1e-3)
  # Unbiased: two samples of one distribution give KID ~ 0 (within a few standard errors), not > 0.
  same_mean, same_std = quality.kid(a[:150], a[150:], 10, 100, key)
  assert abs(float(same_mean)) < 3 * float(same_std) + 1e-4 < float(mean)


def test_sliced_wasserstein_matches_exact_1d_and_projected_references():
  rng = np.random.default_rng(4)
  # In 1-D every direction is +-1: SW_p = W_p. Unequal sizes test the merged-quantile formula.
  x, y = rng.standard_normal((70, 1)), 2 + 0.5 * rng.standard_normal((45, 1))
  sw1 = quality.sliced_wasserstein(x, y, jax.random.key(0), num_projections=4, p=1.0)
  assert float(sw1) == pytest.approx(scipy.stats.wasserstein_distance(x[:, 0], y[:, 0]), rel=1e-5)
  # In D dims, against a float64 reference with the same directions (equal sizes: sorted differences).
  x, y = rng.standard_normal((200, 6)), rng.standard_normal((200, 6)) + 0.3
  key = jax.random.key(1)
  theta = np.asarray(quality.random_directions(key, 64, 6), np.float64)
  px, py = np.sort(theta @ x.T, axis=1), np.sort(theta @ y.T, axis=1)
  ref = np.sqrt(((px - py) ** 2).mean())
  assert float(quality.sliced_wasserstein(x, y, key, num_projections=64)) == pytest.approx(ref, rel=1e-5)
  # Unequal sizes against the same reference computed on quantile grids.
  y2 = y[:150]
  py2 = np.sort(theta @ y2.T, axis=1)
  u = (np.arange(600) + 0.5) / 600  # cell midpoints of the common refinement of the 1/200 and 1/150 grids
  q = lambda s, uu: s[:, np.minimum((uu * s.shape[1]).astype(int), s.shape[1] - 1)]
  ref2 = np.sqrt(((q(px, u) - q(py2, u)) ** 2).mean())
  assert float(quality.sliced_wasserstein(x, y2, key, num_projections=64)) == pytest.approx(ref2, rel=1e-5)


def test_feature_extractors_by_name():
  images = jax.random.uniform(jax.random.key(0), (5, 8, 8, 1))
  assert quality.feature_extractor('pixels')(images).shape == (5, 64)
  proj = quality.feature_extractor('random_projection', dim=32)
  f = proj(images)
  assert f.shape == (5, 32) and np.all(np.asarray(f) >= 0)  # relu
  np.testing.assert_array_equal(f, quality.feature_extractor('random_projection', dim=32)(images))  # fixed seed
  assert not np.allclose(f, quality.feature_extractor('random_projection', dim=32, seed=1)(images))
  with pytest.raises(ValueError, match='unknown feature extractor'):
    quality.feature_extractor('vgg')
  with pytest.raises(ValueError, match=r'\[N, H, W, C\]'):
    quality.feature_extractor('pixels')(images[0])
  quality.register_feature_extractor('mean_pixel', lambda: lambda x: x.mean(axis=(1, 2)))
  assert quality.feature_extractor('mean_pixel')(images).shape == (5, 1)


def test_quality_metrics_rank_a_closer_distribution_better():
  rng = np.random.default_rng(5)
  ref = rng.standard_normal((400, 8)).astype(np.float32)
  near = (rng.standard_normal((400, 8)) + 0.1).astype(np.float32)
  far = (rng.standard_normal((400, 8)) * 1.5 + 0.5).astype(np.float32)
  key = jax.random.key(0)
  m_near = quality.quality_metrics(near, ref, key, kid_num_subsets=5, kid_subset_size=200)
  m_far = quality.quality_metrics(far, ref, key, kid_num_subsets=5, kid_subset_size=200)
  assert all(m_near[k] < m_far[k] for k in ('fd', 'kid', 'sw'))


def test_inception_extractor_is_resolved_by_name(monkeypatch):
  from jaxdiff.metrics import inception  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(inception, 'make_inception_features', lambda **kw: ('built', kw))
  assert quality.feature_extractor('inception', weights_path='pt_inception.pth') == (
      'built', {'weights_path': 'pt_inception.pth'})
