"""Depth errors of scale-ambiguous predictions (monocular NYU-v2 / Bonn and video-depth protocols).

Depths are z-depths (distance along the camera z axis) of any shape, e.g. (H, W) for one image
or (N, H, W) for a sequence. A pixel is scored when ``valid`` is set and the ground truth is
finite and > 0. Protocol (REFERENCES.md, "Monocular depth metrics", "Video / multi-view depth"):

  1. ``align_depth`` fits the prediction to the ground truth over ALL valid pixels it is given:
     one image -> one scale per image; a whole (N, H, W) sequence -> one scale per sequence.
  2. ``depth_errors`` scores one image (or sequence), optionally clipping the prediction first
     (the video protocol clips to [0.1, 100]).
  3. ``aggregate`` averages over a dataset, weighting each image by its valid-pixel count.

All arithmetic is float64.
"""
from __future__ import annotations

import numpy as np

from wvd_jax.evaluation import _checks

METHODS = ('median', 'lstsq', 'lstsq_disparity', 'none')
# log_rmse takes log(max(pred, LOG_FLOOR)) so a non-positive prediction is a large, finite error.
LOG_FLOOR = 1e-6
# Keys of depth_errors whose dataset average is the root of the pooled mean square.
ROOT_MEAN_SQUARE_KEYS = ('rmse', 'log_rmse')


def _prepare(pred, gt, valid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """float64 pred, gt and the mask valid & finite(gt) & gt > 0 (shapes checked)."""
  pred = _checks.as_float64('pred', pred)
  gt = _checks.as_float64('gt', gt)
  _checks.same_shape(pred=pred, gt=gt, valid=np.asarray(valid))
  mask = _checks.as_mask('valid', valid, gt.shape)
  with np.errstate(invalid='ignore'):
    mask = mask & np.isfinite(gt) & (gt > 0)
  return pred, gt, mask


def align_depth(pred, gt, valid, method: str = 'median', *, min_disparity: float = 1e-3
                ) -> tuple[np.ndarray, float, float]:
  """Aligns a predicted depth to the ground truth with one scale (and shift) over all valid pixels.

  Args:
    pred, gt: depths of one shape (any, e.g. (H, W) or (N, H, W) for a sequence: the fit uses all
      valid pixels together, so a sequence gets one scale per sequence).
    valid: bool mask of the same shape. Pixels enter the fit where valid & gt finite & gt > 0 and
      the prediction is finite (and > 0 for 'median' and 'lstsq_disparity').
    method:
      'median' (DUSt3R / MonST3R): scale = median(gt) / median(pred), shift = 0.
      'lstsq' (Marigold): scale, shift minimizing sum (scale * pred + shift - gt)^2 in depth.
      'lstsq_disparity': scale, shift minimizing sum (scale / pred + shift - 1 / gt)^2 in
        disparity; the aligned disparity is clamped to >= min_disparity and inverted.
      'none': the prediction unchanged (scale 1, shift 0).
    min_disparity: the clamp of 'lstsq_disparity' (1 / depth units), so aligned depths are
      <= 1 / min_disparity.

  Returns:
    (aligned_pred float64 of pred's shape, scale, shift). aligned = scale * pred + shift for
    'median' / 'lstsq' / 'none' (so non-finite predictions stay non-finite outside the fit);
    for 'lstsq_disparity' scale and shift are in disparity, aligned = 1 / max(scale / pred + shift,
    min_disparity) where pred > 0 and 0 (no depth) where pred <= 0 or non-finite.

  Raises:
    ValueError: unknown method, shape mismatch, or no pixel usable for the fit.
  """
  if method not in METHODS:
    raise ValueError(f'unknown alignment method {method!r}; expected one of {METHODS}')
  pred, gt, mask = _prepare(pred, gt, valid)
  if method == 'none':
    return pred.copy(), 1.0, 0.0
  with np.errstate(invalid='ignore'):
    usable = mask & np.isfinite(pred)
    if method in ('median', 'lstsq_disparity'):
      usable &= pred > 0
  if not np.any(usable):
    raise ValueError(f'no valid pixels to align ({method}): need valid & gt > 0 & a finite'
                     + (' positive' if method != 'lstsq' else '') + ' prediction')
  p, g = pred[usable], gt[usable]
  if method == 'median':
    scale = float(np.median(g) / np.median(p))
    return scale * pred, scale, 0.0
  if method == 'lstsq':
    scale, shift = _fit_scale_shift(p, g)
    return scale * pred + shift, scale, shift
  scale, shift = _fit_scale_shift(1.0 / p, 1.0 / g)
  aligned = np.zeros_like(pred)
  with np.errstate(invalid='ignore'):
    positive = np.isfinite(pred) & (pred > 0)
  disparity = scale / pred[positive] + shift
  aligned[positive] = 1.0 / np.maximum(disparity, min_disparity)
  return aligned, scale, shift


def _fit_scale_shift(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
  """(a, b) minimizing sum (a x + b - y)^2 (minimum-norm solution when x is constant)."""
  design = np.stack([x, np.ones_like(x)], axis=1)
  (a, b), *_ = np.linalg.lstsq(design, y, rcond=None)
  return float(a), float(b)


def depth_errors(pred, gt, valid, *, clip: tuple[float, float] | None = None) -> dict:
  """Standard depth errors of one (aligned) prediction.

  Args:
    pred, gt: depths of one shape (one image, or a sequence scored as one unit).
    valid: bool mask of that shape; scored pixels: valid & gt finite & gt > 0.
    clip: optional (lo, hi): the prediction is clipped to [lo, hi] first (video protocol:
      (0.1, 100)).

  Returns:
    dict of floats: 'abs_rel' mean |p - g| / g; 'sq_rel' mean (p - g)^2 / g; 'rmse'
    sqrt(mean (p - g)^2); 'log_rmse' sqrt(mean (log p - log g)^2) with p floored at LOG_FLOOR;
    'delta_1_25', 'delta_1_25_2', 'delta_1_25_3', 'delta_1_03': fraction with
    max(p / g, g / p) < 1.25, 1.25^2, 1.25^3, 1.03 (the last is Robust MVD's inlier ratio tau); a
    prediction <= 0 is an outlier for every delta; and 'num_valid' (int) the scored pixel count.

  Raises:
    ValueError: shape mismatch, no scored pixel, a NaN / inf prediction on a scored pixel, or a
      bad clip range.
  """
  pred, gt, mask = _prepare(pred, gt, valid)
  if not np.any(mask):
    raise ValueError('no valid pixels to score (need valid & finite gt > 0)')
  p, g = pred[mask], gt[mask]
  _checks.all_finite('pred (on valid pixels)', p)
  if clip is not None:
    lo, hi = (float(c) for c in clip)
    if not lo < hi:
      raise ValueError(f'clip must be (lo, hi) with lo < hi, got {clip}')
    p = np.clip(p, lo, hi)
  diff = p - g
  positive = p > 0
  ratio = np.full_like(p, np.inf)  # Non-positive predictions: outliers.
  ratio[positive] = np.maximum(p[positive] / g[positive], g[positive] / p[positive])
  log_diff = np.log(np.maximum(p, LOG_FLOOR)) - np.log(g)
  return {
      'abs_rel': float(np.mean(np.abs(diff) / g)),
      'sq_rel': float(np.mean(diff ** 2 / g)),
      'rmse': float(np.sqrt(np.mean(diff ** 2))),
      'log_rmse': float(np.sqrt(np.mean(log_diff ** 2))),
      'delta_1_25': float(np.mean(ratio < 1.25)),
      'delta_1_25_2': float(np.mean(ratio < 1.25 ** 2)),
      'delta_1_25_3': float(np.mean(ratio < 1.25 ** 3)),
      'delta_1_03': float(np.mean(ratio < 1.03)),
      'num_valid': int(p.size),
  }


def aggregate(errors: list[dict]) -> dict:
  """Dataset average of per-image `depth_errors` dicts, weighting each image by its num_valid.

  Every metric is the num_valid-weighted mean of the per-image values, except 'rmse' and
  'log_rmse', which are the root of the weighted mean of their squares (= the RMSE over all
  pooled pixels). 'num_valid' becomes the total pixel count; 'num_images' is added.

  Raises:
    ValueError: empty list, dicts with different keys, a missing / non-positive num_valid, or a
      non-finite value.
  """
  if not errors:
    raise ValueError('aggregate needs at least one error dict')
  keys = set(errors[0])
  if 'num_valid' not in keys:
    raise ValueError("error dicts must hold 'num_valid'")
  for i, e in enumerate(errors):
    if set(e) != keys:
      raise ValueError(f'error dict {i} has keys {sorted(e)}, expected {sorted(keys)}')
  weights = np.array([e['num_valid'] for e in errors], np.float64)
  if np.any(weights <= 0) or not np.all(np.isfinite(weights)):
    raise ValueError(f'num_valid must be positive, got {weights.tolist()}')
  out = {}
  for key in sorted(keys - {'num_valid'}):
    values = np.array([e[key] for e in errors], np.float64)
    _checks.all_finite(f'metric {key!r}', values)
    if key in ROOT_MEAN_SQUARE_KEYS:
      out[key] = float(np.sqrt(np.sum(weights * values ** 2) / np.sum(weights)))
    else:
      out[key] = float(np.sum(weights * values) / np.sum(weights))
  out['num_valid'] = int(np.sum(weights))
  out['num_images'] = len(errors)
  return out
