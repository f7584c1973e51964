"""File exports: binary PLY point clouds (trimesh) and COLMAP text models. Writes are atomic
(temporary file in the same directory, then os.replace), so readers never see partial files."""
from __future__ import annotations

import importlib.util
import io
import os

import numpy as np

from wvd_jax import errors, files
from wvd_jax.geometry import cameras


def _atomic_write(path: str, data: bytes | str) -> None:
  with files.atomic_write(os.fspath(path)) as f:
    f.write(data.encode('utf-8') if isinstance(data, str) else data)


def _check_points_colors(points, colors):
  points = np.asarray(points, np.float64)
  if points.ndim != 2 or points.shape[1] != 3:
    raise ValueError(f'points must be (P, 3), got {points.shape}')
  if not np.all(np.isfinite(points)):
    raise ValueError('points contain NaN or inf; mask them before exporting')
  if colors is not None:
    colors = np.asarray(colors)
    if colors.shape != points.shape:
      raise ValueError(f'colors must be (P, 3) like points {points.shape}, got {colors.shape}')
    if colors.dtype != np.uint8:
      raise ValueError(f'colors must be uint8, got {colors.dtype}')
  return points, colors


def write_ply(path: str, points, colors=None, comment: str | None = None) -> None:
  """Binary little-endian PLY of points (P, 3) float and optional colors (P, 3) uint8, written
  atomically to a local ``path`` (see ply_bytes)."""
  _atomic_write(path, ply_bytes(points, colors, comment))


def require_ply_writer(what: str) -> None:
  """Raises UserError when trimesh, which writes the PLY files, is not installed. Paths that write
  point clouds only at the end of long work (``what``: e.g. an evaluation's gallery) call it first,
  so a missing package stops them at once instead of after the work."""
  if importlib.util.find_spec('trimesh') is None:
    raise errors.UserError(f'{what} writes point clouds (PLY) with trimesh, which is not '
                           'installed: pip install -r requirements.txt')


def ply_bytes(points, colors=None, comment: str | None = None) -> bytes:
  """The PLY file (binary little-endian) of points (P, 3) float and optional colors (P, 3) uint8.

  Numpy or jax arrays; mask invalid points before calling (NaNs raise ValueError). `comment`
  (one line, e.g. the units) goes into the header as a PLY `comment` line."""
  import trimesh  # Imported lazily: only export paths need it.
  points, colors = _check_points_colors(points, colors)
  cloud = trimesh.PointCloud(vertices=points, colors=colors)
  data = cloud.export(file_type='ply', encoding='binary')
  if comment:
    if '\n' in comment:
      raise ValueError('a PLY comment is one line')
    ply, fmt, rest = data.split(b'\n', 2)  # a comment may follow the format line
    data = b'\n'.join([ply, fmt, f'comment {comment}'.encode('utf-8'), rest])
  return data



def _fmt_rows(rows: np.ndarray, fmt: str) -> str:
  """Formats a 2-D array one line per row (vectorized via numpy's savetxt)."""
  buf = io.StringIO()
  if len(rows):
    np.savetxt(buf, rows, fmt=fmt)
  return buf.getvalue()


def write_colmap_text(directory: str, K, cam_to_world, width: int, height: int, points=None,
                      colors=None, image_names=None, shared_camera: bool = False,
                      comment: str | None = None) -> None:
  """Writes a COLMAP text model: cameras.txt, images.txt, points3D.txt in `directory`.

  Args:
    K: (N, 3, 3) intrinsics (no skew). COLMAP, like this project, puts pixel centres at
      (col + 0.5, row + 0.5), so K is written unchanged as PINHOLE fx fy cx cy.
    cam_to_world: (N, 4, 4) OpenCV poses; written as COLMAP's world-to-camera qvec (w, x, y, z;
      w >= 0) and tvec.
    width, height: image size in pixels.
    points: (P, 3) world points or None; colors: (P, 3) uint8 or None (grey).
    image_names: N file names (default frame_00000.png, ...).
    shared_camera: one camera (id 1) for all images; requires identical K.
    comment: one line (e.g. the units of the poses and points) added to each file's header as
      a '#' comment, which COLMAP's readers skip.
  Points are written with empty tracks and error 0 (no 2-D observations are known), which
  COLMAP and its readers accept. Image / camera / point ids start at 1. Each file is atomic.
  """
  K = np.asarray(K, np.float64)
  c2w = np.asarray(cam_to_world, np.float64)
  if K.ndim != 3 or K.shape[1:] != (3, 3):
    raise ValueError(f'K must be (N, 3, 3), got {K.shape}')
  if c2w.shape != (K.shape[0], 4, 4):
    raise ValueError(f'cam_to_world must be (N, 4, 4) with N = {K.shape[0]}, got {c2w.shape}')
  n = K.shape[0]
  if not (np.all(np.isfinite(K)) and np.all(np.isfinite(c2w))):
    raise ValueError('K or cam_to_world contains NaN or inf')
  if np.any(K[:, 0, 0] <= 0) or np.any(K[:, 1, 1] <= 0):
    raise ValueError('K has a non-positive focal length')
  if np.any(np.abs(K[:, 0, 1]) > 1e-6 * K[:, 0, 0]):
    raise ValueError('K has skew; the PINHOLE model cannot represent it')
  if width <= 0 or height <= 0:
    raise ValueError(f'width and height must be positive, got {width}x{height}')
  if image_names is None:
    image_names = [f'frame_{i:05d}.png' for i in range(n)]
  if len(image_names) != n or any((not s) or any(c.isspace() for c in s) for s in image_names):
    raise ValueError('image_names must be N names without whitespace')
  if comment and '\n' in comment:
    raise ValueError('the COLMAP header comment is one line')
  note = f'# {comment}\n' if comment else ''
  params = np.stack([K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2]], -1)
  if shared_camera:
    if not np.allclose(params, params[:1], rtol=1e-6, atol=0):
      raise ValueError('shared_camera=True but the intrinsics differ between views')
    params = params[:1]
  cam_ids = np.arange(1, len(params) + 1)
  cam_lines = [f'{i} PINHOLE {int(width)} {int(height)} ' + ' '.join(f'{v:.17g}' for v in p)
               for i, p in zip(cam_ids, params)]
  cameras_txt = ('# Camera list with one line of data per camera:\n'
                 '#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n'
                 f'# Number of cameras: {len(params)}\n' + note + '\n'.join(cam_lines) + '\n')

  qvec, tvec = cameras.cam_to_world_to_colmap(c2w)
  img_lines = []
  for i in range(n):
    vals = ' '.join(f'{v:.17g}' for v in np.concatenate([qvec[i], tvec[i]]))
    cam_id = 1 if shared_camera else i + 1
    img_lines.append(f'{i + 1} {vals} {cam_id} {image_names[i]}\n\n')  # empty POINTS2D line
  images_txt = ('# Image list with two lines of data per image:\n'
                '#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME\n'
                '#   POINTS2D[] as (X, Y, POINT3D_ID)\n'
                f'# Number of images: {n}, mean observations per image: 0\n' + note
                + ''.join(img_lines))

  if points is None:
    points = np.zeros((0, 3))
  points, colors = _check_points_colors(points, colors)
  if colors is None:
    colors = np.full(points.shape, 128, np.uint8)
  rows = np.concatenate([np.arange(1, len(points) + 1)[:, None], points,
                         colors.astype(np.float64), np.zeros((len(points), 1))], 1)
  points_txt = ('# 3D point list with one line of data per point:\n'
                '#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)\n'
                f'# Number of points: {len(points)}, mean track length: 0\n' + note
                + _fmt_rows(rows, '%d %.17g %.17g %.17g %d %d %d %.1f'))
  os.makedirs(directory, exist_ok=True)
  _atomic_write(os.path.join(directory, 'cameras.txt'), cameras_txt)
  _atomic_write(os.path.join(directory, 'images.txt'), images_txt)
  _atomic_write(os.path.join(directory, 'points3D.txt'), points_txt)
