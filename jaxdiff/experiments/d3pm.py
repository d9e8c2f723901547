"""Paper 2's grammar diffusion (SPEC section 4): a uniform-transition D3PM learning sequences of a Random
Hierarchy Model, solo runs and vectorized ensembles over the training-set size P (= data.n) and seeds.

    python -m jaxdiff.main --config=configs/rhm_d3pm.py --workdir=DIR
    python -m jaxdiff.main --config=configs/rhm_d3pm.py:cpu --workdir=DIR     # P = 128 ... 1024, one ensemble

Data (jaxdiff.data.rhm): the grammar of `d3pm.grammar` (v, n_c, m, s, L and its own seed, so every member of
an ensemble learns the same grammar), a test set of `data.n_test` sequences and a training set of the next
P = `data.n`, distinct and disjoint (uniform draws of trees; `d3pm.grammar.distinct=False`: i.i.d. trees);
the training sets of increasing P are nested. One-hot float32 [P, s^L, v].
Diffusion (jaxdiff.diffusion.d3pm): T = `d3pm.num_steps` levels, beta linear in [beta_min, beta_max], the KL of
posteriors per token (+ `d3pm.ce_weight` x cross-entropy), ancestral sampling in a `lax.scan`.
Denoiser (jaxdiff.models.conv1d_unet): the 1-D convolutional U-Net of width `d3pm.width`, depth L; time enters
by rescaling its one-hot input x_t by alpha_bar_t (SPEC section 4).
Evaluation (default 'validity', 'copies', 'window_losses'): valid@k per level, exact copies of the member's
training sequences as f_mem (with the chance level P/P_max * valid@L beside it), the loss per window of
diffusion time on the training and test sets; summary.json: tau_mem from the copies and from the loss gap (as
image runs); figures: `validity_copies.png` per member (validity per level and copies against training time)
and one for the ensemble.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx

from jaxdiff.config import require
from jaxdiff.data import rhm
from jaxdiff.diffusion import d3pm
from jaxdiff.experiments.base import NetworkExperiment
from jaxdiff.io import figures
from jaxdiff.models.conv1d_unet import Conv1dUNet


class D3PMFamily:
  """The x_0-predicting 1-D U-Net under uniform-transition D3PM, as the shared trainers and evaluators use it
  (init, per-example losses, sampler, loss at fixed levels, the grammar for the evaluators)."""

  def __init__(self, section: ml_collections.ConfigDict, grammar: rhm.Grammar):
    self.grammar = grammar
    self.vocab_size = grammar.v
    self.width, self.ce_weight = section.width, section.ce_weight
    self.schedule = d3pm.uniform_schedule(grammar.v, section.num_steps, section.beta_min, section.beta_max)
    self.num_steps = section.num_steps
    edges = np.round(np.linspace(0, section.num_steps, section.loss_windows + 1)).astype(np.int32)
    self.time_windows = np.stack([edges[:-1] + 1, edges[1:]], axis=1)   # [K, 2] inclusive level ranges

  def init(self, key: jax.Array) -> Conv1dUNet:
    g = self.grammar
    return Conv1dUNet(v=g.v, width=self.width, s=g.s, L=g.L, rngs=nnx.Rngs(params=key))

  def logits(self, model, x_t: jax.Array, t: jax.Array) -> jax.Array:
    """x_0 logits [B, S, v] of one-hot x_t [B, S, v] at levels t [B]: the input rescaled by alpha_bar_t."""
    return model(self.schedule.alpha_bars[t][:, None, None] * x_t)

  def losses(self, model, batch, key, *, train: bool) -> jax.Array:
    del train
    return d3pm.losses(self.schedule, functools.partial(self.logits, model), batch['x'], key, self.ce_weight)

  def sample(self, model, key: jax.Array, num: int) -> jax.Array:
    """int32 tokens [num, s^L]."""
    return d3pm.sample(self.schedule, functools.partial(self.logits, model), key, (num, self.grammar.length))

  def loss_time(self, t_ou: float) -> int:
    """The level whose alpha_bar is nearest e^-t_ou (the fraction of tokens kept, as the OU mean factor)."""
    ab = np.asarray(self.schedule.alpha_bars)
    return int(np.clip(np.argmin(np.abs(ab - math.exp(-t_ou))), 1, self.num_steps))

  def loss_at(self, model, x, t, key, y=None) -> jax.Array:
    """Per-example loss [B] at levels t [B] (1..T). x: one-hot [B, S, v]."""
    del y
    return d3pm.loss_at(self.schedule, functools.partial(self.logits, model), x, t, key, self.ce_weight)


def grammar_section() -> ml_collections.ConfigDict:
  """The fields of an RHM grammar (a `grammar` subsection; paper 2's example), shared by the families that
  learn grammar data."""
  return ml_collections.ConfigDict(dict(
      v=8,            # vocabulary per level
      n_c=8,          # root classes
      m=3,            # rules per symbol
      s=2,            # branching
      L=3,            # depth: sequences of s^L tokens
      seed=0,         # the rules and the data draws (not config.seed: an ensemble shares the grammar)
      distinct=True,  # train / test: distinct, disjoint sequences; False: i.i.d. trees
  ))


def grammar_of(config: ml_collections.ConfigDict, g: ml_collections.ConfigDict | None = None) -> rhm.Grammar:
  """The grammar of section g (default config.d3pm.grammar)."""
  g = config.d3pm.grammar if g is None else g
  return _grammar(g.v, g.n_c, g.m, g.s, g.L, g.seed)


def check_grammar(config: ml_collections.ConfigDict, g: ml_collections.ConfigDict, prefix: str) -> None:
  """ValueError naming the field when grammar section g (at `prefix`) cannot exist or has too few distinct
  sequences for the largest P (data.n or ensemble.n) beside data.n_test."""
  rhm.check_sizes(g.v, g.n_c, g.m, g.s, g.L, prefix=prefix)
  if g.distinct:
    field, p = ('ensemble.n', max(config.ensemble.n)) if config.ensemble.n else ('data.n', config.data.n)
    limit = rhm.p_max(g.v, g.n_c, g.m, g.s, g.L) - config.data.n_test
    require(p <= limit, field, f'P = {p} exceeds P_max - data.n_test = {limit + config.data.n_test} - '
            f'{config.data.n_test} = {limit}, the distinct sequences left for training')


def load_rhm(config: ml_collections.ConfigDict, g: ml_collections.ConfigDict) -> rhm.RHMData:
  """Test set of data.n_test and training set of data.n sequences of grammar section g."""
  return rhm.load(grammar_of(config, g), config.data.n, config.data.n_test, seed=(g.seed, 1), distinct=g.distinct)


@functools.lru_cache(maxsize=8)
def _grammar(v, n_c, m, s, L, seed) -> rhm.Grammar:
  return rhm.Grammar.from_seed(v, n_c, m, s, L, seed)


class D3PMExperiment(NetworkExperiment):
  """Family 'd3pm': uniform-transition D3PM on Random Hierarchy Model sequences (paper 2)."""

  section = 'd3pm'
  data_depends_on_seed = False   # the data come from the grammar's seed: members with the same P share them
  ensemble_section = True
  default_metrics = ('validity', 'copies', 'window_losses')

  def default_section(self) -> ml_collections.ConfigDict:
    """Paper 2's example (SPEC section 4). Also reads data.n (P), data.n_test, optimizer.*, train.*, eval.*."""
    return ml_collections.ConfigDict(dict(
        grammar=grammar_section(),
        width=1024,         # W of the 1-D U-Net
        num_steps=200,      # T
        beta_min=1e-3,      # beta_t linear in t = 0..T
        beta_max=0.1,
        ce_weight=0.0,      # auxiliary cross-entropy of the x_0 logits
        loss_windows=10,    # 'window_losses': windows of T / loss_windows levels
    ))

  def validate(self, config: ml_collections.ConfigDict) -> None:
    c = config.d3pm
    check_grammar(config, c.grammar, 'd3pm.grammar.')
    require(c.width >= 1, 'd3pm.width', f'must be >= 1, got {c.width}')
    require(c.num_steps >= 1, 'd3pm.num_steps', f'must be >= 1, got {c.num_steps}')
    require(0 < c.beta_min <= c.beta_max < 1, 'd3pm.beta_min',
            f'need 0 < beta_min <= beta_max < 1, got {c.beta_min}, {c.beta_max}')
    require(c.ce_weight >= 0, 'd3pm.ce_weight', f'must be >= 0, got {c.ce_weight}')
    require(1 <= c.loss_windows <= c.num_steps, 'd3pm.loss_windows',
            f'must be in [1, d3pm.num_steps = {c.num_steps}], got {c.loss_windows}')

  def load_data(self, config: ml_collections.ConfigDict) -> rhm.RHMData:
    return load_rhm(config, config.d3pm.grammar)

  def build_family(self, config: ml_collections.ConfigDict, data: rhm.RHMData) -> D3PMFamily:
    return D3PMFamily(config.d3pm, data.grammar)

  def summary_info(self, config: ml_collections.ConfigDict) -> dict[str, Any]:
    g = config.d3pm.grammar
    return dict(super().summary_info(config), dataset='rhm', width=config.d3pm.width, v=g.v, n_c=g.n_c, m=g.m,
                s=g.s, L=g.L, p_max=rhm.p_max(g.v, g.n_c, g.m, g.s, g.L))

  def history_figures(self, config, rundir, histories) -> list[str]:
    """validity_copies.png: valid@k per level and the copy fraction (with its chance level) against the step,
    per member; for an ensemble also one with every member (a panel per level, a line per P)."""
    L = config.d3pm.grammar.L
    out = []
    for m, rows in histories:
      per_key = curves(rows, ['f_mem', 'copy_chance'] + [f'valid_{k}' for k in range(1, L + 1)])
      validity = [(f'valid@{k}', *per_key[f'valid_{k}'], '-o') for k in range(1, L + 1)]
      copies = [('copies', *per_key['f_mem'], '-o'), ('chance P/P_max x valid@L', *per_key['copy_chance'], '--')]
      out.append(figures.save_curves(
          [('validity per level', 'fraction of valid subtrees', validity),
           ('exact copies of training sequences', 'fraction of samples', copies)],
          rundir.member(m.name).file('validity_copies.png'), title=f'P = {m.n}, seed {m.seed}'))
    if len(histories) > 1 or not histories[0][0].solo:
      panels = []
      for key, name in [(f'valid_{k}', f'valid@{k}') for k in range(1, L + 1)] + [('f_mem', 'copies')]:
        lines = [(f'P={m.n} s{m.seed}', *curves(rows, [key])[key], '-') for m, rows in histories]
        panels.append((name, 'fraction', lines))
      out.append(figures.save_curves(panels, rundir.file('validity_copies.png'),
                                     title=f'{len(histories)} members'))
    return out


def curves(rows, keys) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{key: (steps, values)} of the evaluation rows that carry each key."""
  out = {}
  for key in keys:
    pts = [(r['step'], np.nan if r[key] is None else r[key]) for r in rows if key in r]
    out[key] = tuple(np.asarray(a, np.float64) for a in zip(*pts)) if pts else (np.zeros(0), np.zeros(0))
  return out


EXPERIMENT = D3PMExperiment()

__all__ = ['D3PMFamily', 'D3PMExperiment', 'EXPERIMENT', 'check_grammar', 'curves', 'grammar_of', 'grammar_section', 'load_rhm']
