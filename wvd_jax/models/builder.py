"""Building the config's DiT as (graphdef, parameters) and running it functionally.

Hot paths never call an NNX module statefully: they merge the static graphdef with a pure dict
of parameters inside a jitted function (split/merge + plain jax.jit, see WORKSPACE.md).
"""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from wvd_jax.models import dit, layers


def build_model(config, seed: int = 0) -> dit.DiT:
  return dit.DiT(dit.DiTConfig.from_config(config), rngs=nnx.Rngs(seed))


def abstract_model(config):
  """(graphdef, abstract nnx.State) of the config's model, allocating nothing."""
  return nnx.split(nnx.eval_shape(lambda: build_model(config)))


def apply_model(graphdef, params, z_t, t, cond_mask):
  """The DiT of structure ``graphdef`` with parameters ``params`` (pure dict) on one batch."""
  return nnx.merge(graphdef, params)(z_t, t, cond_mask)


class LoopParams(NamedTuple):
  """Parameters prepared for a loop that runs the network many times (a sampler).

  ``params``: the model's parameters with every stacked block parameter replaced by an empty
  placeholder of its dtype (kept for the model's structure: nnx.merge; never read), so the loop
  holds one copy of the block weights; ``layers``: the blocks' weights taken apart per layer
  (dit.split_layers), once, before the loop, and read in place by every iteration, where slicing
  the stack inside the loop copied every weight on every iteration (on an H200, 107 ms of copies
  in a 0.74 s wvd_2b sampling call, 0.64 s without them).
  ``time_rows``: optionally (``LoopModel.with_time_levels``) the modulation rows of every time
  level the loop will visit (dit.TimeModulation, L rows), computed in one pass before the loop.
  """
  params: Any
  layers: tuple
  time_rows: dit.TimeModulation | None = None


def split_for_loop(params) -> LoopParams:
  """``params`` (pure dict with a 'blocks' entry) -> LoopParams."""
  layers = dit.split_layers(params['blocks'])
  placeholders = jax.tree.map(lambda a: jnp.zeros((0,), a.dtype), params['blocks'])
  return LoopParams({**params, 'blocks': placeholders}, layers)


def apply_loop_model(graphdef, loop_params: LoopParams, z_t, t, cond_mask):
  """``apply_model`` with parameters from ``split_for_loop``: the same output, bit for bit."""
  model = nnx.merge(graphdef, loop_params.params)
  return model(z_t, t, cond_mask, layer_params=loop_params.layers)


@dataclasses.dataclass(frozen=True, eq=False)  # Hashed by identity: one object, one compile.
class LoopModel:
  """The DiT as a sampler's ``apply_fn`` on LoopParams, with the time levels computed ahead.

  ``model(loop_params, z_t, t, cond_mask)`` is ``apply_loop_model``. A sampler whose time levels
  are known before its loop calls ``with_time_levels(loop_params, times)`` once, then
  ``model(loop_params, z_t, t, cond_mask, level=i)`` with t = times[i]: the modulation rows of
  level i are read from the table instead of computed from t (diffusion/samplers.py).
  """
  graphdef: Any

  def with_time_levels(self, loop_params: LoopParams, times: jax.Array) -> LoopParams:
    """times (L,) -> loop_params with every level's modulation rows (one pass over the weights)."""
    model = nnx.merge(self.graphdef, loop_params.params)
    return loop_params._replace(time_rows=model.time_modulation(times, loop_params.layers))

  def __call__(self, loop_params: LoopParams, z_t, t, cond_mask, level=None):
    if level is None:
      return apply_loop_model(self.graphdef, loop_params, z_t, t, cond_mask)
    if loop_params.time_rows is None:
      raise ValueError('LoopModel got a level but no time rows: call with_time_levels first')
    batch = z_t.shape[0]
    rows = jax.tree.map(
        lambda table: jnp.broadcast_to(jax.lax.dynamic_index_in_dim(table, level),
                                       (batch,) + table.shape[1:]), loop_params.time_rows)
    model = nnx.merge(self.graphdef, loop_params.params)
    return model(z_t, t, cond_mask, layer_params=loop_params.layers, modulation=rows)


def inference_params(params, compute_dtype, quantize_fp8: bool = True):
  """``params`` prepared for a sampler that evaluates the network 50-100 times on fixed weights.

  The blocks' Linear kernels and biases are cast once to ``compute_dtype`` (the model's
  model.compute_dtype): the blocks compute in it and nnx.Linear casts its kernel and bias to it
  before the matmul, so the output is bit-identical, but a batch-1 forward, bound by reading the
  weights, then reads 2 bytes a weight instead of 4 and skips the casts. The kernels of FP8
  projections (model.fp8) are quantized once to float8 under their stored scaling state, exactly
  as each forward quantizes them, and their forward scales computed once (layers.inference_form):
  same output, one byte a weight, and no per-evaluation amax and quantize passes over every
  weight (on an H200, 221 ms of a 0.62 s wvd_2b sampling call: benchmarks/RESULTS.md). Such
  parameters are for inference only (no FP8 backward; ``quantize_fp8=False`` keeps them in
  compute_dtype). Norm scales, the
  scaling state and the float32 layers outside the blocks are left as they are.
  """
  dtype = jnp.dtype(compute_dtype)
  if dtype == jnp.float32:
    return params

  def cast(path, x):
    keys = [getattr(k, 'key', None) for k in path]
    if keys[0] == 'blocks' and keys[-1] in ('kernel', 'bias') and 'dot_general' not in keys:
      return x.astype(dtype)
    return x

  params = jax.tree_util.tree_map_with_path(cast, params)
  return _quantize_fp8_kernels(params, dtype) if quantize_fp8 else params


def _quantize_fp8_kernels(tree, dtype):
  """Every FP8 projection {'kernel', 'dot_general': scaling state} in the nested dict ``tree`` in
  its inference form (layers.inference_form); everything else as it is."""
  if not isinstance(tree, dict):
    return tree
  state = tree.get('dot_general')
  if isinstance(state, dict) and 'kernel_scale' in state and 'kernel' in tree:
    return layers.inference_form(tree, dtype)
  return {key: _quantize_fp8_kernels(value, dtype) for key, value in tree.items()}


def with_xla_norms(graphdef, params):
  """``graphdef`` with every fused norm kernel (model.norm_kernel) switched to the XLA formula;
  ``params`` (pure dict, arrays or shapes) its parameters, unchanged.

  Sampling uses it: at batch 1 the Triton kernels were slower than XLA's fusions (the wvd_2b
  forward 13.6 ms with them, 11.7 ms without, on an H200: benchmarks/RESULTS.md), while at the
  training batch they are faster. The same graphdef object comes back for the same input (the
  jitted sampler is keyed on it).
  """
  if graphdef not in _XLA_NORMS:
    model = nnx.merge(graphdef, jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                                             params))
    for _, module in nnx.iter_modules(model):
      if getattr(module, 'norm_kernel', 'xla') != 'xla':
        module.norm_kernel = 'xla'
    _XLA_NORMS[graphdef] = nnx.graphdef(model)
  return _XLA_NORMS[graphdef]


_XLA_NORMS: dict = {}
