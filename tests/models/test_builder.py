"""Running the DiT functionally: parameters prepared for a sampler's loop (builder.split_for_loop)."""
import functools

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.models.test_dit import TINY, random_params, stacked_leaf_ops
from wvd_jax.diffusion import samplers, schedules
from wvd_jax.models import builder


def test_loop_params_give_the_same_output_bit_for_bit():
  graphdef, params = random_params(TINY, seed=4)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 16, 16, 6))
  t, cond = jnp.array([0.2, 0.7]), jnp.zeros((2, 3, 2)).at[:, 0, 0].set(1.0)
  loop_params = builder.split_for_loop(params)
  assert len(loop_params.layers) == TINY.depth
  want = jax.jit(functools.partial(builder.apply_model, graphdef))(params, x, t, cond)
  got = jax.jit(functools.partial(builder.apply_loop_model, graphdef))(loop_params, x, t, cond)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_sampler_loop_reads_the_layers_in_place():
  """With LoopParams the jitted sampler slices no stacked weight (each was a copy every step)."""
  graphdef, params = random_params(TINY, seed=5)
  known = jnp.zeros((1, 2, 16, 16, 6))
  cond = jnp.zeros((1, 2, 2))
  config = samplers.SamplerConfig(num_steps=3)

  def lowered(apply_fn, p):
    return jax.jit(lambda p, rng: samplers.sample(
        apply_fn, p, rng, known, jnp.zeros_like(known), cond,
        schedule=schedules.CosineSchedule(), prediction='v', config=config)).lower(
            p, jax.random.PRNGKey(0)).as_text()

  stacked = lowered(functools.partial(builder.apply_model, graphdef), params)
  assert stacked_leaf_ops(stacked, 'slice', params['blocks']) > 0  # The check sees the old way's slices.
  split = lowered(functools.partial(builder.apply_loop_model, graphdef),
                  builder.split_for_loop(params))
  assert stacked_leaf_ops(split, 'slice', params['blocks']) == 0


def test_time_rows_computed_ahead_give_the_networks_output():
  """LoopModel at level i (rows of the table of all levels) equals the network given t_i."""
  graphdef, params = random_params(TINY, seed=6)
  model = builder.LoopModel(graphdef)
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 3, 16, 16, 6))
  cond = jnp.zeros((2, 3, 2)).at[:, 0, 0].set(1.0)
  times = jnp.array([1.0, 0.75, 0.5, 0.25])
  loop_params = jax.jit(model.with_time_levels)(builder.split_for_loop(params), times)
  assert len(loop_params.time_rows.blocks) == TINY.depth
  assert loop_params.time_rows.blocks[0].shape == (4, 6 * TINY.width)
  assert loop_params.time_rows.final.shape == (4, 2 * TINY.width)
  run = jax.jit(model)
  for level in (0, 2, 3):
    t = jnp.full((2,), times[level])
    want = run(loop_params, x, t, cond)
    got = run(loop_params, x, t, cond, level=jnp.int32(level))
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)
  # Rows of another level give another output: the table is really read.
  other = run(loop_params, x, jnp.full((2,), times[0]), cond, level=jnp.int32(3))
  assert np.abs(np.asarray(other) - np.asarray(run(loop_params, x, jnp.full((2,), times[0]),
                                                   cond))).max() > 1e-3


def _loop_body_dots(jaxpr) -> list:
  """Output shapes of the dot_generals inside the jaxpr's loops (a fori_loop with a static trip
  count is a scan), at any depth."""
  shapes = []

  def walk(jp, inside):
    for eqn in jp.eqns:
      if eqn.primitive.name == 'dot_general' and inside:
        shapes.append(tuple(eqn.outvars[0].aval.shape))
      for sub in jax.extend.core.jaxprs_in_params(eqn.params):
        walk(sub, inside or eqn.primitive.name in ('while', 'scan'))

  walk(jaxpr.jaxpr, False)
  return shapes


def _sample(apply_fn, p, guidance=1.0, steps=4):
  known = jax.random.normal(jax.random.PRNGKey(7), (2, 2, 16, 16, 6))
  known_mask = jnp.zeros_like(known).at[:, 0, ..., :3].set(1.0)
  cond = jnp.zeros((2, 2, 2)).at[:, 0, 0].set(1.0)
  config = samplers.SamplerConfig(num_steps=steps, guidance=guidance)
  return lambda p, rng: samplers.sample(apply_fn, p, rng, known, known_mask, cond,
                                        schedule=schedules.CosineSchedule(), prediction='v',
                                        config=config)


def test_sampler_with_time_rows_ahead_matches_and_keeps_modulation_out_of_its_loop():
  graphdef, params = random_params(TINY, seed=8)
  loop_params = builder.split_for_loop(params)
  rows_in_loop = functools.partial(builder.apply_loop_model, graphdef)
  ahead = builder.LoopModel(graphdef)
  rng = jax.random.PRNGKey(0)
  for guidance in (1.0, 2.0):  # Guidance: one batch of 2B, the rows broadcast to it.
    want = jax.jit(_sample(rows_in_loop, loop_params, guidance))(loop_params, rng)
    got = jax.jit(_sample(ahead, loop_params, guidance))(loop_params, rng)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-5)
  modulation_rows = lambda shapes: [s for s in shapes if s[-1] == 6 * TINY.width]
  before = _loop_body_dots(jax.make_jaxpr(_sample(rows_in_loop, loop_params))(loop_params, rng))
  after = _loop_body_dots(jax.make_jaxpr(_sample(ahead, loop_params))(loop_params, rng))
  assert len(modulation_rows(before)) == TINY.depth  # The check sees the old way's rows.
  assert modulation_rows(after) == []
  assert len(after) == len(before) - TINY.depth - 3  # Nor the time MLP's two, the final one.


def test_modulation_rows_of_the_wrong_shape_are_refused():
  graphdef, params = random_params(TINY, seed=9)
  model = builder.LoopModel(graphdef)
  loop_params = model.with_time_levels(builder.split_for_loop(params), jnp.array([1.0, 0.5]))
  x = jnp.zeros((1, 2, 16, 16, 6))
  model_obj = nnx.merge(graphdef, loop_params.params)
  with pytest.raises(ValueError, match='modulation must hold'):
    model_obj(x, jnp.zeros((1,)), jnp.zeros((1, 2, 2)), layer_params=loop_params.layers,
              modulation=loop_params.time_rows)  # 2 rows for a batch of 1.
  with pytest.raises(ValueError, match='no time rows'):
    model(builder.split_for_loop(params), x, jnp.zeros((1,)), jnp.zeros((1, 2, 2)), level=0)
  with pytest.raises(ValueError, match=r'shape \(L,\)'):
    model.with_time_levels(builder.split_for_loop(params), jnp.zeros((2, 1)))
