"""Measures what the XYZ normalization does to real points on a config's training data:
the fraction clipped to the [-1, 1] box (and how far outside they were), and the real points
that land at the background sentinel (-1, -1, -1) (evaluation/xyz_box.py).

Clips are made exactly as training makes them (pipeline.ClipTransform's frame selection with
the config's max_frame_stride, crop / resize, frame-0 canonical points, the 2nd-98th percentile
normalization), stopping just before the clip to [-1, 1]. Prints one JSON object: the figures
for each box fill given (config.data.xyz_box_fill: the robust box maps into [-fill, fill]).

  python benchmarks/xyz_box_stats.py [--config=configs/small.py] [--clips=300] \
      [--fills=1,0.9,0.8] [--small]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402  pylint: disable=wrong-import-position


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', default='configs/small.py')
  parser.add_argument('--clips', type=int, default=300, help='training clips measured')
  parser.add_argument('--data_dir', default='', help='rendered data (default: a temp dir)')
  parser.add_argument('--fills', default='1,0.9,0.8', help='box fills compared')
  parser.add_argument('--small', action='store_true', help='CPU smoke: 16 clips')
  args = parser.parse_args()
  config = common.load_config_file(args.config)
  from wvd_jax.data import clips as clips_lib, pipeline, transforms
  from wvd_jax.evaluation import xyz_box
  from wvd_jax.geometry import normalization
  count = 16 if args.small else args.clips
  # Only the scenes measured are rendered (the world's scenes depend on the seed and index).
  config.data.num_train_scenes = count
  config.data.num_validation_scenes = config.data.num_test_scenes = 1
  config.data.render_workers = 1 if args.small else 0
  data_dir = args.data_dir or tempfile.mkdtemp(prefix='xyz_box_')
  config.data.data_dir = data_dir
  start = time.time()
  source = pipeline.load_split(config, 'train', data_dir, complete=False)
  rendered = time.time() - start
  rng = np.random.default_rng(config.seed)
  fills = [float(f) for f in args.fills.split(',')]
  per_clip = {fill: [] for fill in fills}
  for index in range(min(count, len(source))):
    clip = source[index]
    indices = transforms.frame_indices(clip['depth'].shape[0], config.data.num_frames,
                                       config.data.max_frame_stride, rng)
    clip = transforms.crop_and_resize(
        transforms.select_frames(clips_lib.stored_fields(clip), indices), config.data.image_size)
    _, xyz, mask, _ = transforms.frame0_points(clip)
    for fill in fills:
      norm = normalization.fit_normalization(xyz, mask, fill=fill)
      per_clip[fill].append(xyz_box.clip_statistics(normalization.normalize_points(xyz, norm),
                                                    mask))
  result = dict(config=args.config, image_size=config.data.image_size,
                num_frames=config.data.num_frames, max_frame_stride=config.data.max_frame_stride,
                photo_appearance=bool(config.data.photo_appearance),
                render_seconds=round(rendered, 1),
                by_fill={str(fill): xyz_box.summarize(per_clip[fill]) for fill in fills})
  print(json.dumps(result, indent=1))


if __name__ == '__main__':
  main()
