"""Evaluator 'copy_score': paper 3's copy score of a run's samples at a milestone, in named features (pixel cosine
or SSCD), equal to a float64 brute force over the samples it drew; copies of training images score 1; the
config names the field of a bad setting."""

import numpy as np
import pytest

from conftest import tiny_config
from test_evaluate import _Replay, _untrained

from jaxdiff import config as config_lib
from jaxdiff import evaluators


def _brute_copy_score(samples, train, threshold=0.6):
  x = samples.reshape(len(samples), -1).astype(np.float64)
  y = train.reshape(len(train), -1).astype(np.float64)
  s = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (y / np.linalg.norm(y, axis=1, keepdims=True)).T
  return np.mean(s.max(1) > threshold), s.max(1).mean()


@pytest.mark.parametrize('source', ['train', 'test'])
def test_pixel_copy_score_is_the_brute_force_one_and_copies_score_one(source, cache_dir):
  cfg = tiny_config(**{'data.cache_dir': cache_dir, 'data.n': 16, 'data.n_test': 64, 'eval.num_samples': 32,
                       'eval.sample_batch_size': 16, 'eval.grid_samples': 32, 'eval.copy_features': 'pixels',
                       'eval.copy_threshold': 0.9, 'eval.metrics': ('copy_score',)})
  config_lib.validate(cfg, num_devices=1)
  mesh, images, family, graphdef, params = _untrained(cfg)
  replay = _Replay(family, images.train if source == 'train' else images.test[32:])
  scalars, figs = evaluators.Evaluation(cfg, replay, graphdef, images, mesh).evaluate(params, 10)
  assert set(scalars) == {'copy_score_pixels', 'copy_score_pixels_lo', 'copy_score_pixels_hi',
                          'copy_similarity_pixels'}
  score, similarity = _brute_copy_score(figs['samples'], images.to_pixels(images.train), threshold=0.9)
  assert scalars['copy_score_pixels'] == pytest.approx(score)
  assert scalars['copy_similarity_pixels'] == pytest.approx(similarity, abs=1e-5)
  assert scalars['copy_score_pixels_lo'] <= scalars['copy_score_pixels'] <= scalars['copy_score_pixels_hi']
  if source == 'train':
    assert scalars['copy_score_pixels'] == scalars['copy_score_pixels_lo'] == 1.0
    assert scalars['copy_similarity_pixels'] == pytest.approx(1.0, abs=1e-5)
  else:
    assert score < 1


def test_sscd_copy_score_finds_copies_with_the_weights_of_the_config(cache_dir, tmp_path):
  from jaxdiff.metrics import sscd  # pylint: disable=g-import-not-at-top
  weights = str(tmp_path / 'sscd_random.npz')
  np.savez(weights, **sscd.random_state_dict(0))
  cfg = tiny_config(**{'data.cache_dir': cache_dir, 'data.n': 16, 'data.n_test': 64, 'eval.num_samples': 16,
                       'eval.sample_batch_size': 16, 'eval.copy_weights': weights, 'eval.copy_input_size': 16,
                       'eval.metrics': ('copy_score',)})
  config_lib.validate(cfg, num_devices=1)
  mesh, images, family, graphdef, params = _untrained(cfg)
  ev = evaluators.Evaluation(cfg, _Replay(family, images.train), graphdef, images, mesh)
  scalars, _ = ev.evaluate(params, 10)
  assert scalars['copy_score_sscd'] == scalars['copy_score_sscd_lo'] == 1.0
  assert scalars['copy_similarity_sscd'] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize('overrides, match', [
    ({'eval.copy_features': 'sscd', 'eval.copy_weights': ''}, "'eval.copy_weights': SSCD features need"),
    ({'eval.copy_features': 'sscdd'}, "'eval.copy_features': must be one of"),
    ({'eval.copy_features': 'pixels', 'eval.copy_threshold': 1.0}, "'eval.copy_threshold'"),
    ({'eval.copy_features': 'pixels', 'eval.copy_input_size': -1}, "'eval.copy_input_size'"),
])
def test_bad_copy_settings_name_the_field(overrides, match):
  with pytest.raises(ValueError, match=match):
    config_lib.validate(tiny_config(**{'eval.metrics': ('copy_score',), **overrides}), num_devices=1)
