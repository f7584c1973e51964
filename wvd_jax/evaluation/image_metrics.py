"""Image quality against ground-truth views: PSNR and SSIM (scikit-image), batched by a loop.

Images are channels-last (..., H, W, C); the project's RGB is float in [-1, 1], so the default
data range is 2. For uint8 images pass data_range=255. Values are computed in float64.
"""
from __future__ import annotations

import numpy as np
from skimage import metrics as sk_metrics

from wvd_jax.evaluation import _checks


def _pairs(a, b) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
  """a, b as float64 (P, H, W, C) stacks and the leading (batch) shape."""
  a, b = _checks.as_float64('a', a), _checks.as_float64('b', b)
  _checks.same_shape(a=a, b=b)
  if a.ndim < 3:
    raise ValueError(f'images must be (..., H, W, C), got shape {a.shape}')
  _checks.all_finite('a', a)
  _checks.all_finite('b', b)
  batch = a.shape[:-3]
  return a.reshape((-1,) + a.shape[-3:]), b.reshape((-1,) + b.shape[-3:]), batch


def _per_image(values: list[float], batch: tuple[int, ...]):
  out = np.asarray(values, np.float64).reshape(batch)
  return float(out) if not batch else out


def psnr(a, b, data_range: float = 2.0):
  """Peak signal-to-noise ratio 10 log10(data_range^2 / MSE) in dB, per image.

  Args:
    a, b: (..., H, W, C) images of one shape (MSE over H, W and C of each image).
    data_range: the value range (2 for [-1, 1], 255 for uint8).
  Returns:
    a float for one (H, W, C) image, else an array of the leading shape (...). Identical images
    give +inf (MSE 0), as scikit-image does.
  Raises:
    ValueError: shape mismatch, fewer than 3 axes, or NaN / inf.
  """
  a, b, batch = _pairs(a, b)
  values = []
  with np.errstate(divide='ignore'):  # MSE 0 -> inf, on purpose.
    for x, y in zip(a, b):
      values.append(sk_metrics.peak_signal_noise_ratio(y, x, data_range=data_range))
  return _per_image(values, batch)


def ssim(a, b, data_range: float = 2.0):
  """Structural similarity (scikit-image defaults: 7x7 uniform window, sample covariance,
  averaged over channels via channel_axis=-1), per image.

  Args:
    a, b: (..., H, W, C) images of one shape, H and W >= 7.
    data_range: the value range (2 for [-1, 1], 255 for uint8).
  Returns:
    a float for one image, else an array of the leading shape; 1 for identical images.
  Raises:
    ValueError: shape mismatch, images smaller than 7x7, or NaN / inf.
  """
  a, b, batch = _pairs(a, b)
  if min(a.shape[1:3]) < 7:
    raise ValueError(f'SSIM needs images of at least 7x7 pixels, got {a.shape[1:3]}')
  values = [sk_metrics.structural_similarity(x, y, data_range=data_range, channel_axis=-1)
            for x, y in zip(a, b)]
  return _per_image(values, batch)
