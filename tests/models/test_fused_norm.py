"""The fused kernels of models/fused_norm.py (RMSNorm + adaLN modulation, QK RMSNorm + RoPE)
against the plain formulas.

The Pallas kernels run interpreted on CPU ('pallas_interpret'): the same kernel bodies, masks and
tiling as the Triton build on the GPU (whose own check is the benchmark's, benchmarks/RESULTS.md).
Shapes are chosen so that the width is not a power of two (masked columns) and the tokens span
more than one tile with a partial last tile (masked rows).
"""
import dataclasses
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.conftest import REPO
from tests.models.test_dit import TINY, _inputs, random_params
from wvd_jax import config_lib
from wvd_jax.models import dit, fused_norm, layers


def _arrays(b=2, t=300, w=48, dtype=jnp.float32, seed=0):
  """x with a non-zero mean and large scale (RMSNorm must remove both), shift, scale, dy."""
  k = jax.random.split(jax.random.PRNGKey(seed), 4)
  x = (jax.random.normal(k[0], (b, t, w)) * 3.0 + 0.5).astype(dtype)
  shift = jax.random.normal(k[1], (b, w)) * 0.3
  scale = jax.random.normal(k[2], (b, w)) * 0.3
  dy = jax.random.normal(k[3], (b, t, w))
  return x, shift, scale, dy


def test_tiles_cover_the_tokens_with_a_partial_last_tile():
  rows, padded = fused_norm._tiles(300, 48, fused_norm.NORM_TILE_VALUES)
  assert padded == 64 and rows == 256  # 2 tiles for 300 tokens: the second is partial.
  rows, padded = fused_norm._tiles(2048, 2048, fused_norm.NORM_TILE_VALUES)
  assert (rows, padded) == (8, 2048)


def test_forward_equals_the_formula_and_nnx_rmsnorm():
  x, shift, scale, _ = _arrays()
  out = fused_norm.norm_modulate(x, shift, scale, implementation='pallas_interpret')
  ref = fused_norm.norm_modulate(x, shift, scale)
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
  norm = nnx.RMSNorm(48, epsilon=1e-6, use_scale=False, rngs=nnx.Rngs(0))
  np.testing.assert_allclose(norm(x) * (1 + scale[:, None]) + shift[:, None], ref, rtol=1e-5,
                             atol=1e-5)
  # Every output row has unit RMS before the modulation: undo it and check.
  unmodulated = (out - shift[:, None]) / (1 + scale[:, None])
  np.testing.assert_allclose(jnp.sqrt(jnp.mean(unmodulated ** 2, axis=-1)), 1.0, rtol=1e-4)


def test_bfloat16_output_from_float32_residuals():
  """The DiT's case: float32 residual stream in, bfloat16 compute out."""
  x, shift, scale, _ = _arrays(t=40)
  out = fused_norm.norm_modulate(x, shift.astype(jnp.bfloat16), scale.astype(jnp.bfloat16),
                                 out_dtype=jnp.bfloat16, implementation='pallas_interpret')
  assert out.dtype == jnp.bfloat16
  exact = fused_norm.norm_modulate(x, shift, scale)  # float32 throughout
  # The kernel modulates in float32 and rounds once: within bf16 rounding of the exact value.
  np.testing.assert_allclose(out.astype(jnp.float32), exact, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_gradients_equal_autodiff_of_the_formula(dtype):
  x, shift, scale, dy = _arrays(dtype=dtype)

  def grads(implementation):
    f = lambda x, s, c: jnp.sum(fused_norm.norm_modulate(
        x, s, c, out_dtype=jnp.float32, implementation=implementation) * dy)
    return jax.grad(f, argnums=(0, 1, 2))(x, shift, scale)

  tol = 1e-4 if dtype == jnp.float32 else 2e-2
  for name, got, want in zip(('dx', 'dshift', 'dscale'), grads('pallas_interpret'),
                             grads('xla')):
    assert got.dtype == want.dtype, name
    scale_of = float(jnp.max(jnp.abs(want.astype(jnp.float32))))
    assert scale_of > 0.1, name
    err = float(jnp.max(jnp.abs(got.astype(jnp.float32) - want.astype(jnp.float32))))
    assert err <= tol * scale_of, (name, err, scale_of)


def test_dit_with_the_kernel_computes_the_same_function():
  """A whole DiT (float32) with norm_kernel='pallas_interpret': same outputs and gradients."""
  graphdef, params = random_params(TINY)
  fused_graphdef, _ = random_params(dataclasses.replace(TINY, norm_kernel='pallas_interpret'))
  x, t, c = _inputs()

  def loss(graph):
    return jax.jit(jax.value_and_grad(
        lambda p: jnp.mean(nnx.merge(graph, p)(x, t, c) ** 2)))

  (l0, g0), (l1, g1) = loss(graphdef)(params), loss(fused_graphdef)(params)
  np.testing.assert_allclose(l1, l0, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6 + 1e-4 * float(jnp.abs(a).max()))


@pytest.mark.parametrize('b,t,w', [(4, 2048, 2048), (64, 2048, 384), (2, 300, 48)])
def test_kernels_lower_to_triton_for_a_hopper_gpu(monkeypatch, b, t, w):
  """Cross-lowering for CUDA on this CPU machine: every op of both kernels has a Triton rule
  at the wvd_2b, small and a ragged shape (PTX compilation itself happens on the GPU)."""
  from jax._src.pallas.triton import gpu_info
  hopper = gpu_info.get_gpu_info_from_version(gpu_info.GpuVersion.H100)
  monkeypatch.setattr(gpu_info, 'get_gpu_info', lambda: hopper)

  def forward_backward(x, s, c, dy):
    f = lambda x, s, c: fused_norm.norm_modulate(x, s, c, out_dtype=jnp.bfloat16,
                                                 implementation='pallas')
    y, pullback = jax.vjp(f, x, s, c)
    return y, pullback(dy)

  x = jax.ShapeDtypeStruct((b, t, w), jnp.float32)
  bw = jax.ShapeDtypeStruct((b, w), jnp.bfloat16)
  dy = jax.ShapeDtypeStruct((b, t, w), jnp.bfloat16)
  hlo = jax.jit(forward_backward).trace(x, bw, bw, dy).lower(
      lowering_platforms=('cuda',)).as_text()
  assert hlo.count('__gpu$xla.gpu.triton') == 2  # The forward and the backward kernel.

  heads = 16 if w == 2048 else 6 if w == 384 else 4
  d = w // heads
  frames = t // 256 if t % 256 == 0 else 3
  side = 16 if t % 256 == 0 else 10
  cos, sin = layers.rope_3d(frames, side, side, d)

  def qk_forward_backward(q, weight, dq):
    f = lambda q, weight: fused_norm.qk_norm_rope(q, weight, cos, sin, implementation='pallas')
    y, pullback = jax.vjp(f, q, weight)
    return y, pullback(dq)

  q = jax.ShapeDtypeStruct((b, frames * side * side, heads, d), jnp.bfloat16)
  hlo = jax.jit(qk_forward_backward).trace(
      q, jax.ShapeDtypeStruct((d,), jnp.float32), q).lower(lowering_platforms=('cuda',)).as_text()
  assert hlo.count('__gpu$xla.gpu.triton') == 2


def test_bad_inputs_and_settings_raise():
  x, shift, scale, _ = _arrays(t=8)
  with pytest.raises(ValueError, match='implementation must be one of'):
    fused_norm.norm_modulate(x, shift, scale, implementation='triton')
  with pytest.raises(ValueError, match='int32'):
    big = jax.ShapeDtypeStruct((1024, 2048, 2048), jnp.float32)
    jax.eval_shape(lambda x: fused_norm.norm_modulate(
        x, jnp.zeros((1024, 2048)), jnp.zeros((1024, 2048)), implementation='pallas'), big)
  with pytest.raises(ValueError, match=r'shift, scale \(B, W\)'):
    fused_norm.norm_modulate(x, shift[:, :4], scale)
  with pytest.raises(ValueError, match='needs a GPU'):
    dit.DiT(dataclasses.replace(TINY, norm_kernel='pallas'), rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match='norm_kernel must be one of'):
    dit.DiTConfig(in_channels=6, patch_size=4, width=48, depth=1, num_heads=4, norm_kernel='x')
  config = config_lib.base_config()
  config.model.norm_kernel = 'fused'
  with pytest.raises(config_lib.ConfigError, match='model.norm_kernel'):
    config_lib.validate_config(config)


@pytest.mark.parametrize('kernel', ['norm_modulate', 'qk_norm_rope'])
def test_the_benchmark_parity_check_holds_the_kernels_to_float32(kernel):
  from benchmarks import norm_kernel_bench
  r = norm_kernel_bench.measure(kernel, 'tiny', 2, (2, 4, 12), 48, 4, 'pallas_interpret',
                                iters=1)
  assert r['parity_ok'], r
  errors = r['max_rel_error_vs_float32']
  assert set(errors['kernel']) == set(errors['xla']) and 'y' in errors['kernel']
  # Rounding once (the kernels) is at least as close to float32 as XLA's bf16 steps.
  assert errors['kernel']['dscale'] <= errors['xla']['dscale'] + 1e-6, errors
  assert r['xla_fwd_bwd_ms'] > 0 and r['kernel_fwd_bwd_ms'] > 0


def _heads(b=2, frames=3, side=4, heads=3, d=12, dtype=jnp.float32, seed=1):
  """q (B, T, H, D) with T = frames * side^2 (2 tiles, the last partial), scale, tables, dy."""
  k = jax.random.split(jax.random.PRNGKey(seed), 3)
  t = frames * side * side
  x = (jax.random.normal(k[0], (b, t, heads, d)) * 2.0 + 0.3).astype(dtype)
  weight = 1.0 + 0.2 * jax.random.normal(k[1], (d,))
  cos, sin = layers.rope_3d(frames, side, side, d)
  return x, weight, cos, sin, jax.random.normal(k[2], x.shape)


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_qk_norm_rope_equals_the_model_path(dtype):
  """Against what Attention computes without the kernel: nnx.RMSNorm, then apply_rope."""
  x, weight, cos, sin, _ = _heads(dtype=dtype)
  norm = nnx.RMSNorm(x.shape[-1], epsilon=1e-6, dtype=dtype, rngs=nnx.Rngs(0))
  norm.scale.value = weight
  plain = layers.apply_rope(norm(x), (cos, sin))
  out = fused_norm.qk_norm_rope(x, weight, cos, sin, implementation='pallas_interpret')
  assert out.dtype == dtype
  tol = 1e-5 if dtype == jnp.float32 else 1e-2
  np.testing.assert_allclose(out.astype(jnp.float32), plain.astype(jnp.float32), rtol=tol,
                             atol=tol)
  # A rotation keeps each pair's length: |y|^2 per head equals |normalized * weight|^2.
  if dtype == jnp.float32:
    scaled = norm(x)
    np.testing.assert_allclose(jnp.sum(out ** 2, -1), jnp.sum(scaled ** 2, -1), rtol=1e-5)


def test_qk_norm_rope_rounds_once_in_bfloat16():
  """bf16 output within half a bf16 ulp (2^-8 relative) of the float32 formula, per element.

  Rounding the normalized value before the rotation too (the plain formula) can miss this
  bound; the GPU benchmark measured it twice as far from float32 as XLA's fused path.
  """
  x, weight, cos, sin, _ = _heads(b=4, frames=4, side=6, heads=4, d=32, dtype=jnp.bfloat16)
  out = fused_norm.qk_norm_rope(x, weight, cos, sin, implementation='pallas_interpret')
  exact = fused_norm.qk_norm_rope_reference(x.astype(jnp.float32), weight, cos, sin)
  err = jnp.abs(out.astype(jnp.float32) - exact)
  bound = 2.0 ** -8 * jnp.abs(exact) + 1e-6 * float(jnp.max(jnp.abs(exact)))
  assert bool(jnp.all(err <= bound)), float(jnp.max(err / (jnp.abs(exact) + 1e-6)))
  # The two-rounding formula does miss it on these inputs: the test tells them apart.
  twice = fused_norm.qk_norm_rope_reference(x, weight, cos, sin).astype(jnp.float32)
  assert not bool(jnp.all(jnp.abs(twice - exact) <= bound))


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_qk_norm_rope_gradients_equal_autodiff(dtype):
  x, weight, cos, sin, dy = _heads(dtype=dtype)

  def grads(implementation):
    f = lambda x, w: jnp.sum(fused_norm.qk_norm_rope(
        x, w, cos, sin, implementation=implementation).astype(jnp.float32) * dy)
    return jax.grad(f, argnums=(0, 1))(x, weight)

  tol = 1e-4 if dtype == jnp.float32 else 3e-2
  for name, got, want in zip(('dx', 'dweight'), grads('pallas_interpret'), grads('xla')):
    assert got.dtype == want.dtype, name
    size = float(jnp.max(jnp.abs(want.astype(jnp.float32))))
    err = float(jnp.max(jnp.abs(got.astype(jnp.float32) - want.astype(jnp.float32))))
    assert size > 0.1 and err <= tol * size, (name, err, size)


def test_qk_norm_rope_bad_inputs_raise():
  x, weight, cos, sin, _ = _heads()
  with pytest.raises(ValueError, match=r'cos, sin \(T, D/2\)'):
    fused_norm.qk_norm_rope(x, weight, cos[:-1], sin[:-1], implementation='pallas_interpret')
  with pytest.raises(ValueError, match=r'weight \(D,\)'):
    fused_norm.qk_norm_rope(x, weight[:4], cos, sin)
  with pytest.raises(ValueError, match='implementation must be one of'):
    fused_norm.qk_norm_rope(x, weight, cos, sin, implementation='fused')


def _two_device_worker() -> dict:
  """2 CPU devices: each kernel runs per shard (shard_map) and agrees with one device."""
  from wvd_jax.training import sharding

  def mesh_of(data, tensor):
    config = config_lib.base_config()
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = data, 1, tensor
    return sharding.make_mesh(config)  # Auto axes, as training uses.

  def run(fn, args, mesh, specs):
    """(value, grads) of sum(fn(*args) * dy) on one device and under the mesh; max diffs."""
    *inputs, dy = args
    loss = lambda impl: jax.jit(jax.value_and_grad(
        lambda *a: jnp.sum(fn(*a, impl).astype(jnp.float32) * dy),
        argnums=tuple(range(len(inputs)))))
    plain = loss('xla')(*inputs)
    with sharding.use_mesh(mesh):
      placed = [jax.device_put(a, jax.sharding.NamedSharding(mesh, s))
                for a, s in zip(inputs, specs)]
      hlo = loss('pallas_interpret').lower(*placed).as_text()
      fused = loss('pallas_interpret')(*placed)
    return dict(diffs=[float(jnp.max(jnp.abs(a - b))) for a, b in
                       zip(jax.tree.leaves(fused), jax.tree.leaves(plain))],
                per_shard='shard_map' in hlo or 'manual' in hlo.lower(),
                dx_spec=str(fused[1][0].sharding.spec))

  P = jax.sharding.PartitionSpec
  x, shift, scale, dy = _arrays(b=4, t=40)
  result = {'devices': len(jax.devices())}
  result['norm_modulate'] = run(
      lambda x, s, c, impl: fused_norm.norm_modulate(x, s, c, implementation=impl),
      (x, shift, scale, dy), mesh_of(2, 1), (P('data'), P('data'), P('data')))
  q, weight, cos, sin, dq = _heads(b=4, heads=4)
  qk = lambda q, w, impl: fused_norm.qk_norm_rope(q, w, cos, sin, implementation=impl)
  result['qk_batch'] = run(qk, (q, weight, dq), mesh_of(2, 1), (P('data'), P()))
  result['qk_heads'] = run(qk, (q, weight, dq), mesh_of(1, 2), (P(None, None, 'tensor'), P()))
  return result


def test_sharded_kernels_run_per_shard_and_agree():
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2',
             JAX_PLATFORMS='cpu', PYTHONPATH=REPO)
  proc = subprocess.run([sys.executable, os.path.abspath(__file__)], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-4000:]
  r = json.loads(proc.stdout.strip().splitlines()[-1])
  assert r['devices'] == 2, r
  for case, sharded_dim in (('norm_modulate', 'data'), ('qk_batch', 'data'),
                            ('qk_heads', 'tensor')):
    assert r[case]['per_shard'], (case, r[case])
    assert max(r[case]['diffs']) < 1e-3, (case, r[case])
    assert sharded_dim in r[case]['dx_spec'], (case, r[case])  # dx keeps the input's layout.


if __name__ == '__main__':
  print(json.dumps(_two_device_worker()))
