"""Attention kernels at the DiT's shapes: cuDNN's flash attention against the Pallas ones.

The small config spends a third of its step in attention (cuDNN's flash backward alone 17.4 of
73.2 ms at head dim 64: benchmarks/RESULTS.md); this measures whether another kernel would do
better before any model code depends on it. Per shape and implementation: forward and
forward+backward time (ms a call), the achieved rate (4 T^2 D H B FLOPs forward, 3.5x that for
forward+backward: FlashAttention's convention, the backward 2.5x the forward), and the largest
error of output and gradients against the float32 formula on the first two samples, relative to
the reference's largest value (the parity check: at most 0.02; bfloat16 inputs and outputs).

Implementations: 'cudnn' (jax.nn.dot_product_attention, the model's default on GPU), 'mosaic'
(jax.experimental.pallas.ops.gpu.attention_mgpu, a
warp-specialized Hopper kernel with its own backward; it applies no softmax scale, so q is
scaled first, and takes float16 operands only, so the casts are part of its time),
'tokamax_mosaic' and 'tokamax_triton' (tokamax.dot_product_attention, Google's Pallas kernel
library that succeeds jax.experimental.pallas.ops: its Hopper Mosaic GPU flash attention with a
Mosaic backward, and its Triton one; bfloat16 operands; with --tune also after
tokamax.autotune over its block sizes, stages and warp groups, the chosen configs printed) and,
for the CPU smoke test, 'xla'. tokamax is not a dependency of the project: pip install tokamax
to run its rows (they report an error without it). Layout everywhere (B, T, H, D), bfloat16.
Prints one JSON line per (shape, implementation); a failed kernel (compile error, shared
memory) is reported, not fatal.

  python benchmarks/attention_bench.py                   # GPU: the shapes below
  python benchmarks/attention_bench.py --shapes small --impls cudnn,tokamax_mosaic --tune
  python benchmarks/attention_bench.py --small           # CPU smoke test ('xla' only)
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402  pylint: disable=wrong-import-position

# (name, batch, tokens, heads, head_dim): the small config's training step (6 heads of 64, and
# the 3 heads of 128 variant), wvd_2b's step and its batch-1 sampling forward.
SHAPES = (('small', 64, 2048, 6, 64), ('small_hd128', 64, 2048, 3, 128),
          ('wvd_2b', 4, 2048, 16, 128), ('wvd_2b_sampling', 1, 2048, 16, 128))
SMALL_SHAPES = (('tiny', 2, 128, 2, 64),)
# Mosaic GPU tilings tried per shape (forward block_q, block_kv; backward blocks 64 x 64).
MOSAIC_TILINGS = ((64, 128), (64, 64))


IMPLEMENTATIONS = ('cudnn', 'mosaic', 'tokamax_mosaic', 'tokamax_triton', 'xla')


def _attention(impl: str, tiling=None):
  import jax
  import jax.numpy as jnp
  if impl in ('xla', 'cudnn'):
    return lambda q, k, v: jax.nn.dot_product_attention(q, k, v, implementation=impl)
  if impl.startswith('tokamax_'):
    import tokamax  # pylint: disable=import-outside-toplevel
    backend = impl.removeprefix('tokamax_')
    return lambda q, k, v: tokamax.dot_product_attention(q, k, v, implementation=backend)
  from jax.experimental.pallas.ops.gpu import attention_mgpu  # pylint: disable=import-outside-toplevel,line-too-long
  block_q, block_kv = tiling
  config = attention_mgpu.TuningConfig(
      block_q=block_q, block_kv=block_kv, max_concurrent_steps=2, block_q_dkv=64,
      block_kv_dkv=64, block_q_dq=64, block_kv_dq=64)

  def mosaic(q, k, v):
    # Its shared-memory buffers are float16 (JAX 0.11.2 refuses bfloat16 operands), so the
    # operands go in as float16 (their range suffices after the QK norm) and the output back.
    dtype = q.dtype
    q = q.astype(jnp.float32) * q.shape[-1] ** -0.5
    out = attention_mgpu.attention(*(a.astype(jnp.float16) for a in (q, k, v)), config)
    return out.astype(dtype)

  return mosaic


def _reference(q, k, v):
  import jax
  import jax.numpy as jnp
  f32 = lambda a: a.astype(jnp.float32)
  return jax.nn.dot_product_attention(f32(q), f32(k), f32(v), implementation='xla')


def _tokamax_configs(tuned) -> list[str]:
  """The configs a tokamax.autotune result chose, one string per op call."""
  return [f'{type(ba.op).__name__}: {data.fastest_config}' for ba, data in tuned.data]


def measure(name, b, t, h, d, impl, tiling, iters: int, tune: bool = False) -> dict:
  import contextlib  # pylint: disable=import-outside-toplevel
  import jax
  import jax.numpy as jnp
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  q, k, v, dy = (jax.random.normal(key, (b, t, h, d), jnp.bfloat16) for key in keys)
  row = {'benchmark': 'attention', 'shape': name, 'batch': b, 'tokens': t, 'heads': h,
         'head_dim': d, 'implementation': impl, 'tiling': tiling, 'tuned': tune}
  try:
    fn = _attention(impl, tiling)

    def forward_backward_fn(q, k, v, dy):
      y, pullback = jax.vjp(fn, q, k, v)
      return y, pullback(dy)

    tuned = contextlib.nullcontext()
    if tune:  # tokamax ops read the autotuned configs while traced inside the result's context.
      import tokamax  # pylint: disable=import-outside-toplevel
      tuned = tokamax.autotune(forward_backward_fn, q, k, v, dy, progress_bar=False)
      row['configs'] = _tokamax_configs(tuned)
    with tuned:
      forward = jax.jit(fn)
      forward_backward = jax.jit(forward_backward_fn)
      fwd = common.time_calls(forward, q, k, v, iters=iters)['mean_s']
      both = common.time_calls(forward_backward, q, k, v, dy, iters=iters)['mean_s']
      n = min(b, 2)
      y, grads = forward_backward(q[:n], k[:n], v[:n], dy[:n])
  except Exception as e:  # pylint: disable=broad-except  (a kernel that does not build)
    return {**row, 'error': f'{type(e).__name__}: {str(e)[:300]}'}
  flops = 4 * t * t * d * h * b
  y_ref, pullback = jax.vjp(_reference, q[:n], k[:n], v[:n])
  grads_ref = pullback(dy[:n].astype(jnp.float32))
  rel = lambda a, ref: float(jnp.abs(a.astype(jnp.float32) - ref).max() /
                             (jnp.abs(ref).max() + 1e-12))
  errors = {'out': rel(y, y_ref), **{f'd{x}': rel(g, r) for x, g, r in zip('qkv', grads,
                                                                            grads_ref)}}
  return {**row, 'forward_ms': fwd * 1e3, 'forward_backward_ms': both * 1e3,
          'forward_tflops': flops / fwd / 1e12,
          'forward_backward_tflops': 3.5 * flops / both / 1e12,
          'max_rel_error': errors}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--small', action='store_true', help='tiny shape, XLA only (CPU smoke test)')
  p.add_argument('--iters', type=int, default=10)
  p.add_argument('--shapes', default=','.join(s[0] for s in SHAPES),
                 help='comma-separated names of SHAPES')
  p.add_argument('--impls', default='cudnn,mosaic',
                 help=f'comma-separated, of {IMPLEMENTATIONS}')
  p.add_argument('--tune', action='store_true',
                 help='tokamax rows: also run them after tokamax.autotune')
  args = p.parse_args(argv)
  impls = args.impls.split(',')
  unknown = [i for i in impls if i not in IMPLEMENTATIONS]
  known_shapes = {s[0]: s for s in SHAPES}
  shapes = [known_shapes.get(name) for name in args.shapes.split(',')]
  if unknown:
    p.error(f'unknown implementation(s) {unknown}; known: {IMPLEMENTATIONS}')
  if None in shapes:
    p.error(f'unknown shape in {args.shapes!r}; known: {sorted(known_shapes)}')
  if args.small:
    os.environ.setdefault('JAX_PLATFORMS', 'cpu')
    runs, shapes = [('xla', None, False)], SMALL_SHAPES
  else:
    runs = []
    for impl in impls:
      if impl == 'mosaic':
        runs += [('mosaic', tiling, False) for tiling in MOSAIC_TILINGS]
      else:
        runs.append((impl, None, False))
        if args.tune and impl.startswith('tokamax_'):
          runs.append((impl, None, True))
  rows = []
  for shape in shapes:
    for impl, tiling, tune in runs:
      row = measure(*shape, impl, tiling, iters=2 if args.small else args.iters, tune=tune)
      rows.append(row)
      print(json.dumps(row), flush=True)
  failed = [r for r in rows if 'error' not in r and max(r['max_rel_error'].values()) > 0.02]
  if failed:
    print(f'parity failed: {[(r["shape"], r["implementation"]) for r in failed]}',
          file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
