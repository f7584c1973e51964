"""Turning RGB and XYZ frames into images people can look at."""
from __future__ import annotations

import numpy as np
from PIL import Image

from wvd_jax import files


def to_uint8(frames: np.ndarray) -> np.ndarray:
  """[-1, 1] float frames (RGB, or XYZ shown as colours) -> uint8."""
  return np.round((np.clip(frames, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


def frame_grid(rows: list[np.ndarray], pad: int = 2) -> np.ndarray:
  """Rows of frames, each (N, H, W, 3) uint8 -> one (R*(H+pad), N*(W+pad), 3) image."""
  padded = [np.pad(r, ((0, 0), (0, pad), (0, pad), (0, 0)), constant_values=255) for r in rows]
  return np.concatenate([np.concatenate(list(r), axis=1) for r in padded], axis=0)


def save_png(path: str, image: np.ndarray) -> None:
  """Writes an (H, W, 3) uint8 image atomically."""
  with files.atomic_write(path) as f:
    Image.fromarray(image).save(f, format='PNG')
