"""Re-projection for camera-controlled generation: a bounded point memory, rendered into
target cameras to give partial XYZ / RGB frames and masks (the known part for inpainting).

`PointMemory` has fixed capacity (static shapes under jit). `add_frames` takes the union of the
memory and new XYZ+RGB frames, keeps one point per voxel of side `voxel_size` (so re-observing
the same surface does not grow the memory; older points win, which keeps already-shown content
fixed), then compacts the survivors into the capacity, oldest first. Points that do not fit are
counted in `num_dropped` (never silently garbage). Work in the normalized world ([-1, 1]) so one
voxel size fits every scene; voxel coordinates are clamped to +-2**20 per axis.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from wvd_jax.geometry import rasterizer


class PointMemory(NamedTuple):
  """points (C, 3) world XYZ; colors (C, Ch); valid (C,) bool; num_dropped () int32, the
  number of unique points ever discarded because the memory was full. Valid entries are
  packed first, oldest first."""
  points: jax.Array
  colors: jax.Array
  valid: jax.Array
  num_dropped: jax.Array


def empty_memory(capacity: int, channels: int = 3, dtype=jnp.float32) -> PointMemory:
  """An empty memory of `capacity` points with `channels` colour channels."""
  if capacity <= 0:
    raise ValueError(f'capacity must be positive, got {capacity}')
  return PointMemory(jnp.zeros((capacity, 3), dtype), jnp.zeros((capacity, channels), dtype),
                     jnp.zeros((capacity,), bool), jnp.zeros((), jnp.int32))


def _flatten_frames(xyz, rgb, mask):
  xyz, rgb = jnp.asarray(xyz), jnp.asarray(rgb)
  if xyz.ndim < 3 or xyz.shape[-1] != 3:
    raise ValueError(f'xyz must be (..., H, W, 3), got {xyz.shape}')
  if rgb.shape[:-1] != xyz.shape[:-1]:
    raise ValueError(f'rgb {rgb.shape} must match xyz {xyz.shape} except the channel axis')
  mask = jnp.ones(xyz.shape[:-1], bool) if mask is None else jnp.asarray(mask)
  if mask.shape != xyz.shape[:-1]:
    raise ValueError(f'mask must be {xyz.shape[:-1]}, got {mask.shape}')
  ok = mask.astype(bool) & jnp.all(jnp.isfinite(xyz), -1) & jnp.all(jnp.isfinite(rgb), -1)
  return xyz.reshape(-1, 3), rgb.reshape(-1, rgb.shape[-1]), ok.reshape(-1)


def add_frames(memory: PointMemory, xyz, rgb, mask=None, voxel_size: float = 2.0 / 256
               ) -> PointMemory:
  """Union of `memory` and the valid pixels of new frames, de-duplicated per voxel.

  Args:
    memory: current memory (capacity C).
    xyz: (..., H, W, 3) world points of the new frames; rgb: (..., H, W, Ch); mask: (..., H, W)
      bool or None (non-finite pixels are always skipped).
    voxel_size: de-duplication cell (world units; default ~ one pixel of a 256 image in [-1, 1]).
  Returns:
    The new memory, same capacity. Jittable (voxel_size static or traced).
  """
  pts, cols, ok = _flatten_frames(xyz, rgb, mask)
  if cols.shape[-1] != memory.colors.shape[-1]:
    raise ValueError(f'rgb has {cols.shape[-1]} channels, memory has {memory.colors.shape[-1]}')
  return _add_points(memory, pts, cols, ok, voxel_size)


@jax.jit
def _add_points(memory: PointMemory, pts, cols, ok, voxel_size) -> PointMemory:
  """`add_frames` on flat points (M, 3), colours (M, Ch), flags (M,)."""
  capacity = memory.points.shape[0]
  all_pts = jnp.concatenate([memory.points, pts.astype(memory.points.dtype)])
  all_cols = jnp.concatenate([memory.colors, cols.astype(memory.colors.dtype)])
  all_ok = jnp.concatenate([memory.valid, ok])
  total = all_pts.shape[0]
  order_age = jnp.arange(total, dtype=jnp.int32)  # memory entries are older than new pixels
  vox = jnp.clip(jnp.floor(all_pts / voxel_size), -2.0**20, 2.0**20)
  vox = jnp.where(all_ok[:, None], vox, 0).astype(jnp.int32)
  # Sort by (invalid last, voxel x, y, z, age): the first entry of each voxel run is the oldest.
  perm = jnp.lexsort((order_age, vox[:, 2], vox[:, 1], vox[:, 0], ~all_ok))
  v_sorted = vox[perm]
  ok_sorted = all_ok[perm]
  new_run = jnp.concatenate([jnp.ones((1,), bool), jnp.any(v_sorted[1:] != v_sorted[:-1], -1)])
  keep = jnp.zeros((total,), bool).at[perm].set(ok_sorted & new_run)
  # Compact survivors, oldest first; the tail beyond the capacity is dropped and counted.
  rank = jnp.argsort(jnp.where(keep, order_age, total), stable=True)[:capacity]
  kept = keep[rank]
  num_kept = jnp.sum(keep).astype(jnp.int32)
  return PointMemory(
      points=jnp.where(kept[:, None], all_pts[rank], 0.0),
      colors=jnp.where(kept[:, None], all_cols[rank], 0.0),
      valid=kept,
      num_dropped=memory.num_dropped + jnp.maximum(num_kept - capacity, 0))


def memory_from_frames(xyz, rgb, mask=None, capacity: int | None = None,
                       voxel_size: float = 2.0 / 256) -> PointMemory:
  """A new memory from frames (see `add_frames`); capacity defaults to the pixel count."""
  xyz = jnp.asarray(xyz)
  rgb = jnp.asarray(rgb)
  if capacity is None:
    capacity = int(np.prod(xyz.shape[:-1]))
  memory = empty_memory(capacity, rgb.shape[-1], jnp.result_type(xyz.dtype, jnp.float32))
  return add_frames(memory, xyz, rgb, mask, voxel_size)


def render_targets(memory: PointMemory, K, cam_to_world, height: int, width: int
                   ) -> rasterizer.Raster:
  """Partial XYZ / colour images of target cameras K (..., 3, 3), cam_to_world (..., 4, 4):
  a `rasterizer.Raster` whose mask marks the known pixels (holes are zeros, mask False)."""
  return rasterizer.rasterize_points(memory.points, memory.colors, memory.valid, K, cam_to_world,
                                     height, width)
