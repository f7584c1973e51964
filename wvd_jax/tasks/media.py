"""Reading input images and writing task outputs in formats other tools read.

Input images (any format PIL reads), handled on purpose, each change with a log line:
  * EXIF orientation is applied (a phone photo stands as it was shot);
  * grayscale (8 or 16 bit) becomes RGB; an image with alpha (RGBA, LA, palette transparency) is
    composited on white; other modes (CMYK, ...) are converted to RGB;
  * centre-cropped to a square and resized to the model's resolution; an image smaller than that
    is upscaled with a warning (its detail is missing, so results are blurrier); one whose shorter
    side is under MIN_IMAGE_SIDE pixels is refused;
  * a missing, truncated or corrupt file is one UserError line naming it.
Outputs: PNG, MP4 (ffmpeg from imageio-ffmpeg), depth as .npy (float32, model resolution) and a
colourized .png enlarged to at least DISPLAY_SIZE pixels.
"""
from __future__ import annotations

import os

import imageio.v3 as iio
import numpy as np
from absl import logging
from PIL import Image, ImageOps

from wvd_jax import errors, files, visualize
from wvd_jax.geometry import export, normalization

MIN_IMAGE_SIDE = 8  # Pixels; fewer hold no scene worth upscaling.
DISPLAY_SIZE = 256  # Depth and confidence PNGs are enlarged (nearest) to at least this size.
_GRAY_MODES = ('1', 'L', 'I', 'I;16', 'I;16B', 'I;16L', 'F')


def _read(path: str) -> Image.Image:
  """The decoded image (fully read, so a truncated file fails here), EXIF orientation applied."""
  if not os.path.isfile(path):
    raise errors.UserError(f'input image {path} does not exist (or is not a file)')
  try:
    with Image.open(path) as opened:
      opened.load()
      image = ImageOps.exif_transpose(opened)
      image.load()
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise errors.UserError(f'cannot read image {path} ({e}): the file is truncated, corrupt or '
                           'not an image; save it again as PNG or JPEG') from e
  if image is None or image.width < 1 or image.height < 1:
    raise errors.UserError(f'image {path} is empty')
  return image


def _to_rgb(image: Image.Image, path: str) -> Image.Image:
  mode = image.mode
  if mode in ('RGBA', 'LA', 'PA', 'La', 'RGBa') or 'transparency' in image.info:
    rgba = image.convert('RGBA')
    white = Image.new('RGBA', rgba.size, (255, 255, 255, 255))
    logging.info('%s: %s image with transparency composited on white', path, mode)
    return Image.alpha_composite(white, rgba).convert('RGB')
  if mode in _GRAY_MODES:
    values = np.asarray(image, np.float64)
    top = 255.0 if mode in ('1', 'L') or values.max(initial=0) <= 255 else 65535.0
    if mode == 'F':
      top = max(float(np.nanmax(values, initial=0)), 1e-12)
    gray = np.round(np.clip(np.nan_to_num(values) / top, 0, 1) * 255).astype(np.uint8)
    logging.info('%s: grayscale (%s) image converted to RGB', path, mode)
    return Image.fromarray(gray, 'L').convert('RGB')
  if mode != 'RGB':
    logging.info('%s: %s image converted to RGB', path, mode)
  return image.convert('RGB')


def load_image(path: str, size: int) -> np.ndarray:
  """(size, size, 3) float32 RGB in [-1, 1] from an image file (see the module docstring)."""
  image = _to_rgb(_read(path), path)
  w, h = image.size
  side = min(w, h)
  if side < MIN_IMAGE_SIDE:
    raise errors.UserError(f'image {path} is {w}x{h} pixels, too small to hold a scene: give one '
                           f'of at least {max(size, MIN_IMAGE_SIDE)}x{max(size, MIN_IMAGE_SIDE)}')
  if side < size:
    logging.warning('%s: %dx%d is smaller than the model input %dx%d: upscaled, so results '
                    'will be blurry', path, w, h, size, size)
  if (w, h) != (size, size):
    left, top = (w - side) // 2, (h - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize(
        (size, size), Image.Resampling.LANCZOS)
    logging.info('%s: %dx%d centre-cropped to %dx%d and resized to %dx%d', path, w, h, side,
                 side, size, size)
  return np.asarray(image, np.float32) / 127.5 - 1.0


def list_images(path: str) -> list[str]:
  """The image files of a directory (sorted by name), or [path] for a file."""
  if not os.path.exists(path):
    raise errors.UserError(f'--input {path} does not exist: give an image file (or, for '
                           'multiview, a directory of images)')
  if os.path.isdir(path):
    names = sorted(n for n in os.listdir(path)
                   if n.lower().endswith(('.png', '.jpg', '.jpeg', '.bmp', '.webp', '.tif')))
    if not names:
      raise errors.UserError(f'no images (.png, .jpg, ...) in directory {path}')
    return [os.path.join(path, n) for n in names]
  return [path]


def save_video(path: str, frames: np.ndarray, fps: int = 8) -> None:
  """(T, H, W, 3) uint8 -> MP4 (H.264, yuv420p; sizes padded to even by ffmpeg's scaler)."""
  tmp = path + '.tmp.mp4'
  # imageio-ffmpeg starts ffmpeg with preexec_fn=os.setpgrp (to shield it from Ctrl-C), which
  # makes subprocess fork() this multithreaded JAX process (JAX warns of deadlocks); without
  # it Python spawns ffmpeg with vfork/posix_spawn. Read at each call.
  os.environ['IMAGEIO_FFMPEG_NO_PREVENT_SIGINT'] = '1'
  iio.imwrite(tmp, frames, extension='.mp4', fps=fps, codec='libx264', macro_block_size=1)
  os.replace(tmp, path)


def save_depth(prefix: str, depth: np.ndarray, mask: np.ndarray | None = None) -> None:
  """<prefix>.npy (float32 depth, model resolution) and <prefix>.png (turbo colour map, near =
  warm, enlarged to at least DISPLAY_SIZE pixels)."""
  depth = np.asarray(depth, np.float32)
  with files.atomic_write(prefix + '.npy') as f:
    np.save(f, depth)
  save_display_png(prefix + '.png', visualize.colorize_depth(depth, mask))


def save_display_png(path: str, image: np.ndarray) -> None:
  """An (H, W) or (H, W, 3) uint8 map enlarged by a whole factor (nearest: each model pixel a
  square) to at least DISPLAY_SIZE pixels a side, as PNG."""
  factor = max(1, -(-DISPLAY_SIZE // min(image.shape[:2])))
  visualize.save_png(path, np.repeat(np.repeat(image, factor, axis=0), factor, axis=1))


def write_surface_ply(path: str, xyz, rgb) -> None:
  """PLY of a generated sample: XYZ (..., H, W, 3) normalized, coloured by RGB (..., H, W, 3) in
  [-1, 1]; pixels at the background corner (normalization.background_mask) are left out."""
  xyz, rgb = np.asarray(xyz), np.asarray(rgb)
  surface = ~np.asarray(normalization.background_mask(xyz))
  with files.atomic_write(path) as f:  # Local or a URI (an eval report under a gs:// workdir).
    f.write(export.ply_bytes(xyz[surface], visualize.to_uint8(rgb[surface])))

