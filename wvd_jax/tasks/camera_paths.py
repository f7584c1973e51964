"""Camera paths for camera-controlled generation: a JSON file, or a preset.

A path is a list of camera-to-world 4x4 poses (OpenCV axes) RELATIVE TO THE INPUT IMAGE'S CAMERA
(the input camera is the identity), with translations in units of the input image's median
depth (so one path works at any scene scale), and optional intrinsics.

File format (JSON):
  {"cam_to_world": [[[r00, r01, r02, tx], [..], [..], [0, 0, 0, 1]], ...],   # (T, 4, 4)
   "intrinsics": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]}   # optional, pixels at model size
Presets: 'orbit' (around the point at median depth in front of the camera), 'dolly' (forward),
'pan' (rotate right in place).
"""
from __future__ import annotations

import json
import os

import numpy as np

from wvd_jax import errors, files

PRESETS = ('orbit', 'dolly', 'pan')


def _rotation_y(angle: float) -> np.ndarray:
  c, s = np.cos(angle), np.sin(angle)
  return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def preset(name: str, num_frames: int, amount: float | None = None) -> np.ndarray:
  """(num_frames, 4, 4) relative poses; frame 0 is the identity.

  amount: orbit and pan angle in degrees (default 30 and 20), dolly distance in median depths
  (default 0.4).
  """
  if name not in PRESETS:
    raise errors.UserError(f'unknown camera path preset {name!r}: use one of {", ".join(PRESETS)} '
                           'or a JSON camera path file')
  if num_frames < 2:
    raise errors.UserError(f'a camera path needs >= 2 frames, got {num_frames}')
  s = np.linspace(0.0, 1.0, num_frames)
  poses = np.tile(np.eye(4), (num_frames, 1, 1))
  for i, f in enumerate(s):
    if name == 'orbit':
      angle = np.deg2rad(amount if amount is not None else 30.0) * f
      rot = _rotation_y(-angle)
      centre = np.array([0.0, 0.0, 1.0])  # The point at median depth on the optical axis.
      poses[i, :3, :3] = rot
      poses[i, :3, 3] = centre - rot @ centre
    elif name == 'dolly':
      poses[i, 2, 3] = (amount if amount is not None else 0.4) * f
    else:
      poses[i, :3, :3] = _rotation_y(np.deg2rad(amount if amount is not None else 20.0) * f)
  return poses


def resolve(path: str, num_frames: int) -> tuple[np.ndarray, np.ndarray | None]:
  """(relative cam_to_world (T, 4, 4), intrinsics (3, 3) or None) of a preset name (with
  ``num_frames`` poses) or a JSON camera path file; UserError listing the presets otherwise."""
  if path in PRESETS:
    return preset(path, num_frames), None
  if not os.path.isfile(path):
    raise errors.UserError(f'camera path {path!r} is neither a preset ({", ".join(PRESETS)}) nor '
                           'an existing JSON camera path file')
  return load(path)


def check(path: str) -> None:
  """Raises UserError for a camera path that resolve() would refuse (before a model loads)."""
  resolve(path, 2)


def load(path: str) -> tuple[np.ndarray, np.ndarray | None]:
  """(cam_to_world (T, 4, 4), intrinsics (3, 3) or None) from a JSON camera path file."""
  if not os.path.isfile(path):
    raise errors.UserError(f'camera path file {path} does not exist')
  try:
    with open(path, encoding='utf-8') as f:
      data = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise errors.UserError(f'camera path file {path} is not valid JSON: {e}') from e
  if not isinstance(data, dict) or 'cam_to_world' not in data:
    raise errors.UserError(f'camera path file {path} needs a "cam_to_world" list of 4x4 matrices')
  try:
    poses = np.asarray(data['cam_to_world'], np.float64)
  except (TypeError, ValueError) as e:
    raise errors.UserError(f'{path}: "cam_to_world" is not a numeric array: {e}') from e
  if poses.ndim != 3 or poses.shape[1:] != (4, 4) or len(poses) < 1:
    raise errors.UserError(f'{path}: "cam_to_world" must have shape (T, 4, 4), got {poses.shape}')
  if not np.all(np.isfinite(poses)):
    raise errors.UserError(f'{path}: "cam_to_world" has non-finite values')
  rot = poses[:, :3, :3]
  if (np.abs(rot @ rot.transpose(0, 2, 1) - np.eye(3)).max() > 1e-3
      or np.any(np.linalg.det(rot) < 0) or np.abs(poses[:, 3] - [0, 0, 0, 1]).max() > 1e-6):
    raise errors.UserError(f'{path}: "cam_to_world" entries must be rigid transforms (rotation '
                           'with '
                           'det +1, last row 0 0 0 1)')
  intrinsics = None
  if 'intrinsics' in data:
    try:
      intrinsics = np.asarray(data['intrinsics'], np.float64)
    except (TypeError, ValueError) as e:
      raise errors.UserError(f'{path}: "intrinsics" is not a numeric 3x3 matrix: {e}') from e
    if (intrinsics.shape != (3, 3) or not np.all(np.isfinite(intrinsics))
        or intrinsics[0, 0] <= 0 or intrinsics[1, 1] <= 0):
      raise errors.UserError(f'{path}: "intrinsics" must be a 3x3 matrix with positive focal '
                             'lengths')
  return poses, intrinsics


def save(path: str, cam_to_world: np.ndarray, intrinsics: np.ndarray | None = None) -> None:
  data = {'cam_to_world': np.asarray(cam_to_world).tolist()}
  if intrinsics is not None:
    data['intrinsics'] = np.asarray(intrinsics).tolist()
  with files.atomic_write(path, 'w') as f:
    json.dump(data, f, indent=1)
