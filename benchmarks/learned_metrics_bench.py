"""Throughput of the learned eval metrics' networks (FID Inception-v3, CLIP ViT-B/32 and
ViT-L/14, LoFTR) on random weights of the real architectures; prints one JSON object.

  python benchmarks/learned_metrics_bench.py            # the default device (meant for the GPU)
  python benchmarks/learned_metrics_bench.py --small    # CPU smoke run: small batches and sizes

Each network runs as the eval calls it (float32, Precision.HIGHEST): Inception on 64 px frames
resized to 299 (images/s), CLIP on 64 px frames resized to 224 (frames/s), LoFTR on gray pairs of
64 px frames upscaled 4x to 256 (pairs/s, batches of 7: frame 0 against 7 later frames). Compile
time is reported separately (first_call_s) and excluded from the rates. ``eval_seconds_per_clip``
adds up one clip of the small config (8 frames, ``--samples`` samples) at these rates.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CLIP_CONFIGS = {  # openai/clip-vit-base-patch32 and clip-vit-large-patch14 (vision towers).
    'clip_vit_b32': dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                         num_attention_heads=12, image_size=224, patch_size=32,
                         projection_dim=512),
    'clip_vit_l14': dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                         num_attention_heads=16, image_size=224, patch_size=14,
                         projection_dim=768),
    'clip_tiny': dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, image_size=32, patch_size=8, projection_dim=24)}


def random_state(shapes: dict, seed: int = 0) -> dict[str, np.ndarray]:
  """Random float32 tensors, fan-in scaled; norm scales and variances 1."""
  rng = np.random.default_rng(seed)
  out = {}
  for name, shape in shapes.items():
    if name.endswith('running_var') or (len(shape) == 1 and name.endswith('.weight')):
      out[name] = np.ones(shape, np.float32)
    elif len(shape) <= 1:
      out[name] = np.zeros(shape, np.float32)
    else:
      scale = 1.0 / np.sqrt(np.prod(shape[1:]))
      out[name] = (rng.standard_normal(shape, np.float32) * scale).astype(np.float32)
  return out


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--small', action='store_true', help='CPU smoke run (seconds)')
  p.add_argument('--batch', type=int, default=16, help='images per Inception / CLIP call')
  p.add_argument('--samples', type=int, default=2, help='samples per clip for the estimate')
  p.add_argument('--iters', type=int, default=5)
  args = p.parse_args(argv)
  if args.small:
    os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  import jax

  from benchmarks import common
  from wvd_jax.evaluation import consistency, fid
  from wvd_jax.evaluation.networks import clip, inception, loftr

  batch = 2 if args.small else args.batch
  iters = 1 if args.small else args.iters
  frames = np.random.default_rng(1).uniform(-1, 1, (batch, 64, 64, 3)).astype(np.float32)
  out = {'device': str(jax.devices()[0].device_kind), 'batch': batch, 'small': args.small}

  features = fid.InceptionFeatures(inception.convert(random_state(inception.torch_shapes())),
                                   batch_size=batch)
  timing = common.time_calls(features, frames, iters=iters, warmup=1, repeats=2)
  out['inception'] = dict(timing, images_per_s=batch / timing['mean_s'])

  names = ('clip_tiny',) if args.small else ('clip_vit_b32', 'clip_vit_l14')
  for name in names:
    config = clip.ClipVisionConfig(**CLIP_CONFIGS[name])
    _, params = clip.convert(random_state(clip.torch_shapes(config)),
                             settings={'num_attention_heads': config.num_attention_heads})
    unit = (frames + 1) / 2
    timing = common.time_calls(clip.image_embeddings, config, params, unit, iters=iters,
                               warmup=1, repeats=2)
    out[name] = dict(timing, frames_per_s=batch / timing['mean_s'])

  upscale = 1 if args.small else 4
  pairs = 2 if args.small else 7
  matcher = consistency.LoftrMatcher(loftr.convert(random_state(loftr.torch_shapes())),
                                     upscale=upscale)
  video = np.random.default_rng(2).uniform(-1, 1, (pairs + 1, 64, 64, 3)).astype(np.float32)
  timing = common.time_calls(matcher.video_matches, video, iters=iters, warmup=1, repeats=2)
  out['loftr'] = dict(timing, size=64 * upscale, pairs_per_s=pairs / timing['mean_s'])

  n, s = 8, args.samples
  clip_rate = out[names[-1]]['frames_per_s']
  out['eval_seconds_per_clip'] = {
      'fid': (s + 1) * (n - 1) / out['inception']['images_per_s'],
      f'fc_{names[-1]}': (s + 1) * n / clip_rate,
      'kpm_loftr': (s + 1) * (n - 1) / out['loftr']['pairs_per_s']}
  print(json.dumps(out))
  return out


if __name__ == '__main__':
  main()
