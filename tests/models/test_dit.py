"""The DiT: shapes, dtypes, conditioning, gradients, scan/remat equivalence, the 2B size.

Models run through split/merge + jax.jit with parameters as arguments, and random parameters are
drawn with numpy on the abstract structure (nnx.eval_shape): eager NNX initialization compiles
every random op separately on XLA:CPU, which would dominate these tests' run time.
"""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from wvd_jax.models import dit, layers

TINY = dit.DiTConfig(in_channels=6, patch_size=4, width=48, depth=2, num_heads=4)


def random_params(cfg: dit.DiTConfig, seed: int = 0):
  """(graphdef, pure-dict params) with every parameter random (adaLN-zero switched on).

  Kernels ~ N(0, 1/fan_in), vectors ~ N(0, 0.05^2), norm scales ~ 1 + N(0, 0.05^2).
  """
  graphdef, abstract = nnx.split(nnx.eval_shape(lambda: dit.DiT(cfg, rngs=nnx.Rngs(0))))
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    if leaf.ndim >= 2 and path[-1].key != 'cond_embed' and path[-1].key != 'scale':
      std = 1.0 / np.sqrt(leaf.shape[-2])
    else:
      std = 0.05
    value = rng.normal(0.0, std, leaf.shape).astype(np.float32)
    return jnp.asarray(value + (1.0 if path[-1].key == 'scale' else 0.0))

  return graphdef, jax.tree_util.tree_map_with_path(draw, nnx.to_pure_dict(abstract))


@functools.lru_cache(maxsize=None)
def _forward(graphdef):
  return jax.jit(lambda p, x, t, c: nnx.merge(graphdef, p)(x, t, c))


@functools.lru_cache(maxsize=None)
def _loss_and_grad(graphdef):
  loss = lambda p, x, t, c: jnp.mean(nnx.merge(graphdef, p)(x, t, c) ** 2)
  return jax.jit(jax.value_and_grad(loss))


def _inputs(b=2, n=3, seed=2):
  x = jax.random.normal(jax.random.PRNGKey(seed), (b, n, 16, 16, 6))
  return x, jnp.linspace(0.1, 0.9, b), jnp.zeros((b, n, 2))


@pytest.fixture(scope='module')
def tiny():
  return random_params(TINY)


def test_shapes_and_dtype(tiny):
  graphdef, params = tiny
  x, t, c = _inputs()
  out = _forward(graphdef)(params, x, t, c)
  assert out.shape == x.shape and out.dtype == jnp.float32
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
  # bf16 compute, same float32 parameters: float32 output close to the float32 model's.
  bf16_graphdef, _ = random_params(dataclasses.replace(TINY, compute_dtype='bfloat16'))
  out16 = _forward(bf16_graphdef)(params, x, t, c)
  assert out16.dtype == jnp.float32 and out16.shape == x.shape
  assert np.abs(out16 - out).max() < 0.05 * np.abs(out).max()
  assert np.abs(out16 - out).max() > 0  # It did compute in bf16.


def test_fresh_model_outputs_zero():
  """adaLN-zero and the zero head: a freshly initialized DiT predicts exactly 0."""
  graphdef = nnx.graphdef(nnx.eval_shape(lambda: dit.DiT(TINY, rngs=nnx.Rngs(0))))
  # One jitted init (eager NNX init compiles every random op separately: slower on XLA:CPU).
  params = jax.jit(lambda: nnx.to_pure_dict(nnx.state(dit.DiT(TINY, rngs=nnx.Rngs(0)))))()
  assert np.abs(params['blocks']['attn']['qkv']['kernel']).max() > 0  # Really random.
  x, t, c = _inputs()
  np.testing.assert_array_equal(_forward(graphdef)(params, x, t, c), 0.0)


def test_condition_embedding_and_time_change_output(tiny):
  graphdef, params = tiny
  x, t, c = _inputs()
  forward = _forward(graphdef)
  base = forward(params, x, t, c)
  rgb0 = forward(params, x, t, c.at[:, 0, 0].set(1.0))
  xyz0 = forward(params, x, t, c.at[:, 0, 1].set(1.0))
  assert np.abs(rgb0 - base).max() > 1e-3
  assert np.abs(xyz0 - rgb0).max() > 1e-3  # RGB and XYZ flags have different embeddings.
  assert np.abs(forward(params, x, t + 0.05, c) - base).max() > 1e-3


def test_frames_interact_and_batch_elements_do_not(tiny):
  graphdef, params = tiny
  x, t, c = _inputs()
  forward = _forward(graphdef)
  base = forward(params, x, t, c)
  moved = forward(params, x.at[:, 2].add(1.0), t, c)
  assert np.abs(moved[:, 0] - base[:, 0]).max() > 1e-3  # Attention spans frames.
  moved = forward(params, x.at[1].add(1.0), t, c)
  np.testing.assert_allclose(moved[0], base[0], atol=1e-5)  # Samples are independent.


def test_gradients_finite_and_reach_every_parameter(tiny):
  graphdef, params = tiny
  x, t, c = _inputs()
  c = c.at[0, 0, 0].set(1.0).at[1, 1, 1].set(1.0)  # Both condition rows in use.
  loss, grads = _loss_and_grad(graphdef)(params, x, t, c)
  assert np.isfinite(loss)
  for path, leaf in jax.tree_util.tree_leaves_with_path(grads):
    assert np.isfinite(leaf).all() and np.abs(leaf).max() > 0, path


def test_scanned_stack_computes_the_same_function(tiny):
  """Blocks are stored stacked either way; scan_layers only changes how the stack is walked."""
  graphdef, params = tiny
  x, t, c = _inputs()
  scanned, _ = random_params(dataclasses.replace(TINY, scan_layers=True, remat='full'))
  np.testing.assert_allclose(_forward(scanned)(params, x, t, c),
                             _forward(graphdef)(params, x, t, c), rtol=1e-5, atol=1e-5)


def _saved_residual_floats(cfg, params, x, t, c):
  """Number of floats the backward pass keeps from the forward (traced, not compiled)."""
  from jax._src.ad_checkpoint import saved_residuals  # What print_saved_residuals reports.
  graphdef, _ = random_params(cfg)
  loss = lambda p: jnp.sum(nnx.merge(graphdef, p)(x, t, c))
  return sum(aval.size for aval, _ in saved_residuals(loss, params))


def test_remat_policies_trade_memory(tiny):
  _, params = tiny
  x, t, c = _inputs()
  saved = {remat: _saved_residual_floats(dataclasses.replace(TINY, remat=remat), params, x, t, c)
           for remat in dit.REMAT_POLICIES}
  assert saved['none'] > saved['dots_saveable'] > saved['full'], saved
  # On the XLA attention path (CPU) 'minimal' saves what 'dots_saveable' saves; on GPU it also
  # keeps cuDNN attention's outputs.
  assert saved['minimal'] == saved['dots_saveable'], saved
  scanned = _saved_residual_floats(dataclasses.replace(TINY, remat='full', scan_layers=True),
                                   params, x, t, c)
  assert scanned == saved['full']


def test_minimal_remat_keeps_cudnn_attention_outputs(monkeypatch):
  """Traced (not run) with cuDNN's device checks stubbed out: 'minimal' saves the flash-attention
  output and softmax statistics, so the backward does not recompute attention."""
  fa = pytest.importorskip('jax._src.cudnn.fused_attention_stablehlo')
  from jax._src.ad_checkpoint import saved_residuals
  monkeypatch.setattr(fa, 'check_cudnn_version', lambda: 91000)
  monkeypatch.setattr(fa, 'check_compute_capability', lambda capability: True)
  monkeypatch.setattr(fa, 'is_cuda_compute_capability_equal', lambda capability: False)
  x, t, c = _inputs()
  kept = {}
  for remat in ('dots_saveable', 'minimal'):
    cfg = dataclasses.replace(TINY, width=64, compute_dtype='bfloat16', attention='cudnn',
                              remat=remat)
    graphdef, params = random_params(cfg)
    loss = lambda p: jnp.sum(nnx.merge(graphdef, p)(x, t, c))
    kept[remat] = [aval.shape for aval, where in saved_residuals(loss, params)
                   if 'dot_product_attention_fwd' in where]
  assert kept['dots_saveable'] == []
  b, tokens, heads = x.shape[0], 3 * 4 * 4, TINY.num_heads
  per_layer = sorted([(b, tokens, heads, 16), (b, heads, tokens)])
  assert sorted(kept['minimal']) == sorted(per_layer * TINY.depth), kept


def test_paper_2b_parameter_count_without_allocating():
  import configs.wvd_2b as wvd_2b
  config = wvd_2b.get_config()
  cfg = dit.DiTConfig.from_config(config)
  assert cfg.fp8  # The config trains with FP8 projections: their scaling state is not counted.
  state = nnx.to_pure_dict(nnx.state(nnx.eval_shape(lambda: dit.DiT(cfg, rngs=nnx.Rngs(0)))))
  assert all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in jax.tree.leaves(state))
  is_scaling = lambda path: any(getattr(k, 'key', None) == 'dot_general' for k in path)
  leaves = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(state)
            if not is_scaling(path)]
  assert len(leaves) < len(jax.tree.leaves(state))
  count = sum(leaf.size for leaf in leaves)
  assert 1.9e9 <= count <= 2.2e9, count
  # Exactly the architecture's count: per block qkv 3w^2, out w^2, MLP 8w^2 + 5w, adaLN 6w^2 +
  # 6w, QK-norm scales 2*head_dim; patch embed, time MLP, condition rows, final adaLN, head.
  w, d, hd, pd = cfg.width, cfg.depth, cfg.head_dim, cfg.patch_size ** 2 * cfg.in_channels
  assert (cfg.width, cfg.depth, cfg.num_heads, hd, pd) == (2048, 28, 16, 128, 32)
  block = 3 * w * w + w * w + 8 * w * w + 5 * w + 6 * w * w + 6 * w + 2 * hd
  rest = (pd * w + w) + (256 * w + w) + (w * w + w) + 2 * w + (2 * w * w + 2 * w) + (w * pd + pd)
  assert count == d * block + rest
  assert all(leaf.dtype == jnp.float32 for leaf in leaves)


def test_rope_preserves_norm_and_is_relative():
  rope = layers.rope_3d(2, 3, 3, 12)
  q = jax.random.normal(jax.random.PRNGKey(0), (1, 18, 1, 12))
  rotated = layers.apply_rope(q, rope)
  np.testing.assert_allclose(jnp.linalg.norm(rotated, axis=-1), jnp.linalg.norm(q, axis=-1),
                             rtol=1e-5)
  # Same vector at every position: the dot product depends only on the (frame, row, col) offset.
  v = jnp.broadcast_to(q[:, :1], q.shape)
  r = layers.apply_rope(v, rope)[0, :, 0]
  np.testing.assert_allclose(r[0] @ r[4], r[4] @ r[8], rtol=1e-4)  # Offsets (0,1,1) both.
  np.testing.assert_allclose(r[0] @ r[9], r[4] @ r[13], rtol=1e-4)  # Offsets (1,0,0) both.
  assert abs(float(r[0] @ r[4]) - float(r[0] @ r[9])) > 1e-3  # Different offsets differ.


def test_bad_configs_and_inputs_raise():
  with pytest.raises(ValueError, match='remat'):
    dataclasses.replace(TINY, remat='everything')
  with pytest.raises(ValueError, match='num_heads'):
    dataclasses.replace(TINY, num_heads=5)
  with pytest.raises(ValueError, match='head_dim'):
    dit.DiT(dataclasses.replace(TINY, width=16, num_heads=4), rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match='cuDNN'):
    layers.resolve_attention_implementation('cudnn', jnp.float32)
  assert layers.resolve_attention_implementation('auto', jnp.bfloat16) == 'xla'  # On CPU.
  graphdef, params = random_params(TINY)
  x, t, c = _inputs()
  with pytest.raises(ValueError, match='divisible'):
    _forward(graphdef)(params, x[:, :, :15], t, c)
  with pytest.raises(ValueError, match='cond_mask'):
    _forward(graphdef)(params, x, t, c[:, :2])


def test_constrain_is_a_no_op_without_a_mesh():
  x = jnp.ones((2, 3, 4))
  assert layers.constrain(x, layers.TOKENS) is x
  with nnx.logical_axis_rules((('activation_batch', 'data'),)):
    assert layers.constrain(x, layers.TOKENS) is x  # Rules alone are not enough.


def test_inference_params_give_the_same_output_in_bfloat16():
  """Pre-cast block weights (models/builder.inference_params) change nothing but the bytes read."""
  from tests.conftest import tiny_config
  from wvd_jax.models import builder
  config = tiny_config()
  config.model.compute_dtype = 'bfloat16'
  model = builder.build_model(config, seed=3)
  graphdef, state = nnx.split(model)
  params = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.PRNGKey(1), x.shape),
                        nnx.to_pure_dict(state))  # adaLN-zero would hide the blocks otherwise.
  cast = builder.inference_params(params, config.model.compute_dtype)
  dtypes = {jax.tree_util.keystr(p): x.dtype for p, x in jax.tree_util.tree_leaves_with_path(cast)}
  assert dtypes["['blocks']['mlp']['fc1']['kernel']"] == jnp.bfloat16
  assert dtypes["['blocks']['attn']['q_norm']['scale']"] == jnp.float32
  assert dtypes["['head']['kernel']"] == jnp.float32
  x = jax.random.normal(jax.random.PRNGKey(2), (2, 4, 16, 16, 6))
  t, cond = jnp.array([0.3, 0.8]), jnp.zeros((2, 4, 2))
  want = builder.apply_model(graphdef, params, x, t, cond)
  got = builder.apply_model(graphdef, cast, x, t, cond)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_split_layers_are_the_stacks_slices_and_give_the_same_output(tiny):
  graphdef, params = tiny
  per_layer = dit.split_layers(params['blocks'])
  assert len(per_layer) == TINY.depth
  for i, layer in enumerate(per_layer):
    jax.tree.map(lambda part, whole, i=i: np.testing.assert_array_equal(part, whole[i]),
                 layer, params['blocks'])
  x, t, c = _inputs()
  want = _forward(graphdef)(params, x, t, c)
  got = jax.jit(lambda p, l, x, t, c: nnx.merge(graphdef, p)(x, t, c, layer_params=l))(
      params, per_layer, x, t, c)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  with pytest.raises(ValueError, match='layer_params has 1 layers; the model has 2'):
    nnx.merge(graphdef, params)(x, t, c, layer_params=per_layer[:1])
  with pytest.raises(ValueError, match='same leading layers axis'):
    dit.split_layers({'a': jnp.zeros((2, 3)), 'b': jnp.zeros((3, 3))})


def stacked_leaf_ops(hlo: str, op: str, blocks) -> int:
  """Lines of StableHLO ``hlo`` with ``op`` on or to a tensor shaped like a stacked leaf."""
  types = {'tensor<' + 'x'.join(map(str, leaf.shape)) + 'x' + str(leaf.dtype).replace('float', 'f')
           + '>' for leaf in jax.tree.leaves(blocks)}
  return sum(1 for line in hlo.splitlines()
             if f'stablehlo.{op} ' in line and any(t in line for t in types))


def test_gradient_has_no_sum_of_zero_padded_copies(tiny):
  """Slicing an array (leaf[i] per layer, q/k/v out of the qkv output, RoPE's halves) makes its
  gradient zero-padded copies of the whole array added up: slow on GPU (dit.split_layers). The
  model splits with unstack/split, whose gradient is one concatenate, so no pad is left; for each
  stacked leaf at least one concatenate assembles its gradient."""
  graphdef, params = tiny
  hlo = _loss_and_grad(graphdef).lower(params, *_inputs()).as_text()
  assert 'stablehlo.pad' not in hlo
  assert stacked_leaf_ops(hlo, 'concatenate', params['blocks']) >= len(
      jax.tree.leaves(params['blocks']))  # >=: other tensors may share a leaf's shape.
  # What the check would see the old way (leaf[i] per layer).
  old = jax.jit(jax.grad(lambda p: sum(jnp.sum(p[i] ** 2) for i in range(TINY.depth))))
  leaf = params['blocks']['mlp']['fc1']['kernel']
  assert stacked_leaf_ops(old.lower(leaf).as_text(), 'pad', leaf) == TINY.depth


def test_auto_norm_kernel_is_the_triton_kernels_on_a_gpu_only(monkeypatch):
  assert dit.resolve_norm_kernel('auto') == 'xla'  # CPU here.
  assert dit.resolve_norm_kernel('pallas_interpret') == 'pallas_interpret'
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  assert dit.resolve_norm_kernel('auto') == 'pallas'


def test_without_mlp_biases_and_qk_norm_the_parameters_are_gone_and_training_works():
  """mlp_bias=False / qk_norm=False remove exactly those parameters; the model still conditions
  on frames and time, and every remaining parameter gets a gradient."""
  cfg = dataclasses.replace(TINY, mlp_bias=False, qk_norm=False)
  graphdef, params = random_params(cfg)
  block = params['blocks']
  assert set(block['mlp']['fc1']) == {'kernel'} and set(block['mlp']['fc2']) == {'kernel'}
  assert 'q_norm' not in block['attn'] and 'k_norm' not in block['attn']
  full = jax.tree.leaves(random_params(TINY)[1])
  removed = TINY.depth * (TINY.mlp_hidden + TINY.width + 2 * TINY.head_dim)
  assert sum(x.size for x in full) - sum(x.size for x in jax.tree.leaves(params)) == removed
  x, t, c = _inputs()
  out = _forward(graphdef)(params, x, t, c)
  assert out.shape == x.shape and np.isfinite(out).all()
  moved = _forward(graphdef)(params, x.at[:, 2].add(1.0), t, c)
  assert np.abs(moved[:, 0] - out[:, 0]).max() > 1e-3
  loss, grads = _loss_and_grad(graphdef)(params, x, t, c.at[0, 0, 0].set(1.0).at[1, 1, 1].set(1))
  assert np.isfinite(loss)
  for path, leaf in jax.tree_util.tree_leaves_with_path(grads):
    assert np.isfinite(leaf).all() and np.abs(leaf).max() > 0, path


def test_without_qk_norm_attention_is_rope_of_the_raw_projections():
  """qk_norm=False: queries and keys enter RoPE as the qkv projection gives them (checked
  against a float64 numpy attention of one block)."""
  attn = layers.Attention(24, 2, implementation='xla', dtype=jnp.float32, qk_norm=False,
                          rngs=nnx.Rngs(0))
  x = np.random.default_rng(1).normal(size=(1, 6, 24))
  rope = layers.rope_3d(1, 2, 3, 12)
  got = np.asarray(attn(jnp.asarray(x, jnp.float32), rope))
  qkv = (x @ np.asarray(attn.qkv.kernel[...], np.float64)).reshape(1, 6, 2, 3, 12)
  q, k, v = qkv[..., 0, :], qkv[..., 1, :], qkv[..., 2, :]
  cos, sin = (np.asarray(a, np.float64) for a in rope)
  q = np.asarray(layers.apply_rope(jnp.asarray(q), (jnp.asarray(cos), jnp.asarray(sin))),
                 np.float64)
  k = np.asarray(layers.apply_rope(jnp.asarray(k), (jnp.asarray(cos), jnp.asarray(sin))),
                 np.float64)
  logits = np.einsum('bqhd,bkhd->bhqk', q, k) / np.sqrt(12)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  y = np.einsum('bhqk,bkhd->bqhd', weights, v).reshape(1, 6, 24)
  want = y @ np.asarray(attn.out.kernel[...], np.float64)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_separate_qkv_matmuls_are_the_same_function_with_the_same_parameters(tiny):
  """qkv_matmuls='separate' (three matmuls with slices of the one kernel) reads the same
  parameter tree and computes the same output and gradients as the fused matmul and split; its
  gradient stacks the small kernel slices, never the (B, T, H, 3, D) activations."""
  graphdef, params = tiny
  cfg = dataclasses.replace(TINY, qkv_matmuls='separate')
  separate, abstract = nnx.split(nnx.eval_shape(lambda: dit.DiT(cfg, rngs=nnx.Rngs(0))))
  assert jax.tree.structure(nnx.to_pure_dict(abstract)) == jax.tree.structure(params)
  x, t, c = _inputs()
  np.testing.assert_allclose(np.asarray(_forward(separate)(params, x, t, c)),
                             np.asarray(_forward(graphdef)(params, x, t, c)), rtol=1e-5, atol=1e-5)
  (loss_a, grads_a), (loss_b, grads_b) = (_loss_and_grad(g)(params, x, t, c)
                                          for g in (separate, graphdef))
  np.testing.assert_allclose(loss_a, loss_b, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), grads_a,
               grads_b)
  hlo = _loss_and_grad(separate).lower(params, x, t, c).as_text()
  b, n = x.shape[:2]
  tokens = n * (x.shape[2] // TINY.patch_size) ** 2
  qkv_activation = f'tensor<{b}x{tokens}x{TINY.num_heads}x3x{TINY.head_dim}x'
  assert qkv_activation not in hlo and 'stablehlo.pad' not in hlo
  assert qkv_activation in _loss_and_grad(graphdef).lower(params, x, t, c).as_text()
  with pytest.raises(ValueError, match='qkv_matmuls must be one of'):
    dataclasses.replace(TINY, qkv_matmuls='three')
  # FP8 quantizes the whole kernel in its Linear: the fused path, whatever was asked.
  attn = layers.Attention(24, 2, implementation='xla', dtype=jnp.float32, fp8=True,
                          qkv_matmuls='separate', rngs=nnx.Rngs(0))
  assert attn.qkv_matmuls == 'fused'


def test_config_lib_spells_the_qkv_choices_as_the_model():
  from wvd_jax import config_lib  # pylint: disable=import-outside-toplevel
  assert config_lib.QKV_MATMULS == layers.QKV_MATMULS
