"""Similarity transforms (Sim(3)) that put a reconstruction into a known frame and scale.

A generated reconstruction lives in the model's world (frame 0's camera, normalized into
[-1, 1]): rotation, translation and scale are arbitrary. Known cameras or a known distance fix
them: `umeyama` aligns point sets (the shared frames of two windows), `similarity_from_cameras`
aligns recovered cameras onto known ones, and `metric_scale` gives the factor that makes one
measured distance equal a known one. A similarity maps x -> s R x + t; applied to a camera it
keeps K and the depth scales by s. numpy float64 throughout (small inputs, exact references).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Similarity(NamedTuple):
  """x -> scale * rotation @ x + translation. scale (), rotation (3, 3), translation (3,)."""
  scale: float
  rotation: np.ndarray
  translation: np.ndarray

  def points(self, x):
    """(..., 3) -> (..., 3)."""
    return self.scale * np.asarray(x, np.float64) @ self.rotation.T + self.translation

  def poses(self, cam_to_world):
    """cam_to_world (..., 4, 4) -> the same cameras in the new frame (rotation composed,
    centre mapped as a point)."""
    c2w = np.array(cam_to_world, np.float64)
    c2w[..., :3, 3] = self.points(c2w[..., :3, 3])
    c2w[..., :3, :3] = self.rotation @ c2w[..., :3, :3]
    return c2w

  def inverse(self) -> 'Similarity':
    rt = self.rotation.T
    return Similarity(1.0 / self.scale, rt, -rt @ self.translation / self.scale)


def _nearest_rotation(m):
  """The rotation closest to m (3, 3) in Frobenius norm (SVD, det fixed to +1)."""
  u, _, vt = np.linalg.svd(m)
  d = np.sign(np.linalg.det(u @ vt)) or 1.0
  return u @ np.diag([1.0, 1.0, d]) @ vt


def umeyama(src, dst, weights=None, with_scale: bool = True) -> Similarity:
  """Least-squares similarity with dst ~ s R src + t (Umeyama 1991), weighted.

  src, dst: (M, 3) corresponding points (M >= 3, not collinear); weights: (M,) >= 0."""
  src, dst = np.asarray(src, np.float64).reshape(-1, 3), np.asarray(dst, np.float64).reshape(-1, 3)
  w = np.ones(len(src)) if weights is None else np.asarray(weights, np.float64).reshape(-1)
  if src.shape != dst.shape or len(w) != len(src):
    raise ValueError(f'src {src.shape}, dst {dst.shape} and weights {w.shape} must match')
  if w.sum() <= 0 or np.count_nonzero(w) < 3:
    raise ValueError('umeyama needs at least 3 weighted correspondences')
  w = w / w.sum()
  mu_s, mu_d = w @ src, w @ dst
  xs, xd = src - mu_s, dst - mu_d
  cov = (xd * w[:, None]).T @ xs
  u, sig, vt = np.linalg.svd(cov)
  d = np.ones(3)
  if np.linalg.det(u) * np.linalg.det(vt) < 0:
    d[2] = -1.0
  rot = u @ np.diag(d) @ vt
  var_s = w @ (xs ** 2).sum(-1)
  s = float((sig * d).sum() / var_s) if with_scale else 1.0
  return Similarity(s, rot, mu_d - s * rot @ mu_s)


def similarity_from_cameras(cam_to_world_src, cam_to_world_dst,
                            with_scale: bool = True) -> Similarity:
  """The similarity taking cameras src (K, 4, 4) onto dst (K, 4, 4): rotation the chordal mean
  of R_dst R_src^T (so one camera suffices), then scale and translation by least squares on
  the camera centres. With fewer than two distinct centres the scale stays 1."""
  a, b = np.asarray(cam_to_world_src, np.float64), np.asarray(cam_to_world_dst, np.float64)
  if a.shape != b.shape or a.ndim != 3 or a.shape[1:] != (4, 4) or len(a) == 0:
    raise ValueError(f'camera sets must be (K >= 1, 4, 4) alike, got {a.shape} and {b.shape}')
  rot = _nearest_rotation(np.einsum('kij,klj->il', b[:, :3, :3], a[:, :3, :3]))
  ca, cb = a[:, :3, 3] @ rot.T, b[:, :3, 3]
  xa, xb = ca - ca.mean(0), cb - cb.mean(0)
  var = (xa ** 2).sum()
  s = 1.0
  if with_scale and var > 1e-12 * max((ca ** 2).sum(), 1e-30):
    s = float((xa * xb).sum() / var)
  return Similarity(s, rot, cb.mean(0) - s * ca.mean(0))


def metric_scale(measured: float, known: float) -> float:
  """Factor s with s * measured = known (both > 0)."""
  if not (np.isfinite(known) and known > 0):
    raise ValueError(f'the known distance must be positive and finite, got {known}')
  if not (np.isfinite(measured) and measured > 1e-12):
    raise ValueError(f'the measured distance is {measured}: the two ends coincide')
  return float(known / measured)
