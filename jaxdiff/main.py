"""Entry point: `python -m jaxdiff.main --config=configs/NAME.py --workdir=DIR [--config.field=value ...]`."""

from __future__ import annotations

import logging as logging_std
import os
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from jaxdiff import distributed, train, writers
from jaxdiff.checkpoint import CheckpointError
from jaxdiff.data import DataNotPreparedError

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py).', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and figures.')
_CACHE = flags.DEFINE_string('compilation_cache', os.path.expanduser('~/.cache/jaxdiff/xla'),
                             "JAX persistent compilation cache directory ('' to disable).")
_MODE = flags.DEFINE_enum('mode', 'train', ['train', 'eval'],
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
    if _CONFIG.value.family == 'random_features':
      from jaxdiff import random_features_run  # pylint: disable=g-import-not-at-top
      random_features_run.run(_CONFIG.value, _WORKDIR.value)
    elif _CONFIG.value.family == 'gmm':
      from jaxdiff import gmm  # pylint: disable=g-import-not-at-top
      gmm.run(_CONFIG.value, _WORKDIR.value)
    elif _CONFIG.value.ensemble.n:
      if _MODE.value == 'eval':
        raise ValueError("--mode=eval evaluates one run's checkpoints; for an ensemble member, run it with "
                         "<workdir>/<member>/config.json's fields (the solo run trains the same model)")
      from jaxdiff import unet_ensemble  # pylint: disable=g-import-not-at-top
      unet_ensemble.run(_CONFIG.value, _WORKDIR.value)
    elif _MODE.value == 'eval':
      train.evaluate_checkpoints(_CONFIG.value, _WORKDIR.value, _EVAL_DIR.value)
    else:
      train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except (ValueError, RuntimeError) as e:  # bad config, data not prepared, mismatched checkpoint
    if not isinstance(e, (ValueError, CheckpointError, DataNotPreparedError)):
      raise
    logging.error('%s', e)
    sys.exit(f'jaxdiff: error: {e}')


def run():
  app.run(main)


if __name__ == '__main__':
  run()
