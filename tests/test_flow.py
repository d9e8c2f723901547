"""Rectified flow (jaxdiff/diffusion/rectified_flow.py) and paper 3's family (jaxdiff/experiments/flow.py): the
loss vanishes at the exact velocity, Euler with the exact field of a Gaussian reproduces it, paper 3's U-Net
has the paper's parameter counts, a flow ensemble member equals its solo run and every evaluation row has the
quality metrics against both the test and the training set; bad flow configs name the field."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import ROOT, apply_overrides, tiny_config
from jaxdiff import config as config_lib
from jaxdiff import experiments
from jaxdiff.diffusion import rectified_flow as rf
from jaxdiff.io.writers import read_metrics
from jaxdiff.models.unet import UNet, parameter_count

PAPER3_COUNTS = {16: 2_926_690, 32: 7_929_010, 64: 25_751_890, 128: 92_670_610, 192: 201_286_610}
PAPER3_UNET = dict(image_size=32, channels=3, channel_mult=(1, 2, 4), num_res_blocks=3, attention_resolutions=(16, 8),
                   num_classes=10, emb_dim=512, scale_shift=True, resample='resblock', head_dim=64, groups=16)


def test_interpolation_runs_from_data_at_t0_to_noise_at_t1():
  x0, eps = jnp.ones((2, 3)), -jnp.ones((2, 3))
  np.testing.assert_allclose(rf.interpolate(x0, eps, jnp.array([0.0, 1.0])), [[1, 1, 1], [-1, -1, -1]])
  np.testing.assert_allclose(rf.interpolate(x0, eps, jnp.array([0.25, 0.5])), [[0.5] * 3, [0.0] * 3])


def test_the_loss_is_zero_at_the_exact_velocity_of_a_two_point_data_set():
  """One point per class: given its label, x_t determines x_0, and the exact velocity (x_t - x_0(y)) / t equals
  the target eps - x_0 for every noise draw, so the loss is zero (the other label's field is not). Without
  labels the exact field is the posterior mean of (x_t - x_0) / t, and it minimizes the loss."""
  points = jnp.array([[1.0, -1.0, 0.5], [-0.5, 2.0, 1.0]])
  y = jnp.arange(64) % 2
  x0 = points[y]
  key = jax.random.key(0)
  t = jnp.linspace(0.02, 1.0, 64)
  exact = lambda label: (lambda x, t: (x - points[label]) / t[:, None])   # noqa: E731
  assert float(jnp.max(rf.loss_at(exact(y), x0, t, key))) < 1e-9
  assert float(jnp.max(rf.losses(exact(y), x0, key, distribution='logit_normal'))) < 1e-6
  assert float(jnp.min(rf.loss_at(exact(1 - y), x0, t, key))) > 0.05

  def posterior_velocity(x, t):
    tb = t[:, None]
    logw = -jnp.sum(jnp.square(x[:, None, :] - (1 - tb[:, None]) * points[None]), -1) / (2 * tb ** 2)
    mean = jax.nn.softmax(logw, axis=1) @ points
    return (x - mean) / tb

  x0 = points[jnp.arange(4096) % 2]
  t = jnp.tile(jnp.linspace(0.05, 1.0, 16), 256)
  best = float(jnp.mean(rf.loss_at(posterior_velocity, x0, t, key)))
  for wrong in (lambda x, t: 1.1 * posterior_velocity(x, t), lambda x, t: posterior_velocity(x, t) + 0.1,
                lambda x, t: (x - 0.25) / t[:, None]):
    assert float(jnp.mean(rf.loss_at(wrong, x0, t, key))) > best


def test_euler_with_the_exact_velocity_of_a_gaussian_reproduces_its_mean_and_covariance():
  """Data N(mu, S): x_t ~ N((1-t) mu, C_t), C_t = (1-t)^2 S + t^2 I, and the exact velocity is
  E[eps | x_t] - E[x_0 | x_t] = (t I - (1-t) S) C_t^-1 (x_t - (1-t) mu) - mu."""
  mu = jnp.array([1.0, -0.5])
  cov = jnp.array([[1.0, 0.6], [0.6, 0.5]])

  def velocity(x, t):
    tt = t[0]
    c = (1 - tt) ** 2 * cov + tt ** 2 * jnp.eye(2)
    z = jnp.linalg.solve(c, (x - (1 - tt) * mu).T).T
    return z @ (tt * jnp.eye(2) - (1 - tt) * cov).T - mu

  x = np.asarray(rf.sample(velocity, (20_000, 2), jax.random.key(1), num_steps=250), np.float64)
  np.testing.assert_allclose(x.mean(0), mu, atol=0.03)
  np.testing.assert_allclose(np.cov(x.T), cov, atol=0.04)
  # Any step count: 5 Euler steps still move the noise to the data's scale, with a larger error.
  coarse = np.asarray(rf.sample(velocity, (20_000, 2), jax.random.key(1), num_steps=5), np.float64)
  assert np.abs(coarse.mean(0) - mu).max() < 0.1
  assert np.abs(np.cov(coarse.T) - cov).max() > np.abs(np.cov(x.T) - cov).max()


def test_logit_normal_times_have_median_sigmoid_loc_and_guidance_mixes_the_two_fields():
  t = rf.sample_times(jax.random.key(0), 20_000, 'logit_normal', loc=0.5, scale=1.0)
  assert float(jnp.median(t)) == pytest.approx(float(jax.nn.sigmoid(0.5)), abs=0.01)
  assert 0 < float(t.min()) and float(t.max()) < 1
  u = rf.sample_times(jax.random.key(0), 20_000)
  assert float(jnp.mean(u)) == pytest.approx(0.5, abs=0.01)
  v = lambda x, t, y: x * y[:, None]   # noqa: E731
  x, t, y = jnp.ones((3, 2)), jnp.zeros(3), jnp.array([1, 2, 3])
  np.testing.assert_allclose(rf.guided(v, y, 10, 0.0)(x, t), x * y[:, None])
  np.testing.assert_allclose(rf.guided(v, y, 10, 2.0)(x, t), 3 * x * y[:, None] - 2 * 10 * x)
  assert rf.time_from_ou(0.01) == pytest.approx(0.1244, abs=1e-3)


@pytest.mark.parametrize('width', sorted(PAPER3_COUNTS))
def test_paper_3_unet_has_the_papers_parameter_counts(width):
  """Exact with the two details inferred from the counts (scale-only GroupNorms, a scalar gate per attention
  block) and a zero null embedding; within 0.5% (0.13%) with jaxdiff's defaults for those three."""
  exact = nnx.eval_shape(lambda: UNet(width=width, **PAPER3_UNET, norm_bias=False, attention_gate=True,
                                      learned_null=False, rngs=nnx.Rngs(0)))
  assert parameter_count(exact) == PAPER3_COUNTS[width]
  if width in (16, 192):   # the largest and the smallest relative difference
    plain = nnx.eval_shape(lambda: UNet(width=width, **PAPER3_UNET, rngs=nnx.Rngs(0)))
    assert 0 < parameter_count(plain) / PAPER3_COUNTS[width] - 1 < 0.005


def test_the_cifar10_flow_config_builds_paper_3s_default_network():
  from configs import cifar10_flow
  cfg = cifar10_flow.get_config()
  config_lib.validate(cfg)
  assert (cfg.family, cfg.data.n, cfg.model.width, cfg.train.batch_size, cfg.optimizer.learning_rate,
          cfg.optimizer.ema_decay, cfg.flow.sample_steps, cfg.flow.guidance) == ('flow', 2048, 128, 16, 1e-4,
                                                                                 0.9999, 250, 0.0)
  assert set(cfg.eval.quality_references) == {'test', 'train'}
  exp = experiments.get('flow')
  family = exp.build_family(cfg, type('D', (), {'train': np.zeros((1, 32, 32, 3))})())
  assert parameter_count(nnx.eval_shape(lambda: family.init(jax.random.key(0)))) == PAPER3_COUNTS[128]


def test_the_config_sweeps_paper_3s_grids_and_refuses_unknown_arguments():
  from configs import cifar10_flow
  points = cifar10_flow.sweep('n,batch')
  assert len(points) == 16 and {p['data.n'] for p in points} == {2048, 4096, 8192, 16384}
  assert {p['train.batch_size'] for p in points} == {16, 32, 64, 128}
  assert [p['optimizer.learning_rate'] for p in cifar10_flow.sweep('lr')] == [1e-5, 5e-5, 1e-4, 4e-4]
  assert [p['model.width'] for p in cifar10_flow.sweep('width')] == [16, 32, 64, 128, 192]
  assert cifar10_flow.sweep('cpu') == [{'train.batch_size': b} for b in (2, 4, 8)]
  assert cifar10_flow.sweep('') == [{}]
  cpu = cifar10_flow.get_config('cpu')
  config_lib.validate(cpu)
  assert (cpu.family, cpu.data.name, tuple(cpu.ensemble.n)) == ('flow', 'digits', (8, 16, 32))
  with pytest.raises(ValueError, match="configs/cifar10_flow.py: unknown argument.*'nn'"):
    cifar10_flow.get_config('nn')


def tiny_flow_config(**overrides):
  """The paper-3 U-Net's fields on the tiny test U-Net (8x8 digits, width 8, two levels), 10 classes."""
  return tiny_config(**{'family': 'flow', 'model.num_classes': 10, 'model.emb_dim': 16, 'model.scale_shift': True,
                        'model.resample': 'resblock', 'model.head_dim': 8, 'model.norm_bias': False,
                        'model.attention_gate': True, 'model.learned_null': False, 'flow.sample_steps': 8,
                        **overrides})


def _strip(rows):
  timing = {'steps_per_sec', 'images_per_sec', 'elapsed_sec', 'eval_sec'}
  return [{k: v for k, v in r.items() if k not in timing} for r in rows]


def test_a_two_member_flow_ensemble_equals_its_solo_runs_and_writes_train_and_test_quality(tmp_path, cache_dir):
  cfg = tiny_flow_config(**{'data.cache_dir': cache_dir, 'ensemble.n': (4, 8), 'seed': 2, 'model.dropout': 0.1,
                            'optimizer.name': 'sgd', 'optimizer.learning_rate': 0.05, 'optimizer.momentum': 0.9,
                            'optimizer.ema_decay': 0.9, 'train.num_steps': 20, 'train.num_milestones': 2,
                            'flow.label_dropout': 0.2, 'flow.guidance': 1.0, 'eval.features': 'pixels',
                            'eval.quality_references': ('test', 'train')})
  ens = experiments.train(cfg, str(tmp_path / 'ens'))
  exp = experiments.get('flow')
  assert [(m['n'], m['seed']) for m in ens.summary['members']] == [(4, 2), (8, 2)]
  for i, m in enumerate(exp.members(cfg)):
    solo = experiments.train(exp.member_config(cfg, m), str(tmp_path / m.name))
    for a, b in zip(jax.tree.leaves(ens.member_params(i)), jax.tree.leaves(solo.state.ema_params), strict=True):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    member_rows = _strip(read_metrics(str(tmp_path / 'ens' / m.name)))
    solo_rows = _strip(read_metrics(str(tmp_path / m.name)))
    assert [r['step'] for r in member_rows] == [r['step'] for r in solo_rows]
    for a, b in zip(member_rows, solo_rows):
      assert a.keys() == b.keys()
      for k in b:
        assert a[k] == pytest.approx(b[k], rel=1e-3, abs=1e-4), k
    last = solo_rows[-1]
    for ref in ('', 'train_'):   # the same samples against the test set and against the training set
      assert {f'fd_{ref}pixels', f'kid_{ref}pixels', f'sw_{ref}pixels'} <= last.keys()
      assert np.isfinite(last[f'fd_{ref}pixels']) and last[f'fd_{ref}pixels'] > 0
    assert last['fd_pixels'] != last['fd_train_pixels']
    assert {'f_mem', 'loss_train_t', 'loss_test_t', 'loss_gap_t'} <= last.keys()
    summary = json.load(open(tmp_path / m.name / 'summary.json'))
    assert (summary['family'], summary['n'], summary['quality_key']) == ('flow', m.n, 'fd_pixels')
  assert os.path.exists(tmp_path / 'ens' / 'n4_seed2' / 'samples.png')


def test_flow_samples_are_images_with_balanced_labels_by_default():
  cfg = tiny_flow_config()
  family = experiments.get('flow').build_family(cfg, type('D', (), {'train': np.zeros((1, 8, 8, 1))})())
  model = family.init(jax.random.key(0))
  seen = []
  model_call = model.__call__

  class Spy:
    def __call__(self, x, t, y, **kw):
      seen.append(y)
      return model_call(x, t, y, **kw)

  x = family.sample(Spy(), jax.random.key(1), 12)
  assert x.shape == (12, 8, 8, 1) and bool(jnp.all(jnp.isfinite(x)))
  assert seen[0].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
  assert family.loss_time(0.01) == pytest.approx(rf.time_from_ou(0.01))


@pytest.mark.parametrize('overrides,match', [
    ({'flow.t_distribution': 'beta'}, "'flow.t_distribution'"),
    ({'flow.sample_steps': 0}, "'flow.sample_steps'"),
    ({'flow.guidance': 1.0}, "'flow.label_dropout': guidance 1.0 needs a trained null label"),
    ({'flow.guidance': 1.0, 'flow.label_dropout': 0.1, 'model.num_classes': 0}, "'flow.guidance'"),
    ({'flow.loss_t': 2.0}, "'flow.loss_t'"),
    ({'model.resample': 'pool'}, "'model.resample'"),
    ({'model.head_dim': 3}, "'model.head_dim': 5 heads do not divide"),
    ({'eval.quality_references': ('val',)}, "'eval.quality_references'"),
    ({'eval.quality_references': ('train',), 'data.n': 1}, "'eval.quality_references': 'train' needs"),
    ({'eval.loss_train_examples': -1}, "'eval.loss_train_examples'"),
    ({'model.emb_dim': -1}, "'model.emb_dim'"),
])
def test_bad_flow_configs_name_the_field(overrides, match):
  with pytest.raises(ValueError, match=match):
    config_lib.validate(tiny_flow_config(**overrides))


def _cpu_sweep(sweep_dir, batches=None, **overrides):
  """Run configs/cifar10_flow.py:cpu (its points, or those of the given B) through jaxdiff.sweep."""
  from jaxdiff import sweep
  base, points = sweep.points_from_spec(os.path.join(ROOT, 'configs', 'cifar10_flow.py:cpu'), sweep_dir)
  points = [p for p in points if batches is None or p.overrides['train.batch_size'] in batches]
  sweep.run_local(apply_overrides(base, overrides), points, log=lambda s: None)
  return points


def test_the_cpu_sweep_pipeline_trains_an_n_ensemble_per_b_point_and_normalizes_by_n(tmp_path, cache_dir):
  """The pipeline of the slow test below at a few steps and one B point (the B axis of the analysis is tested on
  planted runs in test_analysis): the point is an ensemble over N, the analysis reads every (N, B) run, and
  its normalized step is tau (N_min/N)(B/B_min)."""
  from jaxdiff.analysis.report import report
  _cpu_sweep(str(tmp_path / 'sweep'), batches=(4,), **{
      'data.cache_dir': cache_dir, 'train.num_steps': 8, 'train.num_milestones': 2, 'train.steps_per_dispatch': 4,
      'train.log_every': 4, 'train.checkpoint_every': 8, 'train.loop': 'host', 'model.kernels': 'xla',
      'eval.num_samples': 8, 'eval.sample_batch_size': 8, 'eval.grid_samples': 4, 'eval.bootstrap_resamples': 20,
      'eval.loss_noise_draws': 1, 'flow.sample_steps': 2})
  rep = report([str(tmp_path / 'sweep')], str(tmp_path / 'analysis'), num_bootstrap=20)
  assert sorted((r['n'], r['batch_size']) for r in rep['runs']) == [(8, 4), (16, 4), (32, 4)]
  for r in rep['runs']:
    assert r['family'] == 'flow' and r['tau_gen'] is not None
    assert r['T_gen'] == pytest.approx(r['tau_gen'] * 8 / r['n'])
  assert os.path.getsize(rep['files']['collapse_T_n.png']) > 0


@pytest.mark.slow
def test_the_cpu_sweep_collapses_in_n_and_b(tmp_path):
  """configs/cifar10_flow.py:cpu end to end (N = 8, 16, 32 as one ensemble per B = 2, 4, 8; ~13 minutes on
  the shared 2-core CPU, bench/README.md): the loss gap opens at tau_mem ~ N / B, so the jointly fitted
  exponents of N and 1/B are positive, and the normalized steps T_mem spread less than the steps tau_mem."""
  from jaxdiff.analysis.report import report
  _cpu_sweep(str(tmp_path / 'sweep'))
  rep = report([str(tmp_path / 'sweep')], str(tmp_path / 'analysis'), num_bootstrap=1000)
  assert len(rep['runs']) == 9
  joint = next(f for f in rep['fits'] if f['y'] == 'tau_mem_loss' and f['x'] == 'n+inv_batch_size')
  assert joint['n_lo'] > 0.5 and joint['inv_batch_size_lo'] > 0.3, joint   # recorded: [0.91, 1.46], [0.64, 1.05]
  tau = [r['tau_mem_loss'] for r in rep['runs']]
  t_norm = [r['T_mem_loss'] for r in rep['runs']]
  assert None not in tau
  assert max(t_norm) / min(t_norm) < (max(tau) / min(tau)) / 2
  for name in ('collapse_T_n.png', 'collapse_T_batch_size.png'):
    assert os.path.getsize(rep['files'][name]) > 0
