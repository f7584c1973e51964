"""ScanNet++ iPhone scans and ScanNet scans: per-frame camera-to-world poses, intrinsics, 16-bit
depth in millimetres; the RGB is resized to the depth resolution.

Two layouts (``--input`` is one scene or a folder of scenes, e.g. ScanNet++'s ``data/``):

ScanNet++ iPhone (github.com/scannetpp/scannetpp: iphone/prepare_iphone_data.py extracts the
frames, iphone/arkit_pcl.py is the official back-projection the conventions come from):
  SCENE/iphone/pose_intrinsic_imu.json   {frame_id: {"aligned_pose": 4x4 camera-to-world
                                          (OpenCV axes, metres, aligned to the laser scan),
                                          "intrinsic": 3x3 K of the RGB image, ...}}
  SCENE/iphone/rgb/<frame_id>.jpg        RGB (1920x1440), extracted from rgb.mkv
  SCENE/iphone/depth/<frame_id>.png      16-bit depth in mm (256x192), from depth.bin
The frames are those of the JSON whose RGB was extracted (the extractor may take a subset),
in frame_id order; K is scaled from the RGB to the depth resolution.

ScanNet (github.com/ScanNet/ScanNet, SensReader/python reader.py with --export_color_images
--export_depth_images --export_poses --export_intrinsics):
  SCENE/color/<i>.jpg        RGB (1296x968 in ScanNet)
  SCENE/depth/<i>.png        16-bit depth in mm, 0 = no measurement
  SCENE/pose/<i>.txt         4x4 camera-to-world, OpenCV axes, metres
  SCENE/intrinsic/intrinsic_depth.txt   4x4 whose top-left 3x3 is the depth camera's K (pixels)
The RGB takes the depth camera's K, as ScanNet's own tools do (the depth is registered to the
colour camera). ScanNet marks frames with lost tracking by a pose of -inf: those frames are
dropped (any other non-finite pose is an error). Frames in the order of <i>.

Depth = PNG value * depth_scale (0.001 by default: millimetres; ScanNet's depthShift 1000) and
is stored in metres, the poses' unit. ScanNet++'s DSLR images, undistorted by its toolkit
(dslr/undistort_dslr: a PINHOLE COLMAP model) with its rendered uint16 mm depth, convert with
``--format=colmap --depth=... --depth_scale=0.001``.
"""
from __future__ import annotations

import functools
import json
import os

import numpy as np

from wvd_jax.data.formats import common
from wvd_jax.errors import UserError

DEFAULT_DEPTH_SCALE = 0.001


def _iphone_json(path: str) -> str:
  return os.path.join(path, 'iphone', 'pose_intrinsic_imu.json')


def _is_scene(path: str) -> bool:
  scannet = os.path.isdir(os.path.join(path, 'pose')) and os.path.isdir(os.path.join(path, 'color'))
  return scannet or os.path.isfile(_iphone_json(path))


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
  scale = options.depth_scale or DEFAULT_DEPTH_SCALE
  if os.path.isfile(_iphone_json(ref.source)):
    return _iphone_frames(ref, scale)
  K_path = os.path.join(ref.source, 'intrinsic', 'intrinsic_depth.txt')
  K = common.check_intrinsics(read_matrix(K_path)[:3, :3], K_path)
  pose_dir = os.path.join(ref.source, 'pose')
  stems = [n[:-4] for n in os.listdir(pose_dir) if n.endswith('.txt')]
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


def _iphone_frames(ref: common.SceneRef, scale: float):
  path = _iphone_json(ref.source)
  try:
    with open(path, encoding='utf-8') as f:
      entries = json.load(f)
    if not isinstance(entries, dict):
      raise ValueError('expected an object {frame_id: {...}}')
  except (OSError, ValueError) as e:
    raise UserError(f'{path}: cannot read the ScanNet++ pose file ({e})') from e
  frames = []
  for frame_id in sorted(entries):
    color = os.path.join(ref.source, 'iphone', 'rgb', f'{frame_id}.jpg')
    if not os.path.isfile(color):
      continue  # Not extracted.
    source = f'{path} (frame {frame_id})'
    try:
      pose = np.asarray(entries[frame_id]['aligned_pose'], np.float64).reshape(4, 4)
      K = np.asarray(entries[frame_id]['intrinsic'], np.float64).reshape(3, 3)
    except (KeyError, TypeError, ValueError) as e:
      raise UserError(f'{source}: needs a 4x4 "aligned_pose" and a 3x3 "intrinsic" ({e!r})') from e
    cam_to_world = common.check_pose(pose, source)
    depth = common.require_file(os.path.join(ref.source, 'iphone', 'depth', f'{frame_id}.png'),
                                'the depth map')
    (rgb_h, rgb_w), (depth_h, depth_w) = common.image_size(color), common.image_size(depth)
    K = common.scale_intrinsics(common.check_intrinsics(K, source), depth_w / rgb_w,
                                depth_h / rgb_h)
    frames.append(common.Frame(frame_id, K, cam_to_world, source,
                               functools.partial(_load, color, depth, scale)))
  if not frames and entries:
    raise UserError(f'{ref.source}/iphone/rgb: no frame of {path} was extracted (run ScanNet++\'s '
                    'iphone/prepare_iphone_data.py)')
  return frames
