"""The table of experiments: family name (`config.family`) -> the module that owns it.

`jaxdiff.main`, `jaxdiff.sweep` and the launchers go through this table and nothing else. An experiment
module defines `EXPERIMENT`, an object with

- `section`: the name of the config section it owns (e.g. 'gmm'), or None, and `default_section()`: its
  fields and defaults (merged into `jaxdiff.config.default_config()`);
- `validate(config)`: its checks (ValueError naming the field);
- `train(config, workdir, *, stop_at_step=None)`: train (resuming from workdir) and evaluate; returns an
  object with `summary` (dict, {} when stopped early) and, for trained networks, `state`;
- `evaluate(config, workdir, out_dir=None)`: evaluate the saved checkpoints again without training, or raise
  ValueError saying why the family has nothing to re-evaluate.

`experiments.base.NetworkExperiment` provides train and evaluate, solo runs and vectorized ensembles, for any
family that declares its data, network, per-example loss and sampler; a new family is one module plus one line
here (or `register(name, module)` at run time).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import jax
import ml_collections

# family -> module path (imported when first asked for).
_TABLE: dict[str, str | ModuleType | Any] = {
    'ddpm': 'jaxdiff.experiments.unet',
    'gmm': 'jaxdiff.experiments.gmm',
    'random_features': 'jaxdiff.experiments.random_features',
    'd3pm': 'jaxdiff.experiments.d3pm',
    'flow': 'jaxdiff.experiments.flow',
    'md4': 'jaxdiff.experiments.masked',
}

MODES = ('train', 'eval')


def register(name: str, target: str | ModuleType | Any) -> None:
  """Add (or replace) a family: a module path, a module defining EXPERIMENT, or the experiment object."""
  _TABLE[name] = target


def names() -> tuple[str, ...]:
  return tuple(_TABLE)


def get(name: str):
  """The experiment object of family `name`."""
  if name not in _TABLE:
    raise ValueError(f"config field 'family': unknown family {name!r}; known: {sorted(_TABLE)}")
  target = _TABLE[name]
  if isinstance(target, str):
    target = importlib.import_module(target)
  return getattr(target, 'EXPERIMENT', target)


def sections() -> dict[str, ml_collections.ConfigDict]:
  """{section name: default fields} of every family that owns a config section."""
  out = {}
  for name in _TABLE:
    exp = get(name)
    if getattr(exp, 'section', None):
      out[exp.section] = exp.default_section()
  return out


def train(config: ml_collections.ConfigDict, workdir: str, *, stop_at_step: int | None = None):
  """Train and evaluate `config` in `workdir` (resuming from its checkpoints). Returns the experiment's result
  (`.summary`, {} when stopped early; `.state` for trained networks)."""
  return get(config.family).train(config, workdir, stop_at_step=stop_at_step)


def wants_report(config: ml_collections.ConfigDict, result) -> bool:
  """Whether a finished run asks for the tables and figures of `jaxdiff.analysis` in <workdir>/analysis (the
  experiment's `wants_report(config)`, e.g. `gmm.analysis`); main and sweep write them, on process 0."""
  hook = getattr(get(config.family), 'wants_report', None)
  return bool(getattr(result, 'summary', None)) and hook is not None and hook(config) and jax.process_index() == 0


def evaluate(config: ml_collections.ConfigDict, workdir: str, out_dir: str | None = None) -> dict[str, Any]:
  """Evaluate the saved checkpoints of `workdir` again (into out_dir, default <workdir>/eval). Returns the
  summary."""
  return get(config.family).evaluate(config, workdir, out_dir)


def run(config: ml_collections.ConfigDict, workdir: str, mode: str = 'train', *, eval_dir: str | None = None):
  """What `python -m jaxdiff.main --mode=MODE` does."""
  if mode == 'train':
    return train(config, workdir)
  if mode == 'eval':
    return evaluate(config, workdir, eval_dir)
  raise ValueError(f'--mode must be one of {MODES}, got {mode!r}')


__all__ = ['register', 'names', 'get', 'sections', 'train', 'evaluate', 'run', 'wants_report', 'MODES']
