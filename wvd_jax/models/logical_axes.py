"""Logical axis names of activations and how they map onto a device mesh (PartitionSpecs).

Activations are pinned with :func:`constrain`, a no-op unless a mesh (``jax.set_mesh``) and
logical axis rules (``nnx.logical_axis_rules``) are both active while tracing; the training code
enters both with ``training.sharding.use_mesh(mesh)``. The names are listed in models/layers.py.
"""
from __future__ import annotations

import jax
import numpy as np
from flax.core import spmd as flax_spmd
from jax.sharding import PartitionSpec as P

# Activation logical axes of the (B, T, width) residual stream.
TOKENS = ('activation_batch', 'activation_length', 'activation_embed')
# Of per-head tensors (B, T, heads, head_dim).
HEADS = ('activation_batch', 'activation_length', 'activation_heads', 'activation_kv')


def logical_to_mesh_spec(shape: tuple[int, ...], logical_axes, rules, mesh_shape) -> P:
  """PartitionSpec for an array of ``shape`` whose dims carry ``logical_axes``.

  ``rules``: pairs (logical name, mesh axis | tuple of mesh axes | None); names without a rule
  are replicated. ``mesh_shape``: {mesh axis: size}. Mesh axes missing from the mesh are dropped,
  and a dim whose size the chosen axes do not divide is left unsharded (replicated) rather than
  padded, so tiny or odd shapes still run on any mesh.
  """
  if len(logical_axes) != len(shape):
    raise ValueError(f'{len(logical_axes)} logical axes {logical_axes} for shape {shape}')
  table = dict(rules)
  spec, used = [], set()
  for size, name in zip(shape, logical_axes):
    target = table.get(name) if name is not None else None
    axes = () if target is None else (target,) if isinstance(target, str) else tuple(target)
    axes = tuple(a for a in axes if a in mesh_shape and a not in used)
    if not axes or size % int(np.prod([mesh_shape[a] for a in axes])):
      spec.append(None)
      continue
    used.update(axes)
    spec.append(axes[0] if len(axes) == 1 else axes)
  return P(*spec)


def context_spec(shape: tuple[int, ...], logical_axes) -> P | None:
  """The PartitionSpec of an array of ``shape`` under the mesh and logical axis rules active
  while tracing; None unless both are (``training.sharding.use_mesh`` enters both)."""
  mesh = jax.sharding.get_abstract_mesh()
  rules = flax_spmd.get_logical_axis_rules()
  if mesh.empty or not rules:
    return None
  return logical_to_mesh_spec(tuple(shape), logical_axes, rules, dict(mesh.shape))


def per_shard_spec(shape: tuple[int, ...], logical_axes) -> P | None:
  """The spec by which a kernel runs per shard (shard_map) on an array of ``shape``; None when
  there is nothing to split: no mesh and rules in context, or a single device."""
  spec = context_spec(shape, logical_axes)
  return None if spec is None or jax.sharding.get_abstract_mesh().size == 1 else spec


def constrain(x: jax.Array, logical_axes: tuple[str | None, ...]) -> jax.Array:
  """Pins the sharding of activation ``x`` by logical axis names; a no-op without a mesh context.

  Active only while tracing under both ``jax.set_mesh(mesh)`` and ``nnx.logical_axis_rules``
  (``training.sharding.use_mesh`` enters both), so single-device code, tests and eval_shape
  are unaffected.
  """
  spec = context_spec(x.shape, logical_axes)
  return x if spec is None else jax.lax.with_sharding_constraint(x, spec)
