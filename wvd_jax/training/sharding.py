"""The device mesh and the rules that map logical axis names onto it.

Mesh axes: 'data' (pure data parallelism), 'fsdp' (data parallelism with parameters and optimizer
state sharded), 'tensor' (heads and MLP hidden split across devices). Batches are split over
('data', 'fsdp'); parameter axes follow LOGICAL_AXIS_RULES.
"""
from __future__ import annotations

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ('data', 'fsdp', 'tensor')
BATCH_AXES = ('data', 'fsdp')
LOGICAL_AXIS_RULES = (
    ('embed', 'fsdp'),
    ('mlp', 'tensor'),
    ('heads', 'tensor'),
    ('patch', None),
    ('freq', None),
)


def make_mesh(config, devices=None) -> Mesh:
  """A (data, fsdp, tensor) mesh over all devices; a -1 axis takes the devices left over."""
  devices = np.asarray(jax.devices() if devices is None else devices)
  sizes = [config.mesh.data, config.mesh.fsdp, config.mesh.tensor]
  fixed = int(np.prod([s for s in sizes if s != -1]))
  if sizes.count(-1) > 1:
    raise ValueError('config.mesh: at most one axis may be -1')
  if -1 in sizes:
    if devices.size % fixed:
      raise ValueError(f'config.mesh: {devices.size} devices are not divisible by {fixed}')
    sizes[sizes.index(-1)] = devices.size // fixed
  if int(np.prod(sizes)) != devices.size:
    raise ValueError(f'config.mesh: data*fsdp*tensor = {int(np.prod(sizes))} but there are '
                     f'{devices.size} devices')
  return Mesh(devices.reshape(sizes), MESH_AXES)


def param_shardings(abstract_state, mesh: Mesh):
  """NamedShardings for a model state (nnx.State with logical annotations) -> pure-dict tree."""
  with nnx.logical_axis_rules(LOGICAL_AXIS_RULES):
    specs = nnx.get_partition_spec(abstract_state)
  specs = nnx.to_pure_dict(specs)
  return jax.tree.map(lambda spec: NamedSharding(mesh, spec), specs,
                      is_leaf=lambda x: isinstance(x, P))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the data axes, the rest replicated."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
  """Assembles per-process numpy batches into global jax.Arrays sharded over the data axes."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch)
