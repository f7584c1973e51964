"""The device mesh and the rules that map logical axis names onto it.

Mesh axes: 'data' (pure data parallelism), 'fsdp' (data parallelism with parameters and optimizer
state sharded), 'tensor' (heads and MLP hidden split across devices). Batches are split over
('data', 'fsdp'); parameter and activation axes follow LOGICAL_AXIS_RULES (the logical names are
listed in ``wvd_jax/models/layers.py``).

Usage (what the train loop and samplers do):

  mesh = make_mesh(config)
  shardings = param_shardings(abstract_state, mesh)  # jit out_shardings of the init
  with use_mesh(mesh):  # while tracing: activates the model's activation constraints
    step = jax.jit(train_step, in_shardings=..., out_shardings=...)
    state, metrics = step(state, global_batch(local_batch, mesh))

Without ``use_mesh`` the model still runs sharded (XLA propagates the parameter and batch
shardings), but its activations are not pinned, so XLA may choose worse layouts.
"""
from __future__ import annotations

import contextlib

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from wvd_jax import errors
from wvd_jax.models import layers

MESH_AXES = ('data', 'fsdp', 'tensor')
BATCH_AXES = ('data', 'fsdp')
LOGICAL_AXIS_RULES = (
    # Parameters: FSDP shards the model width, tensor parallelism the heads and MLP hidden.
    ('layers', None),
    ('embed', 'fsdp'),
    ('mlp', 'tensor'),
    ('heads', 'tensor'),
    ('kv', None),
    ('patch', None),
    ('freq', None),
    ('cond', None),
    # Activations: the batch over both data axes, heads and MLP hidden over 'tensor'; the width
    # of the residual stream stays whole on every device.
    ('activation_batch', BATCH_AXES),
    ('activation_length', None),
    ('activation_embed', None),
    ('activation_heads', 'tensor'),
    ('activation_kv', None),
    ('activation_mlp', 'tensor'),
)


def make_mesh(config, devices=None) -> Mesh:
  """A (data, fsdp, tensor) mesh over all devices; a -1 axis takes the devices left over."""
  devices = np.asarray(jax.devices() if devices is None else devices)
  sizes = [config.mesh.data, config.mesh.fsdp, config.mesh.tensor]
  fixed = int(np.prod([s for s in sizes if s != -1]))
  if sizes.count(-1) > 1:
    raise errors.UserError('config.mesh: at most one axis may be -1')
  if -1 in sizes:
    if devices.size % fixed:
      raise errors.UserError(f'config.mesh: {devices.size} devices are not divisible by {fixed}')
    sizes[sizes.index(-1)] = devices.size // fixed
  if int(np.prod(sizes)) != devices.size:
    raise errors.UserError(f'config.mesh: data*fsdp*tensor = {int(np.prod(sizes))} but there are '
                           f'{devices.size} devices')
  return Mesh(devices.reshape(sizes), MESH_AXES)


@contextlib.contextmanager
def use_mesh(mesh: Mesh, rules=LOGICAL_AXIS_RULES):
  """Makes ``mesh`` the context mesh and ``rules`` the logical axis rules.

  Trace (first call) jitted model code inside it: the model's ``layers.constrain`` calls then pin
  activation shardings; outside it they are no-ops.
  """
  with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
    yield mesh


def logical_spec(shape, logical_axes, mesh: Mesh, rules=LOGICAL_AXIS_RULES) -> P:
  """PartitionSpec for an array of ``shape`` with logical axis names (dims the mesh axes do not
  divide are replicated)."""
  return layers.logical_to_mesh_spec(tuple(shape), tuple(logical_axes), rules, dict(mesh.shape))


def param_shardings(abstract_state, mesh: Mesh, rules=LOGICAL_AXIS_RULES):
  """NamedShardings for a model state (nnx.State with logical annotations) -> pure-dict tree.

  Works on an abstract state (from nnx.eval_shape) as on a real one; nothing is allocated.
  Parameters without annotations, and dims that the mesh axes do not divide, are replicated.
  """
  def one(variable):
    names = variable.get_metadata().get('out_sharding')
    shape = variable.get_value().shape
    spec = logical_spec(shape, names, mesh, rules) if names else P()
    return NamedSharding(mesh, spec)

  shardings = jax.tree.map(one, abstract_state, is_leaf=lambda x: isinstance(x, nnx.Variable))
  return nnx.to_pure_dict(shardings)


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
