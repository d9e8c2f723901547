"""The memorization ratio finds planted copies exactly as a float64 brute force does, chunked and sharded."""

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff.metrics import memorization
from tests.conftest import run_python

SHAPE = (4, 4, 3)  # D = 48


def _reference(samples, train):
  """Brute force in float64: (d1, d2, index, index2), ties to the lower index."""
  x = samples.reshape(len(samples), -1).astype(np.float64)
  y = train.reshape(len(train), -1).astype(np.float64)
  d = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
  order = np.argsort(d, axis=1, kind='stable')[:, :2]
  dd = np.sqrt(np.take_along_axis(d, order, axis=1))
  return dd[:, 0], dd[:, 1], order[:, 0], order[:, 1]


def _planted(seed=0, n=300, m=90):
  """Training images; samples = noisy copies (some very close, some borderline) + fresh images."""
  rng = np.random.default_rng(seed)
  train = rng.random((n,) + SHAPE, dtype=np.float32)
  idx = rng.integers(0, n, m // 3)
  noise = np.array([0.003, 0.03, 0.1])[np.arange(m // 3) % 3][:, None, None, None]
  copies = train[idx] + noise * rng.standard_normal((m // 3,) + SHAPE).astype(np.float32)
  fresh = rng.random((m - m // 3,) + SHAPE, dtype=np.float32)
  return np.concatenate([copies, fresh]).astype(np.float32), train, idx


def _assert_matches_reference(out, samples, train, k=1 / 3):
  d1, d2, i1, i2 = _reference(samples, train)
  np.testing.assert_array_equal(np.asarray(out['index']), i1)
  np.testing.assert_array_equal(np.asarray(out['index2']), i2)
  np.testing.assert_allclose(out['d1'], d1, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out['d2'], d2, rtol=1e-5, atol=1e-6)
  ratio = memorization.memorization_ratio(out, k=k)
  np.testing.assert_array_equal(np.asarray(ratio['memorized']), d1 / d2 < k)


@pytest.mark.parametrize('chunk_size,group_size,num_candidates,sample_chunk_size', [
    (4096, 64, 8, None),    # one chunk
    (64, 8, 4, 32),         # several chunks; exact pass in sample blocks
    (100, 7, 3, None),      # chunk and group sizes that divide nothing: padding
])
def test_ratio_test_finds_planted_copies(chunk_size, group_size, num_candidates, sample_chunk_size):
  samples, train, idx = _planted()
  out = memorization.nearest_two(samples, train, chunk_size=chunk_size, group_size=group_size,
                                 num_candidates=num_candidates, sample_chunk_size=sample_chunk_size)
  _assert_matches_reference(out, samples, train)
  # The close copies (noise 0.003, every third planted sample) point at their source and are memorized.
  close = np.arange(len(idx)) % 3 == 0
  np.testing.assert_array_equal(np.asarray(out['index'])[: len(idx)][close], idx[close])
  assert np.all(np.asarray(memorization.memorization_ratio(out)['memorized'])[: len(idx)][close])


def test_sharded_over_8_devices_matches_reference():
  code = textwrap.dedent("""
      import types, jax, numpy as np
      from jaxdiff.metrics import memorization
      from jaxdiff.sharding import make_mesh
      from tests.test_memorization import _planted, _assert_matches_reference
      mesh = make_mesh(types.SimpleNamespace(data=-1))
      assert mesh.shape['data'] == 8
      samples, train, _ = _planted(seed=1, n=301, m=91)    # neither divisible by 8: padding on both axes
      for shard in ('train', 'samples'):
        for k in (4, 2):   # 2 candidates: hardly any certificate, every shard searches exhaustively
          f = jax.jit(lambda s, t: memorization.nearest_two_sharded(s, t, mesh, shard=shard, chunk_size=16,
                                                                    group_size=4, num_candidates=k))
          _assert_matches_reference(f(samples, train), samples, train)
      # Fewer training images than devices: most shards hold only padding.
      few = jax.jit(lambda s, t: memorization.nearest_two_sharded(s, t, mesh))(samples, train[:5])
      _assert_matches_reference(few, samples, train[:5])
      out = jax.jit(lambda s, t, k: memorization.memorization_metrics(s, t, k, mesh=mesh))(
          train[:40], train, jax.random.key(0))
      print('F_MEM', float(out['f_mem']))
  """)
  proc = run_python(code, devices=8)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'F_MEM 1.0' in proc.stdout


def test_training_images_give_f_mem_one_and_fresh_images_zero():
  rng = np.random.default_rng(2)
  train = rng.random((200,) + SHAPE, dtype=np.float32)
  fresh = rng.random((64,) + SHAPE, dtype=np.float32)
  metric = jax.jit(lambda s, t, k: memorization.memorization_metrics(s, t, k, chunk_size=64, group_size=8))
  copies = metric(train[:64], train, jax.random.key(0))
  assert float(copies['f_mem']) == 1.0 and float(copies['f_mem_lo']) == 1.0
  np.testing.assert_array_equal(np.asarray(copies['index']), np.arange(64))
  np.testing.assert_array_equal(np.asarray(copies['d1']), 0.0)
  novel = metric(fresh, train, jax.random.key(0))
  assert float(novel['f_mem']) == 0.0 and float(novel['f_mem_hi']) == 0.0


def test_cancellation_cannot_flip_a_decision():
  # Bright images (pixels ~ 1000, |x|^2 ~ 5e7) that differ by ~1e-2: |x|^2 - 2 x.y + |y|^2 in float32 has
  # an error of several units, far above the squared distances (~1e-3 to 1e-1) that decide the ratio.
  rng = np.random.default_rng(3)
  d = int(np.prod(SHAPE))
  base = 1000.0 + rng.random(d)
  cluster = np.stack([base + s * rng.standard_normal(d) for s in (0.0, 0.02, 0.02)])  # 3 bright near-twins
  far = rng.random((50, d))
  train = np.concatenate([far[:20], cluster, far[20:]]).astype(np.float32).reshape((-1,) + SHAPE)
  samples = np.stack([base + 0.001 * rng.standard_normal(d) for _ in range(8)]   # copies of cluster[0]
                     + [base + 0.02 * rng.standard_normal(d) for _ in range(8)])  # between the twins
  samples = samples.astype(np.float32).reshape((-1,) + SHAPE)
  out = memorization.nearest_two(samples, train, chunk_size=16, group_size=4, num_candidates=4)
  _assert_matches_reference(out, samples, train)
  d1, d2, _, _ = _reference(samples, train)
  assert np.all(d1[:8] / d2[:8] < 1 / 3) and np.all(d1[8:] / d2[8:] > 1 / 3)  # both decisions occur
  # The plain expansion in float32 gets these decisions wrong: the test would catch a fast-pass-only metric.
  x = samples.reshape(16, -1)
  y = train.reshape(len(train), -1)
  naive = np.maximum((x * x).sum(1)[:, None] - 2 * x @ y.T + (y * y).sum(1)[None], 0)
  naive_sorted = np.sort(naive, axis=1)
  naive_ratio = np.sqrt(naive_sorted[:, 0]) / np.sqrt(np.maximum(naive_sorted[:, 1], 1e-30))
  assert np.any((naive_ratio < 1 / 3) != (d1 / d2 < 1 / 3))


def test_certificate_flags_when_candidates_may_miss_the_true_neighbours():
  samples, train, _ = _planted(seed=4, n=64, m=30)
  assert np.all(np.asarray(memorization.nearest_two(samples, train, num_candidates=64)['certified']))
  # Bright near-twins at +1000 and their mirror images at -1000 (the training mean, near 0, removes no offset),
  # only 3 candidates: the fast pass's rounding (|x|^2 ~ 5e7) swamps the twins' differences (~1e-2), so it cannot
  # certify, and its candidates miss the true neighbours; the exhaustive search still finds them exactly.
  rng = np.random.default_rng(5)
  d = int(np.prod(SHAPE))
  base = 1000.0 + rng.random(d)
  twins = base + 0.02 * rng.standard_normal((12, d))
  train = np.concatenate([twins, -twins]).astype(np.float32).reshape((-1,) + SHAPE)
  samples = (base + 0.02 * rng.standard_normal((8, d))).astype(np.float32).reshape((-1,) + SHAPE)
  out = memorization.nearest_two(samples, train, num_candidates=3)
  assert not np.any(np.asarray(out['certified']))
  _assert_matches_reference(out, samples, train)


def test_uncertified_samples_are_searched_exhaustively_so_every_decision_is_exact():
  """Two candidates leave (nearly) every sample without a certificate: each is searched over the whole training
  set, and indices, distances and decisions equal the float64 brute force, in one chunk or several."""
  samples, train, idx = _planted(seed=6)
  for chunk_size in (4096, 64):
    out = memorization.nearest_two(samples, train, num_candidates=2, chunk_size=chunk_size, group_size=8)
    assert np.sum(~np.asarray(out['certified'])) > len(samples) // 2
    _assert_matches_reference(out, samples, train)
  metrics = memorization.memorization_metrics(samples, train, jax.random.key(0), num_candidates=2)
  assert int(metrics['num_uncertified']) > len(samples) // 2   # counted: they needed the exhaustive search
  d1, d2, _, _ = _reference(samples, train)
  assert float(metrics['f_mem']) == pytest.approx(np.mean(d1 / d2 < 1 / 3))


@pytest.mark.parametrize('offset', [0.0, 1e4])
def test_raw_pixel_values_with_a_large_offset_give_the_brute_force_decisions(offset):
  """Raw 0-255 pixels (plus a large common offset): the fast pass works on data centred on the training mean,
  so it keeps its certificate, and near-copies, borderline copies and fresh images are decided as in float64."""
  rng = np.random.default_rng(7)
  train = (np.floor(256 * rng.random((200,) + SHAPE)) + offset).astype(np.float32)
  idx = rng.integers(0, 200, 60)
  noise = np.array([1.0, 10.0, 30.0])[np.arange(60) % 3][:, None, None, None]
  copies = train[idx] + noise * rng.standard_normal((60,) + SHAPE)
  fresh = np.floor(256 * rng.random((40,) + SHAPE)) + offset
  samples = np.concatenate([copies, fresh]).astype(np.float32)
  out = memorization.nearest_two(samples, train, num_candidates=4)
  assert np.all(np.asarray(out['certified']))
  _assert_matches_reference(out, samples, train)
  d1, d2, _, _ = _reference(samples, train)
  assert np.any(d1 / d2 < 1 / 3) and np.any(d1 / d2 > 1 / 3)   # both decisions occur


def test_bootstrap_interval_matches_numpy():
  memorized = np.zeros(400, bool)
  memorized[:120] = True  # f = 0.3
  rng = np.random.default_rng(0)
  boot = memorized[rng.integers(0, 400, (20000, 400))].mean(1)
  ref_lo, ref_hi = np.quantile(boot, [0.025, 0.975])
  for method in ('resample', 'binomial'):  # two samplers of the same bootstrap distribution
    f, lo, hi = memorization.f_mem_bootstrap(jnp.asarray(memorized), jax.random.key(0), method=method)
    assert float(f) == pytest.approx(0.3)
    assert abs(float(lo) - ref_lo) < 0.01 and abs(float(hi) - ref_hi) < 0.01, method
  # Same key, same interval (explicit randomness); all memorized: a degenerate interval at 1.
  assert memorization.f_mem_bootstrap(jnp.asarray(memorized), jax.random.key(0))[1] == lo
  assert [float(v) for v in memorization.f_mem_bootstrap(jnp.ones(50, bool), jax.random.key(1))] == [1, 1, 1]


def test_ratio_threshold_and_duplicates():
  nn = {'d1': jnp.array([0.0, 1.0, 1.0, 0.0]), 'd2': jnp.array([0.0, 2.9, 3.1, 5.0])}
  r = memorization.memorization_ratio(nn, k=1 / 3)
  # d1 = d2 = 0 (a copy of a duplicated training image) counts as memorized.
  np.testing.assert_array_equal(np.asarray(r['memorized']), [True, False, True, True])
  assert list(np.asarray(memorization.memorization_ratio(nn, k=1 / 2)['memorized'])) == [True] * 4


def test_bad_input_is_refused():
  x = np.zeros((3, 4, 4, 1), np.float32)
  with pytest.raises(ValueError, match='differ in size'):
    memorization.nearest_two(x, np.zeros((5, 4, 4, 3), np.float32))
  with pytest.raises(ValueError, match='>= 2 training images'):
    memorization.nearest_two(x, x[:1])
  with pytest.raises(ValueError, match='threshold k'):
    memorization.memorization_ratio({'d1': jnp.zeros(2), 'd2': jnp.ones(2)}, k=2.0)
