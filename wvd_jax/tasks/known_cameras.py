"""What a user knows about the cameras: intrinsics, poses, one metric distance. Parsing of the
CLI forms and files, validation (every problem a one-line UserError), and the mapping of
pixel units from the user's photograph to the model's centre-cropped, resized image.

Formats (README.md "Known cameras and metric scale"):
  intrinsics: 'fx,fy,cx,cy' (pixels of the input photograph) or a JSON file
    {"fx": .., "fy": .., "cx": .., "cy": ..} or {"K": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]}.
  poses: a COLMAP model folder (cameras.txt/images.txt or .bin, read by pycolmap; its
    intrinsics are used too unless given) or a JSON file
    {"frames": [{"image": "a.png", "cam_to_world": [[4 x 4]]}, ...]} (OpenCV axes; poses for
    some images only are fine).
  known distance: 'D' (metres between the camera centres of views 0 and 1), 'D:cameras:i,j'
    or 'D:pixels:v,col,row,w,col,row' (between the surface points at pixel (col, row) of view v
    and of view w; integer pixel indices of the model's image).
"""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from wvd_jax.errors import UserError
from wvd_jax.geometry import cameras


@dataclasses.dataclass(frozen=True)
class MetricDistance:
  """A known distance in metres between two camera centres (views i, j) or between the
  surface points of two pixels ((view, col, row), (view, col, row))."""
  metres: float
  cameras: tuple[int, int] | None = None
  pixels: tuple[tuple[int, int, int], tuple[int, int, int]] | None = None


def check_intrinsics(K, source: str = 'intrinsics') -> np.ndarray:
  """K (3, 3) or (N, 3, 3) float64, or a UserError naming the source and the problem."""
  k = np.asarray(K, np.float64)
  if k.shape[-2:] != (3, 3) or k.ndim not in (2, 3):
    raise UserError(f'{source}: K must be 3x3 (or N x 3 x 3), got shape {k.shape}')
  try:
    cameras.check_pinhole(k, name=f'{source}: K')
  except ValueError as e:
    raise UserError(f'{e}; give fx, fy > 0 and cx, cy in pixels') from None
  return k


def check_poses(cam_to_world, source: str = 'cam_to_world') -> np.ndarray:
  """(N, 4, 4) float64 with NaN-filled matrices for unknown views; each known one rigid."""
  t = np.asarray(cam_to_world, np.float64)
  if t.ndim != 3 or t.shape[1:] != (4, 4):
    raise UserError(f'{source}: poses must be N x 4 x 4 camera-to-world matrices, got shape '
                    f'{t.shape}')
  known = ~np.all(np.isnan(t), axis=(1, 2))
  try:
    cameras.check_rigid(t[known], name=source)
  except ValueError as e:
    raise UserError(f'{e}; give camera-to-world rotations (orthonormal, det +1)') from None
  return t


def parse_intrinsics(value: str) -> np.ndarray:
  """--intrinsics: 'fx,fy,cx,cy' or a JSON file -> K (3, 3)."""
  if os.path.isfile(value) or value.lower().endswith('.json'):
    try:
      with open(value, encoding='utf-8') as f:
        data = json.load(f)
      if 'K' in data:
        return check_intrinsics(data['K'], value)
      fx, fy, cx, cy = (float(data[k]) for k in ('fx', 'fy', 'cx', 'cy'))
    except (OSError, ValueError, KeyError, TypeError) as e:
      raise UserError(f'intrinsics file {value}: cannot read it ({type(e).__name__}: {e}); '
                      'write {"fx": .., "fy": .., "cx": .., "cy": ..} or {"K": 3x3}') from None
  else:
    try:
      fx, fy, cx, cy = (float(v) for v in value.split(','))
    except ValueError:
      raise UserError(f"--intrinsics={value!r}: expected 'fx,fy,cx,cy' (four numbers, pixels) "
                      'or a JSON file') from None
  return check_intrinsics(cameras.make_intrinsics(fx, fy, cx, cy), value)


def _poses_from_colmap(path: str):
  import pycolmap  # pylint: disable=import-outside-toplevel
  try:
    model = pycolmap.Reconstruction(path)
  except Exception as e:  # pycolmap raises bare RuntimeErrors / ValueErrors
    raise UserError(f'poses folder {path}: pycolmap cannot read a COLMAP model there ({e})'
                    ) from None
  poses, intrinsics = {}, {}
  for image in model.images.values():
    cfw = image.cam_from_world
    w2c = np.eye(4)
    w2c[:3] = (cfw() if callable(cfw) else cfw).matrix()
    poses[image.name] = cameras.invert_pose(w2c)
    intrinsics[image.name] = np.asarray(image.camera.calibration_matrix(), np.float64)
  return poses, intrinsics


def _poses_from_json(path: str):
  try:
    with open(path, encoding='utf-8') as f:
      frames = json.load(f)['frames']
    poses = {str(fr['image']): np.asarray(fr['cam_to_world'], np.float64) for fr in frames}
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise UserError(f'poses file {path}: cannot read it ({type(e).__name__}: {e}); write '
                    '{"frames": [{"image": "a.png", "cam_to_world": [[4 x 4]]}, ...]}') from None
  for name, pose in poses.items():
    if pose.shape != (4, 4):
      raise UserError(f'poses file {path}: image {name} has a {pose.shape} pose, need 4 x 4')
  return poses, {}


def load_poses(path: str, names: list[str]):
  """--poses: COLMAP folder or JSON -> (cam_to_world (N, 4, 4), NaN for images without a
  pose; K (N, 3, 3) from a COLMAP model or None). Every named image must be among `names`
  (base names of the inputs)."""
  if os.path.isdir(path):
    poses, intrinsics = _poses_from_colmap(path)
  elif os.path.isfile(path):
    poses, intrinsics = _poses_from_json(path)
  else:
    raise UserError(f'--poses={path}: no such file or folder (a COLMAP model folder or a JSON '
                    'file)')
  unknown = sorted(set(poses) - set(names))
  if unknown:
    raise UserError(f'poses {path} name images that are not among the inputs: {unknown[:5]} '
                    f'(inputs: {names[:5]}{"..." if len(names) > 5 else ""}); give those '
                    'images or remove their poses')
  c2w = np.full((len(names), 4, 4), np.nan)
  for i, name in enumerate(names):
    if name in poses:
      c2w[i] = poses[name]
  K = None
  if intrinsics and all(n in intrinsics for n in names):
    K = np.stack([intrinsics[n] for n in names])
  return check_poses(c2w, path), K


def parse_distance(value: str) -> MetricDistance:
  """--known_distance: 'D', 'D:cameras:i,j' or 'D:pixels:v,col,row,w,col,row'."""
  parts = value.split(':')
  usage = ("expected 'D', 'D:cameras:i,j' or 'D:pixels:v,col,row,w,col,row' (D in metres)")
  try:
    metres = float(parts[0])
    ints = [int(v) for v in parts[2].split(',')] if len(parts) == 3 else []
  except (ValueError, IndexError):
    raise UserError(f'--known_distance={value!r}: {usage}') from None
  if len(parts) == 1:
    return check_distance(MetricDistance(metres, cameras=(0, 1)))
  if len(parts) == 3 and parts[1] == 'cameras' and len(ints) == 2:
    return check_distance(MetricDistance(metres, cameras=(ints[0], ints[1])))
  if len(parts) == 3 and parts[1] == 'pixels' and len(ints) == 6:
    return check_distance(MetricDistance(metres, pixels=(tuple(ints[:3]), tuple(ints[3:]))))
  raise UserError(f'--known_distance={value!r}: {usage}')


def check_distance(distance: MetricDistance | float) -> MetricDistance:
  """A MetricDistance (a bare number: cameras 0 and 1) with a positive, finite length."""
  if not isinstance(distance, MetricDistance):
    distance = MetricDistance(float(distance), cameras=(0, 1))
  if not (np.isfinite(distance.metres) and distance.metres > 0):
    raise UserError(f'known distance {distance.metres}: must be a positive number of metres')
  if distance.cameras is not None and distance.cameras[0] == distance.cameras[1]:
    raise UserError(f'known distance between cameras {distance.cameras}: name two different '
                    'views')
  return distance


def to_model_pixels(K, width: int, height: int, size: int) -> np.ndarray:
  """K (..., 3, 3) in pixels of a width x height photograph -> K of the model's image: the
  centre square crop (media.load_image) resized to size x size. Continuous pixel coordinates
  (centres at +0.5) map by x' = (x - left) * size / side."""
  side = min(width, height)
  left, top = (width - side) // 2, (height - side) // 2
  a = size / side
  k = np.array(K, np.float64)
  k[..., 0, :] *= a
  k[..., 1, :] *= a
  k[..., 0, 2] -= left * a
  k[..., 1, 2] -= top * a
  return k
