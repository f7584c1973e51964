"""Conversion throughput: source frames converted a second by ``python -m wvd_jax.data.convert``.

Writes a ScanNet-layout input (the SensReader export: 1296x968 JPEG colour, 640x480 16-bit PNG
depth in mm, poses, intrinsics; the frames are a synthetic-world clip upsampled, since only the
sizes matter for speed) of ``--scenes`` scenes x ``--frames`` frames into a temporary folder,
then times the whole conversion (scene pool, crop/resize, shard writing, index) with
``--workers`` processes at ``--image_size`` and clips of ``--clip_frames``. Prints one JSON
object: frames_per_s (source frames / wall seconds of the conversion), cpu_ms_per_frame (CPU
time of this process and the pool's, per source frame: what a busy shared machine does not
distort), the counts and settings.

  python benchmarks/convert_bench.py --workers 2          # 8 scenes x 96 frames, 256 px clips
  python benchmarks/convert_bench.py --small              # seconds: 2 scenes x 24 small frames
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


def _parse(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--small', action='store_true', help='tiny sizes (seconds)')
  p.add_argument('--scenes', type=int, default=None, help='scenes (default 8; 2 small)')
  p.add_argument('--frames', type=int, default=None, help='frames a scene (default 96; 24 small)')
  p.add_argument('--workers', type=int, default=2, help='conversion processes')
  p.add_argument('--image_size', type=int, default=None, help='clip side (default 256; 64 small)')
  p.add_argument('--clip_frames', type=int, default=16)
  return p.parse_args(argv)


def write_input(root: str, scenes: int, frames: int, color_hw, depth_hw) -> None:
  """ScanNet-layout scenes: a slow forward walk through the synthetic frames, resized."""
  import cv2
  from PIL import Image
  from tests.data import convert_fixtures as fx
  synthetic = fx.synthetic_scene()
  K = synthetic['K'] * np.array([[depth_hw[1] / fx.WIDTH], [depth_hw[0] / fx.HEIGHT], [1.0]])
  for s in range(scenes):
    base = os.path.join(root, f'scene{s:04d}_00')
    for d in ('color', 'depth', 'pose', 'intrinsic'):
      os.makedirs(os.path.join(base, d))
    K4 = np.eye(4)
    K4[:3, :3] = K
    np.savetxt(os.path.join(base, 'intrinsic', 'intrinsic_depth.txt'), K4)
    for i in range(frames):
      j = i % fx.FRAMES
      color = cv2.resize(synthetic['rgb'][j], color_hw[::-1], interpolation=cv2.INTER_LINEAR)
      Image.fromarray(color).save(os.path.join(base, 'color', f'{i}.jpg'), quality=90)
      depth = cv2.resize(synthetic['depth'][j], depth_hw[::-1], interpolation=cv2.INTER_NEAREST)
      cv2.imwrite(os.path.join(base, 'depth', f'{i}.png'), np.round(depth * 1000).astype(np.uint16))
      pose = synthetic['cam_to_world'][0].copy()
      pose[:3, 3] += pose[:3, 2] * 0.01 * i
      np.savetxt(os.path.join(base, 'pose', f'{i}.txt'), pose)


def _cpu_seconds() -> float:
  """User + system CPU seconds of this process and its finished children (the pool's)."""
  import resource
  own, children = (resource.getrusage(w) for w in (resource.RUSAGE_SELF,
                                                    resource.RUSAGE_CHILDREN))
  return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main(argv=None):
  args = _parse(argv)
  scenes = args.scenes or (2 if args.small else 8)
  frames = args.frames or (24 if args.small else 96)
  size = args.image_size or (64 if args.small else 256)
  color_hw, depth_hw = ((242, 324), (120, 160)) if args.small else ((968, 1296), (480, 640))
  from wvd_jax.data import convert, converted
  from wvd_jax.data.formats import common
  with tempfile.TemporaryDirectory() as tmp:
    start = time.perf_counter()
    write_input(os.path.join(tmp, 'in'), scenes, frames, color_hw, depth_hw)
    prepare_s = time.perf_counter() - start
    params = converted.ClipParams(image_size=size, frames=args.clip_frames, stride=1)
    start, cpu_start = time.perf_counter(), _cpu_seconds()
    summary = convert.convert('scannetpp', common.FormatOptions(input=os.path.join(tmp, 'in')),
                              os.path.join(tmp, 'out'), params, workers=args.workers,
                              progress=False, log=lambda line: None)
    seconds = time.perf_counter() - start
    cpu = _cpu_seconds() - cpu_start
  print(json.dumps({
      'format': 'scannetpp', 'source_color_hw': color_hw, 'source_depth_hw': depth_hw,
      'scenes': summary.scenes, 'source_frames': scenes * frames,
      'stored_frames': summary.frames, 'clips': summary.clips, 'image_size': size,
      'clip_frames': args.clip_frames, 'workers': args.workers, 'cpu_count': os.cpu_count(),
      'convert_s': round(seconds, 2), 'frames_per_s': round(scenes * frames / seconds, 2),
      'cpu_s': round(cpu, 2), 'cpu_ms_per_frame': round(1000 * cpu / (scenes * frames), 1),
      'input_write_s': round(prepare_s, 2)}, indent=1))


if __name__ == '__main__':
  main()
