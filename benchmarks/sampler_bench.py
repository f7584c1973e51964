"""Sampling latency of the WVD DiT under the jitted sampler, with its compute floor; prints JSON.

Default: the 2B DiT of configs/wvd_2b.py (width 2048, depth 28, 16 heads, patch 2, MLP x4) on
8 frames of 32x32 latents with 8 channels (4 RGB + 4 XYZ through the SD VAE: 2048 tokens),
batch 1, bfloat16 compute with float32 parameters (random, perturbed so that adaLN-zero's zero
gates do not make the work trivially zero), on the default JAX device (meant for one GPU).
The sampler: DDIM, 50 steps, frame 0's RGB a clean condition (the single-image task), timed with
0 and 1 Langevin corrector steps per level (``--langevin 0,1``). ``--small`` runs a tiny model on
CPU in seconds (a smoke test of this script).

  python benchmarks/sampler_bench.py
  python benchmarks/sampler_bench.py --guidance 2.0 --langevin 0,1,2
  python benchmarks/sampler_bench.py --small

Reported per Langevin setting: network evaluations (num_steps * (1 + langevin), x2 with
guidance), latency (best of ``--repeats`` blocks of ``--iters`` sampler calls, each a whole
sampling loop in one jit call), the compute floor = analytic forward FLOPs
(wvd_jax.training.flops.dit_forward_flops at this batch; 2B at batch 1: ~6.7 TFLOP) x network
evaluations / the measured dense bf16 matmul rate (benchmarks/common.matmul_tflops), and the
floor's fraction of the latency. A lone jitted forward pass is timed too, so that
``loop_overhead_s`` = latency - evaluations x forward shows what the sampler adds around the
network (the lone forward computes its adaLN modulation rows from t, the loop reads them from the
table of all levels computed before it: builder.LoopModel, so the overhead can be negative;
``--time_rows_in_loop`` computes them at every evaluation, the old way). eta, guidance (but not
on/off) and snr are traced; num_steps and langevin_steps are static (each Langevin setting
compiles its own loop, whose trip count XLA then knows; ``sampler_compile_s`` is the first's).
``loop_parity``: the network as the loop runs it against the plain network on the original
float32 parameters (see ``_loop_parity``); the script exits 1 when it fails.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks import common  # pylint: disable=wrong-import-position  (imports no JAX)


def _parse(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--small', action='store_true', help='tiny model on CPU (seconds)')
  p.add_argument('--batch', type=int, default=1, help='samples per sampler call')
  p.add_argument('--num_steps', type=int, default=50)
  p.add_argument('--langevin', default='0,1', help='comma-separated corrector steps per level')
  p.add_argument('--kind', choices=('ddim', 'ancestral'), default='ddim')
  p.add_argument('--eta', type=float, default=0.0)
  p.add_argument('--guidance', type=float, default=1.0, help='1 = off; else 2B per evaluation')
  p.add_argument('--snr', type=float, default=0.16)
  p.add_argument('--iters', type=int, default=1, help='sampler calls per timed block')
  p.add_argument('--devices', type=int, default=1,
                 help='spread the batch over this many devices (data parallel); --batch is '
                      'per device')
  p.add_argument('--no_cast_params', action='store_true',
                 help='keep the block weights float32 (the tasks cast them once: '
                      'models/builder.inference_params)')
  p.add_argument('--stacked_in_loop', action='store_true',
                 help='slice the stacked blocks inside the loop (before builder.split_for_loop)')
  p.add_argument('--fp8_quantize_in_loop', action='store_true',
                 help='with --fp8: quantize the FP8 kernels at every evaluation (before '
                      'builder.inference_params quantized them once)')
  p.add_argument('--time_rows_in_loop', action='store_true',
                 help='compute the adaLN modulation rows at every evaluation (before '
                      'builder.LoopModel computed all time levels ahead)')
  p.add_argument('--profile', default='',
                 help='a directory: also profile the lone forward pass and one whole sampler '
                      'call (kernel time by category and by source line)')
  common.add_model_args(p)
  return p.parse_args(argv)


PARITY_TOLERANCE = 0.02  # max |loop - plain| / max |plain|: bfloat16 noise through 28 blocks.


def _loop_parity(graphdef, raw_params, cfg, known, cond_mask, num_steps: int) -> dict:
  """The network as the sampler's loop runs it (weights cast, FP8 kernels in their inference
  form, the modulation rows of every level computed ahead) against the plain network on the
  original float32 parameters, at the first, middle and last level: the GPU parity check of
  what diffusion/generate.py prepares (bit-identical on CPU: tests/models/test_builder.py; on a
  GPU the GEMMs of 50 rows and of one row may round differently)."""
  import functools

  import jax
  import jax.numpy as jnp

  from wvd_jax.models import builder
  times = 1.0 - jnp.arange(num_steps, dtype=jnp.float32) / num_steps
  model = builder.LoopModel(graphdef)
  prepared = builder.split_for_loop(builder.inference_params(raw_params, cfg.compute_dtype))
  prepared = jax.jit(model.with_time_levels)(prepared, times)
  plain, looped = jax.jit(functools.partial(builder.apply_model, graphdef)), jax.jit(model)
  worst = 0.0
  for level in sorted({0, num_steps // 2, num_steps - 1}):
    t = jnp.full((known.shape[0],), times[level])
    want = plain(raw_params, known, t, cond_mask)
    got = looped(prepared, known, t, cond_mask, level=jnp.int32(level))
    worst = max(worst, float(jnp.abs(got - want).max() / jnp.abs(want).max()))
  return {'max_rel_diff': worst, 'tolerance': PARITY_TOLERANCE,
          'pass': worst <= PARITY_TOLERANCE}


def _dit_config(args):
  return common.dit_config(args, small_channels=4)


def main(argv=None) -> dict:
  args = _parse(argv)
  if args.small:
    os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  import functools

  import jax
  import jax.numpy as jnp
  from flax import nnx

  from benchmarks import common
  from wvd_jax.diffusion import samplers, schedules
  from wvd_jax.models import dit, layers
  from wvd_jax.training import flops

  cfg = _dit_config(args)
  batch = args.batch * args.devices
  frames = args.frames or (2 if args.small else 8)
  size = args.latent_size or (8 if args.small else 32)
  tokens = frames * (size // cfg.patch_size) ** 2
  langevin = [int(k) for k in args.langevin.split(',') if k]
  configs = {k: samplers.SamplerConfig(kind=args.kind, num_steps=args.num_steps, eta=args.eta,
                                       guidance=args.guidance, langevin_steps=k, snr=args.snr)
             for k in langevin}

  matmul = common.matmul_tflops(size=args.matmul_size or (256 if args.small else None))
  graphdef = nnx.graphdef(nnx.eval_shape(lambda: dit.DiT(cfg, rngs=nnx.Rngs(0))))
  params = raw_params = common.perturbed_params(cfg)
  from wvd_jax.models import builder  # pylint: disable=import-outside-toplevel
  if not args.no_cast_params:  # What diffusion/generate.py does before sampling.
    params = builder.inference_params(params, cfg.compute_dtype,
                                      quantize_fp8=not args.fp8_quantize_in_loop)
  num_params = int(sum(v.size for v in jax.tree.leaves(params)))
  c = cfg.in_channels // 2
  shape = (batch, frames, size, size, cfg.in_channels)
  key = jax.random.PRNGKey(2)
  known = jax.random.normal(key, shape, jnp.float32)
  cond_mask = jnp.zeros((batch, frames, 2)).at[:, 0, 0].set(1.0)
  known_mask = jnp.zeros(shape).at[:, 0, :, :, :c].set(1.0)
  if args.devices > 1:  # Sampling spread over devices by batch; parameters replicated.
    mesh = jax.sharding.Mesh(jax.devices()[:args.devices], ('data',))
    split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
    known, known_mask, cond_mask = jax.device_put((known, known_mask, cond_mask), split)
    params = jax.device_put(params, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  # What generate.py does before its loop: the blocks' weights apart per layer, read in place
  # by every step (--stacked_in_loop: slice the stack inside the loop, the old way).
  if args.stacked_in_loop:
    apply_fn = functools.partial(builder.apply_model, graphdef)
  else:
    params = builder.split_for_loop(params)
    # One object, one compile; LoopModel also computes every level's modulation rows ahead.
    apply_fn = (functools.partial(builder.apply_loop_model, graphdef) if args.time_rows_in_loop
                else builder.LoopModel(graphdef))
  schedule = schedules.CosineSchedule(shift=1.0)

  # The network alone, for the loop overhead.
  forward = jax.jit(apply_fn)
  t = jnp.full((batch,), 0.5)
  if args.devices > 1:
    t = jax.device_put(t, split)
  forward_timing = common.time_calls(forward, params, known, t, cond_mask, iters=5 if
                                     not args.small else 2, warmup=1, repeats=args.repeats)

  checks_generate_path = not (args.stacked_in_loop or args.time_rows_in_loop or
                               args.fp8_quantize_in_loop or args.no_cast_params or
                               args.devices > 1)
  parity = (_loop_parity(graphdef, raw_params, cfg, known, cond_mask, args.num_steps)
            if checks_generate_path else None)
  del raw_params
  profile = (common.profile_calls(forward, (params, known, t, cond_mask), 3, args.profile)
             if args.profile else None)
  forward_flops = flops.dit_forward_flops(cfg, batch, tokens)
  runs = {}
  compile_s = sampler_profile = None
  for k, config in configs.items():
    def run(params, rng, config=config):
      return samplers.sample(apply_fn, params, rng, known, known_mask, cond_mask,
                             schedule=schedule, prediction='v', config=config)

    timing = common.time_calls(run, params, jax.random.PRNGKey(3), iters=args.iters, warmup=1,
                               repeats=args.repeats)
    if args.profile and sampler_profile is None:
      # The whole loop (one call), whose kernels beyond the forward's are the loop's overhead.
      sampler_profile = common.profile_calls(jax.jit(run), (params, jax.random.PRNGKey(3)), 1,
                                             os.path.join(args.profile, 'sampler'))
    if compile_s is None:
      compile_s = timing['first_call_s'] - timing['mean_s']
    evals = config.network_evals
    floor_s = forward_flops * evals / (matmul['tflops'] * 1e12 * args.devices)
    runs[f'langevin_{k}'] = {
        'langevin_steps': k,
        'network_evals': evals,
        'latency_s': timing['mean_s'],
        'block_s': timing['block_means_s'],
        'first_call_s': timing['first_call_s'],
        'per_eval_ms': 1e3 * timing['mean_s'] / evals,
        'compute_floor_s': floor_s,
        'floor_fraction': floor_s / timing['mean_s'],
        'loop_overhead_s': timing['mean_s'] - evals * forward_timing['mean_s'],
    }

  return {
      'benchmark': 'sampler',
      'device': common.device_info(),
      'model': {k: getattr(cfg, k) for k in ('width', 'depth', 'num_heads', 'head_dim',
                                              'mlp_hidden', 'patch_size', 'in_channels',
                                              'compute_dtype', 'attention')},
      'resolved_attention': layers.resolve_attention_implementation(cfg.attention,
                                                                    cfg.compute_dtype),
      'params': num_params, 'cast_params': not args.no_cast_params,
      'fp8_kernels_quantized_once': cfg.fp8 and not (args.no_cast_params or
                                                      args.fp8_quantize_in_loop),
      'layers_split_before_loop': not args.stacked_in_loop,
      'time_rows_ahead': not (args.stacked_in_loop or args.time_rows_in_loop), 'fp8': cfg.fp8,
      'norm_kernel': cfg.norm_kernel,
      'batch': batch, 'frames': frames, 'latent_size': size, 'tokens': tokens,
      'sampler': {'kind': args.kind, 'num_steps': args.num_steps, 'eta': args.eta,
                  'guidance': args.guidance, 'snr': args.snr,
                  'condition': 'frame 0 RGB clean'},
      'forward_tflop': forward_flops / 1e12,
      'matmul': matmul,
      'forward_ms': 1e3 * forward_timing['mean_s'],
      'forward_floor_ms': 1e3 * forward_flops / (matmul['tflops'] * 1e12),
      'sampler_compile_s': compile_s,
      'loop_parity': parity,
      'forward_profile': profile,
      'sampler_profile': sampler_profile,
      'runs': runs,
      'peak_memory_bytes': common.peak_memory_bytes(),
  }


if __name__ == '__main__':
  result = main()
  print(json.dumps(result))
  if result['loop_parity'] is not None and not result['loop_parity']['pass']:
    print(f"loop parity failed: {result['loop_parity']}", file=sys.stderr)
    sys.exit(1)
