"""Multi-view consistency of generated videos: key-point matches (KPM) and XYZ-RGB agreement.

KPM (4DiM, Watson et al. 2024; WVD Table 1) counts key-point matches between generated frames
as a percentage of the count on ground-truth frames. The default matcher needs no weights
(REFERENCES.md, "Consistency metrics"): OpenCV SIFT + Lowe's ratio test + RANSAC on the
fundamental matrix, counting the RANSAC inliers. With user-supplied weights, ``LoftrMatcher``
counts the matches of LoFTR, a pretrained matcher as the paper uses (its reference [50]; LoFTR is
the one issue 21 asks for).

XYZ-RGB agreement checks that a generated 6D video is one scene: each frame's XYZ points are
reprojected into the other frames, and where the point is visible there, the two frames'
colours must agree.

Conventions: images (H, W, 3) RGB float in [-1, 1] (or uint8); OpenCV cameras (x right, y down,
z forward), cam_to_world 4x4 poses, pixel-unit K, pixel (col, row) centred at
(col + 0.5, row + 0.5), so a projected point (u, v) falls in pixel (floor(v), floor(u)).
"""
from __future__ import annotations

import cv2
import jax
import numpy as np

from wvd_jax.evaluation import _checks
from wvd_jax.evaluation.networks import loftr
from wvd_jax.geometry import cameras

MIN_MATCHES = 8           # The 8-point fundamental-matrix RANSAC needs at least this many.
RANSAC_CONFIDENCE = 0.999
RANSAC_SEED = 0           # cv2.setRNGSeed before each RANSAC: counts are deterministic.
RGB_RANGE = 2.0           # [-1, 1]
MAX_AGREEMENT_PSNR = 100.0  # color_psnr cap (MSE floor), so exact agreement stays finite.


# ---------------------------------------------------------------------------- key-point matches


def _gray_uint8(name: str, image, upscale: int) -> np.ndarray:
  """(H, W, 3) float [-1, 1] or uint8 RGB -> uint8 gray (H * upscale, W * upscale) (bicubic)."""
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f'{name} must be an (H, W, 3) RGB image, got shape {image.shape}')
  if image.dtype == np.uint8:
    rgb = image
  elif np.issubdtype(image.dtype, np.floating):
    _checks.all_finite(name, image)
    rgb = np.round((np.clip(image.astype(np.float64), -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
  else:
    raise ValueError(f'{name} must be float in [-1, 1] or uint8, got dtype {image.dtype}')
  gray = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
  if upscale != 1:
    gray = cv2.resize(gray, None, fx=upscale, fy=upscale, interpolation=cv2.INTER_CUBIC)
  return gray


def _features(name: str, image, upscale: int):
  """SIFT key points and descriptors of one image (descriptors None when none were found)."""
  if int(upscale) != upscale or upscale < 1:
    raise ValueError(f'upscale must be a positive integer, got {upscale}')
  gray = _gray_uint8(name, image, int(upscale))
  return cv2.SIFT_create().detectAndCompute(gray, None)


def _count_matches(features_a, features_b, ratio: float, ransac_threshold: float) -> int:
  """RANSAC-inlier count of ratio-test SIFT matches between two feature sets (0 when fewer than
  MIN_MATCHES pass the ratio test)."""
  (points_a, desc_a), (points_b, desc_b) = features_a, features_b
  if desc_a is None or desc_b is None or len(desc_b) < 2:
    return 0
  candidates = cv2.BFMatcher(cv2.NORM_L2).knnMatch(desc_a, desc_b, k=2)
  good = [m[0] for m in candidates if len(m) == 2 and m[0].distance < ratio * m[1].distance]
  if len(good) < MIN_MATCHES:
    return 0
  pts_a = np.float64([points_a[m.queryIdx].pt for m in good])
  pts_b = np.float64([points_b[m.trainIdx].pt for m in good])
  cv2.setRNGSeed(RANSAC_SEED)
  _, inliers = cv2.findFundamentalMat(pts_a, pts_b, cv2.FM_RANSAC, ransac_threshold,
                                      RANSAC_CONFIDENCE)
  return 0 if inliers is None else int(np.count_nonzero(inliers))


def keypoint_matches(image_a, image_b, *, upscale: int = 4, ratio: float = 0.75,
                     ransac_threshold: float = 1.0) -> int:
  """Number of geometrically verified SIFT matches between two images.

  Both images are converted to uint8 gray and upscaled by `upscale` (bicubic; SIFT finds little
  at the model's 64x64) before SIFT detection. Matches: brute-force L2 2-nearest neighbours from
  a to b with Lowe's ratio test (best < ratio * second best), then cv2.findFundamentalMat with
  FM_RANSAC (threshold `ransac_threshold` in pixels of the UPSCALED image, confidence 0.999,
  cv2 RNG seeded with RANSAC_SEED: deterministic).

  Args:
    image_a, image_b: (H, W, 3) RGB, float in [-1, 1] or uint8 (sizes may differ).
  Returns:
    the RANSAC inlier count; 0 when fewer than 8 matches pass the ratio test (too few to verify:
    unverified matches are not counted) or RANSAC finds no model.
  Raises:
    ValueError: not (H, W, 3), unsupported dtype, NaN / inf, or a bad upscale.
  """
  return _count_matches(_features('image_a', image_a, upscale),
                        _features('image_b', image_b, upscale), ratio, ransac_threshold)


def video_keypoint_matches(frames, *, upscale: int = 4, ratio: float = 0.75,
                           ransac_threshold: float = 1.0) -> float:
  """Mean `keypoint_matches` between frame 0 and each later frame of a video.

  Pairs (0, j) for j = 1..N-1, as 4DiM's KPM counts matches between generated frames (the first,
  conditioning frame against each generated one).

  Args:
    frames: (N, H, W, 3), N >= 2, float in [-1, 1] or uint8.
    upscale, ratio, ransac_threshold: as in `keypoint_matches`.
  """
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3:
    raise ValueError(f'frames must be (N, H, W, 3), got shape {frames.shape}')
  if frames.shape[0] < 2:
    raise ValueError(f'video_keypoint_matches needs >= 2 frames, got {frames.shape[0]}')
  first = _features('frames[0]', frames[0], upscale)
  counts = [_count_matches(first, _features(f'frames[{j}]', frames[j], upscale), ratio,
                           ransac_threshold)
            for j in range(1, frames.shape[0])]
  return float(np.mean(counts))


def kpm(generated_counts, ground_truth_counts) -> float:
  """KPM in percent: 100 * sum(generated_counts) / sum(ground_truth_counts).

  Args:
    generated_counts, ground_truth_counts: match counts (e.g. `video_keypoint_matches` per clip),
      any lengths, non-negative and finite.
  Returns:
    the percentage; when the ground truth has no match at all: 100.0 if the generated clips have
    none either (equal counts), +inf otherwise.
  """
  generated = _checks.as_float64('generated_counts', generated_counts).ravel()
  truth = _checks.as_float64('ground_truth_counts', ground_truth_counts).ravel()
  for name, counts in (('generated_counts', generated), ('ground_truth_counts', truth)):
    if counts.size == 0:
      raise ValueError(f'{name} is empty')
    _checks.all_finite(name, counts)
    if np.any(counts < 0):
      raise ValueError(f'{name} has negative counts')
  total_generated, total_truth = float(generated.sum()), float(truth.sum())
  if total_truth == 0:
    return 100.0 if total_generated == 0 else float('inf')
  return 100.0 * total_generated / total_truth


def kpm_summary(generated_counts, ground_truth_counts) -> dict:
  """{'kpm_percent': kpm(...), 'matches_generated', 'matches_ground_truth': mean counts}."""
  return {'kpm_percent': kpm(generated_counts, ground_truth_counts),
          'matches_generated': float(np.mean(generated_counts)),
          'matches_ground_truth': float(np.mean(ground_truth_counts))}


# ------------------------------------------------------------------------- XYZ-RGB agreement


def xyz_rgb_agreement(rgb, xyz, intrinsics, cam_to_world, valid=None, *,
                      depth_tolerance: float = 0.05) -> dict:
  """Do a video's XYZ and RGB agree? Colour error of points reprojected between its frames.

  Every valid pixel of frame i (world point xyz[i, row, col]) is projected into every other frame
  j. The (pixel, j) pair is kept when the point is in front of camera j, lands inside frame j
  (target pixel (floor(v), floor(u))), that target pixel is valid, and the point is visible there:
  |z_ij - d_j| <= depth_tolerance * d_j, with z_ij the point's camera-j z and d_j > 0 frame j's
  own depth at the target pixel (the camera-j z of xyz[j] there). Occluded points (behind frame
  j's surface) and points in front of it fail this test. Kept pairs compare rgb[i] at the
  source pixel with rgb[j] at the target pixel.

  Args:
    rgb: (N, H, W, 3) float in [-1, 1], N >= 2.
    xyz: (N, H, W, 3) world points.
    intrinsics: (N, 3, 3) (or one (3, 3) for all frames) pixel-unit K.
    cam_to_world: (N, 4, 4) OpenCV camera poses.
    valid: optional (N, H, W) bool mask of usable pixels (default all).
    depth_tolerance: relative depth tolerance of the visibility test.
  Returns:
    {'color_l1': mean |rgb_i - rgb_j| over kept pairs and channels ([-1, 1] units, so in [0, 2]),
     'color_psnr': 10 log10(2^2 / MSE) over the same values (dB, capped at MAX_AGREEMENT_PSNR),
     'coverage': kept pairs / tested pairs, tested = valid source pixels x (N - 1) other frames}.
    With no kept pair: color_l1 = 2 and color_psnr = 0 (the worst values), coverage 0.
  Raises:
    ValueError: bad shapes, N < 2, NaN / inf (xyz only checked on valid pixels), no valid pixel,
      a non-positive tolerance.
  """
  rgb = _checks.as_float64('rgb', rgb)
  xyz = _checks.as_float64('xyz', xyz)
  _checks.trailing_shape('rgb', rgb, '(N, H, W, 3)', (3,), ndim=4)
  _checks.same_shape(rgb=rgb, xyz=xyz)
  n, h, w, _ = rgb.shape
  if n < 2:
    raise ValueError(f'xyz_rgb_agreement needs >= 2 frames, got {n}')
  if not depth_tolerance > 0:
    raise ValueError(f'depth_tolerance must be > 0, got {depth_tolerance}')
  mask = _checks.as_mask('valid', valid, (n, h, w))
  _checks.all_finite('rgb', rgb)
  _checks.all_finite('xyz (on valid pixels)', xyz[mask])
  if not np.any(mask):
    raise ValueError('valid has no pixel set')
  K = _checks.as_float64('intrinsics', intrinsics)
  if K.shape == (3, 3):
    K = np.broadcast_to(K, (n, 3, 3))
  if K.shape != (n, 3, 3):
    raise ValueError(f'intrinsics must be (N, 3, 3) or (3, 3) with N = {n}, got {K.shape}')
  poses = _checks.as_float64('cam_to_world', cam_to_world)
  if poses.shape != (n, 4, 4):
    raise ValueError(f'cam_to_world must be (N, 4, 4) with N = {n}, got {poses.shape}')
  _checks.all_finite('intrinsics', K)
  _checks.all_finite('cam_to_world', poses)

  points = np.where(mask[..., None], xyz, 0.0).reshape(n, h * w, 3)
  colors = rgb.reshape(n, h * w, 3)
  own_depth = cameras.world_to_camera_points(points, poses)[..., 2]          # (N, P)
  target_ok = mask.reshape(n, h * w) & (own_depth > 0)
  source_ok = mask.reshape(n, h * w)
  frame_of = np.repeat(np.arange(n), h * w)
  all_points, all_colors = points.reshape(-1, 3), colors.reshape(-1, 3)

  kept, abs_sum, sq_sum = 0, 0.0, 0.0
  for j in range(n):
    uv, z = cameras.project_points(all_points, K[j], poses[j])
    col, row = np.floor(uv[:, 0]), np.floor(uv[:, 1])
    ok = source_ok.ravel() & (frame_of != j) & (z > 0)
    ok &= (col >= 0) & (col < w) & (row >= 0) & (row < h)
    target = np.where(ok, row * w + col, 0).astype(np.int64)
    depth_j = own_depth[j][target]
    ok &= target_ok[j][target] & (np.abs(z - depth_j) <= depth_tolerance * depth_j)
    diff = all_colors[ok] - colors[j][target[ok]]
    kept += int(np.count_nonzero(ok))
    abs_sum += float(np.sum(np.abs(diff)))
    sq_sum += float(np.sum(diff ** 2))

  tested = int(np.count_nonzero(mask)) * (n - 1)
  if kept == 0:
    return {'color_l1': RGB_RANGE, 'color_psnr': 0.0, 'coverage': 0.0}
  values = 3 * kept
  mse = max(sq_sum / values, RGB_RANGE ** 2 * 10.0 ** (-MAX_AGREEMENT_PSNR / 10.0))
  return {'color_l1': abs_sum / values,
          'color_psnr': float(10.0 * np.log10(RGB_RANGE ** 2 / mse)),
          'coverage': kept / tested}


# --------------------------------------------------------------------- learned matches (LoFTR)


class LoftrMatcher:
  """KPM's match counts with LoFTR (networks/loftr.py) instead of SIFT.

  Frames (H, W, 3) in [-1, 1] -> gray as kornia's rgb_to_grayscale (0.299 R + 0.587 G + 0.114 B
  of [0, 1] RGB) -> upscaled by ``upscale`` (bicubic, as for SIFT: LoFTR matches 8 x 8 cells, and
  a 64 x 64 frame has only 4 x 4 cells off its 2-cell border) -> LoFTR's matches above its
  confidence threshold (0.2), counted; no RANSAC (LoFTR's mutual-nearest matches are the count).
  """

  def __init__(self, params, *, fixed_encoding: bool = False, upscale: int = 4,
               threshold: float = 0.2):
    if int(upscale) != upscale or upscale < 1:
      raise ValueError(f'upscale must be a positive integer, got {upscale}')
    self.params, self.fixed_encoding = params, fixed_encoding
    self.upscale, self.threshold = int(upscale), threshold

  def _gray(self, frames) -> np.ndarray:
    frames = np.asarray(frames, np.float32)
    if frames.ndim != 4 or frames.shape[-1] != 3:
      raise ValueError(f'frames must be (N, H, W, 3), got shape {frames.shape}')
    _checks.all_finite('frames', frames)
    n, h, w, _ = frames.shape
    if (h * self.upscale) % 8 or (w * self.upscale) % 8:
      raise ValueError(f'LoFTR needs sizes that are multiples of 8, got {h} x {w} upscaled by '
                       f'{self.upscale}')
    rgb = np.clip((frames + 1.0) / 2.0, 0.0, 1.0)
    gray = rgb @ np.float32([0.299, 0.587, 0.114])
    if self.upscale != 1:
      gray = np.clip(np.asarray(jax.image.resize(gray, (n, h * self.upscale, w * self.upscale),
                                                 method='bicubic')), 0.0, 1.0)
    return gray

  def video_matches(self, frames) -> float:
    """Mean LoFTR match count between frame 0 and each later frame of (N, H, W, 3), N >= 2."""
    gray = self._gray(frames)
    if gray.shape[0] < 2:
      raise ValueError(f'video_matches needs >= 2 frames, got {gray.shape[0]}')
    later = gray[1:]
    dense = loftr.match(self.params, np.broadcast_to(gray[:1], later.shape), later,
                        fixed_encoding=self.fixed_encoding, threshold=self.threshold)
    return float(np.mean(np.sum(np.asarray(dense['mask']), axis=1)))
