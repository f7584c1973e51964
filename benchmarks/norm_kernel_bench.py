"""The fused RMSNorm + adaLN modulation kernel (model.norm_kernel) against XLA: parity and time.

For each shape, float32 residual stream in, bfloat16 out (the DiT's case): forward and
forward+backward (d x, d shift, d scale) timed for the 'xla' formula and the Pallas kernel, and
the kernel's outputs and gradients compared with the formula's (the GPU parity check of the
kernel; the CPU tests run it interpreted). The kernel runs twice per block (before attention
and before the MLP), so a block saves twice the difference. Prints one JSON line per shape.

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

# (name, batch, tokens, width): wvd_2b at batch 4 and the small config at batch 64.
SHAPES = (('wvd_2b', 4, 2048, 2048), ('small', 64, 2048, 384))
SMALL_SHAPES = (('tiny', 2, 96, 48),)


def measure(name: str, b: int, t: int, w: int, implementation: str, iters: int) -> dict:
  import jax
  import jax.numpy as jnp
  from wvd_jax.models import fused_norm

  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  x = jax.random.normal(keys[0], (b, t, w), jnp.float32) * 2.0 + 0.3
  shift = (jax.random.normal(keys[1], (b, w)) * 0.3).astype(jnp.bfloat16)
  scale = (jax.random.normal(keys[2], (b, w)) * 0.3).astype(jnp.bfloat16)
  dy = jax.random.normal(keys[3], (b, t, w), jnp.bfloat16)

  def run(impl):
    apply = lambda x, s, c: fused_norm.norm_modulate(x, s, c, out_dtype=jnp.bfloat16,
                                                     implementation=impl)
    forward = jax.jit(apply)

    @jax.jit
    def forward_backward(x, s, c):
      y, pullback = jax.vjp(apply, x, s, c)
      return y, pullback(dy)

    fwd = common.time_calls(forward, x, shift, scale, iters=iters)
    both = common.time_calls(forward_backward, x, shift, scale, iters=iters)
    return fwd['mean_s'] * 1e3, both['mean_s'] * 1e3, forward_backward(x, shift, scale)

  xla_fwd, xla_both, (y_ref, g_ref) = run('xla')
  k_fwd, k_both, (y, g) = run(implementation)

  # The float32 formula is the exact answer both are held to: XLA's bfloat16 path rounds the
  # normalized value and the modulation separately, the kernel once, so their errors differ.
  f32 = lambda a: a.astype(jnp.float32)
  exact_fn = lambda x, s, c: fused_norm.norm_modulate(x, s, c, out_dtype=jnp.float32)
  y_exact, pullback = jax.vjp(exact_fn, x, f32(shift), f32(scale))
  g_exact = pullback(f32(dy))

  def rel(a, b):
    return float(jnp.max(jnp.abs(f32(a) - f32(b))) / jnp.maximum(jnp.max(jnp.abs(f32(b))), 1e-12))

  names = ('y', 'dx', 'dshift', 'dscale')
  kernel_err = dict(zip(names, [rel(y, y_exact)] + [rel(a, e) for a, e in zip(g, g_exact)]))
  xla_err = dict(zip(names, [rel(y_ref, y_exact)] + [rel(a, e) for a, e in zip(g_ref, g_exact)]))
  # Parity: the kernel no further from the exact answer than XLA's own bf16 path (with slack
  # for summation order), or within bf16 resolution.
  ok = all(kernel_err[k] <= max(1.5 * xla_err[k], 4e-3) for k in names)
  return {'benchmark': 'norm_kernel', 'shape': name, 'batch': b, 'tokens': t, 'width': w,
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
  for name, b, t, w in shapes:
    result = measure(name, b, t, w, impl, 2 if args.small else args.iters)
    failed |= not result['parity_ok']
    print(json.dumps(result), flush=True)
  if failed:
    raise SystemExit('norm kernel parity check failed (max_rel_error_vs_float32 above)')


if __name__ == '__main__':
  main()
