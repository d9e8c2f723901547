"""Masked diffusion (MD4, SPEC section 4): the schedules, the continuous-time loss is zero for a perfect denoiser
and the entropy bound log2 V for a uniform one, the ancestral sampler with an oracle returns its training
sequence, the longest common substring matches a brute force, the transformer is bidirectional, and the 'md4'
family trains through the shared seam on text and on grammar data (an ensemble member equals its solo run, the
evaluators and figures are written, bad configs name the field)."""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT, apply_overrides, run_python, train_member_and_solo
from jaxdiff import config as config_lib
from jaxdiff import experiments, sweep
from jaxdiff.analysis.report import report
from jaxdiff.diffusion import masked
from jaxdiff.io.writers import read_metrics
from jaxdiff.metrics.sequences import copy_flags, longest_common_substring
from jaxdiff.models.transformer import Transformer, parameter_count

V = 27


@pytest.mark.parametrize('kind', masked.SCHEDULES)
def test_alpha_runs_from_one_minus_eps_to_eps_and_dalpha_is_its_derivative(kind):
  sched = masked.make_schedule(V, kind, eps=1e-4)
  assert float(sched.alpha(jnp.float32(0.0))) == pytest.approx(1 - 1e-4)
  assert float(sched.alpha(jnp.float32(1.0))) == pytest.approx(1e-4, abs=1e-7)
  t = jnp.linspace(0.05, 0.95, 19)
  h = 1e-3
  np.testing.assert_allclose(sched.dalpha(t), (sched.alpha(t + h) - sched.alpha(t - h)) / (2 * h), rtol=2e-3)
  assert bool(jnp.all(sched.dalpha(t) < 0))
  if kind == 'linear':   # weight = 1/t up to eps: MD4's "E_t[(1/t) masked CE]"
    np.testing.assert_allclose(sched.weight(t), 1 / t, rtol=2e-3)


def test_antithetic_times_cover_the_unit_interval_one_per_stratum():
  t = np.sort(np.asarray(masked.antithetic_times(jax.random.key(0), 64)))
  assert t.min() >= 0 and t.max() < 1
  np.testing.assert_allclose(np.diff(t), 1 / 64, atol=1e-6)


def test_masking_keeps_each_token_with_probability_alpha():
  sched = masked.make_schedule(V, 'cosine')
  x = jnp.zeros((4096, 64), jnp.int32) + 5
  t = jnp.full((4096,), 0.3)
  z = masked.mask(sched, jax.random.key(1), x, t)
  assert set(np.unique(z)) == {5, V}
  assert float(jnp.mean(z == 5)) == pytest.approx(float(sched.alpha(jnp.float32(0.3))), abs=3e-3)


@pytest.mark.parametrize('kind', masked.SCHEDULES)
def test_the_loss_is_zero_for_a_perfect_denoiser_at_every_time_down_to_t_near_0(kind):
  sched = masked.make_schedule(V, kind)
  x = jax.random.randint(jax.random.key(0), (64, 32), 0, V)
  perfect = lambda z: 1e4 * jax.nn.one_hot(x, V)   # noqa: E731
  for t in (1e-5, 1e-3, 0.5, 1.0):
    loss = masked.loss_at(sched, perfect, x, jnp.full((64,), t), jax.random.key(1))
    np.testing.assert_allclose(loss, 0.0, atol=1e-6)
  assert float(jnp.max(masked.losses(sched, perfect, x, jax.random.key(2)))) < 1e-6


@pytest.mark.parametrize('kind', masked.SCHEDULES)
def test_a_uniform_denoiser_pays_the_entropy_bound_of_log2_v_bits_per_token(kind):
  """Its integrand is -alpha'(t) log2 V per token at every t (also as t -> 0, where the weight ~ 1/t meets a
  masked fraction ~ t), and the loss (1 - 2 eps) log2 V."""
  sched = masked.make_schedule(V, kind)
  x = jax.random.randint(jax.random.key(0), (1024, 256), 0, V)
  uniform = lambda z: jnp.zeros(z.shape + (V,))   # noqa: E731
  for t in (0.01, 0.5):
    loss = jnp.mean(masked.loss_at(sched, uniform, x, jnp.full((1024,), t), jax.random.key(1)))
    assert float(loss) == pytest.approx(-float(sched.dalpha(jnp.float32(t))) * math.log2(V), rel=0.03), t
  mean = jnp.mean(jnp.stack([masked.losses(sched, uniform, x, jax.random.key(k)) for k in range(8)]))
  assert float(mean) == pytest.approx((1 - 2e-4) * math.log2(V), rel=0.01)


def test_the_sampler_with_an_oracle_denoiser_returns_its_training_sequence():
  sched = masked.make_schedule(V, 'cosine')
  seq = jnp.array([20, 8, 5, 0, 3, 1, 20, 0, 19, 1, 20])
  oracle = lambda z: jnp.broadcast_to(1e4 * jax.nn.one_hot(seq, V), z.shape + (V,))   # noqa: E731
  out = jax.jit(lambda k: masked.sample(sched, oracle, k, (16, 11), num_steps=50))(jax.random.key(0))
  assert out.dtype == jnp.int32
  np.testing.assert_array_equal(out, np.tile(seq, (16, 1)))


@pytest.mark.parametrize('kind,num_steps', [('linear', 2), ('linear', 4), ('cosine', 4)])
def test_the_sampler_reveals_tokens_on_the_schedule_and_leaves_no_mask(kind, num_steps):
  """The first step (t = 1 -> 1 - 1/K) reveals a token with probability (alpha(1 - 1/K) - alpha(1)) /
  (1 - alpha(1)); the later steps reveal the rest. A denoiser that predicts 1 while its row is all MASK and 2
  afterwards marks which tokens the first step revealed."""
  sched = masked.make_schedule(V, kind)
  marker = lambda z: 1e4 * jax.nn.one_hot(jnp.where(jnp.all(z == V, -1, keepdims=True), 1, 2) + 0 * z, V)  # noqa: E731
  out = jax.jit(lambda k: masked.sample(sched, marker, k, (512, 64), num_steps))(jax.random.key(3))
  assert set(np.unique(out)) == {1, 2}   # every token revealed, none left masked
  a = lambda t: float(sched.alpha(jnp.float32(t)))   # noqa: E731
  expected = (a(1 - 1 / num_steps) - a(1.0)) / (1 - a(1.0))
  assert float(jnp.mean(out == 1)) == pytest.approx(expected, abs=0.01)


def _lcs_brute(a, b) -> int:
  """The longest common substring of two sequences by enumeration."""
  best = 0
  for i in range(len(a)):
    for j in range(len(b)):
      k = 0
      while i + k < len(a) and j + k < len(b) and a[i + k] == b[j + k]:
        k += 1
      best = max(best, k)
  return best


def test_longest_common_substring_matches_a_brute_force():
  rng = np.random.default_rng(0)
  train = rng.integers(0, 3, (7, 12))
  samples = rng.integers(0, 3, (13, 12))
  samples[0] = train[4]                                  # an exact copy
  samples[1, 2:9] = train[2, 5:12]                       # a shifted substring of length >= 7
  samples[2] = np.roll(train[6], 3)                       # a rotation: runs of 9 and 3
  got = np.asarray(longest_common_substring(jnp.asarray(samples), jnp.asarray(train), block=4))
  want = [max(_lcs_brute(list(s), list(t)) for t in train) for s in samples]
  np.testing.assert_array_equal(got, want)
  assert got[0] == 12 and got[1] >= 7 and got[2] >= 9
  # An exact copy is the LCS of the whole length, and only then.
  np.testing.assert_array_equal(copy_flags(jnp.asarray(samples), jnp.asarray(train), 3), got == 12)


def test_the_transformer_is_bidirectional_and_counts_its_parameters():
  from flax import nnx
  model = Transformer(vocab_size=V, length=16, width=32, depth=2, num_heads=4, rngs=nnx.Rngs(0))
  z = jax.random.randint(jax.random.key(0), (3, 16), 0, V + 1)
  out = model(z)
  assert out.shape == (3, 16, V)
  changed = model(z.at[:, -1].set((z[:, -1] + 1) % (V + 1)))
  assert float(jnp.max(jnp.abs(changed[:, 0] - out[:, 0]))) > 1e-4   # the first position sees the last
  # embed (V+1) W + pos 16 W + 2 blocks (2 LN, qkv without bias, proj, fc1, fc2) + LN + readout
  w = 32
  block = 4 * w + w * 3 * w + (w * w + w) + (w * 4 * w + 4 * w) + (4 * w * w + w)
  assert parameter_count(vocab_size=V, length=16, width=w, depth=2, num_heads=4) == (
      (V + 1) * w + 16 * w + 2 * block + 2 * w + (w * V + V))


# ------------------------------------------------------------------------------------------------------------
# The family through the experiment table.


def cpu_config(arg: str = 'cpu'):
  """configs/text_md4.py:<arg>, the config of the CPU sweep."""
  return sweep.load_config_module(os.path.join(ROOT, 'configs', 'text_md4.py')).get_config(arg)


def tiny_md4_config(cache_dir, **overrides):
  """The CPU sweep's pipeline (configs/text_md4.py:cpu) at test size: 30 steps, P = 32 / smaller members."""
  c = cpu_config()
  c.ensemble.n = ()
  c.md4.width, c.md4.depth, c.md4.num_heads, c.md4.sample_steps, c.md4.loss_windows = 16, 1, 2, 8, 4
  c.data.n, c.data.n_test, c.data.cache_dir = 32, 32, cache_dir
  c.optimizer.learning_rate = 1e-2
  c.train.num_steps, c.train.batch_size, c.train.steps_per_dispatch, c.train.loop = 30, 8, 10, 'host'
  c.train.log_every, c.train.checkpoint_every, c.train.num_milestones = 10, 30, 2
  c.eval.num_samples, c.eval.bootstrap_resamples, c.eval.loss_batch_size, c.eval.loss_noise_draws = 32, 100, 32, 1
  c.eval.sample_batch_size = 32
  return apply_overrides(c, overrides)


def test_a_two_member_ensemble_over_p_equals_its_solo_runs_and_writes_the_sequence_metrics(tmp_path, cache_dir):
  cfg = tiny_md4_config(cache_dir, **{'ensemble.n': (16, 32), 'seed': 2})
  ens = experiments.train(cfg, str(tmp_path / 'ens'))
  exp = experiments.get('md4')
  assert [(m['n'], m['seed']) for m in ens.summary['members']] == [(16, 2), (32, 2)]
  assert {'tau_mem_fit', 'tau_mem_loss_fit'} <= ens.summary.keys()
  assert os.path.exists(tmp_path / 'ens' / 'copies_lcs.png')
  rep = report([str(tmp_path / 'ens')], str(tmp_path / 'analysis'), num_bootstrap=20)   # the analysis CLI's
  assert [(r['family'], r['n'], r['dataset']) for r in rep['runs']] == [('md4', 16, 'text:pydoc'), ('md4', 32, 'text:pydoc')]
  for i, m in enumerate(exp.members(cfg)):
    solo_rows = train_member_and_solo(exp, cfg, ens, i, m, tmp_path)
    last = solo_rows[-1]
    assert {'f_mem', 'f_mem_lo', 'lcs_mean', 'lcs_frac', 'loss_train_w3', 'loss_test_w0', 'loss_gap_t'} <= last.keys()
    assert 'copy_chance' not in last and 'valid_1' not in last   # text has no grammar
    assert last['loss_train_t'] == pytest.approx(np.mean([last[f'loss_train_w{k}'] for k in range(4)]))
    assert last['f_mem'] <= last['lcs_frac'] and 0 < last['lcs_mean'] <= 1
    assert last['loss_test_t'] < math.log2(V)   # 30 steps already beat the uniform denoiser
    summary = json.load(open(tmp_path / m.name / 'summary.json'))
    assert (summary['family'], summary['n'], summary['dataset'], summary['length']) == ('md4', m.n, 'text:pydoc', 16)
    assert os.path.exists(tmp_path / m.name / 'copies_lcs.png')


def test_the_family_learns_grammar_data_with_the_grammar_evaluators(tmp_path, cache_dir):
  cfg = tiny_md4_config(cache_dir, **{'md4.data': 'rhm', 'md4.schedule': 'cosine', 'train.num_steps': 10,
                                      'train.checkpoint_every': 10})
  result = experiments.train(cfg, str(tmp_path))
  last = read_metrics(str(tmp_path))[-1]
  assert {'valid_1', 'valid_3', 'f_mem', 'copy_chance', 'lcs_frac', 'loss_gap_t'} <= last.keys()
  assert last['copy_chance'] == pytest.approx(32 / 17_496 * last['valid_seq'])
  assert (result.summary['dataset'], result.summary['length'], result.summary['vocab_size']) == ('rhm', 8, 8)


@pytest.mark.parametrize('overrides,match', [
    ({'md4.data': 'images'}, "'md4.data'"),
    ({'md4.schedule': 'geometric'}, "'md4.schedule'"),
    ({'md4.num_heads': 3}, "'md4.num_heads': must divide md4.width = 16"),
    ({'md4.text.source': 'text9'}, "'md4.text.source'"),
    ({'md4.text.source': 'files'}, "'md4.text.paths': source 'files' needs"),
    ({'md4.text.source': 'files', 'md4.text.paths': ('/no/such.txt',)}, "'md4.text.paths': no such file"),
    ({'ensemble.n': (16, 30_000)}, "'ensemble.n': P = 30000 plus data.n_test = 32 exceeds the"),
    ({'md4.data': 'rhm', 'md4.grammar.m': 9}, "'md4.grammar.m': v\\*m"),
    ({'eval.lcs_threshold': 0.0}, "'eval.lcs_threshold'"),
])
def test_bad_md4_configs_name_the_field(overrides, match, cache_dir):
  with pytest.raises(ValueError, match=match):
    config_lib.validate(tiny_md4_config(cache_dir, **overrides))


def test_a_solo_run_split_over_two_devices_trains_like_one_device(cache_dir):
  """The shared driver's data parallelism, unchanged: the batch split over the mesh's 'data' axis, the
  transformer's parameters replicated."""
  code = f"""
import tempfile, jax, numpy as np
from test_masked import tiny_md4_config
from jaxdiff import experiments
assert jax.device_count() == 2
out = {{}}
for nd in (1, 2):
  c = tiny_md4_config({cache_dir!r}, **{{'mesh.data': nd, 'train.num_steps': 10, 'eval.enabled': False}})
  t = experiments.train(c, tempfile.mkdtemp())
  leaf = jax.tree.leaves(t.state.params)[0]
  assert len(leaf.sharding.device_set) == nd and leaf.sharding.is_fully_replicated
  out[nd] = [np.asarray(x) for x in jax.tree.leaves(t.state.params)]
print('WORST', max(float(np.abs(a - b).max()) for a, b in zip(out[1], out[2])))
"""
  r = run_python(code, devices=2, env={'PYTHONPATH': os.path.join(ROOT, 'tests')})
  assert r.returncode == 0, r.stderr[-3000:]
  worst = float(r.stdout.split('WORST')[1].split()[0])
  assert worst < 1e-5, worst


@pytest.mark.slow
def test_the_cpu_sweep_copies_later_for_larger_p(tmp_path):
  """configs/text_md4.py:cpu end to end (P = 16 ... 128 as one ensemble; ~8.5 minutes on the shared 2-core CPU):
  copies of training chunks start later for larger P, the test loss leaves the train loss later for larger P,
  and both give a tau_mem = c P^alpha fit over the members."""
  cfg = cpu_config()
  ens = experiments.train(cfg, str(tmp_path))
  members = sorted(ens.summary['members'], key=lambda m: m['n'])
  copies = [m['tau_mem_fmem'] for m in members if m['tau_mem_fmem'] is not None]
  gap = [m['tau_mem_loss'] for m in members]
  assert len(copies) >= 3 and copies == sorted(copies) and len(set(copies)) == len(copies), members
  assert None not in gap and gap == sorted(gap), members
  copies_fit, loss_fit = ens.summary['tau_mem_fit'], ens.summary['tau_mem_loss_fit']
  # Recorded run (bench/README.md): copies 1.96 over P = 16, 32, 64 (P = 128 copies nothing within 30k steps),
  # loss gap 1.32 over the 4 P.
  assert copies_fit['num_points'] >= 3 and 1.0 <= copies_fit['alpha'] <= 3.0, copies_fit
  assert loss_fit['num_points'] == 4 and 0.9 <= loss_fit['alpha'] <= 1.8, loss_fit
