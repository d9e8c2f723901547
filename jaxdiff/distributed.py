"""Many hosts: starting `jax.distributed` and moving host data onto a mesh that spans processes.

Every process runs the same program (SPMD). `initialize` connects them when asked explicitly (coordinator
flags, e.g. two local processes over CPU collectives) or when the environment describes a cluster that
`jax.distributed.initialize()` detects by itself (Cloud TPU VM pods, SLURM, Open MPI). On one machine with
neither, it does nothing. Arrays cross from host to a global mesh with `put` (each process supplies the
shards its own devices hold) and come back with `fetch` (gathered from all processes), so the same code
runs on one device, on 8 fake CPU devices and on a multi-host pod.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from orbax.checkpoint import multihost as ocp_multihost

# Environment variables whose presence means "several processes were launched for this job".
_CLUSTER_ENV = ('TPU_WORKER_HOSTNAMES', 'MEGASCALE_COORDINATOR_ADDRESS', 'SLURM_NTASKS', 'OMPI_COMM_WORLD_SIZE')


def _multi_worker_env() -> bool:
  hosts = os.environ.get('TPU_WORKER_HOSTNAMES', '')
  if hosts:
    return ',' in hosts
  if 'SLURM_NTASKS' in os.environ:
    return int(os.environ['SLURM_NTASKS']) > 1
  if 'OMPI_COMM_WORLD_SIZE' in os.environ:
    return int(os.environ['OMPI_COMM_WORLD_SIZE']) > 1
  return 'MEGASCALE_COORDINATOR_ADDRESS' in os.environ


MODES = ('auto', 'on', 'off')


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, mode: str = 'auto') -> bool:
  """Start `jax.distributed` if asked (arguments, or mode 'on') or if the environment is a multi-worker job.

  mode: 'auto' starts it when the environment names several workers (SLURM, Open MPI, TPU_WORKER_HOSTNAMES,
  Megascale); 'on' always starts it, letting JAX detect the cluster itself (a Cloud TPU VM slice's workers
  find each other through the VM metadata server, which 'auto' does not query: the TPU launcher passes
  --distributed=on for multi-host slices); 'off' never starts it without a coordinator address.
  Returns whether it was started. Must run before anything touches a device.
  """
  if mode not in MODES:
    raise ValueError(f'--distributed must be one of {MODES}, got {mode!r}')
  explicit = coordinator_address is not None
  if explicit and (num_processes is None or process_id is None):
    raise ValueError('--coordinator_address needs --num_processes and --process_id as well')
  if explicit:
    if not 0 <= process_id < num_processes:
      raise ValueError(f'--process_id must be in [0, {num_processes}), got {process_id}')
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  elif mode == 'on' or (mode == 'auto' and _multi_worker_env()):
    jax.distributed.initialize()  # cluster auto-detection (TPU VM metadata, SLURM, MPI)
  else:
    return False
  logging.info('jax.distributed: process %d of %d, %d local / %d global devices', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
  return True


def put(x: Any, sharding: jax.sharding.Sharding) -> Any:
  """Place host values (every process holds the same full value) on a possibly multi-process sharding.

  Each process builds only the shards of its own devices, so nothing needs to be addressable everywhere.
  Works on pytrees of numpy or jax arrays.
  """
  def one(leaf, s):
    leaf = np.asarray(leaf)
    return jax.make_array_from_callback(leaf.shape, s, lambda idx: leaf[idx])
  if isinstance(sharding, jax.sharding.Sharding):
    return jax.tree.map(lambda leaf: one(leaf, sharding), x)
  return jax.tree.map(one, x, sharding)


def fetch(x: Any) -> Any:
  """Host numpy copies of (possibly multi-process) arrays: gathered from every process when needed."""
  def one(a):
    if not isinstance(a, jax.Array) or a.is_fully_addressable or a.is_fully_replicated:
      return np.asarray(a)
    return np.asarray(multihost_utils.process_allgather(a, tiled=True))
  return jax.tree.map(one, x)


def any_process(flag: bool) -> bool:
  """Whether `flag` is set on any process (every process must call it at the same point).

  A preemption notice (SIGTERM) reaches the hosts of a slice at different moments; agreeing on it at the
  same chunk boundary makes every process save the same step and stop together.
  """
  if jax.process_count() == 1:
    return bool(flag)
  return bool(np.any(multihost_utils.process_allgather(np.asarray(flag, np.bool_))))


_barriers = 0


def barrier(name: str, timeout_s: float = 1800.0) -> None:
  """Wait until every process gets here (the coordination service's barrier; no device collective).

  Processes reach the first collective at different times: one may take minutes longer to start (its
  compilations miss the persistent cache, which only process 0 writes), while the CPU collectives (gloo)
  give up on a peer after 30 s. Waiting here first, with a generous timeout, keeps that from failing a run.
  Orbax's public barrier (`orbax.checkpoint.multihost`) wraps the coordination service of `jax.distributed`.
  """
  global _barriers
  if jax.process_count() == 1:
    return
  _barriers += 1
  ocp_multihost.get_barrier_sync_fn()(key=f'jaxdiff_{name}_{_barriers}', timeout_ms=int(timeout_s * 1000))
