"""Camera pose metrics: pairwise relative errors (RRE / RTE, RRA / RTA / mAA) and trajectories.

Poses are camera-to-world 4x4 matrices (``cam_to_world``) of OpenCV cameras (x right, y down,
z forward); world = R @ cam + t, so the camera centre is t. Angles are in degrees.

Relative pose errors follow REFERENCES.md ("Camera pose metrics", vggsfm's metric): for every
pair i < j the relative pose T_ij = world_to_cam_j @ cam_to_world_i (camera i's frame -> camera
j's), RRE = geodesic angle of R_ij_pred^T R_ij_gt, RTE = angle between the relative translation
directions with the sign ignored (min(angle, 180 - angle)), so RTE is in [0, 90].

The trajectory error (ATE) aligns the predicted camera centres to the true ones with the
Umeyama Sim(3) fit first, so it is in the ground truth's length units.
All arithmetic is float64.
"""
from __future__ import annotations

import numpy as np

from wvd_jax.evaluation import _checks
from wvd_jax.geometry import cameras, rotations

# Relative translations shorter than this (in the poses' length units) count as zero (no direction).
ZERO_TRANSLATION = 1e-12


def _poses(name: str, x) -> np.ndarray:
  poses = _checks.as_float64(name, x)
  _checks.trailing_shape(name, poses, '(N, 4, 4)', (4, 4), ndim=3)
  _checks.all_finite(name, poses)
  return poses


def _points(name: str, x) -> np.ndarray:
  points = _checks.as_float64(name, x)
  _checks.trailing_shape(name, points, '(n, 3)', (3,), ndim=2)
  _checks.all_finite(name, points)
  if points.shape[0] < 1:
    raise ValueError(f'{name} holds no points')
  return points


def _pair_relative(cam_to_world: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
  """T_ij (P, 4, 4) = world_to_cam_j @ cam_to_world_i for index arrays i, j (P,)."""
  return np.matmul(cameras.invert_pose(cam_to_world[j]), cam_to_world[i])


def _direction_angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Sign-free angle (degrees, [0, 90]) between vectors a, b (P, 3): min(angle, 180 - angle).

  Zero-length vectors have no direction: both zero -> 0 (they agree), exactly one zero -> 90
  (the largest sign-free error; a collapsed prediction of a moving camera is wrong)."""
  norm_a, norm_b = np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1)
  zero_a, zero_b = norm_a <= ZERO_TRANSLATION, norm_b <= ZERO_TRANSLATION
  safe_a = np.where(zero_a, 1.0, norm_a)[:, None]
  safe_b = np.where(zero_b, 1.0, norm_b)[:, None]
  ua, ub = a / safe_a, b / safe_b
  # atan2 of |cross| and |dot|: accurate near 0 and 90 degrees, and sign-free through |dot|.
  angle = np.degrees(np.arctan2(np.linalg.norm(np.cross(ua, ub), axis=-1),
                                np.abs(np.sum(ua * ub, axis=-1))))
  angle = np.where(zero_a ^ zero_b, 90.0, angle)
  return np.where(zero_a & zero_b, 0.0, angle)


def relative_pose_errors(pred_cam_to_world, gt_cam_to_world) -> tuple[np.ndarray, np.ndarray]:
  """RRE and RTE (degrees) of every camera pair i < j.

  Args:
    pred_cam_to_world, gt_cam_to_world: (N, 4, 4) poses of the same N >= 2 cameras (any global
      frame and scale: the errors are invariant to a similarity transform of either).
  Returns:
    (rre, rte), each (N (N - 1) / 2,) float64 in pair order (0, 1), (0, 2), ..., (N - 2, N - 1)
    (np.triu_indices). rre in [0, 180]; rte in [0, 90] (sign ignored); a zero relative
    translation in both -> rte 0, in only one -> rte 90 (see `_direction_angle_deg`).
  Raises:
    ValueError: shapes other than (N, 4, 4) alike, N < 2, or NaN / inf.
  """
  pred = _poses('pred_cam_to_world', pred_cam_to_world)
  gt = _poses('gt_cam_to_world', gt_cam_to_world)
  _checks.same_shape(pred_cam_to_world=pred, gt_cam_to_world=gt)
  if pred.shape[0] < 2:
    raise ValueError(f'relative pose errors need >= 2 cameras, got {pred.shape[0]}')
  i, j = np.triu_indices(pred.shape[0], k=1)
  rel_pred, rel_gt = _pair_relative(pred, i, j), _pair_relative(gt, i, j)
  rre = np.degrees(rotations.rotation_angle(rel_pred[:, :3, :3], rel_gt[:, :3, :3]))
  rte = _direction_angle_deg(rel_pred[:, :3, 3], rel_gt[:, :3, 3])
  return np.asarray(rre, np.float64), rte


def pose_accuracy(rre, rte, thresholds=(5, 15, 30), max_threshold: int = 30) -> dict:
  """Accuracies of pairwise errors (degrees).

  Returns {'rra@t': fraction rre < t, 'rta@t': fraction rte < t for t in thresholds,
  'maa@{max_threshold}': mean over k = 1..max_threshold of the fraction with max(rre, rte) < k}
  (strict '<' everywhere; vggsfm's AUC histogram differs only for errors exactly at 30).
  Raises ValueError on mismatched / empty / NaN inputs.
  """
  rre = _checks.as_float64('rre', rre).ravel()
  rte = _checks.as_float64('rte', rte).ravel()
  _checks.same_shape(rre=rre, rte=rte)
  if rre.size == 0:
    raise ValueError('pose_accuracy needs at least one pair')
  _checks.all_finite('rre', rre)
  _checks.all_finite('rte', rte)
  out = {}
  for t in thresholds:
    out[f'rra@{t:g}'] = float(np.mean(rre < t))
    out[f'rta@{t:g}'] = float(np.mean(rte < t))
  worst = np.maximum(rre, rte)
  ks = np.arange(1, max_threshold + 1, dtype=np.float64)
  out[f'maa@{max_threshold}'] = float(np.mean(worst[None, :] < ks[:, None]))
  return out


def umeyama(x, y, with_scale: bool = True) -> tuple[float, np.ndarray, np.ndarray]:
  """Least-squares similarity (s, R, t) with y ~ s R x + t (Umeyama 1991, REFERENCES.md).

  Sigma = (1/n) sum (y - mu_y)(x - mu_x)^T = U D V^T, S = diag(1, 1, sign(det U det V)),
  R = U S V^T (a proper rotation, det +1, even when a reflection would fit better),
  s = tr(D S) / sigma_x^2 (sigma_x^2 = (1/n) sum |x - mu_x|^2), t = mu_y - s R mu_x.

  Args:
    x, y: (n, 3) corresponding points, n >= 1.
    with_scale: False fixes s = 1 (SE(3) fit).
  Returns:
    s (float), R (3, 3), t (3,), float64. Degenerate x (zero spread, e.g. one point or all
    cameras at one place): R = I, s = 0 with scale (every x maps to mu_y) or 1 without.
  Raises:
    ValueError: shapes other than (n, 3) alike, or NaN / inf.
  """
  x, y = _points('x', x), _points('y', y)
  _checks.same_shape(x=x, y=y)
  mu_x, mu_y = x.mean(0), y.mean(0)
  xc, yc = x - mu_x, y - mu_y
  var_x = float(np.mean(np.sum(xc ** 2, axis=1)))
  if var_x <= 1e-300:
    rot = np.eye(3)
    scale = 0.0 if with_scale else 1.0
    return scale, rot, mu_y - scale * mu_x
  sigma = yc.T @ xc / x.shape[0]
  u, d, vt = np.linalg.svd(sigma)
  signs = np.array([1.0, 1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt))])
  rot = (u * signs) @ vt
  scale = float(np.sum(d * signs) / var_x) if with_scale else 1.0
  return scale, rot, mu_y - scale * rot @ mu_x


def absolute_trajectory_error(pred_centers, gt_centers) -> float:
  """ATE: RMSE of camera-centre errors after Sim(3) Umeyama alignment of pred to gt.

  Args:
    pred_centers, gt_centers: (n, 3) camera centres (cam_to_world[:, :3, 3]).
  Returns:
    sqrt(mean_i |s R p_i + t - g_i|^2), in gt units. A collapsed prediction (all centres equal)
    aligns to the gt centroid, giving the gt centres' RMS spread.
  """
  pred, gt = _points('pred_centers', pred_centers), _points('gt_centers', gt_centers)
  _checks.same_shape(pred_centers=pred, gt_centers=gt)
  s, rot, t = umeyama(pred, gt, with_scale=True)
  aligned = s * pred @ rot.T + t
  return float(np.sqrt(np.mean(np.sum((aligned - gt) ** 2, axis=1))))

