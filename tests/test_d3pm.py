"""Uniform-transition D3PM on grammar data (paper 2): the forward marginal and the posterior against a float64
brute force, the KL loss vanishes at the true x_0, an oracle sampler returns its sequence, the U-Net has paper
2's parameter count, and the 'd3pm' family trains through the shared seam (an ensemble member equals its solo
run, the evaluators and figures are written, bad configs name the field)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import apply_overrides, train_member_and_solo
from jaxdiff import config as config_lib
from jaxdiff import experiments
from jaxdiff.analysis.report import report
from jaxdiff.data import rhm
from jaxdiff.diffusion import d3pm
from jaxdiff.evaluators.copies import copy_flags
from jaxdiff.io.writers import read_metrics
from jaxdiff.models.conv1d_unet import parameter_count

V = 5


def _kernels(schedule):
  """Float64 one-step kernels Q_t = (1 - beta_t) I + beta_t / v 11^T, t = 0..T."""
  betas = np.asarray(schedule.betas, np.float64)
  return [(1 - b) * np.eye(V) + b / V * np.ones((V, V)) for b in betas]


def test_marginal_and_posterior_match_a_float64_brute_force():
  sched = d3pm.uniform_schedule(V, num_steps=50, beta_min=1e-3, beta_max=0.1)
  assert float(sched.alpha_bars[0]) == pytest.approx(0.999)
  Q = _kernels(sched)
  x0 = np.eye(V)[[0, 3, 4]]                 # three tokens, one-hot
  for t in (1, 2, 17, 50):
    # q(x_t | x_0) = x_0 Q_0 Q_1 ... Q_t (the data sit one kernel below level 0).
    prod = np.linalg.multi_dot([np.eye(V)] + Q[:t + 1])
    got = d3pm.q_marginal(sched, jnp.asarray(x0[None], jnp.float32), jnp.array([t]))[0]
    np.testing.assert_allclose(got, x0 @ prod, rtol=2e-5, atol=1e-6)
    # q(x_{t-1} | x_t, x_0) ∝ Q_t[x_{t-1}, x_t] (x_0 Q_0..Q_{t-1})[x_{t-1}], for every x_t.
    prev = x0 @ np.linalg.multi_dot([np.eye(V)] + Q[:t])
    for xt in range(V):
      brute = Q[t][:, xt][None] * prev
      brute /= brute.sum(-1, keepdims=True)
      xt_oh = jnp.asarray(np.eye(V)[[xt] * 3][None], jnp.float32)
      got = d3pm.q_posterior(sched, xt_oh, jnp.asarray(x0[None], jnp.float32), jnp.array([t]))[0]
      np.testing.assert_allclose(got, brute, rtol=1e-4, atol=1e-6)
  # The forward draws follow q(x_t | x_0).
  t = jnp.full((20_000,), 30)
  x_t = d3pm.noise(sched, jax.random.key(0), jnp.asarray(np.tile(x0[:1], (20_000, 1, 1)), jnp.float32), t)
  np.testing.assert_allclose(np.asarray(x_t).mean((0, 1)), x0[0] @ np.linalg.multi_dot(Q[:31]), atol=0.01)


def test_kl_loss_is_zero_at_the_true_x0_and_positive_elsewhere():
  sched = d3pm.uniform_schedule(V, num_steps=20)
  key = jax.random.key(1)
  x0 = jax.nn.one_hot(jax.random.randint(key, (6, 8), 0, V), V)
  t = jnp.arange(1, 7) * 3
  x_t = d3pm.noise(sched, jax.random.key(2), x0, t)
  exact = d3pm.kl_losses(sched, 1e4 * x0, x0, x_t, t)
  np.testing.assert_allclose(exact, 0.0, atol=1e-6)
  wrong = d3pm.kl_losses(sched, jnp.zeros_like(x0), x0, x_t, t)
  assert bool(jnp.all(wrong > 1e-4))
  ce = d3pm.kl_losses(sched, jnp.zeros_like(x0), x0, x_t, t, ce_weight=0.5)
  np.testing.assert_allclose(ce - wrong, 0.5 * np.log(V), rtol=1e-5)


def test_the_sampler_with_an_oracle_x0_predictor_returns_its_training_sequence():
  sched = d3pm.uniform_schedule(8, num_steps=200)
  seq = jnp.array([3, 1, 4, 1, 5, 2, 6, 5])
  oracle = lambda x_t, t: jnp.broadcast_to(1e4 * jax.nn.one_hot(seq, 8), x_t.shape)  # noqa: E731
  out = jax.jit(lambda k: d3pm.sample(sched, oracle, k, (16, 8)))(jax.random.key(0))
  assert out.dtype == jnp.int32
  np.testing.assert_array_equal(out, np.tile(seq, (16, 1)))


def test_the_unet_has_paper_2s_parameter_count():
  assert parameter_count(v=8, width=1024, s=2, L=3) == 18_911_232   # from shapes, nothing allocated
  assert parameter_count(v=8, width=128, s=2, L=3) == 299_520          # SPEC: ~0.3M


def test_copies_are_exact_matches_of_training_sequences():
  train = jnp.array([[0, 1, 2, 3], [3, 3, 3, 3], [1, 0, 1, 0]])
  samples = jnp.array([[3, 3, 3, 3], [3, 3, 3, 2], [1, 0, 1, 0], [0, 1, 2, 2]])
  np.testing.assert_array_equal(copy_flags(samples, train, 4), [True, False, True, False])


# ------------------------------------------------------------------------------------------------------------
# The family through the experiment table.


def tiny_d3pm_config(**overrides):
  c = config_lib.default_config()
  c.family = 'd3pm'
  c.d3pm.width, c.d3pm.num_steps, c.d3pm.loss_windows = 16, 20, 4
  c.data.n, c.data.n_test = 32, 32
  c.optimizer.name, c.optimizer.learning_rate = 'adam', 1e-2
  c.train.num_steps, c.train.batch_size, c.train.steps_per_dispatch, c.train.loop = 30, 8, 10, 'host'
  c.train.log_every, c.train.checkpoint_every, c.train.num_milestones = 10, 30, 2
  c.eval.num_samples, c.eval.bootstrap_resamples, c.eval.loss_batch_size, c.eval.loss_noise_draws = 32, 100, 32, 1
  return apply_overrides(c, overrides)


def test_a_two_member_ensemble_over_p_equals_its_solo_runs_and_writes_the_grammar_metrics(tmp_path):
  cfg = tiny_d3pm_config(**{'ensemble.n': (16, 32), 'seed': 3})
  ens = experiments.train(cfg, str(tmp_path / 'ens'))
  exp = experiments.get('d3pm')
  assert [(m['n'], m['seed']) for m in ens.summary['members']] == [(16, 3), (32, 3)]
  assert os.path.exists(tmp_path / 'ens' / 'validity_copies.png')
  rep = report([str(tmp_path / 'ens')], str(tmp_path / 'analysis'), num_bootstrap=20)   # the analysis CLI's
  assert [(r['family'], r['n'], r['width']) for r in rep['runs']] == [('d3pm', 16, 16), ('d3pm', 32, 16)]
  assert os.path.exists(rep['files']['validity.png'])
  for i, m in enumerate(exp.members(cfg)):
    solo_rows = train_member_and_solo(exp, cfg, ens, i, m, tmp_path)
    last = solo_rows[-1]
    assert {'valid_1', 'valid_2', 'valid_3', 'f_mem', 'f_mem_lo', 'copy_chance', 'loss_train_w3', 'loss_test_w0',
            'loss_gap_t'} <= last.keys()
    assert last['copy_chance'] == pytest.approx(m.n / 17_496 * last['valid_seq'])
    assert last['loss_train_t'] == pytest.approx(np.mean([last[f'loss_train_w{k}'] for k in range(4)]))
    summary = json.load(open(tmp_path / m.name / 'summary.json'))
    assert (summary['family'], summary['n'], summary['width'], summary['p_max']) == ('d3pm', m.n, 16, 17_496)
    assert os.path.exists(tmp_path / m.name / 'validity_copies.png')


@pytest.mark.parametrize('overrides,match', [
    ({'d3pm.grammar.m': 9}, "'d3pm.grammar.m': v\\*m = 8\\*9 = 72 .* exceed the v\\^s = 64"),
    ({'d3pm.grammar.n_c': 30}, "'d3pm.grammar.n_c': n_c\\*m = 30\\*3 = 90"),
    ({'data.n': 17_000, 'data.n_test': 1024}, "'data.n': P = 17000 exceeds P_max - data.n_test = 17496 - 1024"),
    ({'ensemble.n': (128, 17_480)}, "'ensemble.n': P = 17480 exceeds"),
    ({'d3pm.loss_windows': 50}, "'d3pm.loss_windows'"),
])
def test_bad_d3pm_configs_name_the_field(overrides, match):
  with pytest.raises(ValueError, match=match):
    config_lib.validate(tiny_d3pm_config(**overrides))


def test_grammar_of_a_config_is_the_seeded_grammar():
  from jaxdiff.experiments.d3pm import grammar_of
  g = grammar_of(tiny_d3pm_config())
  np.testing.assert_array_equal(g.tables, rhm.Grammar.from_seed(8, 8, 3, 2, 3, 0).tables)


@pytest.mark.slow
def test_the_cpu_sweep_learns_levels_bottom_up_and_copies_from_tau_mem_proportional_to_p(tmp_path):
  """configs/rhm_d3pm.py:cpu,long end to end (P = 128 ... 1024 as one ensemble, 60k steps; ~20 minutes on the
  2-core CPU): valid@1 rises before valid@2 before valid@3 for every P, and every P copies, with tau_mem from
  the copies ~ P^alpha, alpha in [0.8, 1.2] (paper 2: ~P)."""
  from jaxdiff import sweep
  module = sweep.load_config_module(os.path.join(os.path.dirname(os.path.dirname(__file__)), 'configs',
                                                 'rhm_d3pm.py'))
  cfg = module.get_config('cpu,long')
  ens = experiments.train(cfg, str(tmp_path))
  for m in experiments.get('d3pm').members(cfg):
    rows = [r for r in read_metrics(str(tmp_path / m.name)) if 'valid_1' in r]
    steps = np.array([r['step'] for r in rows])
    first = []
    for k in (1, 2, 3):
      v = np.array([r[f'valid_{k}'] for r in rows])
      first.append(steps[np.argmax(v >= (v[0] + v[-1]) / 2)])   # halfway from the start to the end
    assert first[0] <= first[1] <= first[2] and first[0] < first[2], (m.n, first)
  copies_fit = ens.summary['tau_mem_fit']
  assert copies_fit['num_points'] == 4 and 0.8 <= copies_fit['alpha'] <= 1.2, copies_fit
  assert copies_fit['alpha_lo'] < copies_fit['alpha'] < copies_fit['alpha_hi'], copies_fit
  taus = [r['tau_mem_loss'] for r in sorted(ens.summary['members'], key=lambda r: r['n'])]
  assert None not in taus and np.all(np.diff(taus) > 0), taus   # the loss gap opens later for larger P
