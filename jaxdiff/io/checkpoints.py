"""Orbax checkpoints of the train state: log-spaced milestones are kept, plus the latest.

Each checkpoint also stores the config it was written with, so resuming with a config that would change
the meaning of the saved state (another model, data set, optimizer or seed) fails with a clear message.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import ml_collections
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from jaxdiff.io import paths

# Fields that may differ between a checkpoint and the run resuming from it.
RESUMABLE_CHANGES = ('train.', 'eval.', 'mesh.', 'data.data_dir', 'data.cache_dir', 'diffusion.sampler',
                     'diffusion.sample_steps', 'diffusion.eta', 'diffusion.clip_denoised', 'model.kernels')


class CheckpointError(RuntimeError):
  pass


def _flatten(d: Any, prefix: str = '') -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = list(v) if isinstance(v, (tuple, list)) else v
  return out


def config_differences(saved: dict, config: ml_collections.ConfigDict) -> list[str]:
  """Fields (dotted names) whose values differ and that a resume may not change.

  A field the checkpoint lacks (added to the schema after it was written) counts as its default value, so
  checkpoints of older versions stay resumable unless the new field was changed from its default.
  """
  from jaxdiff.config import default_config  # pylint: disable=g-import-not-at-top
  a, b = _flatten(saved), _flatten(config.to_dict())
  defaults = _flatten(default_config().to_dict())
  diffs = []
  for key in sorted(set(a) | set(b)):
    if any(key.startswith(p) for p in RESUMABLE_CHANGES):
      continue
    if key not in a and key in defaults and defaults[key] == b.get(key):
      continue
    if a.get(key, '<absent>') != b.get(key, '<absent>'):
      diffs.append(f'{key}: checkpoint {a.get(key, "<absent>")!r}, config {b.get(key, "<absent>")!r}')
  return diffs


class Checkpoints:
  """Saves and restores `state` pytrees under `<workdir>/checkpoints`."""

  def __init__(self, workdir: str, milestones: Sequence[int] = (), keep_milestones: bool = True):
    self.directory = paths.path(os.path.join(workdir, 'checkpoints'))  # local, or gs:// for many hosts
    policies = [pp.LatestN(1)]
    if keep_milestones and len(milestones):
      policies.append(pp.CustomSteps(sorted(int(m) for m in milestones)))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=pp.AnyPreservationPolicy(policies), create=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def save(self, step: int, state: Any, config: ml_collections.ConfigDict) -> None:
    """Asynchronous save (returns once the arrays are copied off the device)."""
    if step in self.manager.all_steps():
      return
    self.manager.save(int(step), args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(config.to_dict())), force=True)

  def saved_config(self, step: int) -> dict:
    try:
      return self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))['config']
    except Exception as e:  # orbax raises several types for missing/corrupt files
      raise CheckpointError(f'the config of checkpoint step {step} in {self.directory} could not be read '
                            f'({type(e).__name__}: {e}); the checkpoint is corrupt or incomplete') from e

  def restore(self, step: int, target: Any, config: ml_collections.ConfigDict) -> Any:
    """Restore into the structure, dtypes and shardings of `target` (arrays or ShapeDtypeStructs)."""
    diffs = config_differences(self.saved_config(step), config)
    if diffs:
      raise CheckpointError(
          f'the checkpoint in {self.directory} was written with another config; a resumed run may not '
          'change these fields (use a new --workdir to start afresh):\n  ' + '\n  '.join(diffs))
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
    except Exception as e:
      raise CheckpointError(f'checkpoint step {step} in {self.directory} could not be restored into the '
                            f'current train state ({type(e).__name__}: {e})') from e
    logging.info('restored checkpoint step %d from %s', step, self.directory)
    return restored['state']

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
