"""The fused kernels of model.norm_kernel against XLA: GPU parity and time.

Two kernels, each at the wvd_2b and small configs' shapes: 'norm_modulate' (RMSNorm + adaLN
modulation: float32 residual stream in, bfloat16 out; gradients to x, shift, scale) and
'qk_norm_rope' (per-head RMSNorm with scale + 3D RoPE of bfloat16 queries; gradients to q and
the scale). Forward and forward+backward are timed for the 'xla' formula and the Pallas kernel,
and both are compared with the float32 formula (the kernel must be no further from it than
XLA's own bfloat16 path): the GPU parity check of the kernels, which the CPU tests run
interpreted. Each block runs each kernel twice (norm_modulate before attention and MLP,
qk_norm_rope for q and k). Prints one JSON line per (kernel, shape); exits 1 on a parity failure.

  python benchmarks/norm_kernel_bench.py                 # GPU: wvd_2b and small shapes
  python benchmarks/norm_kernel_bench.py --small         # CPU smoke test (interpreted kernel)
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402  pylint: disable=wrong-import-position

# (name, batch, (frames, rows, cols) of tokens, width, heads): wvd_2b at batch 4 and the small
# config at batch 64; both have 2,048 tokens.
SHAPES = (('wvd_2b', 4, (8, 16, 16), 2048, 16), ('small', 64, (8, 16, 16), 384, 6))
SMALL_SHAPES = (('tiny', 2, (2, 4, 12), 48, 4),)
KERNELS = ('norm_modulate', 'qk_norm_rope')


def _problem(kernel: str, b: int, grid: tuple[int, int, int], w: int, heads: int):
  """(apply(impl, *inputs), inputs, cotangent) of one kernel at one shape."""
  import jax
  import jax.numpy as jnp
  from wvd_jax.models import fused_norm, layers

  t = grid[0] * grid[1] * grid[2]
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  if kernel == 'norm_modulate':
    x = jax.random.normal(keys[0], (b, t, w), jnp.float32) * 2.0 + 0.3
    shift = (jax.random.normal(keys[1], (b, w)) * 0.3).astype(jnp.bfloat16)
    scale = (jax.random.normal(keys[2], (b, w)) * 0.3).astype(jnp.bfloat16)
    apply = lambda impl, x, s, c, out_dtype=jnp.bfloat16: fused_norm.norm_modulate(
        x, s, c, out_dtype=out_dtype, implementation=impl)
    return apply, (x, shift, scale), jax.random.normal(keys[3], (b, t, w), jnp.bfloat16)
  d = w // heads
  cos, sin = layers.rope_3d(*grid, d)
  q = (jax.random.normal(keys[0], (b, t, heads, d)) * 2.0 + 0.3).astype(jnp.bfloat16)
  weight = 1.0 + 0.2 * jax.random.normal(keys[1], (d,))
  apply = lambda impl, q, w, out_dtype=None: fused_norm.qk_norm_rope(
      q.astype(out_dtype or q.dtype), w, cos, sin, implementation=impl)
  return apply, (q, weight), jax.random.normal(keys[2], q.shape, jnp.bfloat16)


def measure(kernel: str, name: str, b: int, grid: tuple[int, int, int], w: int, heads: int,
            implementation: str, iters: int) -> dict:
  import jax
  import jax.numpy as jnp

  apply, inputs, dy = _problem(kernel, b, grid, w, heads)

  def run(impl):
    forward = jax.jit(lambda *a: apply(impl, *a))

    @jax.jit
    def forward_backward(*a):
      y, pullback = jax.vjp(lambda *a: apply(impl, *a), *a)
      return y, pullback(dy.astype(y.dtype))

    fwd = common.time_calls(forward, *inputs, iters=iters)
    both = common.time_calls(forward_backward, *inputs, iters=iters)
    return fwd['mean_s'] * 1e3, both['mean_s'] * 1e3, forward_backward(*inputs)

  xla_fwd, xla_both, (y_ref, g_ref) = run('xla')
  k_fwd, k_both, (y, g) = run(implementation)

  # The float32 formula is the exact answer both are held to: XLA's bfloat16 path rounds the
  # normalized value and the modulation / rotation separately, the kernel once.
  f32 = lambda a: a.astype(jnp.float32)
  exact_inputs = tuple(f32(a) for a in inputs)
  y_exact, pullback = jax.vjp(lambda *a: apply('xla', *a, out_dtype=jnp.float32), *exact_inputs)
  g_exact = pullback(f32(dy))

  def rel(a, b):
    return float(jnp.max(jnp.abs(f32(a) - f32(b))) / jnp.maximum(jnp.max(jnp.abs(f32(b))), 1e-12))

  names = ('y',) + (('dx', 'dshift', 'dscale') if kernel == 'norm_modulate' else ('dq', 'dscale'))
  kernel_err = dict(zip(names, [rel(y, y_exact)] + [rel(a, e) for a, e in zip(g, g_exact)]))
  xla_err = dict(zip(names, [rel(y_ref, y_exact)] + [rel(a, e) for a, e in zip(g_ref, g_exact)]))
  # Parity: no further from float32 than XLA's own path (slack for summation order), or within
  # bfloat16 resolution.
  ok = all(kernel_err[k] <= max(1.5 * xla_err[k], 4e-3) for k in names)
  return {'benchmark': 'norm_kernel', 'kernel': kernel, 'shape': name, 'batch': b,
          'tokens': grid[0] * grid[1] * grid[2], 'width': w, 'heads': heads,
          'device': jax.devices()[0].device_kind, 'implementation': implementation,
          'xla_forward_ms': round(xla_fwd, 4), 'kernel_forward_ms': round(k_fwd, 4),
          'xla_fwd_bwd_ms': round(xla_both, 4), 'kernel_fwd_bwd_ms': round(k_both, 4),
          'fwd_bwd_speedup': round(xla_both / k_both, 3),
          'max_rel_error_vs_float32': {'kernel': kernel_err, 'xla': xla_err}, 'parity_ok': ok}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--small', action='store_true', help='CPU: a tiny shape, interpreted')
  parser.add_argument('--iters', type=int, default=20)
  args = parser.parse_args()
  if args.small:
    os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  shapes, impl = (SMALL_SHAPES, 'pallas_interpret') if args.small else (SHAPES, 'pallas')
  failed = False
  for kernel in KERNELS:
    for name, b, grid, w, heads in shapes:
      result = measure(kernel, name, b, grid, w, heads, impl, 2 if args.small else args.iters)
      failed |= not result['parity_ok']
      print(json.dumps(result), flush=True)
  if failed:
    raise SystemExit('norm kernel parity check failed (max_rel_error_vs_float32 above)')


if __name__ == '__main__':
  main()
