"""What the multi-view task's scores would be if the model's XYZ were the truth plus an error.

The evaluation's own test clips (same split, indices, frames, stride, normalization), with the
generated XYZ replaced by the true XYZ in the model's normalized frame-0 world plus one of two
errors of size sigma (units of the normalized box, half-side 1): 'iid', Gaussian noise on every
surface point (it averages out over a frame's points), and 'frame_affine', each frame's points
moved by its own random affine map x -> (I + sigma G) x + sigma g (G, g standard normal): frames
that disagree with each other, as generated frames do. Background pixels carry the sentinel the
model generates. Each is then reconstructed exactly as
the eval does (tasks.wvd_tasks.reconstruct: confidence-weighted post-optimization, paper eq. 3)
and scored by evaluation.protocol.video_depth_and_pose. The table says how accurate generated
XYZ must be for the pose goals (RRA@5 > 0.9, RTA@15 > 0.8, mAA(30) > 0.7), and where a model's
video AbsRel places it. Prints one JSON object: per case, video AbsRel and pose accuracies.

  python benchmarks/pose_ceiling.py [--config=configs/small.py] [--clips=64] \
      [--cases=iid:0,iid:0.1,frame_affine:0.05,...]
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


ERRORS = ('iid', 'frame_affine')


def noisy_xyz(xyz: np.ndarray, mask: np.ndarray, kind: str, sigma: float, rng) -> np.ndarray:
  """True normalized XYZ (N, H, W, 3) with an error of ``kind`` and size sigma on surface
  points, clipped to the box; background (mask False) at the sentinel corner (-1, -1, -1)."""
  if kind == 'iid':
    noisy = xyz + sigma * rng.standard_normal(xyz.shape)
  elif kind == 'frame_affine':
    n = xyz.shape[0]
    maps = np.eye(3) + sigma * rng.standard_normal((n, 3, 3))
    shifts = sigma * rng.standard_normal((n, 3))
    noisy = np.einsum('nij,nhwj->nhwi', maps, xyz) + shifts[:, None, None, :]
  else:
    raise ValueError(f'unknown error kind {kind!r}; expected one of {ERRORS}')
  return np.where(mask[..., None], np.clip(noisy, -1.0, 1.0), -1.0).astype(np.float32)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', default='configs/small.py')
  parser.add_argument('--clips', type=int, default=64, help='test clips (the eval uses 64)')
  parser.add_argument('--cases', default='iid:0,iid:0.05,iid:0.1,iid:0.2,frame_affine:0.02,'
                      'frame_affine:0.05,frame_affine:0.1,frame_affine:0.2',
                      help='comma-separated kind:sigma')
  parser.add_argument('--data_dir', default='', help='rendered data (default: a temp dir)')
  args = parser.parse_args()
  config = common.load_config_file(args.config)
  from wvd_jax.data import pipeline, transforms
  from wvd_jax.evaluation import pose_metrics, protocol
  from wvd_jax.tasks import wvd_tasks
  # Test clips are seeded by (seed, split, index) alone: render only those measured.
  config.data.num_train_scenes = config.data.num_validation_scenes = 1
  config.data.num_test_scenes = args.clips
  config.data.data_dir = args.data_dir or tempfile.mkdtemp(prefix='pose_ceiling_')
  start = time.time()
  source = pipeline.load_split(config, 'test', config.data.data_dir, complete=False)
  rendered = time.time() - start
  cases = [(kind, float(sigma)) for kind, sigma in (c.split(':') for c in args.cases.split(','))]
  rows = {c: {'abs_rel': [], 'rre': [], 'rte': []} for c in cases}
  start = time.time()
  for index in range(min(args.clips, len(source))):
    clip = protocol.prepare_clip(source[index], num_frames=config.data.num_frames,
                                 image_size=config.data.image_size,
                                 stride=config.eval.frame_stride,
                                 box_fill=config.data.xyz_box_fill)
    frames = pipeline.resized_frames(source[index], num_frames=config.data.num_frames,
                                     image_size=config.data.image_size,
                                     stride=config.eval.frame_stride)
    truth = transforms.canonicalize(frames, box_fill=config.data.xyz_box_fill)
    for kind, sigma in cases:
      rng = np.random.default_rng([index, ERRORS.index(kind), int(sigma * 1e6)])
      xyz = noisy_xyz(truth['xyz'], truth['mask'], kind, sigma, rng)
      rec = wvd_tasks.reconstruct(clip.rgb[None], xyz[None])
      scores, _ = protocol.video_depth_and_pose(clip, rec)
      rows[kind, sigma]['abs_rel'].append(float(scores['video/abs_rel']))
      rows[kind, sigma]['rre'].append(np.ravel(scores['pose/rre']))
      rows[kind, sigma]['rte'].append(np.ravel(scores['pose/rte']))
  out = {'benchmark': 'pose_ceiling', 'config': args.config, 'clips': min(args.clips, len(source)),
         'frames': config.data.num_frames, 'image_size': config.data.image_size,
         'frame_stride': config.eval.frame_stride, 'render_s': round(rendered, 1),
         'reconstruct_s': round(time.time() - start, 1), 'cases': {}}
  for case in cases:
    rre, rte = np.concatenate(rows[case]['rre']), np.concatenate(rows[case]['rte'])
    acc = pose_metrics.pose_accuracy(rre, rte)
    out['cases'][f'{case[0]}:{case[1]:g}'] = dict(
        video_abs_rel=round(float(np.mean(rows[case]['abs_rel'])), 4),
        **{k: round(v, 3) for k, v in acc.items()},
        rre_median=round(float(np.median(rre)), 2), rte_median=round(float(np.median(rte)), 2))
  print(json.dumps(out))


if __name__ == '__main__':
  main()
