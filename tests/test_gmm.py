"""The Gaussian-mixture experiment (jaxdiff/experiments/gmm.py, SPEC section 2) and its residual MLP."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import ROOT, run_python, tiny_gmm_config
from jaxdiff import config as config_lib
from jaxdiff import experiments
from jaxdiff.diffusion import ou
from jaxdiff.experiments import gmm
from jaxdiff.models import mlp


def test_exact_score_is_the_gradient_of_the_exact_log_density():
  mu = gmm.mean_vector(5, 1.3)
  x = 2.0 * jax.random.normal(jax.random.PRNGKey(0), (6, 5))
  y = jnp.array([0, 1, 1, 0, 1, 0])

  @jax.jit
  def errors(t):
    grad = jax.vmap(jax.grad(lambda v: gmm.log_density(v[None], t, mu)[0]))(x)
    grad_c = jax.vmap(jax.grad(lambda v, c: gmm.log_density(v[None], t, mu, c[None])[0]))(x, y)
    return (jnp.abs(grad - gmm.score(x, t, mu)).max(), jnp.abs(grad_c - gmm.score(x, t, mu, y)).max())

  for t in (0.003, 0.4, 3.0):
    assert max(float(e) for e in errors(t)) < 1e-5
  # SPEC's closed form: mu e^-t tanh(x . mu e^-t) - x.
  m = np.asarray(mu) * np.exp(-0.4)
  np.testing.assert_allclose(gmm.score(x, 0.4, mu), m * np.tanh(np.asarray(x) @ m)[:, None] - x, atol=1e-5)


def test_log_density_is_normalised():
  mu = gmm.mean_vector(1, 2.0)
  xs = jnp.linspace(-15, 15, 30001)[:, None]
  assert abs(float(jnp.sum(jnp.exp(gmm.log_density(xs, 0.2, mu))) * 30 / 30000) - 1) < 1e-4


def test_samplers_with_the_exact_score_reproduce_the_mixture_and_kl_is_near_zero():
  p = gmm.Problem(d=4, mu_scale=1.5)
  mu = p.mu
  exact = lambda x, t, y=None: gmm.score(x, t[0], mu, y)  # noqa: E731
  key = jax.random.PRNGKey(1)
  xs = jax.jit(lambda k: ou.euler_maruyama(exact, jax.random.normal(k, (3000, 4)), k, p.time_grid(200)))(key)
  # E|x|^2 = d + |mu|^2 and the two components are equally likely.
  assert abs(float(jnp.mean(jnp.sum(xs ** 2, 1))) - (4 + 4 * 1.5 ** 2)) < 0.5
  assert abs(float(jnp.mean(xs @ mu > 0)) - 0.5) < 0.04
  kl = jax.jit(lambda k: gmm.kl_to_truth(exact, k, 2000, p.time_grid(100), mu, p.t_min))(key)
  assert abs(float(kl)) < 0.03
  labels = gmm.balanced_labels(2000)
  kl_c = jax.jit(lambda k: gmm.kl_to_truth(exact, k, 2000, p.time_grid(100), mu, p.t_min, labels))(key)
  assert abs(float(kl_c)) < 0.03


def test_kl_is_large_for_the_empirical_score_that_copies_training_points():
  p = gmm.Problem(d=4)
  pts, _ = gmm.sample_data(jax.random.PRNGKey(2), 8, p.mu)

  def empirical(x, t, y=None):   # grad log of (1/n) sum_nu N(e^-t x_nu, Delta_t I)
    m = jnp.exp(-t)[:, None, None] * pts[None]
    dl = ou.delta(t)[:, None]
    w = jax.nn.softmax(-jnp.sum((x[:, None] - m) ** 2, -1) / (2 * dl), axis=1)
    return (jnp.sum(w[..., None] * m, 1) - x) / dl

  kl = jax.jit(lambda k: gmm.kl_to_truth(empirical, k, 500, p.time_grid(100), p.mu, p.t_min))(
      jax.random.PRNGKey(3))
  assert float(kl) > 5.0   # q is a mixture of bumps of width sqrt(Delta_tmin) ~ 0.045 around the 8 points


def test_residual_mlp_shapes_parameter_count_and_zero_start():
  p = gmm.Problem(d=8, width=32, num_blocks=3, conditional=True)
  params = jax.jit(p.init_params)(jax.random.PRNGKey(0))
  out = jax.jit(p.eps)(params, jnp.ones((5, 8)), jnp.linspace(0.01, 1.0, 5), jnp.array([0, 1, 2, 0, 1]))
  assert out.shape == (5, 8)
  assert float(jnp.abs(out).max()) == 0.0   # zero-initialised output layer: eps = 0 at the start
  count = sum(a.size for a in jax.tree.leaves(params))
  assert count == mlp.parameter_count(dim=8, width=32, num_blocks=3, num_classes=2) == gmm.parameter_count(p)
  model = mlp.ResidualMLP(dim=8, width=4, num_blocks=1, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r'\[B, 8\]'):
    model(jnp.ones((5, 3)), jnp.zeros(5))


def test_member_data_are_nested_across_n():
  p = gmm.Problem(d=3)
  small, big = gmm.Member(8, 0).data(p), gmm.Member(32, 0).data(p)
  np.testing.assert_array_equal(small[0], big[0][:8])
  np.testing.assert_array_equal(small[1], big[1][:8])


def test_ensemble_member_matches_the_solo_run_of_its_config():
  # The ensemble of the run test below (compiled once); member n = 8 is padded to 16 rows.
  config = tiny_gmm_config()
  trainer = gmm.Trainer(config)
  trainer.train(30)
  i = 0
  solo = gmm.Trainer(gmm.member_config(config, trainer.members[i]))
  assert solo.members == [trainer.members[i]] and trainer.members[i].n == 8
  solo.train(30)
  for a, b in zip(jax.tree.leaves(trainer.member_params(i)), jax.tree.leaves(solo.member_params(0))):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
  np.testing.assert_allclose(trainer.state.loss_sum[i], solo.state.loss_sum[0], rtol=1e-4)
  # Each member trained on its own data: the two members differ.
  a, b = (jax.tree.leaves(trainer.member_params(j))[0] for j in (0, 1))
  assert not np.allclose(a, b)


def _rows(workdir, member):
  """A member's metrics rows without the timing columns."""
  rows = [json.loads(line) for line in open(os.path.join(workdir, member, 'metrics.jsonl'))]
  timing = {'steps_per_sec', 'images_per_sec', 'elapsed_sec', 'eval_sec'}
  return [{k: v for k, v in r.items() if k not in timing} for r in rows]


def test_run_writes_metrics_and_summaries_and_a_resumed_run_equals_an_uninterrupted_one(tmp_path):
  config = tiny_gmm_config()
  workdir, fresh = str(tmp_path / 'run'), str(tmp_path / 'fresh')
  assert experiments.train(config, workdir, stop_at_step=20).summary == {}   # interrupted: no summary
  assert not os.path.exists(os.path.join(workdir, 'summary.json'))
  summary = experiments.train(config, workdir).summary
  assert [m['n'] for m in summary['members']] == [8, 16]
  for m in summary['members']:
    mdir = os.path.join(workdir, m['member'])
    evals = [r for r in _rows(workdir, m['member']) if 'f_mem' in r]
    assert [r['step'] for r in evals] == [1, 6, 40]
    for key in ('f_mem_lo', 'f_mem_hi', 'loss_train_t', 'loss_test_t', 'score_err_t', 'score_err', 'kl', 'sw'):
      assert all(np.isfinite(r[key]) for r in evals), key
    s = json.load(open(os.path.join(mdir, 'summary.json')))
    assert s['n'] == m['n'] and s['family'] == 'gmm' and s['quality_key'] == 'kl'
    assert s['num_params'] == gmm.parameter_count(gmm.problem_from_config(config))
    solo = json.load(open(os.path.join(mdir, 'config.json')))
    assert solo['gmm']['n'] == [m['n']] and solo['seed'] == m['seed']
  experiments.train(config, fresh)
  for member in ('n8_seed0', 'n16_seed0'):
    assert _rows(workdir, member) == _rows(fresh, member)


def test_conditional_model_drops_labels_in_training_and_guides_in_sampling():
  p = gmm.Problem(d=3, width=8, num_blocks=1, conditional=True, label_dropout=0.5, guidance=2.0)
  params = jax.jit(p.init_params)(jax.random.PRNGKey(0))
  # Give the output layer weights so that eps depends on the label.
  params['out']['kernel'][...] = 0.1 * jax.random.normal(jax.random.PRNGKey(1), (8, 3))
  x, t = jnp.ones((4, 3)), jnp.full((4,), 0.1)
  y, null = jnp.array([0, 1, 0, 1]), jnp.full((4,), gmm.NULL_LABEL)
  guided = p.guided_eps(params, x, t, y)
  np.testing.assert_allclose(guided, 3.0 * p.eps(params, x, t, y) - 2.0 * p.eps(params, x, t, null), atol=1e-6)
  assert not np.allclose(p.eps(params, x, t, y), p.eps(params, x, t, null))
  np.testing.assert_allclose(p.model_score(params, x, t, y), -guided / np.sqrt(ou.delta(t))[:, None], rtol=1e-6)
  # Training: with dropout 0.5 the loss differs from the loss of the same draws with dropout 0.
  batch = {'x': jnp.ones((16, 3)), 'y': jnp.zeros((16,), jnp.int32)}
  w = jnp.ones((16,))
  key = jax.random.PRNGKey(2)
  no_drop = dataclasses.replace(p, label_dropout=0.0)
  assert float(gmm.make_loss_fn(p)(params, batch, w, key)) != float(gmm.make_loss_fn(no_drop)(params, batch, w, key))
  # Dropout 1 replaces every label by the null label: the loss of the same draws on null-labelled data.
  all_drop = dataclasses.replace(p, label_dropout=1.0)
  null_batch = {'x': batch['x'], 'y': jnp.full((16,), gmm.NULL_LABEL, jnp.int32)}
  np.testing.assert_allclose(gmm.losses(all_drop, params, batch, key), gmm.losses(no_drop, params, null_batch, key),
                             rtol=1e-6)


def test_bad_gmm_config_names_the_field():
  c = tiny_gmm_config(**{'gmm.n': (8, 8)})
  with pytest.raises(ValueError, match='gmm.n'):
    config_lib.validate(c)
  c = tiny_gmm_config(**{'gmm.quality': 'kl', 'gmm.kl_samples': 0})
  with pytest.raises(ValueError, match='gmm.quality'):
    config_lib.validate(c)
  c = tiny_gmm_config(**{'gmm.t_min': 2.0, 'gmm.t_max': 1.0})
  with pytest.raises(ValueError, match='gmm.t_min'):
    config_lib.validate(c)
  for field, value in [('gmm.schedule', 'vp'), ('gmm.network', 'mlp'), ('gmm.init', 'he'), ('gmm.fixed_t', -1.0)]:
    with pytest.raises(ValueError, match=f"'{field}'"):
      config_lib.validate(tiny_gmm_config(**{field: value}))
  with pytest.raises(ValueError, match="'gmm.balanced'"):
    config_lib.validate(tiny_gmm_config(**{'gmm.balanced': True, 'gmm.n': (8, 15)}))


PAPER_PROTOCOL = {'gmm.schedule': 'ddpm', 'gmm.network': 'post_ln', 'gmm.init': 'torch', 'gmm.balanced': True}


def test_paper_protocol_network_has_the_authors_parameter_count():
  """configs/gmm_mlp.py (paper 1's protocol): the authors' SimpleTimeModel at d = 8, W = 256 has 400,648
  parameters (their "401k"); jaxdiff's own network ('jaxdiff') has 730k."""
  from jaxdiff import sweep
  module = sweep.load_config_module(os.path.join(ROOT, 'configs', 'gmm_mlp.py'))
  config = module.get_config('')
  config_lib.validate(config)
  problem = gmm.problem_from_config(config)
  assert (problem.schedule, problem.network, problem.init, problem.balanced) == ('ddpm', 'post_ln', 'torch', True)
  assert gmm.parameter_count(problem) == mlp.parameter_count(dim=8, width=256, network='post_ln') == 400_648
  assert 700_000 < gmm.parameter_count(gmm.problem_from_config(module.get_config('jaxdiff'))) < 760_000


def test_paper_protocol_trains_with_the_ddpm_schedule_loss():
  """gmm.schedule='ddpm': the training loss is the DDPM eps-MSE with steps k uniform in 1..999, x_k =
  sqrt(alpha_bar_k) x_0 + sqrt(1 - alpha_bar_k) xi, the network seeing the integer step k; training points are
  exactly n/2 per component; gmm.fixed_t trains at one step."""
  from jaxdiff.diffusion import ddpm
  config = tiny_gmm_config(**PAPER_PROTOCOL)
  config_lib.validate(config)
  problem = gmm.problem_from_config(config)
  schedule = ddpm.linear_schedule(1000, 1e-4, 0.02)
  model = problem.model(jax.random.key(0))
  x0 = jax.random.normal(jax.random.key(1), (256, 4))
  key = jax.random.key(2)
  got = gmm.losses(problem, model, {'x': x0, 'y': jnp.zeros(256, jnp.int32)}, key)
  k_t, k_xi, _ = jax.random.split(key, 3)
  steps = jax.random.randint(k_t, (256,), 1, 1000)
  xi = jax.random.normal(k_xi, x0.shape)
  want = jnp.mean(jnp.square(model(ddpm.q_sample(schedule, x0, steps, xi), steps.astype(jnp.float32)) - xi), 1)
  np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-6)
  codes = problem.time_code(problem.sample_times(key, (4096,)))
  assert float(codes.min()) >= 1 and float(codes.max()) <= 999 and bool(jnp.all(codes == jnp.round(codes)))
  assert len(np.unique(np.asarray(codes))) > 900
  # Exactly n/2 per component, nested across n.
  x, y = gmm.Member(16, 0).data(problem)
  assert int(y.sum()) == 8
  np.testing.assert_array_equal(gmm.Member(8, 0).data(problem)[0], x[:8])
  # The fixed-time mode: every example at the step nearest to t = 0.01 (step 40).
  fixed = dataclasses.replace(problem, fixed_t=0.01)
  t = fixed.sample_times(key, (64,))
  assert np.all(np.asarray(fixed.time_code(t)) == 40)
  # It trains: 40 Adam steps of the tiny ensemble lower that loss on the member's training points.
  trainer = gmm.Trainer(config)
  x16 = {'x': jnp.asarray(np.tile(x, (16, 1))), 'y': jnp.zeros(256, jnp.int32)}
  loss = lambda: float(jnp.mean(gmm.losses(problem, trainer.member_params(1), x16, key)))  # noqa: E731
  before = loss()
  trainer.train(40)
  assert trainer.members[1].n == 16 and loss() < 0.9 * before


@pytest.mark.slow
def test_cpu_sweep_tau_mem_grows_linearly_with_n(tmp_path):
  """The `cpu` configuration of configs/gmm_mlp.py: n in {32, 64, 128, 256} as one vectorized ensemble, the
  fitted exponent of tau_mem (f_mem leaves 0) against n lies in [0.8, 1.2] (paper 1: tau_mem ~ n).
  Run with `python -m pytest -m slow tests/test_gmm.py` (its time: bench/README.md, "Tests")."""
  from jaxdiff import sweep
  config = sweep.load_config_module(os.path.join(os.path.dirname(os.path.dirname(__file__)),
                                                 'configs', 'gmm_mlp.py')).get_config('cpu')
  config.gmm.analysis = False
  summary = experiments.train(config, str(tmp_path / 'gmm_cpu')).summary
  taus = {m['n']: m['tau_mem_fmem'] for m in summary['members']}
  assert all(t is not None for t in taus.values()), taus
  assert taus[32] < taus[64] < taus[128] < taus[256], taus
  fit = summary['tau_mem_fit']
  assert 0.8 <= fit['alpha'] <= 1.2, (fit, taus)
  assert 0.8 <= summary['tau_mem_loss_fit']['alpha'] <= 1.2, summary['tau_mem_loss_fit']


def test_an_ensemble_split_over_four_devices_trains_like_one_device():
  """The shared ensemble trainer splits members over the mesh's 'data' axis (4 members on 4 fake devices): the
  same parameters as on one device, and the same evaluation rows."""
  code = """
import json, tempfile, jax, numpy as np
from conftest import tiny_gmm_config
from jaxdiff import experiments
assert jax.device_count() == 4
out, rows = {}, {}
for nd in (1, 4):
  c = tiny_gmm_config(**{'gmm.num_seeds': 2, 'mesh.data': nd, 'train.num_steps': 20})
  t = experiments.train(c, tempfile.mkdtemp())
  leaf = jax.tree.leaves(t.state.params)[0]
  assert len(leaf.sharding.device_set) == nd and leaf.shape[0] == 4
  out[nd] = [np.asarray(x) for x in jax.tree.leaves(t.state.params)]
  rows[nd] = [m['f_mem_final'] for m in t.summary['members']]
print('WORST', max(float(np.abs(a - b).max()) for a, b in zip(out[1], out[4])))
print('ROWS', json.dumps(rows[1] == rows[4]))
"""
  r = run_python(code, devices=4, env={'PYTHONPATH': os.path.join(ROOT, 'tests')})
  assert r.returncode == 0, r.stderr[-3000:]
  worst = float(r.stdout.split('WORST')[1].split()[0])
  assert worst < 1e-5, worst
  assert 'ROWS true' in r.stdout
