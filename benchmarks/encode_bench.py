"""Throughput of --mode=encode_latents' device step (clips/s); prints one JSON object.

Times the jitted function the mode runs (training/encode_latents.make_encode_fn: the trainer's
model inputs, then the SD VAE posterior of every RGB and XYZ frame, the batch split over the
local devices' data axis) on pixel batches of data.encode_batch_per_device clips a device, with
random VAE weights of the config's architecture (or --vae_weights). Reading and preparing the
clips runs on the host beside it (grain; its rate: benchmarks/data_bench.py).

  python benchmarks/encode_bench.py                         # wvd_2b (8 + 8 frames at 256 px)
  python benchmarks/encode_bench.py --batch_per_device 16
  python benchmarks/encode_bench.py --small                 # the tiny VAE on CPU, seconds
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=wrong-import-position
from benchmarks import common, train_step  # noqa: E402
from wvd_jax.data import latents  # noqa: E402
from wvd_jax.training import encode_latents, sharding  # noqa: E402


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--small', action='store_true')
  parser.add_argument('--config', default='wvd_2b', help='a configs/ file name')
  parser.add_argument('--batch_per_device', type=int, default=None,
                      help='clips a device encodes at once (default: the config\'s)')
  parser.add_argument('--iters', type=int, default=10)
  parser.add_argument('--vae_weights', default='')
  args = parser.parse_args()

  config = train_step.load_config(args.config)
  if args.small:
    config.data.num_frames = 2
    config.data.encode_batch_per_device = 2
    if config.autoencoder.kind == 'sd_vae':
      config.data.image_size = 16
      config.autoencoder.downsample = 2
    config.model.compute_dtype = 'float32'
  if args.batch_per_device:
    config.data.encode_batch_per_device = args.batch_per_device
  mesh = sharding.local_mesh()
  devices = mesh.devices.size
  config.data.batch_size = config.data.encode_batch_per_device * devices
  ae = train_step.make_autoencoder(config, args.vae_weights, args.small)
  encode = encode_latents.make_encode_fn(config, ae, mesh)
  batch = jax.device_put(
      {k: v for k, v in train_step.make_batch(config, 'pixels', jax.random.PRNGKey(0)).items()
       if k in ('rgb', 'xyz', 'mask', 'xyz_valid')}, sharding.batch_sharding(mesh))
  timing = common.time_calls(encode, batch, iters=args.iters, repeats=2)
  clips = config.data.batch_size
  record_bytes = sum(int(np.prod(shape)) * np.dtype(dtype).itemsize
                     for _, dtype, shape in latents.fields(config))
  print(json.dumps({
      'benchmark': 'encode_latents', 'config': args.config + ('(small)' if args.small else ''),
      'device': jax.devices()[0].device_kind, 'devices': devices,
      'clips_per_batch': clips, 'frames_per_clip': 2 * config.data.num_frames,
      'image_size': config.data.image_size, 'compute_dtype': config.model.compute_dtype,
      'first_call_s': round(timing['first_call_s'], 1),
      'batch_ms': round(timing['mean_s'] * 1e3, 2),
      'clips_per_s': round(clips / timing['mean_s'], 1),
      'images_per_s': round(2 * config.data.num_frames * clips / timing['mean_s'], 1),
      'stored_mb_per_clip': round(record_bytes / 1e6, 3),
      'peak_memory_gib': (round(common.peak_memory_bytes() / 2 ** 30, 1)
                          if common.peak_memory_bytes() else None),
  }))


if __name__ == '__main__':
  main()
