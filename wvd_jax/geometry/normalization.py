"""XYZ normalization N of paper eq. 1: centre and isotropically rescale a clip's points into
[-1, 1]; exactly invertible, and applied to camera translations too.

normalized = (p - center) / scale, with one isotropic `scale` so that angles, and therefore
intrinsics, are unchanged: unprojecting depth / scale with K and `normalize_cam_to_world(c2w)`
gives normalized points directly.

Robustness: the fit uses per-axis percentiles of the valid points, so a few outliers do not
squash the scene. Points outside the robust range map outside [-1, 1]; callers that need the
range (the model's input) clip them (`np.clip(normalized, -1, 1)`) and may mask them.
numpy in -> numpy out; jax in -> jax out (jittable: shapes are static, masking via NaNs).
"""
from __future__ import annotations

import warnings
from typing import NamedTuple

from wvd_jax.geometry import _xp


class Normalization(NamedTuple):
  """normalized = (p - center) / scale. center (..., 3), scale (...,) > 0."""
  center: object
  scale: object


def fit_normalization(points, valid=None, percentile: float = 98.0, point_axes: int | None = None,
                      min_scale: float = 1e-6, fill: float = 1.0) -> Normalization:
  """Fits N to the valid points.

  Args:
    points: (..., M, 3) point sets or (..., N, H, W, 3) XYZ images (world units).
    valid: bool, shape points.shape[:-1] (None: all finite points). Non-finite points are
      always ignored.
    percentile: robust range per axis is [100 - percentile, percentile] (e.g. 98 -> 2nd..98th);
      100 fits the exact bounding box. The box's centre becomes `center`; its largest half-side
      becomes `scale`, so the robust box maps into [-1, 1]^3.
    point_axes: how many axes before the last are points of one set (reduced over); the rest
      are batch axes, each with its own normalization. None: all of them (one normalization).
      E.g. XYZ images (B, N, H, W, 3) normalized per clip: point_axes=3 -> center (B, 3).
    min_scale: floor on scale (a single point or a degenerate set).
    fill: the robust box maps into [-fill, fill]^3 (scale = largest half-side / fill); < 1
      leaves room for the points beyond the robust box before [-1, 1] clips them
      (config.data.xyz_box_fill).
  Returns:
    Normalization(center (batch..., 3), scale (batch...,)). A set with no valid point gets
    center 0 and scale 1 (identity) rather than NaN.
  """
  xp = _xp.array_module(points, valid)
  points = _xp.as_float(xp, points)
  if points.ndim < 2 or points.shape[-1] != 3:
    raise ValueError(f'points must be (..., 3) with at least one point axis, got {points.shape}')
  if valid is not None:
    valid = xp.asarray(valid)
    if valid.shape != points.shape[:-1]:
      raise ValueError(
          f'valid shape {valid.shape} must equal points.shape[:-1] {points.shape[:-1]}')
  if not 50.0 < percentile <= 100.0:
    raise ValueError(f'percentile must be in (50, 100], got {percentile}')
  if not 0.0 < fill <= 1.0:
    raise ValueError(f'fill must be in (0, 1], got {fill}')
  n_pt = points.ndim - 1 if point_axes is None else int(point_axes)
  if not 1 <= n_pt <= points.ndim - 1:
    raise ValueError(f'point_axes={point_axes} out of range for points of shape {points.shape}')
  batch = points.shape[:points.ndim - 1 - n_pt]
  ok = xp.all(xp.isfinite(points), axis=-1)
  if valid is not None:
    ok = ok & valid.astype(bool)
  flat = xp.where(ok[..., None], points, xp.nan).reshape(batch + (-1, 3))
  with warnings.catch_warnings():  # all-NaN sets are handled below
    warnings.simplefilter('ignore', RuntimeWarning)
    lo = xp.nanpercentile(flat, 100.0 - percentile, axis=-2)
    hi = xp.nanpercentile(flat, percentile, axis=-2)
  center = (lo + hi) / 2
  scale = xp.max(hi - lo, axis=-1) / 2
  if fill != 1.0:
    scale = scale / fill
  empty = xp.any(xp.isnan(center), axis=-1)
  center = xp.where(empty[..., None], 0.0, center).astype(points.dtype)
  scale = xp.where(empty, 1.0, xp.maximum(scale, min_scale)).astype(points.dtype)
  return Normalization(center, scale)


def normalize_points(points, norm: Normalization):
  """(p - center) / scale; points (..., 3), norm's batch shape broadcasts against
  points.shape[:-1] (per-clip norm on (B, N, H, W, 3): expand center to (B, 1, 1, 1, 3))."""
  xp = _xp.array_module(points, *norm)
  return (_xp.as_float(xp, points) - norm.center) / xp.asarray(norm.scale)[..., None]


def denormalize_points(points, norm: Normalization):
  """Inverse of `normalize_points`: p * scale + center."""
  xp = _xp.array_module(points, *norm)
  return _xp.as_float(xp, points) * xp.asarray(norm.scale)[..., None] + norm.center


def normalize_cam_to_world(cam_to_world, norm: Normalization):
  """cam_to_world (..., 4, 4) in the normalized world: rotation kept, translation normalized.

  A world point R (d r) + t then normalizes to R ((d / scale) r) + (t - center) / scale, so
  depth maps scale by 1 / scale (`normalize_depth`) and K is unchanged."""
  xp = _xp.array_module(cam_to_world, *norm)
  c2w = _xp.as_float(xp, cam_to_world)
  t = normalize_points(c2w[..., :3, 3], norm)
  return xp.concatenate([xp.concatenate([c2w[..., :3, :3], t[..., None]], -1), c2w[..., 3:, :]], -2)


def denormalize_cam_to_world(cam_to_world, norm: Normalization):
  """Inverse of `normalize_cam_to_world`."""
  xp = _xp.array_module(cam_to_world, *norm)
  c2w = _xp.as_float(xp, cam_to_world)
  t = denormalize_points(c2w[..., :3, 3], norm)
  return xp.concatenate([xp.concatenate([c2w[..., :3, :3], t[..., None]], -1), c2w[..., 3:, :]], -2)


def normalize_depth(depth, norm: Normalization):
  """depth (..., H, W) / scale (scale broadcast against depth.shape[:-2])."""
  xp = _xp.array_module(depth, *norm)
  return _xp.as_float(xp, depth) / xp.asarray(norm.scale)[..., None, None]


def denormalize_depth(depth, norm: Normalization):
  """depth (..., H, W) * scale."""
  xp = _xp.array_module(depth, *norm)
  return _xp.as_float(xp, depth) * xp.asarray(norm.scale)[..., None, None]


# The model's XYZ channels at pixels with no surface (sky, masked background): the corner
# (-1, -1, -1) of the normalized box, which real normalized points reach only when clipped
# on all three axes at once. Training targets it there, so a sampled XYZ image says itself
# where there is no geometry (background_mask).
BACKGROUND_XYZ = -1.0
_BACKGROUND_THRESHOLD = -0.9


def fill_background(xyz, mask):
  """(..., H, W, 3) normalized XYZ with BACKGROUND_XYZ where ``mask`` (..., H, W) is False."""
  xp = _xp.array_module(xyz)
  return xp.where(mask[..., None], xyz, xp.asarray(BACKGROUND_XYZ, dtype=xyz.dtype))


def background_mask(xyz):
  """(..., H, W) bool: pixels of normalized XYZ (..., H, W, 3) within 0.1 of the background
  corner on every axis (where a model trained with fill_background says there is no surface)."""
  xp = _xp.array_module(xyz)
  return xp.all(xyz < _BACKGROUND_THRESHOLD, axis=-1)
