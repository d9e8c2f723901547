"""Masked diffusion language models (MD4; SPEC section 4, paper 2's text experiment): a masked (absorbing-state)
diffusion in continuous time learns character chunks of English text, or the sequences of a Random Hierarchy
Model, with a small bidirectional transformer; solo runs and vectorized ensembles over the training-set size P
(= data.n) and seeds.

    python -m jaxdiff.main --config=configs/text_md4.py:cpu --workdir=DIR        # P sweep on the CPU, text
    python -m jaxdiff.main --config=configs/text_md4.py:cpu,rhm --workdir=DIR    # the same on grammar data

Data (`md4.data`): 'text' (jaxdiff.data.text: `md4.text.source` 'pydoc', CPython's pydoc_data.topics cleaned
text8-style into 27 symbols, or 'files' with `md4.text.paths`, e.g. the text8 file; distinct chunks of
`md4.text.length` characters, a test set of data.n_test chunks and a training set of the next P, nested in P
and disjoint from the test set), or 'rhm' (the grammar of `md4.grammar`, as the d3pm family draws it). Either
way the examples are one-hot float32 [P, S, V] and every member of an ensemble with the same P shares them.
Diffusion (jaxdiff.diffusion.masked): alpha(t) = (1 - 2 eps) a(t) + eps, `md4.schedule` 'linear' or 'cosine';
the continuous-time loss in bits per token at antithetic times; ancestral unmasking in `md4.sample_steps`
steps (a `lax.scan`).
Denoiser (jaxdiff.models.transformer): `md4.depth` pre-LN blocks of width `md4.width`, `md4.num_heads` heads,
no time input (the absorbing posterior does not depend on t given z_t).
Evaluation (default 'copies', 'substrings', 'window_losses', and 'validity' on grammar data): exact copies of
the member's training sequences as f_mem; the longest common substring with the training set over the
sequence length (lcs_mean, lcs_frac at `eval.lcs_threshold`); the loss (bits per token) in `md4.loss_windows`
windows of t on the training and test sets, whose mean is the loss (loss_train_t, loss_test_t, loss_gap_t);
summary.json: tau_mem from the copies and from the loss gap (an ensemble: their fits against P); figures:
`copies_lcs.png` per member and one for the ensemble.
"""

from __future__ import annotations

import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from jaxdiff.config import require
from jaxdiff.data import rhm, text
from jaxdiff.diffusion import masked
from jaxdiff.experiments import d3pm as d3pm_exp
from jaxdiff.experiments.base import NetworkExperiment
from jaxdiff.io import figures
from jaxdiff.models.transformer import Transformer

DATA = ('text', 'rhm')


class MaskedFamily:
  """The time-free transformer under MD4 masked diffusion, as the shared trainers and evaluators use it (init,
  per-example losses, sampler, loss at fixed times, `vocab_size` and `grammar` for the sequence evaluators)."""

  def __init__(self, section: ml_collections.ConfigDict, vocab_size: int, length: int, grammar=None):
    self.section, self.vocab_size, self.length, self.grammar = section, vocab_size, length, grammar
    self.schedule = masked.make_schedule(vocab_size, section.schedule, section.eps)
    edges = np.linspace(0.0, 1.0, section.loss_windows + 1)
    self.time_windows = np.stack([edges[:-1], edges[1:]], axis=1)   # [K, 2] float: [lo, hi) of t

  def init(self, key: jax.Array) -> Transformer:
    s = self.section
    return Transformer(vocab_size=self.vocab_size, length=self.length, width=s.width, depth=s.depth,
                       num_heads=s.num_heads, mlp_ratio=s.mlp_ratio, rngs=nnx.Rngs(params=key))

  @staticmethod
  def tokens(x: jax.Array) -> jax.Array:
    """int32 [B, S] tokens of one-hot examples [B, S, V]."""
    return jnp.argmax(x, axis=-1).astype(jnp.int32)

  def losses(self, model, batch, key, *, train: bool) -> jax.Array:
    del train
    return masked.losses(self.schedule, model, self.tokens(batch['x']), key)

  def sample(self, model, key: jax.Array, num: int) -> jax.Array:
    """int32 tokens [num, S]."""
    return masked.sample(self.schedule, model, key, (num, self.length), self.section.sample_steps)

  def loss_time(self, t_ou: float) -> float:
    """The time whose alpha(t) is e^-t_ou (the fraction of tokens kept, as the OU mean factor)."""
    a = (math.exp(-t_ou) - self.schedule.eps) / (1 - 2 * self.schedule.eps)
    return 1 - a if self.schedule.kind == 'linear' else 1 - 2 / math.pi * math.acos(1 - a)

  def loss_at(self, model, x, t, key, y=None) -> jax.Array:
    """Per-example loss [B] (bits per token) at times t [B]. x: one-hot [B, S, V]."""
    del y
    return masked.loss_at(self.schedule, model, self.tokens(x), t, key)


class MaskedExperiment(NetworkExperiment):
  """Family 'md4': masked diffusion on text chunks or RHM sequences (MD4; paper 2's text experiment)."""

  section = 'md4'
  data_depends_on_seed = False   # the data come from md4.text.seed / md4.grammar.seed: members share them
  ensemble_section = True

  def default_section(self) -> ml_collections.ConfigDict:
    """A small character-level model. Also reads data.n (P), data.n_test, data.cache_dir, optimizer.*,
    train.*, eval.*."""
    return ml_collections.ConfigDict(dict(
        data='text',        # 'text' (md4.text) or 'rhm' (md4.grammar)
        text=ml_collections.ConfigDict(dict(
            source='pydoc',  # 'pydoc' (CPython's pydoc_data.topics, no download) or 'files' (paths)
            paths=(),        # text files for source='files' (e.g. the text8 file)
            length=32,       # d: characters per chunk (sequence)
            seed=0,          # the permutation of the chunks into test / train (not config.seed)
        )),
        grammar=d3pm_exp.grammar_section(),
        schedule='linear',  # a(t) = 1 - t, or 'cosine': 1 - cos(pi/2 (1 - t))
        eps=1e-4,           # alpha(t) = (1 - 2 eps) a(t) + eps
        width=128,          # transformer width
        depth=4,            # blocks
        num_heads=4,
        mlp_ratio=4,
        sample_steps=128,   # unmasking steps of the sampler
        loss_windows=10,    # 'window_losses': windows of t of width 1 / loss_windows
    ))

  def validate(self, config: ml_collections.ConfigDict) -> None:
    c = config.md4
    require(c.data in DATA, 'md4.data', f'must be one of {DATA}, got {c.data!r}')
    require(c.schedule in masked.SCHEDULES, 'md4.schedule', f'must be one of {masked.SCHEDULES}, got {c.schedule!r}')
    require(0 < c.eps < 0.5, 'md4.eps', f'must be in (0, 0.5), got {c.eps}')
    for field in ('width', 'depth', 'num_heads', 'mlp_ratio', 'sample_steps', 'loss_windows'):
      require(isinstance(c[field], int) and c[field] >= 1, f'md4.{field}', f'must be a positive int, got {c[field]!r}')
    require(c.width % c.num_heads == 0, 'md4.num_heads', f'must divide md4.width = {c.width}, got {c.num_heads}')
    if c.data == 'rhm':
      d3pm_exp.check_grammar(config, c.grammar, 'md4.grammar.')
      return
    t = c.text
    require(t.source in text.SOURCES, 'md4.text.source', f'must be one of {text.SOURCES}, got {t.source!r}')
    require(isinstance(t.length, int) and t.length >= 1, 'md4.text.length', f'must be a positive int, got {t.length!r}')
    if t.source == 'files':
      require(len(t.paths) > 0, 'md4.text.paths', "source 'files' needs at least one text file")
      for p in t.paths:
        require(os.path.isfile(os.path.expanduser(p)), 'md4.text.paths', f'no such file: {p!r}')
    num = len(text.corpus_chunks(t.source, t.length, tuple(t.paths), config.data.cache_dir))
    field, p = ('ensemble.n', max(config.ensemble.n)) if config.ensemble.n else ('data.n', config.data.n)
    require(p + config.data.n_test <= num, field, f'P = {p} plus data.n_test = {config.data.n_test} exceeds the '
            f'{num} distinct chunks of {t.length} characters in the {t.source!r} corpus')

  def metrics(self, config: ml_collections.ConfigDict) -> tuple[str, ...]:
    extra = ('validity',) if config.md4.data == 'rhm' else ()
    return tuple(config.eval.metrics) or ('copies', 'substrings', 'window_losses') + extra

  def load_data(self, config: ml_collections.ConfigDict):
    c = config.md4
    if c.data == 'rhm':
      return d3pm_exp.load_rhm(config, c.grammar)
    t = c.text
    return text.load(t.source, t.length, config.data.n, config.data.n_test, seed=t.seed, paths=tuple(t.paths),
                     cache_dir=config.data.cache_dir)

  def build_family(self, config: ml_collections.ConfigDict, data) -> MaskedFamily:
    grammar = getattr(data, 'grammar', None)
    return MaskedFamily(config.md4, data.train.shape[-1], data.train.shape[1], grammar)

  def summary_info(self, config: ml_collections.ConfigDict) -> dict[str, Any]:
    c = config.md4
    info = dict(super().summary_info(config), width=c.width, depth=c.depth, schedule=c.schedule)
    if c.data == 'rhm':
      g = c.grammar
      return dict(info, dataset='rhm', length=g.s ** g.L, vocab_size=g.v,
                  p_max=rhm.p_max(g.v, g.n_c, g.m, g.s, g.L))
    return dict(info, dataset=f'text:{c.text.source}', length=c.text.length, vocab_size=text.VOCAB_SIZE)

  def history_figures(self, config, rundir, histories) -> list[str]:
    """copies_lcs.png: exact copies, the LCS fraction and mean, and the train / test loss (bits per token)
    against the step, per member; for an ensemble also one with every member (a panel per curve, a line per P)."""
    keys = [('f_mem', 'exact copies', 'fraction of samples'),
            ('lcs_frac', f'LCS / d >= {config.eval.lcs_threshold:g}', 'fraction of samples'),
            ('lcs_mean', 'mean LCS / d', 'LCS / d')]
    out = []
    for m, rows in histories:
      per_key = d3pm_exp.curves(rows, [k for k, _, _ in keys] + ['loss_train_t', 'loss_test_t'])
      panels = [(name, ylabel, [(name, *per_key[k], '-o')]) for k, name, ylabel in keys]
      panels.append(('loss', 'bits per token', [('train', *per_key['loss_train_t'], '-o'),
                                                ('test', *per_key['loss_test_t'], '-o')]))
      out.append(figures.save_curves(panels, rundir.member(m.name).file('copies_lcs.png'),
                                     title=f'P = {m.n}, seed {m.seed}'))
    if len(histories) > 1 or not histories[0][0].solo:
      panels = []
      for key, name, ylabel in keys + [('loss_gap_t', 'test - train loss', 'bits per token')]:
        lines = [(f'P={m.n} s{m.seed}', *d3pm_exp.curves(rows, [key])[key], '-') for m, rows in histories]
        panels.append((name, ylabel, lines))
      out.append(figures.save_curves(panels, rundir.file('copies_lcs.png'), title=f'{len(histories)} members'))
    return out


EXPERIMENT = MaskedExperiment()

__all__ = ['DATA', 'MaskedFamily', 'MaskedExperiment', 'EXPERIMENT']
