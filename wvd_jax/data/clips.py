"""Raw clips: the stored fields of a rendered clip and the fields derived from them.

A raw clip (what ``pipeline.load_split`` returns per element) is a dict of numpy arrays:

  rgb (N, H, W, 3) uint8;  depth (N, H, W) float32 z-depth, 0 where invalid;
  xyz (N, H, W, 3) float32 world points, 0 where invalid;  mask (N, H, W) bool;
  intrinsics (N, 3, 3) float32;  cam_to_world (N, 4, 4) float32 (OpenCV camera axes).

Only rgb, depth, intrinsics and cam_to_world are stored: mask is ``depth > 0`` and XYZ is
*defined* as the unprojection of depth (``geometry.cameras.unproject_depth``), so XYZ and depth
can never disagree and the shards are 2.7x smaller than with XYZ stored.

Converted real datasets also store ``valid`` (N, H, W) bool: True where depth is known. There
depth 0 with valid False is UNKNOWN (no measurement: out of the XYZ loss), while depth 0 with
valid True is known empty background. The synthetic world stores no ``valid``: every depth is
known (0 = background), so valid is all True. ``mask`` is always ``valid & (depth > 0)``.
"""
from __future__ import annotations

import numpy as np

from wvd_jax.geometry import cameras

STORED_FIELDS = ('rgb', 'depth', 'intrinsics', 'cam_to_world')
VALID = 'valid'  # Optional stored field (converted datasets); see the module docstring.


def unproject(depth: np.ndarray, K: np.ndarray, cam_to_world: np.ndarray) -> np.ndarray:
  """cameras.unproject_depth of depth (N, H, W) with K (N, 3, 3) and poses (N, 4, 4), float32.

  When every frame has the same K (the synthetic world's clips do) it is passed once, so the
  pixel rays are computed once instead of per frame (half the cost; the same numbers)."""
  K = np.asarray(K)
  if K.ndim == 3 and np.all(K == K[:1]):
    K = K[0]
  return np.asarray(cameras.unproject_depth(depth, K, cam_to_world), np.float32)


def stored_fields(clip: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """A clip's STORED_FIELDS plus ``valid`` (N, H, W) bool: the stored one, or all True where
  the dataset has none. Depth is set to 0 wherever valid is False."""
  out = {k: clip[k] for k in STORED_FIELDS}
  if VALID not in clip:
    out[VALID] = np.ones(np.shape(clip['depth']), bool)
    return out
  valid = np.asarray(clip[VALID], bool)
  out['depth'] = np.where(valid, clip['depth'], 0).astype(np.float32)
  out[VALID] = valid
  return out


def complete_clip(clip: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Adds mask and world XYZ (derived from depth) to a clip of stored fields; other keys pass."""
  depth = np.asarray(clip['depth'], np.float32)
  mask = depth > 0
  if VALID in clip:
    mask &= np.asarray(clip[VALID], bool)
  xyz = unproject(depth, clip['intrinsics'], clip['cam_to_world'])
  out = dict(clip)
  out['mask'] = mask
  out['xyz'] = np.where(mask[..., None], xyz, 0.0).astype(np.float32)
  return out
