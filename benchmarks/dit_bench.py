"""Forward and forward+backward speed of the WVD DiT; prints one JSON object.

Default: the paper's 2B shape (configs/wvd_2b.py: depth 28, width 2048, 16 heads of 128, MLP x4,
patch 2) on 8 frames of 32x32x(4+4) latents (8 x 256x256 RGB+XYZ through the SD VAE: 2048
tokens), batch 4, bfloat16 compute with float32 parameters, cuDNN attention on GPU ('auto'), on
the default JAX device (meant for one GPU). ``--small`` runs a tiny config on CPU in seconds.

  python benchmarks/dit_bench.py                               # both variants, 2B, GPU
  python benchmarks/dit_bench.py --variants unrolled --remat minimal
  python benchmarks/dit_bench.py --small

Variants: 'unrolled' (Python loop over the stacked blocks, the default model.scan_layers=False)
and 'scanned' (lax.scan over them). With several variants each runs in its own subprocess (in
this process with --small), so that peak memory counters do not mix; every variant measures the
bf16 matmul rate itself (8192^3, best of 5 blocks of 10 calls) and reports MFU against it.

Timed functions (split/merge + plain jax.jit, parameters as arguments):
  forward           DiT(params, x, t, cond_mask)
  forward_backward  value_and_grad of mean(DiT(...)^2) w.r.t. the float32 parameters (no
                    optimizer; a train step adds AdamW and EMA over the 2B parameters).
Model FLOPs are analytic (wvd_jax.training.flops: every matmul 2*m*n*k, attention 4*T^2*width per
block; forward+backward = 3 x forward, remat recomputation not counted), the convention of
DESIGN.md's table (80.8 TFLOP for a 2B train step at batch 4). XLA's own cost analysis is
reported too; it counts the cuDNN attention custom call as 0 FLOPs and a scanned loop's body
once (not depth times), so compare it across variants with care.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks import common  # pylint: disable=wrong-import-position  (imports no JAX)

VARIANTS = ('unrolled', 'scanned')


def _parse(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--small', action='store_true', help='tiny config on CPU (seconds)')
  p.add_argument('--variants', default='unrolled,scanned',
                 help='comma-separated subset of unrolled,scanned')
  p.add_argument('--modes', default='forward,forward_backward',
                 help='comma-separated subset of forward,forward_backward')
  p.add_argument('--batch', type=int, default=None, help='default 4 (2 with --small)')
  p.add_argument('--residual_dtype', choices=('bfloat16', 'float32'), default='float32')
  p.add_argument('--remat', choices=('none', 'full', 'dots_saveable', 'minimal'), default='none')
  p.add_argument('--iters', type=int, default=None, help='calls per timed block (10; 2 small)')
  common.add_model_args(p)
  return p.parse_args(argv)


def _dit_config(args):
  return common.dit_config(args, small_channels=3, remat=args.remat,
                           residual_dtype=args.residual_dtype)


def run_variant(args, variant: str) -> dict:
  """Benchmarks one variant in this process."""
  import dataclasses

  import jax
  import jax.numpy as jnp
  from flax import nnx

  from benchmarks import common
  from wvd_jax.models import dit, layers
  from wvd_jax.training import flops

  cfg = dataclasses.replace(_dit_config(args), scan_layers=variant == 'scanned')
  batch = args.batch or (2 if args.small else 4)
  frames = args.frames or (2 if args.small else 8)
  size = args.latent_size or (8 if args.small else 32)
  iters = args.iters or (2 if args.small else 10)
  tokens = frames * (size // cfg.patch_size) ** 2

  matmul = common.matmul_tflops(size=args.matmul_size or (256 if args.small else None))
  graphdef = nnx.graphdef(nnx.eval_shape(lambda: dit.DiT(cfg, rngs=nnx.Rngs(0))))
  params = common.perturbed_params(cfg)
  key = jax.random.PRNGKey(2)
  x = jax.random.normal(key, (batch, frames, size, size, cfg.in_channels), jnp.float32)
  t = jax.random.uniform(jax.random.fold_in(key, 1), (batch,))
  cond = jnp.zeros((batch, frames, 2)).at[:, 0, 0].set(1.0)

  def forward(p, x, t, c):
    return nnx.merge(graphdef, p)(x, t, c)

  def loss(p, x, t, c):
    return jnp.mean(forward(p, x, t, c) ** 2)

  functions = {'forward': jax.jit(forward), 'forward_backward': jax.jit(jax.value_and_grad(loss))}
  analytic = {'forward': flops.dit_forward_flops(cfg, batch, tokens),
              'forward_backward': flops.dit_train_step_flops(cfg, batch, tokens)}
  result = {
      'variant': variant,
      'attention': layers.resolve_attention_implementation(cfg.attention, cfg.compute_dtype),
      'matmul': matmul,
  }
  for mode in args.modes.split(','):
    start = time.perf_counter()
    compiled = functions[mode].lower(params, x, t, cond).compile()
    compile_s = time.perf_counter() - start
    timing = common.time_calls(compiled, params, x, t, cond, iters=iters, warmup=2,
                               repeats=args.repeats)
    tflops = analytic[mode] / timing['mean_s'] / 1e12
    xla = common.xla_flops(compiled)
    result[mode] = {
        'ms': 1e3 * timing['mean_s'],
        'block_ms': [1e3 * s for s in timing['block_means_s']],
        'tflops': tflops,
        'mfu': tflops / matmul['tflops'],
        'compile_s': compile_s,
        'xla_cost_analysis_tflop': None if xla is None else xla / 1e12,
        'xla_memory_bytes': common.memory_analysis(compiled),
    }
  result['peak_memory_bytes'] = common.peak_memory_bytes()
  return result


def main(argv=None) -> dict:
  argv = sys.argv[1:] if argv is None else list(argv)
  args = _parse(argv)
  if args.small:
    os.environ.setdefault('JAX_PLATFORMS', 'cpu')
    # A smoke test: XLA:CPU compiles about twice as fast without LLVM optimizations.
    os.environ.setdefault('XLA_FLAGS', '--xla_backend_optimization_level=0')
    args.repeats = min(args.repeats, 2)
  variants = [v for v in args.variants.split(',') if v]
  unknown = set(variants) - set(VARIANTS) or set(args.modes.split(',')) - {
      'forward', 'forward_backward'}
  if unknown:
    raise SystemExit(f'unknown variants/modes: {sorted(unknown)}')
  cfg = _dit_config(args)
  batch = args.batch or (2 if args.small else 4)
  frames = args.frames or (2 if args.small else 8)
  size = args.latent_size or (8 if args.small else 32)
  tokens = frames * (size // cfg.patch_size) ** 2
  from wvd_jax.training import flops
  report = {
      'benchmark': 'dit',
      'model': {k: getattr(cfg, k) for k in ('width', 'depth', 'num_heads', 'head_dim',
                                              'mlp_hidden', 'patch_size', 'in_channels',
                                              'compute_dtype', 'residual_dtype', 'attention',
                                              'remat')},
      'batch': batch, 'frames': frames, 'latent_size': size, 'tokens': tokens,
      'analytic_tflop': {'forward': flops.dit_forward_flops(cfg, batch, tokens) / 1e12,
                         'forward_backward': flops.dit_train_step_flops(cfg, batch,
                                                                        tokens) / 1e12},
      'variants': {},
  }
  if len(variants) == 1 or args.small:
    import jax
    from flax import nnx

    from benchmarks import common
    from wvd_jax.models import dit
    abstract = nnx.state(nnx.eval_shape(lambda: dit.DiT(cfg, rngs=nnx.Rngs(0))))
    report['params'] = int(sum(v.size for v in jax.tree.leaves(abstract)))
    report['device'] = common.device_info()
    for variant in variants:
      report['variants'][variant] = run_variant(args, variant)
  else:
    # One subprocess per variant: separate compile caches and peak-memory counters, and the
    # parent never touches the accelerator (JAX would preallocate most of its memory).
    for variant in variants:
      proc = subprocess.run([sys.executable, os.path.abspath(__file__), *argv,
                             '--variants', variant], capture_output=True, text=True, cwd=REPO)
      if proc.returncode:
        report['variants'][variant] = {'error': proc.stderr[-3000:]}
        continue
      child = json.loads(proc.stdout.strip().splitlines()[-1])
      report['variants'][variant] = child['variants'][variant]
      report.setdefault('params', child['params'])
      report.setdefault('device', child['device'])
  return report


if __name__ == '__main__':
  print(json.dumps(main()))
