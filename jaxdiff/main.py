"""Entry point: `python -m jaxdiff.main --config=configs/NAME.py --workdir=DIR [--config.field=value ...]`.

Flags, platform set-up and logging; then one call into the table of experiments (`jaxdiff.experiments`),
which trains (or, with --mode=eval, re-evaluates) the family of `config.family`.
"""

from __future__ import annotations

import logging as logging_std
import os
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from jaxdiff import analysis, distributed, experiments
from jaxdiff.data import DataNotPreparedError
from jaxdiff.io import writers
from jaxdiff.io.checkpoints import CheckpointError

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py).', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and figures.')
_CACHE = flags.DEFINE_string('compilation_cache', os.path.expanduser('~/.cache/jaxdiff/xla'),
                             "JAX persistent compilation cache directory ('' to disable).")
_MODE = flags.DEFINE_enum('mode', 'train', list(experiments.MODES),
                          "train: train (resuming if possible) and evaluate at milestones; eval: evaluate the "
                          "saved checkpoints of --workdir again, into <workdir>/eval (or --eval_dir).")
_COORDINATOR = flags.DEFINE_string('coordinator_address', None,
                                   'host:port of process 0, to start jax.distributed explicitly (e.g. several '
                                   'local processes); TPU VM pods, SLURM and MPI are detected without it.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Processes in the job (with --coordinator_address).')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process (with --coordinator_address).')
_DISTRIBUTED = flags.DEFINE_enum(
    'distributed', 'auto', list(distributed.MODES),
    "Multi-process start-up: 'auto' when the environment names several workers (SLURM, MPI, "
    "TPU_WORKER_HOSTNAMES), 'on' always (JAX detects the cluster, e.g. a multi-host Cloud TPU slice), 'off'.")
_EVAL_DIR = flags.DEFINE_string('eval_dir', None, 'Output directory of --mode=eval.')
flags.mark_flags_as_required(['config', 'workdir'])


class _QuietLibraries(logging_std.Filter):
  """Orbax logs every save at INFO through absl; keep its warnings and errors only."""

  def filter(self, record):
    return record.levelno >= logging_std.WARNING or '/orbax/' not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.get_absl_handler().addFilter(_QuietLibraries())
  writers.hide_accelerators_from_tensorflow()
  distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value, _DISTRIBUTED.value)
  if _CACHE.value:
    jax.config.update('jax_compilation_cache_dir', _CACHE.value)
  logging.info('JAX %s, process %d/%d, devices: %s', jax.__version__, jax.process_index(),
               jax.process_count(), jax.devices())
  try:
    result = experiments.run(_CONFIG.value, _WORKDIR.value, _MODE.value, eval_dir=_EVAL_DIR.value)
    if _MODE.value == 'train' and experiments.wants_report(_CONFIG.value, result):
      analysis.report([_WORKDIR.value], os.path.join(_WORKDIR.value, 'analysis'))
  except (ValueError, RuntimeError) as e:  # bad config, data not prepared, mismatched checkpoint
    if not isinstance(e, (ValueError, CheckpointError, DataNotPreparedError)):
      raise
    logging.error('%s', e)
    sys.exit(f'jaxdiff: error: {e}')


def run():
  app.run(main)


if __name__ == '__main__':
  run()
