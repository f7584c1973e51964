"""Per-clip transforms of the input pipeline (numpy; run in grain worker processes).

Frame selection picks N frames with a stride; ``crop_and_resize`` takes the centre square and
resizes it, keeping the camera exact; ``canonicalize`` expresses geometry in frame 0's camera,
normalizes it (paper eq. 1's N) and maps RGB to [-1, 1].

Geometry travels as z-depth: XYZ is always the unprojection of the (resized) depth with the
(adjusted) K, so ``unproject(depth, K') == XYZ`` holds exactly after any resize.
Conventions: OpenCV cameras, cam_to_world 4x4, K in pixels, pixel centres at (col + 0.5,
row + 0.5), images (..., H, W, C).
"""
from __future__ import annotations

import numpy as np

from wvd_jax.data.clips import unproject
from wvd_jax.geometry import cameras, normalization

# Neighbouring depths further apart than this (relative) are a depth edge: no interpolation.
DEPTH_EDGE_RATIO = 0.1


def frame_indices(num_available: int, num_frames: int, max_stride: int,
                  rng: np.random.Generator) -> np.ndarray:
  """N frame indices start + stride * arange(N), stride uniform in [1, max usable <= max_stride]
  and start uniform over the valid range."""
  if num_frames > num_available:
    raise ValueError(f'a clip of {num_available} frames cannot give {num_frames} frames')
  usable = max_stride if num_frames == 1 else min(max_stride,
                                                  (num_available - 1) // (num_frames - 1))
  stride = int(rng.integers(1, usable + 1))
  start = int(rng.integers(0, num_available - (num_frames - 1) * stride))
  return start + stride * np.arange(num_frames)


def curriculum_progress(global_batch: int, curriculum_steps: int) -> float:
  """The motion curriculum's progress in [0, 1] at a global batch: min(1, b / steps)
  (steps > 0). The data position (global batch count) fixes it, so a resume continues it."""
  return min(1.0, global_batch / curriculum_steps)


def curriculum_frame_indices(num_available: int, num_frames: int, max_stride: int,
                             progress: float, rng: np.random.Generator) -> np.ndarray:
  """``frame_indices`` under the motion curriculum: stride = 1 + floor(u (1 + (S - 1) p)),
  u ~ U[0, 1), capped at S (S = the largest usable stride <= max_stride, p = progress).

  p = 0 gives stride 1 only (the smallest camera motion the clip has); p = 1 gives stride
  uniform in [1, S] (frame_indices' distribution); in between the chance of a stride > s grows
  linearly with p. The camera motion between a clip's frames grows with the stride (the
  trajectories move smoothly), so this grows the motion seen in training. Start uniform over
  the valid range, as frame_indices."""
  if num_frames > num_available:
    raise ValueError(f'a clip of {num_available} frames cannot give {num_frames} frames')
  if not 0.0 <= progress <= 1.0:
    raise ValueError(f'curriculum progress must be in [0, 1], got {progress}')
  usable = max_stride if num_frames == 1 else min(max_stride,
                                                  (num_available - 1) // (num_frames - 1))
  stride = min(usable, 1 + int(rng.random() * (1.0 + (usable - 1) * progress)))
  start = int(rng.integers(0, num_available - (num_frames - 1) * stride))
  return start + stride * np.arange(num_frames)


PER_FRAME = ('rgb', 'depth', 'xyz', 'mask', 'intrinsics', 'cam_to_world', 'surface', 'valid')


def select_frames(clip: dict[str, np.ndarray], indices: np.ndarray) -> dict[str, np.ndarray]:
  """The clip with its per-frame arrays (PER_FRAME keys) taken at ``indices``; other entries
  (scene_index, ...) pass through."""
  return {k: (np.asarray(v)[indices] if k in PER_FRAME else v) for k, v in clip.items()}


def crop_resize_intrinsics(K: np.ndarray, top: int, left: int, scale: float) -> np.ndarray:
  """K (..., 3, 3) after cropping at (top, left) then scaling the image by ``scale``: pixel
  coordinates map as u' = (u - left) * scale (centres to centres, since both use +0.5)."""
  K = np.array(K, np.float64)
  K[..., 0, 2] -= left
  K[..., 1, 2] -= top
  K[..., :2, :] *= scale
  return K.astype(np.float32)


def _sample_centres(top: int, left: int, crop: int, size: int) -> tuple[np.ndarray, np.ndarray]:
  """Source (row, col) coordinates, in index units, of the output pixel centres (size,) each."""
  centres = (np.arange(size) + 0.5) * (crop / size) - 0.5
  return centres + top, centres + left


def _nearest(image: np.ndarray, top: int, left: int, crop: int, size: int) -> np.ndarray:
  """(N, H, W) -> (N, size, size): the source pixel nearest each output pixel centre."""
  y, x = _sample_centres(top, left, crop, size)
  ny = np.clip(np.floor(y + 0.5).astype(np.int64), 0, image.shape[1] - 1)
  nx = np.clip(np.floor(x + 0.5).astype(np.int64), 0, image.shape[2] - 1)
  return image[:, ny[:, None], nx[None, :]]


def _resize_depth(depth: np.ndarray, top: int, left: int, crop: int, size: int) -> np.ndarray:
  """Resizes depth (N, H, W) by sampling the crop at the output pixel centres.

  Inverse depth is interpolated bilinearly from the 4 surrounding source pixel centres (exact
  for planes, where 1/z is affine in the pixel coordinates); where those 4 are not all valid or
  straddle a depth edge (relative spread > DEPTH_EDGE_RATIO) the nearest source pixel is taken
  instead, so depth is never blurred across an edge. 0 stays invalid."""
  y, x = _sample_centres(top, left, crop, size)
  y0 = np.clip(np.floor(y).astype(np.int64), 0, depth.shape[1] - 2)
  x0 = np.clip(np.floor(x).astype(np.int64), 0, depth.shape[2] - 2)
  wy = np.clip(y - y0, 0.0, 1.0).astype(np.float32)[:, None]  # Clamped: edge extension when
  wx = np.clip(x - x0, 0.0, 1.0).astype(np.float32)[None, :]  # upsampling past the borders.
  d00 = depth[:, y0[:, None], x0[None, :]]
  d01 = depth[:, y0[:, None], x0[None, :] + 1]
  d10 = depth[:, y0[:, None] + 1, x0[None, :]]
  d11 = depth[:, y0[:, None] + 1, x0[None, :] + 1]
  lo = np.minimum(np.minimum(d00, d01), np.minimum(d10, d11))
  hi = np.maximum(np.maximum(d00, d01), np.maximum(d10, d11))
  smooth = (lo > 0) & (hi <= lo * (1 + DEPTH_EDGE_RATIO))
  with np.errstate(divide='ignore', invalid='ignore'):  # 0 * inf at holes; masked by smooth.
    inv = ((1 - wy) * ((1 - wx) / d00 + wx / d01) + wy * ((1 - wx) / d10 + wx / d11))
    interpolated = np.where(smooth, 1.0 / np.where(smooth, inv, 1.0), 0.0)
  nearest = _nearest(depth, top, left, crop, size)
  return np.where(smooth, interpolated, nearest).astype(np.float32)


def crop_and_resize(clip: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
  """Centre square crop + resize to (size, size) of rgb, depth and K; xyz / mask (if present)
  are recomputed from the new depth, so unproject(depth', K') == xyz' exactly.

  RGB is resized by area averaging (cv2.INTER_AREA; anti-aliased). Depth: see _resize_depth.
  ``valid`` (if present) takes the nearest source pixel's (where depth is interpolated, its 4
  source pixels have depth > 0, so are valid: depth 0 where invalid). A crop that is already (size, size) is returned unchanged (bit-exact)."""
  import cv2  # pylint: disable=g-import-not-at-top
  _, h, w = clip['depth'].shape
  crop = min(h, w)
  top, left = (h - crop) // 2, (w - crop) // 2
  if crop == size and h == w:
    return clip
  out = dict(clip)
  rgb = clip['rgb'][:, top:top + crop, left:left + crop]
  if crop == size:
    out['rgb'], out['depth'] = rgb, clip['depth'][:, top:top + crop, left:left + crop]
    if 'valid' in clip:
      out['valid'] = clip['valid'][:, top:top + crop, left:left + crop]
  else:
    interpolation = cv2.INTER_AREA if size < crop else cv2.INTER_LINEAR
    out['rgb'] = np.stack([cv2.resize(np.ascontiguousarray(f), (size, size),
                                      interpolation=interpolation) for f in rgb])
    out['depth'] = _resize_depth(clip['depth'], top, left, crop, size)
    if 'valid' in clip:
      out['valid'] = _nearest(np.asarray(clip['valid']), top, left, crop, size)
  out['intrinsics'] = crop_resize_intrinsics(clip['intrinsics'], top, left, size / crop)
  if 'xyz' in clip or 'mask' in clip:
    out['mask'] = out['depth'] > 0
    if 'valid' in out:
      out['mask'] &= out['valid']
    xyz = unproject(out['depth'], out['intrinsics'], clip['cam_to_world'])
    out['xyz'] = np.where(out['mask'][..., None], xyz, 0.0).astype(np.float32)
  return out


def frame0_points(clip: dict[str, np.ndarray]):
  """(relative (N, 4, 4) frame i -> frame 0 poses, xyz (N, H, W, 3) unprojected depth in frame
  0's camera (metric, not normalized), mask (N, H, W) valid surface, valid (N, H, W) depth
  known) of a clip of stored fields: ``canonicalize``'s geometry before the normalization."""
  c2w = np.asarray(clip['cam_to_world'], np.float32)
  world_to_frame0 = cameras.invert_pose(c2w[0])
  relative = np.asarray(world_to_frame0 @ c2w, np.float32)  # (N, 4, 4) frame i -> frame 0.
  depth = np.asarray(clip['depth'], np.float32)
  valid = np.asarray(clip['valid'], bool) if 'valid' in clip else np.ones(depth.shape, bool)
  mask = (depth > 0) & valid
  return relative, unproject(depth, clip['intrinsics'], relative), mask, valid


def canonicalize(clip: dict[str, np.ndarray], box_fill: float = 1.0) -> dict[str, np.ndarray]:
  """One model-ready clip from rgb (N, H, W, 3) uint8, depth (N, H, W), intrinsics, cam_to_world
  and optionally valid (N, H, W) bool (absent: all True; clips.py gives the semantics).

  XYZ is the unprojection of depth in frame 0's camera frame (OpenCV), normalized per clip by
  geometry's N (robust 2nd-98th percentile box of the valid surface points -> [-1, 1]; points
  outside are clipped; ``box_fill`` < 1 maps that box into [-box_fill, box_fill] instead,
  config.data.xyz_box_fill), 0 where there is no valid surface. Returns rgb (N, H, W, 3) float32 in
  [-1, 1], xyz (N, H, W, 3) float32, mask (N, H, W) bool (valid surface), xyz_valid (N, H, W)
  bool (depth known: surface or known background), intrinsics (N, 3, 3), cam_to_world (N, 4, 4) in the normalized frame-0
  frame, norm_center (3,), norm_scale () float32."""
  relative, xyz, mask, valid = frame0_points(clip)
  norm = normalization.fit_normalization(xyz, mask, fill=box_fill)
  xyz = np.clip(np.asarray(normalization.normalize_points(xyz, norm)), -1.0, 1.0)
  return dict(
      rgb=clip['rgb'].astype(np.float32) * np.float32(1 / 127.5) - np.float32(1.0),
      xyz=np.where(mask[..., None], xyz, 0.0).astype(np.float32),
      mask=mask,
      xyz_valid=valid,
      intrinsics=np.asarray(clip['intrinsics'], np.float32),
      cam_to_world=np.asarray(normalization.normalize_cam_to_world(relative, norm), np.float32),
      norm_center=np.asarray(norm.center, np.float32),
      norm_scale=np.asarray(norm.scale, np.float32),
  )
