"""Reading input images and writing task outputs in formats other tools read.

Images: any format PIL reads; centre-cropped to a square and resized to the model's resolution
(with a log message when that changes the image). Outputs: PNG, MP4 (ffmpeg from imageio-ffmpeg),
depth as .npy (float32) and a colourized .png.
"""
from __future__ import annotations

import os

import imageio.v3 as iio
import numpy as np
from absl import logging
from PIL import Image, UnidentifiedImageError

from wvd_jax import files, visualize
from wvd_jax.geometry import export, normalization


def load_image(path: str, size: int) -> np.ndarray:
  """(size, size, 3) float32 RGB in [-1, 1] from an image file (centre crop, then resize)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'input image {path} does not exist')
  try:
    with Image.open(path) as image:
      image = image.convert('RGB')
  except (UnidentifiedImageError, OSError) as e:
    raise ValueError(f'cannot read image {path}: {e}') from e
  w, h = image.size
  if (w, h) != (size, size):
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize(
        (size, size), Image.Resampling.LANCZOS)
    logging.info('%s: %dx%d centre-cropped to %dx%d and resized to %dx%d', path, w, h, side,
                 side, size, size)
  return np.asarray(image, np.float32) / 127.5 - 1.0


def list_images(path: str) -> list[str]:
  """The image files of a directory (sorted by name), or [path] for a file."""
  if os.path.isdir(path):
    names = sorted(n for n in os.listdir(path)
                   if n.lower().endswith(('.png', '.jpg', '.jpeg', '.bmp', '.webp', '.tif')))
    if not names:
      raise ValueError(f'no images (.png, .jpg, ...) in directory {path}')
    return [os.path.join(path, n) for n in names]
  return [path]


def save_video(path: str, frames: np.ndarray, fps: int = 8) -> None:
  """(T, H, W, 3) uint8 -> MP4 (H.264, yuv420p; sizes padded to even by ffmpeg's scaler)."""
  tmp = path + '.tmp.mp4'
  iio.imwrite(tmp, frames, extension='.mp4', fps=fps, codec='libx264', macro_block_size=1)
  os.replace(tmp, path)


def save_depth(prefix: str, depth: np.ndarray, mask: np.ndarray | None = None) -> None:
  """<prefix>.npy (float32 depth) and <prefix>.png (colourized, near = warm)."""
  depth = np.asarray(depth, np.float32)
  with files.atomic_write(prefix + '.npy') as f:
    np.save(f, depth)
  visualize.save_png(prefix + '.png', visualize.colorize_depth(depth, mask))


def write_surface_ply(path: str, xyz, rgb) -> None:
  """PLY of a generated sample: XYZ (..., H, W, 3) normalized, coloured by RGB (..., H, W, 3) in
  [-1, 1]; pixels at the background corner (normalization.background_mask) are left out."""
  xyz, rgb = np.asarray(xyz), np.asarray(rgb)
  surface = ~np.asarray(normalization.background_mask(xyz))
  export.write_ply(path, xyz[surface], visualize.to_uint8(rgb[surface]))

