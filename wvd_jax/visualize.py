"""Turning RGB and XYZ frames into images people can look at."""
from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from wvd_jax import files
from wvd_jax.geometry import normalization


def to_uint8(frames: np.ndarray) -> np.ndarray:
  """[-1, 1] float frames (RGB, or XYZ shown as colours) -> uint8."""
  return np.round((np.clip(frames, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


def frame_grid(rows: list[np.ndarray], pad: int = 2) -> np.ndarray:
  """Rows of frames, each (N, H, W, 3) uint8 -> one (R*(H+pad), N*(W+pad), 3) image."""
  padded = [np.pad(r, ((0, 0), (0, pad), (0, pad), (0, 0)), constant_values=255) for r in rows]
  return np.concatenate([np.concatenate(list(r), axis=1) for r in padded], axis=0)


def sample_grid(clip: dict, rgb, xyz, rgb_only: bool) -> np.ndarray:
  """One generated video beside its clip -> a uint8 image. Rows: the clip's RGB, the generated
  RGB and, unless RGB-only, the generated XYZ and the clip's XYZ (background at the sentinel
  corner, as a model draws it). Arrays (N, H, W, 3) in [-1, 1]; clip holds rgb, xyz, mask."""
  rows = [clip['rgb'], rgb]
  if not rgb_only:
    rows += [xyz, normalization.fill_background(clip['xyz'], clip['mask'])]
  return frame_grid([to_uint8(np.asarray(r)) for r in rows])


def save_png(path: str, image: np.ndarray) -> None:
  """Writes an (H, W, 3) uint8 image atomically."""
  with files.atomic_write(path) as f:
    Image.fromarray(image).save(f, format='PNG')


def depth_range(depth: np.ndarray, valid: np.ndarray | None = None) -> tuple[float, float]:
  """The 2nd and 98th percentiles of the valid depths (a colour scale robust to outliers)."""
  depth = np.asarray(depth, np.float32)
  valid = np.isfinite(depth) & (depth > 0) if valid is None else valid & np.isfinite(depth)
  if not valid.any():
    return 0.0, 1.0
  lo, hi = np.percentile(depth[valid], [2, 98])
  return float(lo), float(hi)


def colorize_depth(depth: np.ndarray, valid: np.ndarray | None = None,
                   value_range: tuple[float, float] | None = None) -> np.ndarray:
  """Depth (..., H, W) -> (..., H, W, 3) uint8 (turbo colour map, near = warm, invalid = black).

  ``value_range`` fixes the scale (to show a prediction and its ground truth alike); default:
  ``depth_range`` of this depth."""
  depth = np.asarray(depth, np.float32)
  valid = np.isfinite(depth) & (depth > 0) if valid is None else valid & np.isfinite(depth)
  lo, hi = value_range if value_range is not None else depth_range(depth, valid)
  scaled = np.clip((np.nan_to_num(depth) - lo) / max(hi - lo, 1e-8), 0, 1)
  codes = np.round((1 - scaled) * 255).astype(np.uint8)
  colour = cv2.applyColorMap(codes.reshape(-1, codes.shape[-1]), cv2.COLORMAP_TURBO)
  colour = cv2.cvtColor(colour, cv2.COLOR_BGR2RGB).reshape(depth.shape + (3,))
  colour[~valid] = 0
  return colour
