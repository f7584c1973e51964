"""COLMAP: a sparse model (text or binary, read with pycolmap), its images, optional depth.

Layout (COLMAP's own; what ``colmap image_undistorter`` writes as a dense workspace, and how
DL3DV, Mip-NeRF 360 and Tanks and Temples ship their scenes):

  SCENE/images/<image name>                      the images (names as in images.txt/.bin)
  SCENE/sparse/0/ | SCENE/sparse/ | SCENE/       cameras, images, points3D (.bin or .txt)
  SCENE/stereo/depth_maps/<image name>.geometric.bin   optional COLMAP MVS depth (else
                                                       .photometric.bin)
``--input`` is one SCENE (scene name = the folder's name) or a folder of SCENE folders.
``--depth=DIR`` (used instead of MVS maps): ``DIR/<scene>/<image name stem>.npy|.png``.

COLMAP's conventions (colmap.github.io/format.html): an image's pose is world-to-camera
(qvec w,x,y,z; tvec), camera axes as OpenCV's; PINHOLE params fx, fy, cx, cy and
SIMPLE_PINHOLE f, cx, cy in pixels with the top-left image corner at (0, 0) and the first
pixel's centre at (0.5, 0.5), which is our convention. Other camera models have distortion:
refused. MVS ``.bin`` maps (scripts/python/read_write_dense.py): an ASCII header
``width&height&channels&`` then float32 values, x fastest (row-major (channels, H, W)); 0 or
less = no depth. Frames are in the order of their image names.
"""
from __future__ import annotations

import functools
import os

import numpy as np

from wvd_jax.data.formats import common
from wvd_jax.errors import UserError

PINHOLE_MODELS = ('PINHOLE', 'SIMPLE_PINHOLE')


def _model_dir(scene_dir: str):
  for candidate in (os.path.join(scene_dir, 'sparse', '0'), os.path.join(scene_dir, 'sparse'),
                    scene_dir):
    if any(os.path.isfile(os.path.join(candidate, f'cameras.{ext}')) for ext in ('bin', 'txt')):
      return candidate
  return None


def list_scenes(options: common.FormatOptions):
  root = os.path.abspath(options.input)
  if _model_dir(root):
    return [common.SceneRef(os.path.basename(root), root)], []
  scenes, skipped = [], []
  for name in sorted(os.listdir(root)):
    path = os.path.join(root, name)
    if os.path.isdir(path):
      if _model_dir(path):
        scenes.append(common.SceneRef(name, path))
      elif os.path.isdir(os.path.join(path, 'images')):
        skipped.append((name, f'{path}: has images/ but no COLMAP model (sparse/0/cameras.bin '
                              'or .txt)'))
  return scenes, skipped


def read_mvs_depth(path: str) -> np.ndarray:
  """(H, W) float32 of a COLMAP MVS depth map (.bin); UserError if malformed."""
  with open(path, 'rb') as f:
    data = f.read()
  parts = data.split(b'&', 3)
  try:
    width, height, channels = (int(p) for p in parts[:3])
    values = np.frombuffer(parts[3], np.float32)
    if values.size != width * height * channels or channels != 1:
      raise ValueError(f'{values.size} values for {width}x{height}x{channels}')
  except (ValueError, IndexError) as e:
    raise UserError(f'{path}: not a COLMAP depth map (header width&height&channels& then '
                    f'float32 values): {e}') from e
  return values.reshape(height, width)


def _depth_loader(scene_dir, image_name):
  maps = os.path.join(scene_dir, 'stereo', 'depth_maps')
  for kind in ('geometric', 'photometric'):
    path = os.path.join(maps, f'{image_name}.{kind}.bin')
    if os.path.isfile(path):
      return path
  return None


def _load(image_path, size, mvs_path, options, scene, name, cam_to_world):
  rgb = common.read_rgb(image_path)
  if rgb.shape[:2] != size:
    raise UserError(f'{image_path}: the image is {rgb.shape[1]}x{rgb.shape[0]} but its COLMAP '
                    f'camera is {size[1]}x{size[0]}: convert the images the model was made with')
  depth = common.external_depth(options, scene, name, cam_to_world, size)
  if depth is None and mvs_path:
    depth = read_mvs_depth(mvs_path)
    common.check_depth_size(depth, size, mvs_path)
    depth = np.where(np.isfinite(depth) & (depth > 0), depth, 0).astype(np.float32)
  return rgb, depth


def load_frames(ref: common.SceneRef, options: common.FormatOptions):
  import pycolmap  # pylint: disable=g-import-not-at-top
  model = _model_dir(ref.source)
  try:
    reconstruction = pycolmap.Reconstruction(model)
  except (ValueError, RuntimeError) as e:
    raise UserError(f'{model}: cannot read the COLMAP model ({str(e).splitlines()[-1]})') from e
  intrinsics = {}
  for camera_id, camera in reconstruction.cameras.items():
    params = np.asarray(camera.params, np.float64)
    if camera.model.name == 'PINHOLE':
      intrinsics[camera_id] = common.pinhole(*params)
    elif camera.model.name == 'SIMPLE_PINHOLE':
      intrinsics[camera_id] = common.pinhole(params[0], params[0], params[1], params[2])
  frames = []
  for image in sorted(reconstruction.images.values(), key=lambda im: im.name):
    if not image.has_pose:
      continue
    camera = reconstruction.cameras[image.camera_id]
    if image.camera_id not in intrinsics:
      raise UserError(f'{model}: camera {image.camera_id} (image {image.name}) is a '
                      f'{camera.model.name} camera; only {" and ".join(PINHOLE_MODELS)} are '
                      'supported: run `colmap image_undistorter` and convert its output')
    world_to_cam = np.eye(4)
    world_to_cam[:3] = image.cam_from_world().matrix()
    source = f'{model} (image {image.name})'
    cam_to_world = np.linalg.inv(common.check_pose(world_to_cam, source))
    image_path = os.path.join(ref.source, 'images', image.name)
    common.require_file(image_path, f'the image of {image.name} in the model {model}')
    loader = functools.partial(_load, image_path, (camera.height, camera.width),
                               _depth_loader(ref.source, image.name), options, ref.name,
                               image.name, cam_to_world)
    K = common.check_intrinsics(intrinsics[image.camera_id], source)
    frames.append(common.Frame(image.name, K, cam_to_world, source, loader))
  return frames
