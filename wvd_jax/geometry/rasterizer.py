"""Z-buffered point splatting: the rasterizer R of paper eq. 1.

Each valid point in front of a camera lands in the pixel containing its projection
(pixel [row, col] spans u in [col, col + 1), v in [row, row + 1)); per pixel the nearest
point (smallest camera z) wins, ties going to the lowest point index, so results are
deterministic. Pixels that no point reaches are holes: zeros and mask False.

Occlusion without a loop over points: a scatter-min of depth gives the z-buffer, points whose
depth equals their pixel's z-buffer are the winners, and a second scatter-min of the winners'
indices picks one per pixel (a plain scatter-set could not: colliding updates land in
unspecified order). Everything is static-shaped and jittable; cameras are batched with vmap.
"""
from __future__ import annotations

import functools
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from wvd_jax.geometry import _checks
from wvd_jax.geometry import cameras


class Raster(NamedTuple):
  """Rasterized images of (..., cameras) at H x W.

  xyz (..., H, W, 3) world point of the winning point; colors (..., H, W, C) or None;
  mask (..., H, W) bool, True where a point landed; depth (..., H, W) camera z of the winner;
  index (..., H, W) int32 index of the winning point (P where mask is False).
  Holes are 0 in xyz / colors / depth."""
  xyz: jax.Array
  colors: Optional[jax.Array]
  mask: jax.Array
  depth: jax.Array
  index: jax.Array


def _rasterize_one(points, colors, valid, K, cam_to_world, height, width, near):
  num = points.shape[0]
  hw = height * width
  uv, z = cameras.project_points(points, K, cam_to_world)
  # floor(u) is the column whose pixel contains the projection (centres at col + 0.5).
  col = jnp.floor(uv[:, 0])
  row = jnp.floor(uv[:, 1])
  finite = jnp.all(jnp.isfinite(points), -1) & jnp.isfinite(z)
  inside = (valid & finite & (z > near) & (col >= 0) & (col < width) & (row >= 0)
            & (row < height))
  # Out-of-image points get index hw: dropped by the scatters, clamped (then masked) by gathers.
  pix = jnp.where(inside, row.astype(jnp.int32) * width + col.astype(jnp.int32), hw)
  z_in = jnp.where(inside, z, jnp.inf)
  zbuf = jnp.full((hw,), jnp.inf, z.dtype).at[pix].min(z_in, mode='drop')
  winner = inside & (z_in <= zbuf[jnp.minimum(pix, hw - 1)])
  cand = jnp.where(winner, jnp.arange(num, dtype=jnp.int32), num)
  index = jnp.full((hw,), num, jnp.int32).at[pix].min(cand, mode='drop')
  mask = index < num
  safe = jnp.minimum(index, num - 1)
  xyz = jnp.where(mask[:, None], points[safe], 0.0)
  depth = jnp.where(mask, zbuf, 0.0)
  out_colors = None
  if colors is not None:
    out_colors = jnp.where(mask[:, None], colors[safe], jnp.zeros((), colors.dtype))
    out_colors = out_colors.reshape(height, width, colors.shape[-1])
  return Raster(xyz.reshape(height, width, 3), out_colors, mask.reshape(height, width),
                depth.reshape(height, width), index.reshape(height, width))


def rasterize_points(points, colors, valid, K, cam_to_world, height: int, width: int,
                     near: float = 0.0) -> Raster:
  """Splats a point cloud into one or more cameras with a z-buffer.

  Args:
    points: (P, 3) world points (non-finite points are ignored).
    colors: (P, C) per-point attributes (any dtype) or None.
    valid: (P,) bool, or None for all valid.
    K: (..., 3, 3) intrinsics; cam_to_world: (..., 4, 4) OpenCV poses; their batch shapes
      broadcast and give the output's leading axes.
    height, width: output size (static).
    near: points with camera z <= near are ignored (behind the camera).
  Returns:
    Raster with leading axes the cameras' batch shape.
  """
  points = jnp.asarray(points)
  if points.ndim != 2 or points.shape[-1] != 3:
    raise ValueError(f'points must be (P, 3), got {points.shape}')
  num = points.shape[0]
  if num == 0:
    raise ValueError('points is empty (P = 0)')
  if colors is not None:
    colors = jnp.asarray(colors)
    if colors.ndim != 2 or colors.shape[0] != num:
      raise ValueError(f'colors must be (P, C) with P = {num}, got {colors.shape}')
  if valid is None:
    valid = jnp.ones((num,), bool)
  valid = jnp.asarray(valid)
  if valid.shape != (num,):
    raise ValueError(f'valid must be (P,) = ({num},), got {valid.shape}')
  _checks.check_intrinsics(K)
  _checks.check_pose(cam_to_world)
  if height <= 0 or width <= 0:
    raise ValueError(f'height and width must be positive, got {height}x{width}')
  K = jnp.asarray(K)
  cam_to_world = jnp.asarray(cam_to_world)
  batch = np.broadcast_shapes(K.shape[:-2], cam_to_world.shape[:-2])
  K = jnp.broadcast_to(K, batch + (3, 3)).reshape(-1, 3, 3)
  cam_to_world = jnp.broadcast_to(cam_to_world, batch + (4, 4)).reshape(-1, 4, 4)
  out = _rasterize_cameras(points, colors, valid.astype(bool), K, cam_to_world, near,
                           height=int(height), width=int(width))
  return jax.tree.map(lambda a: a.reshape(batch + a.shape[1:]), out)


@functools.partial(jax.jit, static_argnames=('height', 'width'))
def _rasterize_cameras(points, colors, valid, K, cam_to_world, near, *, height, width):
  """vmap of `_rasterize_one` over cameras K (B, 3, 3), cam_to_world (B, 4, 4) (one compiled
  program per shape, also when called eagerly)."""
  one = lambda k, c: _rasterize_one(points, colors, valid, k, c, height, width, near)
  return jax.vmap(one)(K, cam_to_world)
