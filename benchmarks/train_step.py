"""Times a config's (default wvd_2b) full train step on one device and prints one JSON object.

The step is the one training runs (wvd_jax.training.train.make_train_step): conditioning-pattern
sampling, noising, the DiT forward and backward, the masked per-modality v-loss, gradient
clipping, AdamW, the EMA update and the non-finite guard, jitted with buffer donation, on a batch
with the trainer's keys, shapes and dtypes for either data path:
  --data=latents (default): cached latents (config.data.latents_dir; data/latents.py's fields:
      posterior mean and std, 8 frames of 32x32x4 RGB + 32x32x4 XYZ = 2048 tokens with patch 2,
      and the latent mask): the step samples z = mean + std * eps and skips the encoder;
  --data=pixels: 256x256 RGB and XYZ frames (16 a sample for wvd_2b): the step runs the SD VAE
      encoder (random weights unless --vae_weights) on them first, as the trainer does without
      cached latents.
MFU counts the DiT's model FLOPs only (the encoder's are in xla_tflop_per_step, XLA's count of
the whole step). The encode mode's own throughput: benchmarks/encode_bench.py.

step_ms / mfu: median of steps each synced (as the PyTorch peer times its steps);
step_ms_pipelined / mfu_pipelined: steps dispatched back to back with one sync at the end, as
the trainer runs them (the figure its metrics.jsonl mfu compares to; input pipeline excluded).

Also times parts of the step (forward, forward+backward, optimizer+EMA) so the largest costs are
visible, and measures the bf16 matmul rate in the same process for MFU.

  python benchmarks/train_step.py                  # wvd_2b, batch 4 (GPU)
  python benchmarks/train_step.py --config small --batch 32 --parts 0   # the proof run's step
  python benchmarks/train_step.py --data pixels     # the step with the VAE encoder inside
  python benchmarks/train_step.py --small [--data pixels]   # a tiny model (and VAE) on CPU
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # noqa: E402  pylint: disable=wrong-import-position

from wvd_jax.data import latents
from wvd_jax.models import autoencoder, dit, vae, vae_autoencoder
from wvd_jax.training import flops, optimizer, sharding, train
from wvd_jax.training import state as state_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_autoencoder(config, weights: str, small: bool):
  """The config's autoencoder. The SD VAE: its weights if given, else random weights of its
  architecture (the tiny VAE for --small); compute in model.compute_dtype, as
  vae_autoencoder.from_config."""
  if config.autoencoder.kind == 'pixel':
    return autoencoder.PixelAutoencoder()
  if weights:
    config.autoencoder.weights = weights
    return vae_autoencoder.from_config(config)
  dtype = jnp.dtype(config.model.compute_dtype)
  return vae_autoencoder.VAEAutoencoder.random_init(
      vae.tiny_config() if small else vae.sd_config(), dtype=dtype)


def make_batch(config, data: str, key) -> dict:
  """A global batch with the keys, shapes and dtypes the trainer's pipeline gives the step:
  pipeline.latent_examples' for 'latents', pipeline.global_examples' for 'pixels'."""
  b, n, size = config.data.batch_size, config.data.num_frames, config.data.image_size
  keys = iter(jax.random.split(key, 8))
  if data == 'latents':
    batch = {}
    for name, dtype, shape in latents.fields(config):
      if name == latents.LATENT_MEAN:
        batch[name] = jax.random.normal(next(keys), (b, *shape))
      elif name == latents.LATENT_STD:  # SD-VAE posteriors: std ~ 1e-2 of the scaled latent.
        batch[name] = 0.01 * jnp.exp(0.1 * jax.random.normal(next(keys), (b, *shape)))
      else:
        batch[name] = jnp.ones((b, *shape), dtype)
  else:
    frames = (b, n, size, size, 3)
    batch = {'rgb': jax.random.uniform(next(keys), frames, minval=-1, maxval=1),
             'xyz': jax.random.uniform(next(keys), frames, minval=-1, maxval=1),
             'mask': jnp.ones(frames[:-1], bool), 'xyz_valid': jnp.ones(frames[:-1], bool),
             'intrinsics': jnp.tile(jnp.eye(3), (b, n, 1, 1)),
             'cam_to_world': jnp.tile(jnp.eye(4), (b, n, 1, 1)),
             'norm_center': jnp.zeros((b, 3)), 'norm_scale': jnp.ones((b,))}
  batch['source'] = jnp.zeros((b,), jnp.int32)
  return batch


def load_config(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, 'configs', f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def timed(fn, *args, steps, warmup=2):
  """Median seconds per call of a jitted fn whose first argument is donated and returned."""
  out = None
  for _ in range(warmup):
    out = fn(*args)
    args = (out[0],) + args[1:]
    jax.block_until_ready(out)
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    out = fn(*args)
    jax.block_until_ready(out)
    times.append(time.perf_counter() - start)
    args = (out[0],) + args[1:]
  return float(np.median(times))


def timed_pipelined(fn, *args, steps, warmup=2):
  """Seconds per call of ``steps`` calls dispatched back to back, one sync at the end: how the
  trainer runs its steps (it fetches metrics once per log interval), so the device does not idle
  between steps while the host dispatches the next (``timed`` includes that gap in every call)."""
  for _ in range(warmup):
    out = fn(*args)
    args = (out[0],) + args[1:]
  jax.block_until_ready(args)
  start = time.perf_counter()
  for _ in range(steps):
    out = fn(*args)
    args = (out[0],) + args[1:]
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / steps, args[0]


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--small', action='store_true')
  parser.add_argument('--data', choices=('latents', 'pixels'), default='latents',
                      help='the step from cached latents, or from pixels with the VAE encoder')
  parser.add_argument('--vae_weights', default='', help='--data pixels: a diffusers VAE '
                      '(default: random weights of the SD VAE architecture)')
  parser.add_argument('--config', default='wvd_2b', help='a configs/ file name, e.g. small')
  parser.add_argument('--batch', type=int, default=4)
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--remat', default=None)
  parser.add_argument('--scan_layers', type=int, default=None)
  parser.add_argument('--parts', type=int, default=1, help='also time forward / fwd+bwd / update')
  parser.add_argument('--mu_dtype', default=None, help='override config.optim.mu_dtype')
  parser.add_argument('--ema_every', type=int, default=None)
  parser.add_argument('--devices', type=int, default=1,
                      help='FSDP over this many devices; --batch is per device')
  parser.add_argument('--data_parallel', type=int, default=1,
                      help='of --devices, how many form the pure data axis (rest: fsdp)')
  parser.add_argument('--profile', default='',
                      help='a directory: also profile 3 steps, report the kernel time breakdown')
  parser.add_argument('--sustain_s', type=float, default=0,
                      help='also run steps back to back this long, sampling the GPU clock and '
                      'power (then --profile profiles the steps right after, still warm)')
  parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                      help='config override, e.g. --set model.fp8=True (repeatable)')
  args = parser.parse_args()

  config = load_config(args.config)
  config.data.batch_size = args.batch * args.devices
  if args.small:
    config.data.batch_size = 2
    config.data.num_frames = 2
    if config.autoencoder.kind == 'sd_vae':
      config.data.image_size = 16  # The tiny VAE downsamples by 2: 8x8 latents.
      config.autoencoder.downsample = 2
    config.model.width, config.model.depth, config.model.num_heads = 64, 2, 4
    config.model.compute_dtype = 'float32'
  # The older single-purpose flags are shorthands for --set.
  shorthands = {'optim.mu_dtype': args.mu_dtype, 'optim.ema_every': args.ema_every,
                'model.remat': args.remat, 'model.scan_layers': args.scan_layers}
  overrides = [f'{k}={v}' for k, v in shorthands.items() if v is not None] + args.set
  for item in overrides:
    key, _, value = item.partition('=')
    group, name = key.split('.')
    old = config[group][name]
    config[group][name] = (value.lower() in ('1', 'true')) if isinstance(old, bool) else (
        type(old)(value))
  latent = config.data.image_size // config.autoencoder.downsample
  b, n = config.data.batch_size, config.data.num_frames

  config.mesh.data = args.data_parallel
  config.mesh.fsdp = args.devices // args.data_parallel
  config.mesh.tensor = 1
  mesh = sharding.make_mesh(config, jax.devices()[:args.devices])
  tx = optimizer.make_optimizer(config)
  graphdef, state, state_sh = state_lib.create_train_state(config, mesh, tx)
  ae = make_autoencoder(config, args.vae_weights, args.small)
  if (ae.latent_channels, ae.downsample) != (config.autoencoder.latent_channels,
                                             config.autoencoder.downsample):
    raise SystemExit(f'the VAE has {ae.latent_channels} channels, downsampling {ae.downsample}; '
                     f'the config says {config.autoencoder.latent_channels}, '
                     f'{config.autoencoder.downsample}')
  if config.autoencoder.kind == 'pixel':
    args.data = 'pixels'  # Pixel space: the step's input is the frames themselves.
  key = jax.random.PRNGKey(0)
  batch = make_batch(config, args.data, key)
  batch_sh = sharding.batch_sharding(mesh)
  batch = jax.device_put(batch, batch_sh)
  step = jax.jit(train.make_train_step(config, graphdef, tx, ae), donate_argnums=(0,),
                 in_shardings=(state_sh, batch_sh), out_shardings=(state_sh, None))
  compile_start = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - compile_start
  xla_flops = common.xla_flops(compiled)
  step_s = timed(compiled, state, batch, steps=args.steps)
  state = state_lib.create_train_state(config, mesh, tx)[1]  # The timed one was donated.
  pipelined_s, state = timed_pipelined(compiled, state, batch, steps=args.steps)
  sustained = None
  if args.sustain_s:
    with common.GpuClockSampler() as clock:
      chunks, state = common.sustained_calls(compiled, (state, batch), args.sustain_s)
    sustained = {'seconds': args.sustain_s, 'chunk_ms': chunks, 'gpu': clock.summary()}
  profile = None
  if args.profile:
    # Right after steps that ran back to back, with their state: the GPU at the clock it holds
    # under this load (a cold 3-step burst runs at boost clock: 4-9% shorter kernels).
    profile = common.profile_calls(compiled, (state, batch), 3, args.profile, carry=True)
    profile.pop('carry')
  state = None  # Donated.

  tokens = n * (latent // config.model.patch_size) ** 2
  dit_cfg = dit.DiTConfig.from_config(config)
  step_flops = flops.dit_train_step_flops(dit_cfg, b, tokens)
  peak = flops.measure_matmul_tflops(dtype=jnp.dtype(config.model.compute_dtype))
  result = {
      'benchmark': 'train_step', 'config': args.config + ('(small)' if args.small else ''),
      'data': args.data, 'sample_posterior': train.samples_posterior(config),
      'frames_encoded_per_sample': (2 * n if args.data == 'pixels' and
                                    config.autoencoder.kind != 'pixel' else 0),
      'device': jax.devices()[0].device_kind, 'batch': b, 'frames': n, 'tokens': tokens,
      'params_m': sum(x.size for x in jax.tree.leaves(
          jax.eval_shape(lambda: state_lib.create_train_state(config, mesh, tx)[1].params))) / 1e6,
      'remat': config.model.remat, 'compute_dtype': config.model.compute_dtype,
      'mu_dtype': config.optim.mu_dtype, 'ema_every': config.optim.ema_every,
      'compile_s': round(compile_s, 1), 'step_ms': round(step_s * 1e3, 2),
      'model_tflop_per_step': round(step_flops / 1e12, 3),
      'xla_tflop_per_step': round(xla_flops / 1e12, 3) if xla_flops else None,
      'achieved_tflops': round(step_flops / step_s / 1e12, 1),
      'matmul_tflops_measured': round(peak, 1),
      'devices': args.devices, 'mesh': dict(mesh.shape),
      'mfu': round(step_flops / step_s / (peak * 1e12 * args.devices), 4),
      # Steps back to back as the trainer dispatches them (no sync between steps).
      'step_ms_pipelined': round(pipelined_s * 1e3, 2),
      'mfu_pipelined': round(step_flops / pipelined_s / (peak * 1e12 * args.devices), 4),
      'samples_per_sec_per_device': round(b / step_s / args.devices, 2),
      'fp8': bool(config.model.fp8), 'residual_dtype': config.model.residual_dtype,
      'norm_kernel': dit.resolve_norm_kernel(config.model.norm_kernel),
      'qk_norm': bool(config.model.qk_norm), 'qkv_matmuls': config.model.qkv_matmuls,
  }
  stats = jax.devices()[0].memory_stats() or {}
  if 'peak_bytes_in_use' in stats:
    result['peak_memory_gib'] = round(stats['peak_bytes_in_use'] / 2 ** 30, 1)

  if sustained:
    sustained['matmul'] = common.sustained_matmul_tflops(args.sustain_s,
                                                         dtype=config.model.compute_dtype)
    result['sustained'] = sustained
  if profile:
    result['profile'] = profile
  if args.parts and args.devices == 1:
    # Cost breakdown: forward, forward+backward, and the optimizer+EMA update alone.
    params = state_lib.create_train_state(config, mesh, tx)[1].params
    loss_fn = train.make_loss_fn(config, graphdef, ae)
    fwd = jax.jit(lambda p, bt: (p, loss_fn(p, bt, key)[0]))
    fwd_bwd = jax.jit(lambda p, bt: (p, jax.grad(lambda q: loss_fn(q, bt, key)[0])(p)))
    result['forward_ms'] = round(timed(fwd, params, batch, steps=args.steps) * 1e3, 2)
    result['forward_backward_ms'] = round(timed(fwd_bwd, params, batch, steps=args.steps) * 1e3, 2)
    opt_state = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    decay = config.optim.ema_decay

    def update(carry, grads):
      p, o, ema = carry
      u, o = tx.update(grads, o, p)
      p = jax.tree.map(lambda a, d: a + d, p, u)
      ema = jax.tree.map(lambda e, a: decay * e + (1 - decay) * a, ema, p)
      return (p, o, ema), None

    if config.optim.fused_update:  # The step's own update: optimizer.fused_adamw_ema.
      def update(carry, grads):  # pylint: disable=function-redefined
        p, o, ema = carry
        return optimizer.fused_adamw_ema(config, grads, o, p, ema, decay, True), None

    upd = jax.jit(update, donate_argnums=(0,))
    ema = jax.tree.map(jnp.copy, params)
    result['update_ms'] = round(timed(upd, (params, opt_state, ema), grads,
                                      steps=args.steps) * 1e3, 2)
  print(json.dumps(result))


if __name__ == '__main__':
  main()
