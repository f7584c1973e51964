"""File exports: binary PLY point clouds (trimesh) and COLMAP text models. Writes are atomic
(temporary file in the same directory, then os.replace), so readers never see partial files."""
from __future__ import annotations

import io
import os
import tempfile

import numpy as np


def _atomic_write(path: str, data: bytes | str) -> None:
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix='.' + os.path.basename(path) + '.', suffix='.tmp')
  try:
    with os.fdopen(fd, 'wb') as f:
      f.write(data.encode('utf-8') if isinstance(data, str) else data)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


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


def write_ply(path: str, points, colors=None) -> None:
  """Binary little-endian PLY of points (P, 3) float and optional colors (P, 3) uint8.

  Numpy or jax arrays; mask invalid points before calling (NaNs raise ValueError)."""
  import trimesh  # Imported lazily: only export paths need it.
  points, colors = _check_points_colors(points, colors)
  cloud = trimesh.PointCloud(vertices=points, colors=colors)
  data = cloud.export(file_type='ply', encoding='binary')
  _atomic_write(path, data)
