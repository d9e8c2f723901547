"""Vectorized ensembles of DDPM U-Nets: several training-set sizes n and seeds trained as one compiled step.

    python -m jaxdiff.main --config=configs/quickstart.py --workdir=DIR --config.ensemble.n='(8,16,32,64)'

Members are (n, seed) for n in `config.ensemble.n` and seed in config.seed + [0, ensemble.num_seeds). Member
(n, seed) trains exactly as the solo run `member_config(config, member)` (data.n = n, that seed) would:
its training set is the first n images, centred with their own mean; its batches, noise and dropout come
from its key (jaxdiff.ensemble); its parameters start from the solo run's initialization. The sets are
padded to the largest n and the members vmapped; on a mesh the members are split over the 'data' axis.

At milestones every member is evaluated as a solo run is (jaxdiff.evaluate: samples, f_mem against its
own training set, losses at fixed time, quality), one after the other with one compiled evaluator per
training-set size. Writes `<workdir>/<member>/` with metrics.jsonl, summary.json, config.json (the solo
config) and the sample / neighbour figures, and `<workdir>/summary.json` with the fit tau_mem = c n^alpha
over the members. The analysis (`python -m jaxdiff.analysis --workdirs DIR`) reads the members as runs.
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from jaxdiff import config as config_lib
from jaxdiff import distributed, ensemble, ensemble_run, families, sharding
from jaxdiff import evaluate as evaluate_lib
from jaxdiff.families import build_family
from jaxdiff.writers import read_metrics

TAG = 'unet ensemble'


Member = ensemble_run.Member


def members_of(config: ml_collections.ConfigDict) -> list[Member]:
  """(n, seed) for n in ensemble.n and seed = config.seed + s, s < ensemble.num_seeds."""
  return [Member(int(n), config.seed + s) for s in range(config.ensemble.num_seeds) for n in config.ensemble.n]


def member_config(config: ml_collections.ConfigDict, m: Member) -> ml_collections.ConfigDict:
  """The solo config that trains exactly member m (`python -m jaxdiff.main` with it gives the same run)."""
  c = ml_collections.ConfigDict(config.to_dict())
  c.seed = m.seed
  c.data.n = m.n
  c.ensemble.n = ()
  c.ensemble.num_seeds = 1
  return c


class Trainer:
  """The ensemble's data, state, compiled chunk and evaluators (see the module docstring)."""

  def __init__(self, config: ml_collections.ConfigDict, mesh):
    from jaxdiff import data as data_lib  # pylint: disable=g-import-not-at-top
    from jaxdiff import train  # pylint: disable=g-import-not-at-top
    self.config, self.mesh = config, mesh
    self.members = members_of(config)
    if not self.members:
      raise ValueError("config field 'ensemble.n': a U-Net ensemble needs at least one training-set size")
    sizes = sorted({m.n for m in self.members})
    self.images = {n: data_lib.load_images(member_config(config, Member(n, config.seed)).data) for n in sizes}
    shape = self.images[sizes[0]].train.shape[1:]
    self.families = {n: build_family(config, shape, self.images[n].value_range) for n in sizes}
    family = self.families[sizes[-1]]   # training does not depend on the data range (only sampling clips)
    self.graphdef, abstract = nnx.split(nnx.eval_shape(lambda: family.init(jax.random.PRNGKey(0))), nnx.Param)
    self.num_params = int(sum(x.size for x in jax.tree.leaves(abstract)))

    tx = train.make_optimizer(config.optimizer)
    ema_decay = config.optimizer.ema_decay
    keys = jnp.stack([jax.random.PRNGKey(m.seed) for m in self.members])
    state = jax.jit(lambda k: ensemble.init_state(ensemble.family_init_fn(family), tx, k, ema=ema_decay > 0))(keys)
    x_pad, n = ensemble.pad_stack([self.images[m.n].train for m in self.members])
    y_pad, _ = ensemble.pad_stack([np.asarray(self.images[m.n].train_labels, np.int32) for m in self.members])
    shard = ensemble.member_sharding(mesh, len(self.members))
    self.data = {'x': jax.device_put(x_pad, shard), 'y': jax.device_put(y_pad, shard)}
    self.sizes = jax.device_put(n, shard)
    self.state = jax.device_put(state, jax.tree.map(
        lambda x: shard if x.ndim and x.shape[0] == len(self.members) else sharding.replicated(mesh), state))
    self.chunk = ensemble.make_train_chunk(loss_fn=ensemble.family_loss_fn(family, self.graphdef), tx=tx,
                                           batch_size=config.train.batch_size,
                                           loop=train.resolve_loop(config.train.loop), ema_decay=ema_decay,
                                           compiler_options=families.compiler_options(family))
    self.evaluators = {}
    if config.eval.enabled:
      for n_ in sizes:
        solo = member_config(config, Member(n_, config.seed))
        self.evaluators[n_] = evaluate_lib.Evaluator(solo, self.families[n_], self.graphdef, self.images[n_], mesh)
    self._figs: list[dict[str, np.ndarray]] = []

  def train(self, num_steps: int, reset: bool = True) -> None:
    self.state = self.chunk(self.state, self.data, self.sizes, jnp.int32(num_steps), jnp.bool_(reset))

  def member_params(self, i: int, ema: bool = True):
    """Member i's parameters (its moving average when the run keeps one and ema is True)."""
    tree = self.state.ema_params if ema and self.state.ema_params is not None else self.state.params
    return ensemble.member(tree, i)

  def evaluate(self, step: int) -> list[dict[str, Any]]:
    """One metrics row per member, exactly the row its solo run writes at `step` (up to float rounding)."""
    if not self.evaluators:
      return [{} for _ in self.members]
    rows, self._figs = [], []
    rep = sharding.replicated(self.mesh)
    for i, m in enumerate(self.members):
      t0 = time.perf_counter()
      scalars, figs = self.evaluators[m.n].evaluate(distributed.put(self.member_params(i), rep), step, seed=m.seed)
      scalars['eval_sec'] = time.perf_counter() - t0
      rows.append(scalars)
      self._figs.append(figs)
    logging.info('%s: step %d f_mem %s', TAG, step, ', '.join(f"{m.name} {r['f_mem']:.3f}"
                                                             for m, r in zip(self.members, rows)))
    return rows

  def write_figures(self, workdir: str, step: int) -> None:
    for m, figs in zip(self.members, self._figs):
      evaluate_lib.write_figures(os.path.join(workdir, m.name), step, figs)

  def member_config(self, m: Member) -> ml_collections.ConfigDict:
    return member_config(self.config, m)


def run(config: ml_collections.ConfigDict, workdir: str, *, stop_at_step: int | None = None) -> dict[str, Any]:
  """Train and evaluate the U-Net ensemble of `config.ensemble` in `workdir` (resuming from its checkpoint).
  Returns the ensemble summary ({} when stopped before train.num_steps: run again to resume)."""
  config_lib.validate(config, num_devices=jax.device_count())
  if jax.process_count() > 1:
    raise ValueError("config field 'ensemble.n': U-Net ensembles run in one process (members are split over "
                     'its devices); launch one ensemble per host instead')
  t_start = time.time()
  mesh = sharding.make_mesh(config.mesh)
  trainer = Trainer(config, mesh)
  members = trainer.members
  logging.info('%s: %d members (n = %s, seeds %s), W=%d (%d parameters each), batch min(n, %d), %s lr %g, mesh %s',
               TAG, len(members), sorted({m.n for m in members}), sorted({m.seed for m in members}),
               config.model.width, trainer.num_params, config.train.batch_size, config.optimizer.name,
               config.optimizer.learning_rate, dict(mesh.shape))
  step = ensemble_run.train_members(config, workdir, trainer, stop_at_step=stop_at_step, tag=TAG)
  if step < config.train.num_steps or not trainer.evaluators:
    return {}
  quality_key = trainer.evaluators[members[0].n].quality_key
  per_member = []
  for m in members:
    mdir = os.path.join(workdir, m.name)
    s = evaluate_lib.write_summary(mdir, read_metrics(mdir), member_config(config, m), quality_key,
                                   trainer.num_params)
    per_member.append((m, s))
  summary = ensemble_run.fit_summary('ddpm', config, per_member, quality_key, tag=TAG)
  summary.update(num_params=trainer.num_params, seconds=time.time() - t_start)
  ensemble_run.json_dump(summary, os.path.join(workdir, evaluate_lib.SUMMARY_FILE))
  logging.info('%s: tau_mem fit %s, summary in %s (%.1fs)', TAG, summary.get('tau_mem_fit'), workdir,
               summary['seconds'])
  return summary


__all__ = ['Member', 'Trainer', 'members_of', 'member_config', 'run']
