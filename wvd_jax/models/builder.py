"""Building the config's DiT as (graphdef, parameters) and running it functionally.

Hot paths never call an NNX module statefully: they merge the static graphdef with a pure dict
of parameters inside a jitted function (split/merge + plain jax.jit, see WORKSPACE.md).
"""
from __future__ import annotations

from flax import nnx

from wvd_jax.models import dit


def build_model(config, seed: int = 0) -> dit.DiT:
  return dit.DiT(dit.DiTConfig.from_config(config), rngs=nnx.Rngs(seed))


def abstract_model(config):
  """(graphdef, abstract nnx.State) of the config's model, allocating nothing."""
  return nnx.split(nnx.eval_shape(lambda: build_model(config)))


def apply_model(graphdef, params, z_t, t, cond_mask):
  """The DiT of structure ``graphdef`` with parameters ``params`` (pure dict) on one batch."""
  return nnx.merge(graphdef, params)(z_t, t, cond_mask)
