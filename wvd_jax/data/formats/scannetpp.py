"""ScanNet-style RGB-D scans: per-frame camera-to-world poses, intrinsics, 16-bit depth in mm.

Layout: the export of ScanNet's SensReader (github.com/ScanNet/ScanNet, SensReader/python
reader.py with --export_color_images --export_depth_images --export_poses
--export_intrinsics), one folder a scene (``--input`` is one scene or a folder of scenes):

  SCENE/color/<i>.jpg        RGB (1296x968 in ScanNet)
  SCENE/depth/<i>.png        16-bit depth, millimetres (depth = value * depth_scale, 0.001 by
                             default: ScanNet's depthShift 1000), 0 = no measurement
  SCENE/pose/<i>.txt         4x4 camera-to-world, OpenCV axes, metres
  SCENE/intrinsic/intrinsic_depth.txt   4x4 whose top-left 3x3 is the depth camera's K (pixels)
The RGB is resized to the depth resolution (area averaging) and takes the depth camera's K, as
ScanNet's own tools do (the depth is registered to the colour camera). ScanNet marks frames with
lost tracking by a pose of -inf: those frames are dropped (any other non-finite pose is an error).
Depth is stored in metres (the poses' unit). Frames in the order of <i>. ScanNet++'s DSLR
images, undistorted by its toolkit (dslr/undistort_dslr: a PINHOLE COLMAP model) with its
rendered uint16 mm depth, convert with ``--format=colmap --depth=... --depth_scale=0.001``.
"""
from __future__ import annotations

import functools
import os

import numpy as np

from wvd_jax.data.formats import common
from wvd_jax.errors import UserError

DEFAULT_DEPTH_SCALE = 0.001


def _is_scene(path: str) -> bool:
  return os.path.isdir(os.path.join(path, 'pose')) and os.path.isdir(os.path.join(path, 'color'))


def list_scenes(options: common.FormatOptions):
  root = os.path.abspath(options.input)
  if _is_scene(root):
    return [common.SceneRef(os.path.basename(root), root)], []
  return [common.SceneRef(name, os.path.join(root, name)) for name in sorted(os.listdir(root))
          if _is_scene(os.path.join(root, name))], []


def read_matrix(path: str, shape=(4, 4)) -> np.ndarray:
  common.require_file(path, 'the matrix file')
  try:
    values = np.loadtxt(path, dtype=np.float64, ndmin=2)
  except ValueError as e:
    raise UserError(f'{path}: cannot parse the matrix ({e})') from e
  if values.shape != shape:
    raise UserError(f'{path}: expected a {shape[0]}x{shape[1]} matrix, got {values.shape}')
  return values


def _load(color_path, depth_path, depth_scale):
  depth = common.read_png16(depth_path).astype(np.float32) * np.float32(depth_scale)
  rgb = common.read_rgb(color_path, at_least=depth.shape)
  aspect_rgb, aspect_depth = rgb.shape[1] / rgb.shape[0], depth.shape[1] / depth.shape[0]
  if abs(aspect_rgb / aspect_depth - 1) > 0.02:
    raise UserError(f'{depth_path}: the depth map is {depth.shape[1]}x{depth.shape[0]}, not the '
                    f'aspect ratio of its image {color_path} ({rgb.shape[1]}x{rgb.shape[0]})')
  return common.resize_image(rgb, *depth.shape), depth


def load_frames(ref: common.SceneRef, options: common.FormatOptions):
  K_path = os.path.join(ref.source, 'intrinsic', 'intrinsic_depth.txt')
  K = common.check_intrinsics(read_matrix(K_path)[:3, :3], K_path)
  pose_dir = os.path.join(ref.source, 'pose')
  stems = [n[:-4] for n in os.listdir(pose_dir) if n.endswith('.txt')]
  scale = options.depth_scale or DEFAULT_DEPTH_SCALE
  frames = []
  for stem in sorted(stems, key=lambda s: (len(s), s)):
    pose_path = os.path.join(pose_dir, stem + '.txt')
    pose = read_matrix(pose_path)
    if np.all(np.isneginf(pose[:3])):
      continue  # ScanNet's lost-tracking marker.
    cam_to_world = common.check_pose(pose, pose_path)
    color = common.require_file(os.path.join(ref.source, 'color', stem + '.jpg'), 'the image')
    depth = common.require_file(os.path.join(ref.source, 'depth', stem + '.png'), 'the depth map')
    frames.append(common.Frame(stem, K, cam_to_world, pose_path,
                               functools.partial(_load, color, depth, scale)))
  return frames
