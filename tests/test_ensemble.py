"""Vectorized ensembles (jaxdiff/train/steps.py): a member trains exactly like a solo run with its key."""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdiff.train import steps as ensemble


def test_random_draws_of_a_longer_batch_start_with_the_shorter_draws():
  # The property the padding relies on (counter-based threefry): first b rows of a [B, ...] draw = a [b, ...]
  # draw from the same key.
  key = jax.random.PRNGKey(7)
  assert jax.config.jax_threefry_partitionable
  np.testing.assert_array_equal(jax.random.normal(key, (5, 3)), jax.random.normal(key, (9, 3))[:5])
  np.testing.assert_array_equal(jax.random.uniform(key, (5,)), jax.random.uniform(key, (12,))[:5])


def test_pad_stack_pads_and_reports_sizes():
  data, sizes = ensemble.pad_stack([np.ones((2, 3)), 2 * np.ones((4, 3))])
  assert data.shape == (2, 4, 3) and sizes.tolist() == [2, 4]
  assert (data[0, 2:] == 0).all() and (data[1] == 2).all()
  with pytest.raises(ValueError, match='array 1 has shape'):
    ensemble.pad_stack([np.ones((2, 3)), np.ones((2, 4))])


@pytest.mark.parametrize('batch_size', [3, 8])
def test_batches_cover_each_members_own_data_once_per_epoch(batch_size):
  n_max = 10
  for n in (4, 7, 10):
    rng = jax.random.PRNGKey(n)
    b = min(n, batch_size)
    seen = []
    for step in range(n // b):   # one epoch
      idx, w = ensemble.batch_indices(rng, jnp.int32(step), jnp.int32(n), n_max=n_max, batch_size=batch_size)
      assert idx.shape == (min(n_max, batch_size),)
      assert w.tolist() == [1.0] * b + [0.0] * (idx.shape[0] - b)
      seen += np.asarray(idx[:b]).tolist()
    assert max(seen) < n                       # never a padding row
    assert len(set(seen)) == len(seen) == (n // b) * b   # without replacement within the epoch


def test_padded_batch_indices_equal_the_solo_ones():
  rng = jax.random.PRNGKey(3)
  for step in range(6):
    solo, _ = ensemble.batch_indices(rng, jnp.int32(step), jnp.int32(7), n_max=7, batch_size=3)
    padded, w = ensemble.batch_indices(rng, jnp.int32(step), jnp.int32(7), n_max=20, batch_size=3)
    np.testing.assert_array_equal(solo, padded)


def _regression_loss(params, batch, weight, key):
  # A noisy linear regression: the loss uses a random draw of the batch's shape, like a diffusion loss.
  noise = 0.1 * jax.random.normal(key, batch['y'].shape)
  pred = batch['x'] @ params['w'] + params['b']
  return ensemble.weighted_mean(jnp.square(pred - batch['y'] - noise), weight)


@pytest.mark.parametrize('batch_size', [4, 64])
def test_member_of_an_ensemble_matches_its_solo_run(batch_size):
  rs = np.random.RandomState(0)
  sizes = [6, 13, 9]
  sets = [{'x': rs.randn(n, 3).astype(np.float32), 'y': rs.randn(n).astype(np.float32)} for n in sizes]
  keys = jnp.stack([jax.random.PRNGKey(10 + i) for i in range(3)])
  tx = optax.sgd(0.05, momentum=0.9)
  init = lambda k: {'w': jax.random.normal(k, (3,)), 'b': jnp.zeros(())}  # noqa: E731

  x, _ = ensemble.pad_stack([s['x'] for s in sets])
  y, n = ensemble.pad_stack([s['y'] for s in sets])
  state = ensemble.init_state(init, tx, keys)
  chunk = ensemble.make_train_chunk(loss_fn=_regression_loss, tx=tx, batch_size=batch_size)
  state = chunk(state, {'x': jnp.asarray(x), 'y': jnp.asarray(y)}, jnp.asarray(n), jnp.int32(25), jnp.bool_(True))

  i = 2   # a padded member (9 of 13 rows)
  params = init(jax.random.fold_in(keys[i], 0))
  opt_state = tx.init(params)
  step = jax.jit(functools.partial(ensemble.member_step, loss_fn=_regression_loss, tx=tx, n_max=sizes[i],
                                   batch_size=batch_size))
  data = {k: jnp.asarray(v) for k, v in sets[i].items()}
  losses = []
  for s in range(25):
    params, opt_state, loss = step(params, opt_state, keys[i], data, jnp.int32(sizes[i]), jnp.int32(s))
    losses.append(loss)
  member = ensemble.member(state.params, i)
  np.testing.assert_allclose(member['w'], params['w'], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(member['b'], params['b'], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(state.loss_sum[i], np.sum(losses), rtol=1e-5)
  # The members really differ (their own data, keys and batches).
  assert not np.allclose(state.params['w'][0], state.params['w'][1])


def test_device_and_host_loops_compute_the_same_steps():
  rs = np.random.RandomState(1)
  x, n = ensemble.pad_stack([rs.randn(5, 2).astype(np.float32), rs.randn(8, 2).astype(np.float32)])
  y, _ = ensemble.pad_stack([rs.randn(5).astype(np.float32), rs.randn(8).astype(np.float32)])
  data = {'x': jnp.asarray(x), 'y': jnp.asarray(y)}
  tx = optax.adam(1e-2)
  init = lambda k: {'w': jax.random.normal(k, (2,)), 'b': jnp.zeros(())}  # noqa: E731
  keys = jnp.stack([jax.random.PRNGKey(0), jax.random.PRNGKey(1)])
  out = []
  for loop in ('device', 'host'):
    chunk = ensemble.make_train_chunk(loss_fn=_regression_loss, tx=tx, batch_size=4, loop=loop)
    state = chunk(ensemble.init_state(init, tx, keys), data, jnp.asarray(n), jnp.int32(10), jnp.bool_(True))
    out.append(state)
  np.testing.assert_allclose(out[0].params['w'], out[1].params['w'], rtol=1e-6)
  assert int(out[0].step) == int(out[1].step) == 10


def test_unet_ensemble_run_equals_its_members_solo_runs(tmp_path, cache_dir):
  """`python -m jaxdiff.main --config.ensemble.n=...`: two U-Nets (n = 4 and 8) trained as one vectorized ensemble
  (the loop and its resume are jaxdiff/train/loop.py's, tested through the solo runs in test_train, the
  Gaussian-mixture runs in test_gmm and the toy family in test_experiments). The padded member (n = 4) writes the
  train-loss and evaluation rows of the solo run of its config (SGD with momentum, EMA and dropout on); every
  member gets its summary, solo config and figures, and the ensemble its summary. SGD: Adam's normalisation turns
  rounding-level differences of near-zero gradients into steps of ~lr (see
  test_train.test_eight_devices_train_like_one)."""
  from conftest import tiny_config
  from jaxdiff import experiments
  from jaxdiff.io.writers import read_metrics
  from jaxdiff.train.steps import log_spaced_milestones

  cfg = tiny_config(**{'data.cache_dir': cache_dir, 'ensemble.n': (4, 8), 'model.dropout': 0.1,
                       'optimizer.name': 'sgd', 'optimizer.learning_rate': 0.05, 'optimizer.momentum': 0.9,
                       'optimizer.ema_decay': 0.9, 'train.batch_size': 4, 'train.num_milestones': 3,
                       'eval.features': '', 'seed': 3})
  workdir = str(tmp_path / 'ens')
  ens = experiments.train(cfg, workdir)
  summary = ens.summary
  assert ens.num_params == summary['num_params'] == sum(x.size for x in jax.tree.leaves(ens.member_params(0)))
  unet = experiments.get('ddpm')
  members = unet.members(cfg)
  assert [(m['n'], m['seed']) for m in summary['members']] == [(4, 3), (8, 3)] == [(m.n, m.seed) for m in members]
  milestones = list(log_spaced_milestones(cfg.train.num_steps, cfg.train.num_milestones))
  for m in members:
    mdir = os.path.join(workdir, m.name)
    assert [r['step'] for r in read_metrics(mdir) if 'f_mem' in r] == milestones
    s = json.load(open(os.path.join(mdir, 'summary.json')))
    assert s['n'] == m.n and s['seed'] == m.seed and s['num_params'] == ens.num_params
    assert json.load(open(os.path.join(mdir, 'config.json')))['data']['n'] == m.n
    assert os.path.getsize(os.path.join(mdir, 'neighbours.png')) > 1000

  solo_dir = str(tmp_path / 'solo')
  experiments.train(unet.member_config(cfg, members[0]), solo_dir)
  rows, solo = read_metrics(os.path.join(workdir, members[0].name)), read_metrics(solo_dir)
  losses = [(r['step'], r['train_loss']) for r in rows if 'train_loss' in r]
  solo_losses = [(r['step'], r['train_loss']) for r in solo if 'train_loss' in r]
  assert [s for s, _ in losses] == [s for s, _ in solo_losses] == [10, 20, 30, 40]
  np.testing.assert_allclose([l for _, l in losses], [l for _, l in solo_losses], rtol=1e-4)
  evals = {r['step']: r for r in rows if 'f_mem' in r}
  solo_evals = {r['step']: r for r in solo if 'f_mem' in r}
  assert sorted(evals) == sorted(solo_evals)
  for step, r in evals.items():
    for k in ('loss_train_t', 'loss_test_t'):
      assert r[k] == pytest.approx(solo_evals[step][k], rel=1e-3), (step, k)
    assert abs(r['f_mem'] - solo_evals[step]['f_mem']) <= 1 / cfg.eval.num_samples, step
  # The two members saw different data: their rows differ.
  a, b = (read_metrics(os.path.join(workdir, m.name))[-1] for m in members)
  assert a['loss_train_t'] != b['loss_train_t']
