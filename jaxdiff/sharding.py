"""The device mesh and the shardings jaxdiff declares on it (data parallel over the 'data' axis)."""

from __future__ import annotations

import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA = 'data'


def make_mesh(mesh_cfg) -> Mesh:
  """A 1-D mesh of `mesh_cfg.data` devices (-1: all) along the 'data' axis."""
  n = jax.device_count() if mesh_cfg.data == -1 else mesh_cfg.data
  if n > jax.device_count():
    raise ValueError(f"config field 'mesh.data': asks for {n} devices but only {jax.device_count()} exist")
  # Auto axes: the compiler propagates shardings from the inputs and constraints (the pjit model).
  return jax.make_mesh((n,), (DATA,), axis_types=(AxisType.Auto,), devices=jax.devices()[:n])


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the 'data' axis."""
  return NamedSharding(mesh, P(DATA))
