"""Running the DiT functionally: parameters prepared for a sampler's loop (builder.split_for_loop)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np

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
