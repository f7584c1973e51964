"""The device mesh and the rules that map logical axis names onto it.

Mesh axes: 'data' (pure data parallelism), 'fsdp' (data parallelism with parameters and optimizer
state sharded), 'tensor' (heads and MLP hidden split across devices). Batches are split over
('data', 'fsdp'); parameter and activation axes follow the logical axis rules of the config
(``config.mesh.logical_axis_rules``, default LOGICAL_AXIS_RULES; the logical names are listed in
``wvd_jax/models/layers.py``).

On several hosts or slices the mesh is hybrid: ``config.mesh.dcn_{data,fsdp,tensor}`` say how
much of each axis spans the slow data-centre network (DCN) between slices (TPU) or processes
(GPU/CPU); the rest of the axis stays inside a slice/host (ICI, NVLink), where XLA's
collectives are fast. A single host or slice builds the mesh with ``jax.make_mesh``, which
orders devices by the physical topology.

Usage (what the train loop and samplers do):

  mesh = make_mesh(config)
  rules = axis_rules(config)
  shardings = param_shardings(abstract_state, mesh, rules)  # jit out_shardings of the init
  with use_mesh(mesh, rules):  # while tracing: activates the model's activation constraints
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
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from wvd_jax import config_lib
from wvd_jax.models import layers

MESH_AXES = config_lib.MESH_AXES
BATCH_AXES = ('data', 'fsdp')
LOGICAL_AXIS_RULES = config_lib.LOGICAL_AXIS_RULES  # The default of config.mesh.logical_axis_rules.


def make_mesh(config, devices=None) -> Mesh:
  """A (data, fsdp, tensor) mesh over all devices; a -1 axis takes the devices left over.

  With ``config.mesh.dcn_*`` > 1 the mesh is a hybrid ICI x DCN mesh (module docstring): axis a
  has size mesh.a = dcn_a * ici_a, its dcn_a factor across slices (TPU) or processes."""
  devices = list(jax.devices() if devices is None else devices)
  sizes = [config.mesh.data, config.mesh.fsdp, config.mesh.tensor]
  fixed = int(np.prod([s for s in sizes if s != -1]))
  if sizes.count(-1) > 1:
    raise config_lib.ConfigError('config.mesh: at most one of data, fsdp, tensor may be -1')
  if -1 in sizes:
    if len(devices) % fixed:
      raise config_lib.ConfigError(
          f'config.mesh: {len(devices)} devices are not divisible by {fixed} (the product of the '
          'axes other than the -1 one); change config.mesh.data/fsdp/tensor')
    sizes[sizes.index(-1)] = len(devices) // fixed
  if int(np.prod(sizes)) != len(devices):
    raise config_lib.ConfigError(
        f'config.mesh: data*fsdp*tensor = {int(np.prod(sizes))} but there are {len(devices)} '
        'devices; set one axis to -1 or make the product match')
  dcn = [config.mesh.dcn_data, config.mesh.dcn_fsdp, config.mesh.dcn_tensor]
  if all(d == 1 for d in dcn):
    return jax.make_mesh(sizes, MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)
  for name, size, d in zip(MESH_AXES, sizes, dcn):
    if size % d:
      raise config_lib.ConfigError(f'config.mesh.dcn_{name}={d} does not divide the {name} axis '
                                   f'({size}); the DCN factor of an axis must divide it')
  # Several TPU slices group devices by slice_index; otherwise each process (host) is a group.
  by_process = len({getattr(d, 'slice_index', 0) for d in devices}) == 1
  groups = len({d.process_index if by_process else d.slice_index for d in devices})
  if int(np.prod(dcn)) != groups:
    raise config_lib.ConfigError(
        f'config.mesh.dcn_data*dcn_fsdp*dcn_tensor = {int(np.prod(dcn))} but the devices form '
        f'{groups} {"processes" if by_process else "slices"}; make the product equal that')
  ici = [s // d for s, d in zip(sizes, dcn)]
  array = mesh_utils.create_hybrid_device_mesh(ici, dcn, devices, process_is_granule=by_process)
  return Mesh(array, MESH_AXES)


def axis_rules(config) -> tuple:
  """config.mesh.logical_axis_rules as a tuple of (logical name, mesh axes) pairs (a JSON
  round trip turns tuples into lists)."""
  def axes(target):
    return tuple(target) if isinstance(target, (list, tuple)) else target
  return tuple((name, axes(target)) for name, target in config.mesh.logical_axis_rules)


def check_batch(config, mesh: Mesh) -> None:
  """The global batch must split evenly over the batch axes (data x fsdp) and the processes."""
  shards = mesh.shape['data'] * mesh.shape['fsdp']
  b = config.data.batch_size
  if b % shards:
    raise config_lib.ConfigError(
        f'config.data.batch_size={b} is not divisible by mesh data x fsdp = '
        f'{mesh.shape["data"]} x {mesh.shape["fsdp"]} = {shards}; use a multiple of {shards}')
  if b % jax.process_count():
    raise config_lib.ConfigError(f'config.data.batch_size={b} is not divisible by the '
                                 f'{jax.process_count()} JAX processes')


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


def local_mesh() -> Mesh:
  """This process's devices as a (data, 1, 1) mesh: for process-local work (sampling on one
  process) inside a multi-host job."""
  devices = jax.local_devices()
  return Mesh(np.asarray(devices).reshape(len(devices), 1, 1), MESH_AXES)


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
  """Assembles per-process numpy batches into global jax.Arrays sharded over the data axes."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch)
