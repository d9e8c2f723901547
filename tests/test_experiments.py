"""The experiment table: a new family plugs in through the table alone and gets training, evaluation,
checkpoints, resume and ensembles; main and sweep dispatch through it; --mode=eval for every family."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from conftest import ROOT, apply_overrides, tiny_config, tiny_gmm_config
from jaxdiff import config as config_lib
from jaxdiff import experiments, sweep
from jaxdiff.diffusion import ou
from jaxdiff.experiments.base import NetworkExperiment
from jaxdiff.io.writers import read_metrics
from jaxdiff.train.steps import log_spaced_milestones

# ------------------------------------------------------------------------------------------------------------
# A toy family, defined here and registered through the table only: a 2-D MLP denoiser of OU noise on points
# drawn around two centres (+-(1, 1)).


@dataclasses.dataclass(frozen=True)
class TwoPoints:
  train: np.ndarray         # [n, 2]
  train_labels: np.ndarray  # [n] the centre of each point
  test: np.ndarray          # [m, 2]
  name: str = 'two_points'
  value_range: tuple = (np.float32(-3.0), np.float32(3.0))
  scale: float = 6.0

  def to_pixels(self, x):
    return np.clip((np.asarray(x, np.float32) + 3.0) / 6.0, 0.0, 1.0)


def two_points(n: int, m: int, seed: int) -> TwoPoints:
  rs = np.random.RandomState(seed)
  labels = rs.randint(0, 2, n + m)
  x = (1.0 - 2.0 * labels)[:, None] * np.ones((1, 2)) + 0.05 * rs.randn(n + m, 2)
  return TwoPoints(x[:n].astype(np.float32), labels[:n].astype(np.int32), x[n:].astype(np.float32))


class Denoiser(nnx.Module):
  def __init__(self, width: int, rngs: nnx.Rngs):
    self.inp = nnx.Linear(3, width, rngs=rngs)
    self.hid = nnx.Linear(width, width, rngs=rngs)
    self.out = nnx.Linear(width, 2, rngs=rngs)

  def __call__(self, x, t):
    h = jax.nn.silu(self.inp(jnp.concatenate([x, jnp.log(t)[:, None]], axis=-1)))
    return self.out(jax.nn.silu(self.hid(h)))


class OUFamily:
  """Epsilon prediction of OU noise, times log-uniform in [0.01, 2]; Euler-Maruyama sampling."""
  t_min, t_max = 0.01, 2.0

  def __init__(self, width: int):
    self.width = width

  def init(self, key):
    return Denoiser(self.width, nnx.Rngs(params=key))

  def loss_at(self, model, x, t, key, y=None):
    del y   # unconditional
    xi = jax.random.normal(key, x.shape)
    return jnp.mean(jnp.square(model(ou.noise(x, t, xi), t) - xi), axis=-1)

  def losses(self, model, batch, key, *, train):
    del train
    k_t, k_xi = jax.random.split(key)
    t = ou.sample_times(k_t, batch['x'].shape[:1], self.t_min, self.t_max)
    return self.loss_at(model, batch['x'], t, k_xi)

  def loss_time(self, t_ou):
    return t_ou

  def sample(self, model, key, num):
    k_x, k_em = jax.random.split(key)
    score = lambda x, t: -model(x, t) / jnp.sqrt(ou.delta(t))[:, None]  # noqa: E731
    grid = ou.time_grid(self.t_max, self.t_min, 40)
    return ou.euler_maruyama(score, jax.random.normal(k_x, (num, 2)), k_em, grid)


class ToyExperiment(NetworkExperiment):
  section = 'toy'
  ensemble_section = True
  data_depends_on_seed = True

  def default_section(self):
    return ml_collections.ConfigDict({'width': 32})

  def validate(self, config):
    config_lib.require(config.toy.width > 0, 'toy.width', f'must be positive, got {config.toy.width}')

  def load_data(self, config):
    return two_points(config.data.n, config.data.n_test, config.seed)

  def build_family(self, config, data):
    return OUFamily(config.toy.width)


@pytest.fixture
def toy():
  experiments.register('toy', ToyExperiment())
  yield
  experiments._TABLE.pop('toy')  # pylint: disable=protected-access


def toy_config(**overrides):
  c = config_lib.default_config()
  c.family = 'toy'
  c.data.n, c.data.n_test = 8, 32
  c.optimizer.name, c.optimizer.learning_rate = 'adam', 1e-2
  c.train.num_steps, c.train.batch_size, c.train.steps_per_dispatch = 60, 4, 16
  c.train.log_every, c.train.checkpoint_every, c.train.num_milestones = 10, 20, 4
  c.eval.metrics = ('memorization', 'losses')
  c.eval.num_samples, c.eval.bootstrap_resamples, c.eval.loss_batch_size = 32, 100, 16
  return apply_overrides(c, overrides)


def _strip(rows):
  timing = {'steps_per_sec', 'images_per_sec', 'elapsed_sec', 'eval_sec'}
  return [{k: v for k, v in r.items() if k not in timing} for r in rows]


def test_a_family_registered_through_the_table_trains_evaluates_checkpoints_and_resumes(toy, tmp_path):
  cfg = toy_config()
  assert 'toy' in experiments.names() and config_lib.default_config().toy.width == 32
  with pytest.raises(ValueError, match="'toy.width': must be positive"):
    config_lib.validate(toy_config(**{'toy.width': 0}))
  full = experiments.train(cfg, str(tmp_path / 'full'))
  assert int(full.state.step) == 60
  rows = read_metrics(str(tmp_path / 'full'))
  assert [r['step'] for r in rows if 'train_loss' in r] == [10, 20, 30, 40, 50, 60]
  evals = [r for r in rows if 'f_mem' in r]
  assert [r['step'] for r in evals] == list(log_spaced_milestones(60, 4))
  assert evals[-1]['loss_train_t'] < 0.7 * evals[0]['loss_train_t'], evals   # it learns the noise (fixed draws)
  assert all(0 <= r['f_mem_lo'] <= r['f_mem'] <= r['f_mem_hi'] <= 1 and r['loss_test_t'] > 0 for r in evals)
  summary = json.load(open(tmp_path / 'full' / 'summary.json'))
  assert summary['family'] == 'toy' and summary['n'] == 8 and summary['num_milestones'] == len(evals)
  assert summary['num_params'] == 3 * 32 + 32 + 32 * 32 + 32 + 32 * 2 + 2
  # Interrupted at a step that is no log step, then resumed: the same parameters and metrics history.
  part = experiments.train(cfg, str(tmp_path / 'resumed'), stop_at_step=13)
  assert int(part.state.step) == 13 and part.summary == {}
  assert sorted(os.listdir(tmp_path / 'resumed' / 'checkpoints')) == ['1', '13', '4']
  resumed = experiments.train(cfg, str(tmp_path / 'resumed'))
  for a, b in zip(jax.tree.leaves(full.state.params), jax.tree.leaves(resumed.state.params), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert _strip(read_metrics(str(tmp_path / 'full'))) == _strip(read_metrics(str(tmp_path / 'resumed')))
  # --mode=eval: the saved checkpoints evaluate to the rows written during training.
  again = experiments.evaluate(cfg, str(tmp_path / 'full'))
  after = {r['step']: r for r in read_metrics(str(tmp_path / 'full' / 'eval'))}
  assert sorted(after) == [r['step'] for r in evals]
  for r in evals:
    for k in ('f_mem', 'loss_train_t', 'loss_test_t'):
      assert after[r['step']][k] == pytest.approx(r[k], rel=1e-5, abs=1e-7), (r['step'], k)
  assert again['tau_mem_fmem'] == summary['tau_mem_fmem']


def test_a_two_member_ensemble_of_the_toy_family_equals_its_solo_runs(toy, tmp_path):
  cfg = toy_config(**{'ensemble.n': (4, 8), 'seed': 5, 'optimizer.name': 'sgd',
                      'optimizer.learning_rate': 0.05, 'optimizer.momentum': 0.9})
  ens = experiments.train(cfg, str(tmp_path / 'ens'))
  assert [(m['n'], m['seed']) for m in ens.summary['members']] == [(4, 5), (8, 5)]
  for i, m in enumerate(experiments.get('toy').members(cfg)):
    solo = experiments.train(experiments.get('toy').member_config(cfg, m), str(tmp_path / m.name))
    for a, b in zip(jax.tree.leaves(ens.member_params(i, ema=False)), jax.tree.leaves(solo.state.params)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    member_rows = _strip(read_metrics(str(tmp_path / 'ens' / m.name)))
    solo_rows = _strip(read_metrics(str(tmp_path / m.name)))
    assert [r['step'] for r in member_rows] == [r['step'] for r in solo_rows]
    for a, b in zip(member_rows, solo_rows):
      for k in ('train_loss', 'loss_train_t', 'loss_test_t'):
        if k in b:
          assert a[k] == pytest.approx(b[k], rel=1e-3), k
    assert json.load(open(tmp_path / 'ens' / m.name / 'config.json'))['data']['n'] == m.n


def test_a_sweep_point_with_ensemble_n_runs_the_ensemble_driver(toy, tmp_path):
  cfg = toy_config(**{'ensemble.n': (4, 8), 'train.num_steps': 20, 'train.num_milestones': 2})
  points = sweep.make_points(str(tmp_path), [{'train.batch_size': 4}], cfg.seed)
  results = sweep.run_local(cfg, points, log=lambda s: None)
  assert [r['status'] for r in results] == ['done']
  workdir = points[0].workdir
  summary = json.load(open(os.path.join(workdir, 'summary.json')))
  assert [m['member'] for m in summary['members']] == ['n4_seed%d' % points[0].seed, 'n8_seed%d' % points[0].seed]
  for m in summary['members']:
    assert [r['step'] for r in read_metrics(os.path.join(workdir, m['member'])) if 'f_mem' in r] == [1, 20]


def test_eval_mode_evaluates_saved_checkpoints_for_each_family_or_says_why_not(tmp_path, cache_dir):
  """--mode=eval through main on a U-Net ensemble and a Gaussian-mixture run (no training: the rows come from
  the checkpoints), and a clear refusal for the random-features family (nothing saved to re-evaluate)."""
  unet = tiny_config(**{'data.cache_dir': cache_dir, 'ensemble.n': (4,), 'train.num_steps': 10,
                        'train.num_milestones': 2, 'eval.features': ''})
  experiments.train(unet, str(tmp_path / 'unet'))
  gmm = tiny_gmm_config(**{'train.num_steps': 10, 'gmm.n': (8,)})
  experiments.train(gmm, str(tmp_path / 'gmm'))
  for name, cfg in (('unet', unet), ('gmm', gmm)):
    workdir = tmp_path / name
    member = 'n4_seed0' if name == 'unet' else 'n8_seed0'
    trained_ckpt = sorted(os.listdir(workdir / 'checkpoints'))
    during = {r['step']: r for r in read_metrics(str(workdir / member)) if 'f_mem' in r}
    summary = experiments.run(cfg, str(workdir), 'eval')
    after = {r['step']: r for r in read_metrics(str(workdir / 'eval' / member))}
    assert sorted(after) == sorted(during) == list(log_spaced_milestones(10, cfg.train.num_milestones))
    for step, r in after.items():
      assert r['f_mem'] == during[step]['f_mem'] and r['loss_test_t'] == pytest.approx(during[step]['loss_test_t'])
    assert summary['members'][0]['member'] == member
    assert sorted(os.listdir(workdir / 'checkpoints')) == trained_ckpt       # nothing trained or saved
  rf = config_lib.default_config()
  rf.family = 'random_features'
  with pytest.raises(ValueError, match="'random_features' has nothing to re-evaluate"):
    experiments.run(rf, str(tmp_path / 'rf'), 'eval')


def test_main_and_sweep_have_no_family_dispatch_of_their_own():
  for name in ('main.py', 'sweep.py'):
    text = open(os.path.join(ROOT, 'jaxdiff', name)).read()
    assert 'family ==' not in text and 'ensemble.n' not in text, name
    assert 'experiments.' in text, name


def test_ensembles_are_refused_by_one_check_in_a_multi_process_job(monkeypatch):
  from jaxdiff.train import loop
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  loop.check_processes(0)   # a solo run (no member axis) trains on any number of processes
  with pytest.raises(ValueError, match='an ensemble of 3 members runs in one process'):
    loop.check_processes(3)
