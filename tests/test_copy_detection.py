"""jaxdiff.metrics.copy_detection: the best cosine match equals a float64 brute force (ties to the lower index),
on one device and sharded; the copy score counts exactly the samples above the threshold; planted copies are
found while flipped and shifted images of the training set are not copies in pixel cosine."""

import numpy as np
import pytest
import jax
import jax.numpy as jnp

from conftest import run_python
from jaxdiff.metrics import copy_detection


def _brute(x, y):
  x = x.reshape(len(x), -1).astype(np.float64)
  y = y.reshape(len(y), -1).astype(np.float64)
  s = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (y / np.linalg.norm(y, axis=1, keepdims=True)).T
  return s.max(1), s.argmax(1)


def test_best_cosine_match_equals_float64_brute_force_across_chunks():
  rng = np.random.default_rng(0)
  y = rng.normal(size=(37, 5, 3)).astype(np.float32) + 3.0      # an offset: cosines near 1, small gaps
  x = np.concatenate([y[[4, 30]] * 2.5, rng.normal(size=(9, 5, 3)).astype(np.float32) + 3.0])
  out = jax.device_get(copy_detection.nearest_cosine(jnp.asarray(x), jnp.asarray(y), chunk_size=8))
  s, i = _brute(x, y)
  np.testing.assert_array_equal(out['index'], i)
  np.testing.assert_allclose(out['similarity'], s, atol=2e-6)
  assert list(out['index'][:2]) == [4, 30] and np.all(out['similarity'][:2] > 1 - 1e-6)   # scaled copies


def test_ties_go_to_the_lower_training_index_in_every_chunk():
  y = np.eye(4, dtype=np.float32)[[0, 1, 2, 1, 3, 1]]          # image 1 at indices 1, 3 and 5
  x = np.eye(4, dtype=np.float32)[[1]]
  for chunk in (1, 2, 4, 6):
    out = copy_detection.nearest_cosine(jnp.asarray(x), jnp.asarray(y), chunk_size=chunk)
    assert int(out['index'][0]) == 1 and float(out['similarity'][0]) == 1.0


def test_copy_score_counts_the_samples_above_the_threshold():
  sim = jnp.array([0.95, 0.61, 0.6, 0.2, -0.3])
  r = copy_detection.copy_score(sim, jax.random.key(0), threshold=0.6, num_resamples=200)
  assert float(r['copy_score']) == pytest.approx(0.4)          # strictly above 0.6: two of five
  assert list(np.asarray(r['copied'])) == [True, True, False, False, False]
  assert float(r['copy_score_lo']) <= 0.4 <= float(r['copy_score_hi'])
  with pytest.raises(ValueError, match='copy threshold'):
    copy_detection.copy_score(sim, jax.random.key(0), threshold=1.5)


def test_pixel_cosine_finds_planted_copies_and_not_flips_or_shifts():
  """Centred images (as the definition of a copy in feature space needs): exact and slightly noisy copies
  score ~1; horizontal flips and 3-pixel shifts of training images score far below 0.6."""
  rng = np.random.default_rng(1)
  y = rng.normal(size=(30, 16, 16)).astype(np.float32)
  copies = y[:5] + 0.1 * rng.normal(size=(5, 16, 16)).astype(np.float32)
  flips = y[5:10, :, ::-1]
  shifts = np.roll(y[10:15], 3, axis=2)
  x = np.concatenate([copies, flips, shifts])
  out = copy_detection.nearest_cosine(jnp.asarray(x), jnp.asarray(y))
  r = copy_detection.copy_score(out['similarity'], jax.random.key(0), num_resamples=100)
  assert list(np.asarray(r['copied'])) == [True] * 5 + [False] * 10
  np.testing.assert_array_equal(np.asarray(out['index'][:5]), np.arange(5))


def test_sharded_best_match_equals_one_device():
  r = run_python("""
import ml_collections
import numpy as np, jax, jax.numpy as jnp
from jaxdiff import sharding
from jaxdiff.metrics import copy_detection
assert jax.device_count() == 4
rng = np.random.default_rng(2)
y = rng.normal(size=(23, 12)).astype(np.float32)
y[17] = y[2]                                       # a duplicate in another shard: the lower index wins
x = np.concatenate([y[[2, 9, 22]], rng.normal(size=(5, 12)).astype(np.float32)])
mesh = sharding.make_mesh(ml_collections.ConfigDict({'data': -1}))
a = jax.device_get(copy_detection.nearest_cosine(jnp.asarray(x), jnp.asarray(y), chunk_size=4))
b = jax.device_get(jax.jit(lambda x, y: copy_detection.nearest_cosine_sharded(x, y, mesh, chunk_size=4))(x, y))
np.testing.assert_array_equal(a['index'], b['index'])
np.testing.assert_allclose(a['similarity'], b['similarity'], atol=1e-6)
assert list(b['index'][:3]) == [2, 9, 22]
print('ok')
""", devices=4)
  assert r.returncode == 0 and 'ok' in r.stdout, r.stderr[-3000:]
