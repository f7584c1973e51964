"""RealEstate10K: per-sequence camera files plus the frames the user extracted from the videos.

Layout (``--input``):
  ROOT/<sequence>.txt          the release's camera file (e.g. RealEstate10K/train/*.txt)
  ROOT/<sequence>/<timestamp>.png (or .jpg)   frames the user extracted, named by the camera
                               file's timestamp (microseconds), e.g. with ffmpeg at those times
Camera file (google.github.io/realestate10k/download.html): line 1 the video URL, then one line
a frame: timestamp fx fy cx cy 0 0 followed by the 3x4 world-to-camera matrix row-major, with
fx, cx divided by the image width and fy, cy by its height (so cx = 0.5 is the image centre:
normalized pixel-edge coordinates, ours scaled by the size), camera axes as OpenCV's.
The release has no depth: ``--depth=DIR`` gives ``DIR/<sequence>/<timestamp>.npy`` (H, W)
z-depth, or (H, W, 3) points in the camera file's world frame, in the camera files' units
(e.g. DUSt3R or any estimator's output aligned to these cameras); without a file a frame's depth
is unknown (0). One sequence = one scene named after its file; frames in file order.
"""
from __future__ import annotations

import functools
import os

import numpy as np

from wvd_jax.data.formats import common
from wvd_jax.errors import UserError

_EXTENSIONS = ('.png', '.jpg', '.jpeg')


def list_scenes(options: common.FormatOptions):
  root = os.path.abspath(options.input)
  scenes = [common.SceneRef(name[:-4], os.path.join(root, name))
            for name in sorted(os.listdir(root)) if name.endswith('.txt')]
  return scenes, []


def parse_camera_file(path: str):
  """[(timestamp str, K normalized (3, 3), world_to_cam (4, 4))] of a camera file."""
  try:
    with open(path, encoding='utf-8') as f:
      lines = f.read().splitlines()
  except (OSError, UnicodeDecodeError) as e:
    raise UserError(f'{path}: cannot read the camera file ({e})') from e
  rows = []
  for number, line in enumerate(lines[1:], start=2):
    if not line.strip():
      continue
    values = line.split()
    if len(values) != 19:
      raise UserError(f'{path}:{number}: expected 19 values (timestamp, fx fy cx cy, 0 0, 3x4 '
                      f'world-to-camera), got {len(values)}')
    try:
      numbers = np.array([float(v) for v in values[1:]], np.float64)
    except ValueError as e:
      raise UserError(f'{path}:{number}: not a number ({e})') from e
    world_to_cam = np.eye(4)
    world_to_cam[:3] = numbers[6:].reshape(3, 4)
    rows.append((values[0], common.pinhole(*numbers[:4]), world_to_cam, f'{path}:{number}'))
  return rows


def _find_frame(folder: str, timestamp: str) -> str:
  for ext in _EXTENSIONS:
    path = os.path.join(folder, timestamp + ext)
    if os.path.isfile(path):
      return path
  raise UserError(f'{os.path.join(folder, timestamp)}.png: the frame is missing (extract every '
                  'frame of the camera file, named <timestamp>.png or .jpg)')


def _load(image_path, size, options, scene, name, cam_to_world):
  rgb = common.read_rgb(image_path)
  if rgb.shape[:2] != size:
    raise UserError(f'{image_path}: the frame changed size while converting')
  return rgb, common.external_depth(options, scene, name, cam_to_world, size)


def load_frames(ref: common.SceneRef, options: common.FormatOptions):
  folder = os.path.join(os.path.dirname(ref.source), ref.name)
  frames = []
  for timestamp, normalized_K, world_to_cam, source in parse_camera_file(ref.source):
    common.check_pose(world_to_cam, source)
    cam_to_world = np.linalg.inv(world_to_cam)
    image_path = _find_frame(folder, timestamp)
    size = common.image_size(image_path)
    K = common.check_intrinsics(common.scale_intrinsics(normalized_K, size[1], size[0]), source)
    frames.append(common.Frame(timestamp, K, cam_to_world, source,
                               functools.partial(_load, image_path, size, options, ref.name,
                                                 timestamp, cam_to_world)))
  return frames
