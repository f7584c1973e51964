"""Running the DiT functionally: parameters prepared for a sampler's loop (builder.split_for_loop,
LoopModel, inference_params, with_xla_norms)."""
import dataclasses
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
  # The check sees the old way's slices.
  assert stacked_leaf_ops(stacked, 'slice', params['blocks']) > 0
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


FP8_TINY = dataclasses.replace(TINY, fp8=True, compute_dtype='bfloat16')


def _with_scaling_state(params, seed=0):
  """params with every FP8 scaling state as after some training (amax histories > 0, scales
  != 1)."""
  rng = np.random.default_rng(seed)

  def state(path, x):
    keys = [getattr(k, 'key', None) for k in path]
    if 'dot_general' not in keys:
      return x
    if keys[-1].endswith('amax_history'):
      return jnp.asarray(rng.uniform(0.5, 4.0, x.shape), x.dtype)
    return jnp.asarray(rng.uniform(0.002, 0.02, x.shape), x.dtype)

  return jax.tree_util.tree_map_with_path(state, params)


def test_fp8_kernels_quantized_once_give_the_same_output():
  graphdef, params = random_params(FP8_TINY, seed=10)
  params = _with_scaling_state(params)
  x = jax.random.normal(jax.random.PRNGKey(2), (2, 3, 16, 16, 6))
  t, cond = jnp.array([0.3, 0.9]), jnp.zeros((2, 3, 2)).at[:, 0, 0].set(1.0)
  apply = jax.jit(functools.partial(builder.apply_model, graphdef))
  every_call = builder.inference_params(params, 'bfloat16', quantize_fp8=False)
  once = builder.inference_params(params, 'bfloat16')
  assert once['blocks']['mlp']['fc1']['kernel'].dtype == jnp.float8_e4m3fn
  assert once['blocks']['attn']['qkv']['kernel'].dtype == jnp.float8_e4m3fn
  assert once['blocks']['modulation']['kernel'].dtype == jnp.bfloat16  # Not an FP8 projection.
  want = apply(every_call, x, t, cond)
  got = apply(once, x, t, cond)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  # The quantized kernels are what the forward reads: no weight-sized float8 conversion is left.
  # Stored (out, in) for the FP8 GEMM's K-major layout.
  fc1 = params['blocks']['mlp']['fc1']['kernel']
  assert once['blocks']['mlp']['fc1']['kernel'].shape == fc1.shape[:1] + fc1.shape[:0:-1]
  hlo = jax.jit(functools.partial(builder.apply_model, graphdef)).lower(once, x, t, cond).as_text()
  f8_weight_types = {'tensor<' + 'x'.join(map(str, shape)) + 'xf8E4M3FN>'
                     for shape in (fc1.shape[1:], fc1.shape[:0:-1])}
  weight_converts = lambda text: [line for line in text.splitlines() if 'convert' in line
                                  and any(w in line for w in f8_weight_types)]
  assert not weight_converts(hlo)
  assert weight_converts(apply.lower(every_call, x, t, cond).as_text())


def test_sampling_with_the_fp8_inference_form_matches():
  graphdef, params = random_params(FP8_TINY, seed=11)
  params = _with_scaling_state(params, seed=1)
  rng = jax.random.PRNGKey(3)
  model = builder.LoopModel(graphdef)
  outs = [jax.jit(_sample(model, None))(builder.split_for_loop(
      builder.inference_params(params, 'bfloat16', quantize_fp8=q)), rng) for q in (False, True)]
  np.testing.assert_array_equal(np.asarray(outs[1]), np.asarray(outs[0]))


def test_sampling_graphdef_uses_the_xla_norms():
  kernel_cfg = dataclasses.replace(TINY, norm_kernel='pallas_interpret')
  graphdef, params = random_params(kernel_cfg, seed=12)
  xla_graphdef = builder.with_xla_norms(graphdef, params)
  assert builder.with_xla_norms(graphdef, params) is xla_graphdef  # One compile per model.
  model = nnx.merge(xla_graphdef, params)
  kinds = [m.norm_kernel for _, m in nnx.iter_modules(model) if hasattr(m, 'norm_kernel')]
  assert kinds and set(kinds) == {'xla'}
  x = jax.random.normal(jax.random.PRNGKey(4), (1, 2, 16, 16, 6))
  t, cond = jnp.array([0.4]), jnp.zeros((1, 2, 2))
  xla_graphdef_of_plain, plain_params = random_params(TINY, seed=12)
  want = builder.apply_model(xla_graphdef_of_plain, plain_params, x, t, cond)
  got = builder.apply_model(xla_graphdef, params, x, t, cond)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  kernel_out = builder.apply_model(graphdef, params, x, t, cond)  # The kernels: same formula.
  np.testing.assert_allclose(np.asarray(kernel_out), np.asarray(want), rtol=1e-4, atol=1e-5)


def test_fp8_inference_form_refuses_what_it_cannot_compute():
  from wvd_jax.models import layers  # pylint: disable=import-outside-toplevel
  dot = layers.Fp8DotGeneral()
  x = jnp.ones((2, 8), jnp.bfloat16)
  stacked = jnp.zeros((3, 16, 8), jnp.float8_e4m3fn)  # A stack: take the layers apart first.
  with pytest.raises(ValueError, match='2-D kernel'):
    dot(x, stacked, (((1,), (0,)), ((), ())))
  with pytest.raises(ValueError, match='2-D kernel'):
    dot(x, jnp.zeros((16, 8), jnp.float8_e4m3fn), (((1,), (1,)), ((), ())))
  y = dot(x, jnp.ones((16, 8), jnp.float8_e4m3fn), (((1,), (0,)), ((), ())))
  assert y.shape == (2, 16) and float(y[0, 0]) == 8.0  # (out, in) stored: 8 ones summed.
