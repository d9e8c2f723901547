"""Evaluation at milestones: rows, figures and summary.json of a run; copies give f_mem = 1, fresh images 0;
`--mode=eval` on saved checkpoints reproduces the rows written during training."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import run_python, tiny_config
from flax import nnx

from jaxdiff import evaluators, experiments
from jaxdiff.evaluators.quality import reference_blocks
from jaxdiff.experiments.unet import DDPM
from jaxdiff.io.writers import read_metrics
from jaxdiff.train.steps import log_spaced_milestones

UNET = experiments.get('ddpm')

EVAL_KEYS = {'f_mem', 'f_mem_lo', 'f_mem_hi', 'loss_train_t', 'loss_test_t', 'fd_random_projection',
             'kid_random_projection', 'sw_random_projection'}


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
  """One tiny run with evaluation at its 5 milestones, shared by the tests below."""
  workdir = str(tmp_path_factory.mktemp('run'))
  cfg = tiny_config(**{'data.cache_dir': str(tmp_path_factory.getbasetemp() / 'data-cache')})
  experiments.train(cfg, workdir)
  return cfg, workdir


def test_run_writes_eval_rows_figures_and_summary(run_dir):
  cfg, workdir = run_dir
  rows = [r for r in read_metrics(workdir) if 'f_mem' in r]
  milestones = log_spaced_milestones(cfg.train.num_steps, cfg.train.num_milestones)
  assert [r['step'] for r in rows] == list(milestones)
  for r in rows:
    assert EVAL_KEYS <= set(r), set(r)
    assert 0 <= r['f_mem_lo'] <= r['f_mem'] <= r['f_mem_hi'] <= 1
    assert r['loss_train_t'] > 0 and r['loss_test_t'] > 0
    # f_mem at k = 1/4, 1/3, 1/2 in every row, from the same ratios: nested, and the 1/3 one is f_mem.
    assert r['f_mem_k0.25'] <= r['f_mem_k0.333'] == r['f_mem'] <= r['f_mem_k0.5'], r
  # The fixed-time losses use the same noise at every milestone: training lowers the training loss.
  assert rows[-1]['loss_train_t'] < rows[0]['loss_train_t']
  summary = json.load(open(os.path.join(workdir, 'summary.json')))
  assert summary['quality_key'] == 'fd_random_projection'
  assert summary['final']['f_mem'] == rows[-1]['f_mem']
  assert summary['n'] == cfg.data.n and summary['num_milestones'] == len(milestones)
  # The parameter count (the analysis's p of the (n, p) phase diagram), from the network's abstract shapes.
  abstract = nnx.eval_shape(lambda: DDPM(cfg, (8, 8, 1)).init(jax.random.key(0)))
  assert summary['num_params'] == sum(x.size for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
  assert summary['optimizer'] == cfg.optimizer.name
  for name in ('samples.png', 'neighbours.png'):
    assert os.path.getsize(os.path.join(workdir, name)) > 1000


def test_eval_mode_reproduces_the_training_rows(run_dir, tmp_path):
  cfg, workdir = run_dir
  out = str(tmp_path / 'eval')
  summary = experiments.evaluate(cfg, workdir, out)
  during = {r['step']: r for r in read_metrics(workdir) if 'f_mem' in r}
  after = {r['step']: r for r in read_metrics(out)}
  assert set(after) == set(during)  # every milestone checkpoint was kept and evaluated
  for step, r in after.items():
    for k in EVAL_KEYS:
      assert r[k] == pytest.approx(during[step][k], rel=1e-5, abs=1e-7), (step, k)
  assert summary['tau_gen'] == json.load(open(os.path.join(workdir, 'summary.json')))['tau_gen']
  with pytest.raises(ValueError, match='no checkpoint for steps'):
    UNET.evaluate(cfg, workdir, out, steps=[7])


def _untrained(cfg):
  """(mesh, images, family, graphdef, params) of a freshly initialized U-Net of cfg."""
  mesh = UNET.prepare(cfg)
  images = UNET.load_data(cfg)
  family = UNET.build_family(cfg, images)
  graphdef, params = nnx.split(family.init(jax.random.key(0)), nnx.Param)
  return mesh, images, family, graphdef, params


class _Replay:
  """A stand-in family whose 'samples' are given images: tests the evaluator's plumbing and decisions."""

  def __init__(self, family, images):
    self.family, self.images = family, jnp.asarray(images)
    self.loss_time = family.loss_time

  def sample(self, model, key, num, y=None):
    idx = jax.random.choice(key, self.images.shape[0], (num,), replace=self.images.shape[0] < num)
    return self.images[idx]

  def loss_at(self, model, x, t, key, y=None):
    return self.family.loss_at(model, x, t, key, y)


@pytest.mark.parametrize('source', ['train', 'test'])
def test_copies_of_training_images_are_memorized_and_held_out_images_are_not(source, cache_dir):
  cfg = tiny_config(**{'data.cache_dir': cache_dir, 'data.n': 16, 'data.n_test': 64, 'eval.num_samples': 32,
                       'eval.sample_batch_size': 16, 'eval.grid_samples': 32})
  mesh, images, family, graphdef, params = _untrained(cfg)
  replay = _Replay(family, images.train if source == 'train' else images.test[32:])
  ev = evaluators.Evaluation(cfg, replay, graphdef, images, mesh, metrics=UNET.metrics(cfg))
  scalars, figs = ev.evaluate(params, 10)
  # The decisions are those of a float64 brute-force search over the samples the evaluator drew.
  x = figs['samples'].reshape(32, -1).astype(np.float64)
  y = images.to_pixels(images.train).reshape(16, -1).astype(np.float64)
  d = np.sort(np.sqrt(((x[:, None] - y[None]) ** 2).sum(-1)), axis=1)
  ratio = np.where(d[:, 1] > 0, d[:, 0] / np.maximum(d[:, 1], 1e-300), 0.0)
  assert scalars['f_mem'] == pytest.approx(np.mean(ratio < 1 / 3))
  for k, key in ((1 / 4, 'f_mem_k0.25'), (1 / 3, 'f_mem_k0.333'), (1 / 2, 'f_mem_k0.5')):
    assert scalars[key] == pytest.approx(np.mean(ratio < k)), key
  if source == 'train':  # every sample is a copy, and each figure pair shows it beside the image it copies
    assert scalars['f_mem'] == scalars['f_mem_lo'] == scalars['f_mem_hi'] == 1.0
    np.testing.assert_allclose(figs['samples'], figs['neighbours'], atol=1e-6)
  else:  # held-out digits: (almost) none is a near-copy of one of the 16 training digits
    assert scalars['f_mem'] <= 0.1 and scalars['f_mem_lo'] <= scalars['f_mem'] <= scalars['f_mem_hi']


def test_quality_is_averaged_over_disjoint_reference_sets(cache_dir):
  """eval.num_reference_sets = 3: fd is the mean of the Frechet distances to three disjoint blocks of the test
  set (float64 reference per block) and fd_*_set_std their spread; too few test images name the field."""
  from jaxdiff import config as config_lib
  from jaxdiff.metrics import quality
  cfg = tiny_config(**{'data.cache_dir': cache_dir, 'data.n': 16, 'data.n_test': 96, 'eval.num_samples': 32,
                       'eval.sample_batch_size': 32, 'eval.grid_samples': 32, 'eval.num_reference': 30,
                       'eval.num_reference_sets': 3})
  mesh, images, family, graphdef, params = _untrained(cfg)
  ev = evaluators.Evaluation(cfg, _Replay(family, images.test[90:]), graphdef, images, mesh,
                             metrics=UNET.metrics(cfg))
  scalars, figs = ev.evaluate(params, 3)
  extract = quality.feature_extractor(cfg.eval.features)
  gen = np.asarray(extract(jnp.asarray(figs['samples'])), np.float64)
  fds = []
  for j in range(3):
    ref = np.asarray(extract(jnp.asarray(images.to_pixels(images.test[30 * j:30 * (j + 1)]))), np.float64)
    mu1, mu2 = gen.mean(0), ref.mean(0)
    c1, c2 = np.cov(gen, rowvar=False), np.cov(ref, rowvar=False)
    w = np.linalg.eigvals(c1 @ c2)
    fds.append(float(((mu1 - mu2) ** 2).sum() + np.trace(c1) + np.trace(c2) - 2 * np.sqrt(w.clip(0)).real.sum()))
  assert len(set(np.round(fds, 6))) == 3          # the blocks differ
  assert scalars['fd_random_projection'] == pytest.approx(np.mean(fds), rel=1e-3)
  assert scalars['fd_random_projection_set_std'] == pytest.approx(np.std(fds, ddof=1), rel=1e-2)
  assert {'kid_random_projection_set_std', 'sw_random_projection_set_std'} <= set(scalars)
  assert [(b.start, b.stop) for b in reference_blocks(96, 0, 3)] == [(0, 32), (32, 64), (64, 96)]
  bad = tiny_config(**{'data.n_test': 96, 'eval.num_reference': 40, 'eval.num_reference_sets': 3})
  with pytest.raises(ValueError, match="'eval.num_reference'.*n_test >= 120"):
    config_lib.validate(bad, num_devices=1)


def test_evaluation_is_the_same_on_eight_devices(run_dir):
  """Samples split over 8 devices, loss chunks sharded: the same row as on one device."""
  cfg, workdir = run_dir
  code = f'''
import json, jax
from jaxdiff import experiments
from jaxdiff.io.writers import read_metrics
import ml_collections
cfg = ml_collections.ConfigDict(json.load(open({os.path.join(workdir, 'config.json')!r})))
cfg.model.channel_mult = tuple(cfg.model.channel_mult)
cfg.model.attention_resolutions = tuple(cfg.model.attention_resolutions)
assert jax.device_count() == 8
experiments.get('ddpm').evaluate(cfg, {workdir!r}, {workdir + '/eval8'!r}, steps=[{cfg.train.num_steps}])
print(json.dumps(read_metrics({workdir + '/eval8'!r})[-1]))
'''
  proc = run_python(code, devices=8)
  assert proc.returncode == 0, proc.stderr[-3000:]
  row8 = json.loads(proc.stdout.strip().splitlines()[-1])
  row1 = [r for r in read_metrics(workdir) if 'f_mem' in r][-1]
  for k in ('f_mem', 'f_mem_lo', 'f_mem_hi'):
    assert row8[k] == row1[k], k
  for k in ('loss_train_t', 'loss_test_t', 'fd_random_projection'):
    assert row8[k] == pytest.approx(row1[k], rel=1e-3), k


def test_quality_against_the_training_set_and_the_training_loss_on_one_batch(cache_dir):
  """eval.quality_references = ('test', 'train'): the same samples (here copies of training digits) get
  fd_train_* = the Frechet distance to the training set (float64 reference), below their test-set fd_*;
  eval.loss_train_examples = 4: loss_train_t is the loss of the first 4 training images alone."""
  import dataclasses
  from jaxdiff.metrics import quality
  cfg = tiny_config(**{'data.cache_dir': cache_dir, 'data.n': 16, 'data.n_test': 64, 'eval.num_samples': 32,
                       'eval.sample_batch_size': 32, 'eval.grid_samples': 32,
                       'eval.quality_references': ('test', 'train'), 'eval.loss_train_examples': 4})
  mesh, images, family, graphdef, params = _untrained(cfg)
  ev = evaluators.Evaluation(cfg, _Replay(family, images.train), graphdef, images, mesh,
                             metrics=('quality', 'losses'))
  scalars, figs = ev.evaluate(params, 3)
  extract = quality.feature_extractor(cfg.eval.features)
  gen = np.asarray(extract(jnp.asarray(figs['samples'])), np.float64)
  ref = np.asarray(extract(jnp.asarray(images.to_pixels(images.train))), np.float64)
  c1, c2 = np.cov(gen, rowvar=False), np.cov(ref, rowvar=False)
  w = np.linalg.eigvals(c1 @ c2)
  fd = float(((gen.mean(0) - ref.mean(0)) ** 2).sum() + np.trace(c1) + np.trace(c2)
             - 2 * np.sqrt(w.clip(0)).real.sum())
  assert scalars['fd_train_random_projection'] == pytest.approx(fd, rel=1e-3, abs=1e-3)
  assert scalars['fd_train_random_projection'] < scalars['fd_random_projection']
  assert {'kid_train_random_projection', 'sw_train_random_projection', 'kid_random_projection'} <= set(scalars)
  first4 = dataclasses.replace(images, train=images.train[:4], train_labels=images.train_labels[:4])
  cfg_all = tiny_config(**{'data.cache_dir': cache_dir, 'data.n': 16, 'data.n_test': 64})
  alone = evaluators.Evaluation(cfg_all, family, graphdef, first4, mesh, metrics=('losses',))
  assert scalars['loss_train_t'] == pytest.approx(alone.evaluate(params, 3)[0]['loss_train_t'], rel=1e-5)
  assert scalars['loss_test_t'] == pytest.approx(alone.evaluate(params, 3)[0]['loss_test_t'], rel=1e-5)
