"""What an experiment provides, and the trainers of every network family (solo runs and vectorized ensembles).

A network family (the DDPM U-Net, a toy MLP denoiser, ...) subclasses `NetworkExperiment` and declares

- `load_data(config)`: its training and test sets (`Dataset`: host arrays, first `data.n` examples);
- `build_family(config, data)`: an object with `init(key) -> nnx.Module`, `losses(model, batch, key, *,
  train) -> [B]` per-example training losses, `sample(model, key, num) -> [num, ...]`,
  `loss_time(t_ou)` and `loss_at(model, x, t, key, y=labels) -> [B]` (the loss at a fixed time, for the
  'losses' evaluator), optionally `compiler_options` (XLA options of every program that runs the network);
- optionally its config section (`section`, `default_section()`), `validate(config)`, `summary_info`, the
  evaluators it runs when `eval.metrics` is empty (`default_metrics`), figures of the metric curves written
  when a run finishes (`history_figures`), and more members than `ensemble.n`
  gives (`members`, `member_config`, `member_key`: the Gaussian mixture's gmm.n x gmm.num_seeds).

Everything else is shared: the run is a solo run (`config.ensemble.n` empty) or a vectorized ensemble of
one member per (n, seed) for n in `ensemble.n` and seed in config.seed + [0, ensemble.num_seeds). Member
(n, seed) trains exactly as the solo run `member_config(config, member)` would (data.n = n, that seed): its
batches, noise and dropout come from its key (jaxdiff.train.steps), its parameters from the solo run's
initialization. The one driver (jaxdiff.train.loop) trains either; the evaluators of `eval.metrics`
(jaxdiff.evaluators) evaluate each member as its solo run; summary.json holds tau_gen and tau_mem (and, for
an ensemble, the fit tau_mem = c n^alpha over the members).
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from jaxdiff import config as config_lib
from jaxdiff import distributed, evaluators, sharding, timescales
from jaxdiff.io import figures
from jaxdiff.io.rundir import RunDir
from jaxdiff.metrics import agreement
from jaxdiff.train import loop
from jaxdiff.train.loop import Member
from jaxdiff.train.steps import (TrainState, init_state, make_optimizer, make_train_chunk, member, member_sharding,
                                 network_init_fn, network_loss_fn, pad_stack, resolve_loop, state_sharding)


class Dataset(Protocol):
  """A family's data: host arrays. train: [n, ...] model-space examples; train_labels: [n] int; test: [m, ...];
  test_labels: [m]; name: shown in logs. Image data also has value_range: (lo, hi), the values pixels 0 and 1
  map to; scale = hi - lo; to_pixels(x): model space -> [0, 1] (for figures and feature extractors)."""
  train: np.ndarray
  train_labels: np.ndarray
  test: np.ndarray
  test_labels: np.ndarray
  name: str


class NetworkExperiment:
  """Base of the experiments whose model is one Flax NNX network (see the module docstring)."""

  section: str | None = None        # the config section the family owns
  data_depends_on_seed = False       # False: members with the same n share one training set
  ensemble_section = True            # ensembles of config.ensemble.n
  halves = True                      # disjoint-halves pairs (ensemble.halves)
  default_metrics: tuple[str, ...] = ('memorization', 'losses')   # evaluators when eval.metrics is ()

  # ------------------------------------------------------------------ what a family declares

  def default_section(self) -> ml_collections.ConfigDict | None:
    return None

  def validate(self, config: ml_collections.ConfigDict) -> None:
    del config

  def load_data(self, config: ml_collections.ConfigDict) -> Dataset:
    raise NotImplementedError

  def build_family(self, config: ml_collections.ConfigDict, data: Dataset):
    raise NotImplementedError

  def metrics(self, config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The evaluators of a run: `eval.metrics`, or the family's `default_metrics` when it is empty."""
    return tuple(config.eval.metrics) or self.default_metrics

  def quality_key(self, config: ml_collections.ConfigDict, evaluation) -> str | None:
    """The metric tau_gen is read from (default: the 'quality' evaluator's FD)."""
    del config
    return evaluation.quality_key

  def member_key(self, m: Member) -> jax.Array:
    """The raw key [2] of member m's initialization, batches and noise (a solo run with seed m.seed uses it)."""
    return jax.random.key_data(jax.random.key(m.seed))

  def history_figures(self, config: ml_collections.ConfigDict, rundir: RunDir,
                      histories: list[tuple[Member, list[dict[str, Any]]]]) -> list[str]:
    """Figures drawn from the metrics history when a run finishes (curves against training time: one per
    member in its directory, one per ensemble), given each member's metrics rows; returns the paths written.
    Default: none (image runs draw their samples at the last evaluation, `evaluators.write_figures`)."""
    del config, rundir, histories
    return []

  def summary_info(self, config: ml_collections.ConfigDict) -> dict[str, Any]:
    """What summary.json records beside the timescales (the analysis groups runs by it)."""
    return dict(family=config.family, n=config.data.n, seed=config.seed, dataset=config.data.name,
                batch_size=config.train.batch_size, learning_rate=config.optimizer.learning_rate,
                optimizer=config.optimizer.name)

  # ------------------------------------------------------------------ members

  def members(self, config: ml_collections.ConfigDict) -> list[Member]:
    """One solo member (ensemble.n empty), or (n, seed) for n in ensemble.n, seed = config.seed + s; with
    ensemble.halves, a pair per (n, seed) (`halves_members`)."""
    ns = tuple(config.ensemble.n) or ((config.data.n,) if config.ensemble.halves else ())
    if not ns:
      return [Member(config.data.n, config.seed, solo=True, eval_seed=eval_seed_of(config))]
    pairs = [(int(n), config.seed + s) for s in range(config.ensemble.num_seeds) for n in ns]
    return halves_members(pairs, config.ensemble.num_seeds, Member) if config.ensemble.halves else [
        Member(n, seed, eval_seed=eval_seed_of(config)) for n, seed in pairs]

  def member_config(self, config: ml_collections.ConfigDict, m: Member) -> ml_collections.ConfigDict:
    """The solo config that trains exactly member m (`python -m jaxdiff.main` with it gives the same run)."""
    c = ml_collections.ConfigDict(config.to_dict())
    c.seed = m.seed
    c.data.n = m.n
    c.ensemble.n = ()
    c.ensemble.num_seeds = 1
    set_half(c, m)
    return c

  # ------------------------------------------------------------------ running

  def prepare(self, config: ml_collections.ConfigDict, *, training: bool = True):
    """Validate the config and build the mesh. Fails before any compilation on bad input.
    training=False (evaluation only) skips the checks that concern training steps (batch divisibility)."""
    config_lib.validate(config, num_devices=jax.device_count() if training else None)
    return sharding.make_mesh(config.mesh)

  def trainer(self, config: ml_collections.ConfigDict, mesh) -> NetworkTrainer:
    members = self.members(config)
    if len(members) == 1 and members[0].solo:
      return SoloTrainer(self, config, mesh)
    return EnsembleTrainer(self, config, mesh, members)

  def train(self, config: ml_collections.ConfigDict, workdir: str, *,
            stop_at_step: int | None = None) -> NetworkTrainer:
    """Train (resuming from `workdir`) to train.num_steps or stop_at_step, evaluating at the milestones; write
    the summaries when finished. Returns the trainer (`.state`, `.summary`)."""
    t_start = time.time()
    mesh = self.prepare(config)
    trainer = self.trainer(config, mesh)
    rundir = RunDir(workdir)
    step = loop.train(config, rundir, trainer, stop_at_step=stop_at_step, tag=config.family)
    if step == config.train.num_steps:
      trainer.finish(rundir, seconds=time.time() - t_start)
    return trainer

  def evaluate(self, config: ml_collections.ConfigDict, workdir: str, out_dir: str | None = None,
               steps: list[int] | None = None) -> dict[str, Any]:
    """Evaluate the run's saved checkpoints without training (`--mode=eval`) into `out_dir` (default
    <workdir>/eval), leaving the run's own history untouched: metrics.jsonl, summary.json and the figures of
    the last step (per member for an ensemble). steps: which saved steps (default all)."""
    t_start = time.time()
    mesh = self.prepare(config, training=False)
    if not (config.eval.enabled and self.metrics(config)):
      raise ValueError("config field 'eval.enabled': --mode=eval needs evaluation (eval.enabled and eval.metrics)")
    trainer = self.trainer(config, mesh)
    out = RunDir(out_dir or RunDir(workdir).file('eval'))
    loop.evaluate_checkpoints(config, RunDir(workdir), out, trainer, steps=steps, tag=config.family)
    return trainer.finish(out, seconds=time.time() - t_start)


def eval_seed_of(config: ml_collections.ConfigDict) -> int | None:
  """The seed of a run's evaluation keys when eval.seed sets one (a half of a pair run alone), else None."""
  return config.eval.seed if config.eval.seed >= 0 else None


def halves_members(pairs: list[tuple[int, int]], num_seeds: int, member_cls=Member) -> list[Member]:
  """Two members per (n, seed) of `pairs`: half 0 trains with the seed, half 1 with seed + num_seeds (an
  independent initialization and batch order, never another pair's seed); both evaluate with the pair's seed."""
  return [member_cls(n, seed + half * num_seeds, half=half, eval_seed=seed) for n, seed in pairs for half in (0, 1)]


def set_half(c: ml_collections.ConfigDict, m: Member) -> None:
  """Make the solo config c train member m of a disjoint-halves pair: its data block and evaluation keys."""
  c.ensemble.halves = False
  if m.half >= 0:
    c.data.block = m.half
    c.eval.seed = m.keys_seed


def halves_pairs(members: list[Member]) -> list[tuple[int, int]]:
  """Indices (i, j) of the two halves of every disjoint-halves pair among members."""
  first = {(m.n, m.eval_seed): i for i, m in enumerate(members) if m.half == 0}
  return [(first[(m.n, m.eval_seed)], j) for j, m in enumerate(members) if m.half == 1]


def halves_curve(first: tuple[Member, dict[str, Any]], second: tuple[Member, dict[str, Any]],
                 rows0: list[dict[str, Any]], rows1: list[dict[str, Any]]) -> dict[str, Any]:
  """One disjoint-halves pair over training: the agreement curve (rows with halves_*), each half's f_mem
  and tau_mem, and `step_diverge`: the first milestone after the agreement's maximum where it has fallen
  below half of that maximum (None if it never does)."""
  (m0, s0), (m1, s1) = first, second
  rows0 = [r for r in rows0 if 'halves_agree' in r]
  by_step1 = {r['step']: r for r in rows1 if 'halves_agree' in r}
  steps = [int(r['step']) for r in rows0]
  agree = [float(r['halves_agree']) for r in rows0]
  peak = int(np.argmax(agree)) if agree else 0
  diverge = next((steps[t] for t in range(peak, len(agree)) if agree[t] < agree[peak] / 2), None)
  return {'n': m0.n, 'seeds': [m0.seed, m1.seed], 'steps': steps, 'agree': agree,
          'agree_lo': [float(r['halves_agree_lo']) for r in rows0],
          'agree_hi': [float(r['halves_agree_hi']) for r in rows0],
          'l2': [float(r['halves_l2']) for r in rows0], 'l2_unpaired': [float(r['halves_l2_unpaired']) for r in rows0],
          'rel_l2': [float(r['halves_rel_l2']) for r in rows0],
          'f_mem': [[float(r.get('f_mem', np.nan)) for r in rows0],
                    [float(by_step1.get(t, {}).get('f_mem', np.nan)) for t in steps]],
          'tau_mem': [s0.get('tau_mem_fmem'), s1.get('tau_mem_fmem')],
          'agree_max': agree[peak] if agree else None, 'step_diverge': diverge}


class NetworkTrainer:
  """Shared by the solo and ensemble trainers: evaluation bookkeeping and summaries."""

  experiment: NetworkExperiment
  config: ml_collections.ConfigDict
  members: list[Member]
  state: TrainState
  num_params: int
  summary: dict[str, Any]   # summary.json once finished, {} before

  def member_config(self, m: Member) -> ml_collections.ConfigDict:
    return self.experiment.member_config(self.config, m)

  def _eval_params(self, i: int | None):
    """The parameters to evaluate (the moving average when the run keeps one), of member i of an ensemble."""
    tree = self.state.ema_params if self.state.ema_params is not None else self.state.params
    return tree if i is None else member(tree, i)

  def evaluate(self, step: int) -> list[dict[str, Any]] | None:
    if not self.evaluations:
      return None
    rows, self._figs, samples = [], [], []
    rep = sharding.replicated(self.mesh)
    pairs = halves_pairs(self.members)
    paired = {i for pair in pairs for i in pair}
    for i, m in enumerate(self.members):
      t0 = time.perf_counter()
      params = self._eval_params(None) if m.solo else distributed.put(self._eval_params(i), rep)
      scalars, figs, x = self.evaluations[self._data_key(m)].evaluate_with_samples(
          params, step, seed=m.keys_seed, need_samples=i in paired)
      scalars['eval_sec'] = time.perf_counter() - t0
      rows.append(scalars)
      self._figs.append(figs)
      samples.append(x if i in paired else None)
    self._pair_figs = []
    for i, j in pairs:   # the two halves sampled from the same noise (the pair's evaluation keys)
      ev = self.evaluations[self._data_key(self.members[i])]
      key = jax.random.fold_in(evaluators.Keys.of(self.members[i].keys_seed, step).memorization, 1)
      r = agreement.agreement(samples[i], samples[j], key, k=self.config.eval.memorization_k,
                              num_resamples=self.config.eval.bootstrap_resamples,
                              chunk_size=self.config.eval.nn_chunk_size)
      scalars = {f'halves_{name}': float(distributed.fetch(r[name]))
                 for name in ('l2', 'l2_unpaired', 'rel_l2', 'agree', 'agree_lo', 'agree_hi')}
      rows[i].update(scalars)
      rows[j].update(scalars)
      g = min(self.config.eval.grid_samples, samples[i].shape[0])
      to_host = lambda x: np.asarray(distributed.fetch(ev.context.to_pixels(x[:g])))  # noqa: E731
      self._pair_figs.append((self.members[i], {
          'a': to_host(samples[i]), 'b': to_host(samples[j]),
          'ratio': np.asarray(distributed.fetch(r['pair_ratio']))[:g],
          'agreed': np.asarray(distributed.fetch(r['agreed']))[:g], 'agree': scalars['halves_agree']}))
    logging.info('%s: step %d %s', self.config.family, step, '  '.join(
        (f'{m.name}: ' if m.name else '') + _describe(r) for m, r in zip(self.members, rows)))
    return rows

  def write_figures(self, rundir: RunDir, step: int) -> None:
    for m, figs in zip(self.members, self._figs):
      for path in evaluators.write_figures(rundir.member(m.name), step, figs):
        logging.info('wrote %s', path)
    for m, f in getattr(self, '_pair_figs', []):
      path = figures.save_paired_samples(
          f['a'], f['b'], f['ratio'], f['agreed'], rundir.file(f'halves_n{m.n}_seed{m.keys_seed}.png'),
          title=f"n = {m.n}: half 0 (top) and half 1 (bottom) from the same noise at step {step}; "
                f"agree {f['agree']:.2f}")
      logging.info('wrote %s', path)

  @property
  def quality_key(self) -> str | None:
    if not self.evaluations:
      return None
    return self.experiment.quality_key(self.config, next(iter(self.evaluations.values())))

  def finish(self, rundir: RunDir, *, seconds: float) -> dict[str, Any]:
    """After the last step: summary.json of every member (and the ensemble's fit), or a sample grid when the
    run does not evaluate. Every process calls it (sampling is a sharded computation)."""
    if not self.evaluations:
      self._sample_grid(rundir)
      return {}
    per_member, histories = [], []
    for m in self.members:
      mdir = rundir.member(m.name)
      info = self.experiment.summary_info(self.member_config(m))
      rows = mdir.read_metrics()
      s = timescales.run_summary(rows, self.config.eval, self.quality_key, num_params=self.num_params, **info)
      path = mdir.write_summary(s)
      logging.info('wrote %s: tau_gen %s, tau_mem (f_mem) %s, tau_mem (loss) %s', path, s.get('tau_gen'),
                   s.get('tau_mem_fmem'), s.get('tau_mem_loss'))
      per_member.append((m, s))
      histories.append((m, rows))
    if rundir.primary:
      for path in self.experiment.history_figures(self.config, rundir, histories):
        logging.info('wrote %s', path)
    if self.members[0].solo:
      self.summary = per_member[0][1]
      return self.summary
    summary = timescales.ensemble_summary(self.config.family, self.config.eval, per_member, self.quality_key)
    summary.update(num_params=self.num_params, seconds=seconds)
    pairs = halves_pairs(self.members)
    if pairs:
      summary['halves'] = [halves_curve(per_member[i], per_member[j], histories[i][1], histories[j][1])
                           for i, j in pairs]
      if rundir.primary:
        path = figures.save_agreement_curves(summary['halves'], rundir.file('agreement.png'))
        logging.info('wrote %s', path)
    rundir.write_summary(summary)
    logging.info('%s: tau_mem fit %s, summary in %s', self.config.family, summary.get('tau_mem_fit'), rundir.root)
    self.summary = summary
    return summary

  def _sample_grid(self, rundir: RunDir) -> None:
    """samples.png of each member for runs without evaluation."""
    num = self.config.eval.grid_samples
    for i, m in enumerate(self.members):
      family = self.families[self._data_key(m)]
      params = self._eval_params(None) if m.solo else distributed.put(
          self._eval_params(i), sharding.replicated(self.mesh))
      n_data = self.mesh.shape[sharding.DATA]
      out = sharding.batch_sharded(self.mesh) if num % n_data == 0 else sharding.replicated(self.mesh)
      sampler = jax.jit(lambda p, key, family=family: family.sample(nnx.merge(self.graphdef, p), key, num),
                        out_shardings=out, compiler_options=getattr(family, 'compiler_options', None))
      key = jax.random.fold_in(jax.random.key(m.seed), 3)   # as a solo run of seed m.seed draws it
      samples = distributed.fetch(sampler(params, key))
      data = self.data_sets[self._data_key(m)]
      if rundir.primary and samples.ndim == 4:
        path = figures.save_image_grid(data.to_pixels(samples), rundir.member(m.name).file('samples.png'),
                                       title=f'{num} samples at step {int(self.state.step)}')
        logging.info('wrote %s', path)

  def _data_key(self, m: Member):
    return (m.n, m.seed if self.experiment.data_depends_on_seed else None, m.half)

  def _build(self, experiment: NetworkExperiment, config: ml_collections.ConfigDict, mesh,
             members: list[Member]) -> None:
    """Data, families and evaluations of every distinct training set; the graphdef and parameter count."""
    self.experiment, self.config, self.mesh, self.members = experiment, config, mesh, members
    self.summary = {}
    self.data_sets, self.families, self.evaluations = {}, {}, {}
    for m in members:
      k = self._data_key(m)
      if k not in self.data_sets:
        solo = self.member_config(m)
        self.data_sets[k] = experiment.load_data(solo)
        self.families[k] = experiment.build_family(solo, self.data_sets[k])
    # Training does not depend on the data range (only sampling clips to it): one family trains every member.
    self.family = self.families[self._data_key(max(members, key=lambda m: m.n))]
    abstract = nnx.eval_shape(lambda: self.family.init(jax.random.key(0)))
    self.graphdef, params = nnx.split(abstract, nnx.Param)
    self.num_params = int(sum(x.size for x in jax.tree.leaves(params)))
    metrics = experiment.metrics(config)
    if config.eval.enabled and metrics and config.train.num_milestones > 0:
      for m in members:
        k = self._data_key(m)
        if k not in self.evaluations:
          self.evaluations[k] = evaluators.Evaluation(self.member_config(m), self.families[k], self.graphdef,
                                                      self.data_sets[k], mesh, metrics=metrics)
    self._figs: list[dict[str, np.ndarray]] = []
    self.tx = make_optimizer(config.optimizer)
    self.loss_fn = network_loss_fn(self.family.losses, self.graphdef)
    self.compiler_options = getattr(self.family, 'compiler_options', None)


class SoloTrainer(NetworkTrainer):
  """One network; its batch split over the mesh's 'data' axis, its state replicated (data parallelism)."""

  def __init__(self, experiment: NetworkExperiment, config: ml_collections.ConfigDict, mesh):
    member_ = experiment.members(config)[0]
    self._build(experiment, config, mesh, [member_])
    data = self.data_sets[self._data_key(member_)]
    self.batch_size = config_lib.effective_batch_size(config)
    key = experiment.member_key(member_)
    ema = config.optimizer.ema_decay > 0
    abstract = jax.eval_shape(lambda k: init_state(network_init_fn(self.family.init), self.tx, k, ema), key)
    shardings = state_sharding(abstract, mesh)
    self.state = jax.jit(lambda k: init_state(network_init_fn(self.family.init), self.tx, k, ema),
                         out_shardings=shardings)(key)
    rep = sharding.replicated(mesh)
    self.data = distributed.put({'x': np.asarray(data.train), 'y': np.asarray(data.train_labels, np.int32)}, rep)
    self.chunk = make_train_chunk(loss_fn=self.loss_fn, tx=self.tx, batch_size=self.batch_size,
                                  loop=config.train.loop, ema_decay=config.optimizer.ema_decay,
                                  ema_debias=config.optimizer.ema_debias,
                                  compiler_options=self.compiler_options, mesh=mesh, shardings=shardings)
    logging.info('%s: %.3fM parameters; data: %s n=%d %s; mesh %s; batch %d', config.family,
                 self.num_params / 1e6, data.name, data.train.shape[0], data.train.shape[1:], dict(mesh.shape),
                 self.batch_size)

  def train(self, num_steps: int, reset: bool = True) -> None:
    self.state = self.chunk(self.state, self.data, None, jnp.int32(num_steps), jnp.bool_(reset))


class EnsembleTrainer(NetworkTrainer):
  """E networks trained by one compiled step (vmap over members, split over the mesh's 'data' axis)."""

  def __init__(self, experiment: NetworkExperiment, config: ml_collections.ConfigDict, mesh,
               members: list[Member]):
    if not members:
      raise ValueError("config field 'ensemble.n': an ensemble needs at least one training-set size")
    loop.check_processes(len(members))
    self._build(experiment, config, mesh, members)
    self.batch_size = config.train.batch_size
    ema = config.optimizer.ema_decay > 0
    keys = jnp.stack([experiment.member_key(m) for m in members])
    state = jax.jit(lambda k: init_state(network_init_fn(self.family.init), self.tx, k, ema))(keys)
    sets = [self.data_sets[self._data_key(m)] for m in members]
    x_pad, sizes = pad_stack([d.train for d in sets])
    y_pad, _ = pad_stack([np.asarray(d.train_labels, np.int32) for d in sets])
    shard = member_sharding(mesh, len(members))
    self.data = {'x': jax.device_put(x_pad, shard), 'y': jax.device_put(y_pad, shard)}
    self.sizes = jax.device_put(sizes, shard)
    self.state = jax.device_put(state, state_sharding(state, mesh))
    self.chunk = make_train_chunk(loss_fn=self.loss_fn, tx=self.tx, batch_size=self.batch_size,
                                  loop=resolve_loop(config.train.loop), ema_decay=config.optimizer.ema_decay,
                                  ema_debias=config.optimizer.ema_debias,
                                  compiler_options=self.compiler_options)
    logging.info('%s: ensemble of %d members (n = %s, seeds %s), %d parameters each, batch min(n, %d), mesh %s',
                 config.family, len(members), sorted({m.n for m in members}), sorted({m.seed for m in members}),
                 self.num_params, self.batch_size, dict(mesh.shape))

  def train(self, num_steps: int, reset: bool = True) -> None:
    self.state = self.chunk(self.state, self.data, self.sizes, jnp.int32(num_steps), jnp.bool_(reset))

  def member_params(self, i: int, ema: bool = True):
    """Member i's parameters (its moving average when the run keeps one and ema is True)."""
    tree = self.state.ema_params if ema and self.state.ema_params is not None else self.state.params
    return member(tree, i)


def _describe(row: dict[str, Any]) -> str:
  parts = []
  if 'f_mem' in row:
    parts.append(f"f_mem {row['f_mem']:.3f} [{row['f_mem_lo']:.3f}, {row['f_mem_hi']:.3f}]")
  for k in ('loss_train_t', 'loss_test_t'):
    if k in row:
      parts.append(f'{k} {row[k]:.5f}')
  parts += [f'{k} {v:.4g}' for k, v in row.items()
            if (k.startswith('fd_') and not k.endswith('_set_std')) or k.startswith('valid_')]
  return ', '.join(parts)


__all__ = ['Dataset', 'NetworkExperiment', 'NetworkTrainer', 'SoloTrainer', 'EnsembleTrainer']
