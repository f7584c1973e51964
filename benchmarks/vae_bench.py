"""VAE encode/decode throughput (images/s) of the NNX Stable Diffusion VAE; prints one JSON object.

Default: the full SD config (about 84M parameters) with random weights, 256x256 images, bfloat16
compute, float32 parameters, on the default JAX device (meant for the GPU). ``--small`` runs the
tiny config at 32x32 on CPU in seconds (a smoke test of this script).

  python benchmarks/vae_bench.py --batch 16
  python benchmarks/vae_bench.py --small

Encode is timed as ``VAEAutoencoder.encode`` (posterior mean, scaled) on (B, H, W, 3) images and
decode as ``VAEAutoencoder.decode`` on (B, H/8, W/8, 4) latents, both jitted (split + jax.jit +
merge); compile time is reported separately and excluded from the rates.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _parse(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--small', action='store_true', help='tiny config at 32x32 on CPU (seconds)')
  p.add_argument('--batch', type=int, default=None, help='images per call (default 8; 2 small)')
  p.add_argument('--size', type=int, default=None, help='image side (default 256; 32 small)')
  p.add_argument('--dtype', choices=('bfloat16', 'float32'), default='bfloat16',
                 help='compute dtype (parameters are float32)')
  p.add_argument('--iters', type=int, default=None, help='timed calls (default 20; 3 small)')
  p.add_argument('--warmup', type=int, default=2, help='untimed calls after compiling')
  p.add_argument('--weights', default='', help='optional diffusers VAE dir/.safetensors')
  return p.parse_args(argv)


def _time_calls(fn, arg, iters: int, warmup: int) -> tuple[float, float]:
  """(compile+first call seconds, mean seconds per timed call)."""
  import jax
  t0 = time.perf_counter()
  jax.block_until_ready(fn(arg))
  first = time.perf_counter() - t0
  for _ in range(warmup):
    jax.block_until_ready(fn(arg))
  t0 = time.perf_counter()
  for _ in range(iters):
    out = fn(arg)
  jax.block_until_ready(out)
  return first, (time.perf_counter() - t0) / iters


def main(argv=None) -> dict:
  args = _parse(argv)
  if args.small:
    os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from wvd_jax.models import vae as vae_lib
  from wvd_jax.models import vae_autoencoder

  batch = args.batch or (2 if args.small else 8)
  size = args.size or (32 if args.small else 256)
  iters = args.iters or (3 if args.small else 20)
  dtype = jnp.bfloat16 if args.dtype == 'bfloat16' else jnp.float32
  config = vae_lib.tiny_config() if args.small else vae_lib.sd_config()

  t0 = time.perf_counter()
  if args.weights:
    ae = vae_autoencoder.VAEAutoencoder.from_pretrained(args.weights, dtype=dtype)
    config = ae.vae.config
  else:
    ae = vae_autoencoder.VAEAutoencoder.random_init(config, seed=0, dtype=dtype)
  init_s = time.perf_counter() - t0
  f = ae.downsample
  if size % f:
    raise ValueError(f'--size {size} is not a multiple of the downsampling factor {f}')
  encode, decode = vae_autoencoder.jitted_encode_decode(ae)

  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32))
  latents = jnp.asarray(rng.standard_normal(
      (batch, size // f, size // f, ae.latent_channels)).astype(np.float32))

  enc_first, enc_s = _time_calls(encode, images, iters, args.warmup)
  dec_first, dec_s = _time_calls(decode, latents, iters, args.warmup)

  device = jax.devices()[0]
  result = dict(
      benchmark='vae', config='weights' if args.weights else ('tiny' if args.small else 'sd'),
      device=f'{device.platform}:{device.device_kind}', compute_dtype=args.dtype,
      batch=batch, image_size=size, latent_size=size // f, downsample=f,
      params=int(sum(x.size for x in jax.tree.leaves(nnx.state(ae, nnx.Param)))),
      encode_images_per_s=round(batch / enc_s, 2), decode_images_per_s=round(batch / dec_s, 2),
      encode_ms_per_batch=round(enc_s * 1e3, 3), decode_ms_per_batch=round(dec_s * 1e3, 3),
      encode_compile_s=round(enc_first, 2), decode_compile_s=round(dec_first, 2),
      init_s=round(init_s, 2), iters=iters)
  stats = getattr(device, 'memory_stats', lambda: None)()
  if stats and 'peak_bytes_in_use' in stats:
    result['peak_memory_gib'] = round(stats['peak_bytes_in_use'] / 2**30, 3)
  print(json.dumps(result))
  return result


if __name__ == '__main__':
  main()
