"""What every source format gives the converter, and the checks and file readers they share.

A format module (colmap.py, co3d.py, re10k.py, scannetpp.py) has
  ``list_scenes(options) -> (scenes, skipped)``: ``SceneRef``s found under ``options.input``
  (cheap: no images read) and (name, reason) of what could not even be listed;
  ``load_frames(ref, options) -> list[Frame]``: the scene's frames in the source's order.
Errors in the user's files raise ``errors.UserError`` with one line naming the file.

Conventions of a ``Frame`` (whatever the source's): OpenCV camera (x right, y down, z forward),
``cam_to_world`` 4x4, K 3x3 in pixels of the returned image with pixel (col, row)'s centre at
(col + 0.5, row + 0.5); depth is z-depth in the source's units, 0 where unknown.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable, Optional

import numpy as np

from wvd_jax.errors import UserError

# A pose's rotation block must be orthonormal with determinant +1 to this tolerance.
ROTATION_TOLERANCE = 1e-3


@dataclasses.dataclass(frozen=True)
class SceneRef:
  """One scene of the input: its dataset name and what the format needs to load it."""
  name: str
  source: str  # The file or folder that describes the scene (named in messages).
  key: tuple = ()  # Format-specific (picklable) details.


@dataclasses.dataclass
class Frame:
  """One source frame. ``load()`` returns (rgb (H, W, 3) uint8, depth (H, W) float32 or None)
  at one resolution that K refers to; ``pose_source`` names where the pose came from."""
  name: str
  intrinsics: np.ndarray  # (3, 3) float64, pixels of the loaded image.
  cam_to_world: np.ndarray  # (4, 4) float64, OpenCV axes.
  pose_source: str
  load: Callable[[], tuple[np.ndarray, Optional[np.ndarray]]]


def check_pose(cam_to_world: np.ndarray, source: str) -> np.ndarray:
  """``cam_to_world`` (4, 4) as float64 if it is finite and rigid; else UserError naming source."""
  T = np.asarray(cam_to_world, np.float64)
  if T.shape != (4, 4):
    raise UserError(f'{source}: a pose must be 4x4, got shape {T.shape}')
  if not np.all(np.isfinite(T)):
    raise UserError(f'{source}: the pose has non-finite values (NaN or inf): fix or drop the frame')
  R = T[:3, :3]
  error = np.abs(R.T @ R - np.eye(3)).max()
  bottom_ok = np.all(np.abs(T[3] - [0, 0, 0, 1]) <= 1e-6)
  if error > ROTATION_TOLERANCE or np.linalg.det(R) < 0 or not bottom_ok:
    raise UserError(f'{source}: the pose is not a rigid transform (rotation block off by '
                    f'{error:.3g} from orthonormal, det {np.linalg.det(R):.3g}): expected a '
                    'rotation and a translation')
  return T


def check_intrinsics(K: np.ndarray, source: str) -> np.ndarray:
  K = np.asarray(K, np.float64)
  if K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
    raise UserError(f'{source}: intrinsics must be a finite 3x3 with positive focal lengths, got '
                    f'{K.tolist()}')
  return K


def pinhole(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
  return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def require_file(path: str, what: str) -> str:
  if not os.path.isfile(path):
    raise UserError(f'{path}: {what} is missing')
  return path


def read_rgb(path: str, at_least: Optional[tuple[int, int]] = None) -> np.ndarray:
  """(H, W, 3) uint8 of an image file (grey or RGBA become RGB); UserError if unreadable.

  ``at_least`` (H, W): the caller shrinks the image to that size anyway, so a JPEG may be
  decoded at a reduced scale (1/2, 1/4, 1/8: PIL's draft mode) that stays at least that large,
  which is several times faster than decoding the full image."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  require_file(path, 'the image')
  try:
    with Image.open(path) as image:
      if at_least is not None:
        image.draft('RGB', (at_least[1], at_least[0]))
      return np.asarray(image.convert('RGB'))
  except OSError as e:
    raise UserError(f'{path}: cannot read the image ({e})') from e


def read_png16(path: str) -> np.ndarray:
  """(H, W) uint16 of a single-channel 16-bit PNG; UserError if it is not one."""
  import cv2  # pylint: disable=g-import-not-at-top
  require_file(path, 'the depth map')
  image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
  if image is None or image.ndim != 2 or image.dtype != np.uint16:
    raise UserError(f'{path}: expected a single-channel 16-bit PNG depth map, got '
                    f'{"an unreadable file" if image is None else f"{image.dtype} {image.shape}"}')
  return image


def read_npy(path: str) -> np.ndarray:
  require_file(path, 'the depth map')
  try:
    return np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise UserError(f'{path}: cannot read the .npy array ({e})') from e


def resize_image(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
  """RGB resized to (height, width) by area averaging (the depth camera's resolution)."""
  import cv2  # pylint: disable=g-import-not-at-top
  if rgb.shape[:2] == (height, width):
    return rgb
  return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)


def scale_intrinsics(K: np.ndarray, sx: float, sy: float) -> np.ndarray:
  """K for the image scaled by (sx, sy) (pixel edges stay edges: u' = u * s with +0.5 centres)."""
  K = np.array(K, np.float64)
  K[0] *= sx
  K[1] *= sy
  return K


@dataclasses.dataclass(frozen=True)
class FormatOptions:
  """What the formats read from the command line.

  input: the dataset folder; depth: a folder of per-frame depth / point maps laid out as
  ``<scene>/<frame name without extension>.npy`` (or ``.png``, 16-bit, times depth_scale, 1 if
  not given);
  foreground_only: CO3D depth outside the foreground mask becomes unknown."""
  input: str
  depth: str = ''
  depth_scale: float = 0.0  # 0: the format's default (1, or 0.001 for ScanNet's millimetres).
  foreground_only: bool = False


def external_depth(options: FormatOptions, scene: str, frame_name: str,
                   cam_to_world: np.ndarray, size: tuple[int, int]) -> Optional[np.ndarray]:
  """The frame's depth from ``--depth`` (None when that folder has no file for it).

  ``<depth>/<scene>/<frame stem>.npy``: (H, W) z-depth, or (H, W, 3) world points in the
  cameras' world frame (converted to z-depth with the frame's pose); non-finite or <= 0 values
  are unknown. ``.png``: 16-bit, depth = value * depth_scale, 0 unknown. It must have the
  image's size (H, W)."""
  if not options.depth:
    return None
  stem = os.path.join(options.depth, scene, os.path.splitext(frame_name)[0])
  if os.path.isfile(stem + '.npy'):
    path = stem + '.npy'
    array = read_npy(path).astype(np.float64)
    if array.ndim == 3 and array.shape[-1] == 3:  # World points -> camera z.
      world_to_cam = np.linalg.inv(cam_to_world)
      array = array @ world_to_cam[2, :3] + world_to_cam[2, 3]
    elif array.ndim != 2:
      raise UserError(f'{path}: expected (H, W) depth or (H, W, 3) points, got shape {array.shape}')
  elif os.path.isfile(stem + '.png'):
    path = stem + '.png'
    array = read_png16(path).astype(np.float64) * (options.depth_scale or 1.0)
  else:
    return None
  check_depth_size(array, size, path)
  return np.where(np.isfinite(array) & (array > 0), array, 0.0).astype(np.float32)


def check_depth_size(depth: np.ndarray, size: tuple[int, int], path: str) -> None:
  if depth.shape[:2] != tuple(size):
    raise UserError(f'{path}: the depth map is {depth.shape[1]}x{depth.shape[0]} but its image is '
                    f'{size[1]}x{size[0]}: depth must have the image\'s size')


def image_size(path: str) -> tuple[int, int]:
  """(H, W) of an image file, reading only its header."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  require_file(path, 'the image')
  try:
    with Image.open(path) as image:
      return image.height, image.width
  except OSError as e:
    raise UserError(f'{path}: cannot read the image ({e})') from e
