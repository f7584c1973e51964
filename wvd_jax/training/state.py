"""The train state and its sharded initialization.

Parameters live as a pure dict of float32 arrays (nnx.to_pure_dict of the model's state); the
model's graph definition is static and merged back inside jitted functions.
"""
from __future__ import annotations

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from wvd_jax.models import builder
from wvd_jax.training import sharding


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar.
  params: Any  # Pure dict of float32 arrays.
  opt_state: Any
  ema_params: Any
  rng: jax.Array  # uint32[2] PRNG key data.
  num_nonfinite: jax.Array  # Consecutive skipped (non-finite) updates.


def state_shardings(config, mesh, tx: optax.GradientTransformation):
  """(graphdef, TrainState of NamedShardings) for the config's model on ``mesh``."""
  graphdef, abstract_state = builder.abstract_model(config)
  params_sh = sharding.param_shardings(abstract_state, mesh, sharding.axis_rules(config))
  rep = sharding.replicated(mesh)
  abstract_params = nnx.to_pure_dict(abstract_state)
  abstract_opt = jax.eval_shape(tx.init, abstract_params)
  # Optimizer moments mirror the parameter tree; anything else (counts) is replicated.
  opt_sh = optax.tree_map_params(tx, lambda _, s: s, abstract_opt, params_sh,
                                 transform_non_params=lambda _: rep)
  shardings = TrainState(step=rep, params=params_sh, opt_state=opt_sh, ema_params=params_sh,
                         rng=rep, num_nonfinite=rep)
  return graphdef, shardings


def create_train_state(config, mesh, tx: optax.GradientTransformation):
  """Initializes the train state directly sharded on ``mesh`` (no full copy on one device)."""
  graphdef, shardings = state_shardings(config, mesh, tx)

  @functools.partial(jax.jit, out_shardings=shardings)
  def init():
    params = nnx.to_pure_dict(nnx.state(builder.build_model(config, seed=config.seed)))
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      ema_params=params, rng=jax.random.PRNGKey(config.seed + 1),
                      num_nonfinite=jnp.zeros((), jnp.int32))

  return graphdef, init(), shardings
