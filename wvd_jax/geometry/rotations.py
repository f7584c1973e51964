"""Rotation parameterizations: unit quaternions (w, x, y, z; Hamilton, COLMAP's order),
axis-angle (Rodrigues) and rotation-angle metrics. numpy or jax inputs (see `_xp`)."""
from __future__ import annotations

from wvd_jax.geometry import _xp


def quaternion_to_rotation(q):
  """q (..., 4) as (w, x, y, z), any norm > 0 -> R (..., 3, 3) proper rotation."""
  xp = _xp.array_module(q)
  q = _xp.as_float(xp, q)
  q = q / xp.linalg.norm(q, axis=-1, keepdims=True)
  w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
  rows = [
      [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
      [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
      [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
  ]
  return xp.stack([xp.stack(r, axis=-1) for r in rows], axis=-2)


def rotation_to_quaternion(rot):
  """R (..., 3, 3) -> unit q (..., 4) as (w, x, y, z) with w >= 0 (Shepperd's method: the
  branch with the largest pivot is chosen per element, so it is accurate for every angle)."""
  xp = _xp.array_module(rot)
  r = _xp.as_float(xp, rot)
  r00, r01, r02 = r[..., 0, 0], r[..., 0, 1], r[..., 0, 2]
  r10, r11, r12 = r[..., 1, 0], r[..., 1, 1], r[..., 1, 2]
  r20, r21, r22 = r[..., 2, 0], r[..., 2, 1], r[..., 2, 2]
  tr = r00 + r11 + r22
  tiny = 1e-12
  # Each candidate is exact when its pivot is the largest; unselected ones may be inaccurate.
  sw = xp.sqrt(xp.maximum(1 + tr, tiny)) * 2
  sx = xp.sqrt(xp.maximum(1 + r00 - r11 - r22, tiny)) * 2
  sy = xp.sqrt(xp.maximum(1 - r00 + r11 - r22, tiny)) * 2
  sz = xp.sqrt(xp.maximum(1 - r00 - r11 + r22, tiny)) * 2
  cands = xp.stack([
      xp.stack([sw / 4, (r21 - r12) / sw, (r02 - r20) / sw, (r10 - r01) / sw], -1),
      xp.stack([(r21 - r12) / sx, sx / 4, (r01 + r10) / sx, (r02 + r20) / sx], -1),
      xp.stack([(r02 - r20) / sy, (r01 + r10) / sy, sy / 4, (r12 + r21) / sy], -1),
      xp.stack([(r10 - r01) / sz, (r02 + r20) / sz, (r12 + r21) / sz, sz / 4], -1),
  ], axis=-2)
  choice = xp.argmax(xp.stack([tr, r00, r11, r22], -1), axis=-1)
  q = xp.take_along_axis(cands, choice[..., None, None], axis=-2)[..., 0, :]
  q = q * xp.where(q[..., :1] < 0, -1.0, 1.0).astype(q.dtype)
  return q / xp.linalg.norm(q, axis=-1, keepdims=True)


def axis_angle_to_rotation(omega):
  """Rodrigues: omega (..., 3) (axis * angle, radians) -> R (..., 3, 3).

  Uses Taylor coefficients near zero so values *and gradients* are finite at omega = 0
  (post-optimization starts its rotation increments there)."""
  xp = _xp.array_module(omega)
  w = _xp.as_float(xp, omega)
  t2 = (w * w).sum(-1)
  small = t2 < 1e-6
  t2_safe = xp.where(small, 1.0, t2)
  t = xp.sqrt(t2_safe)
  a = xp.where(small, 1 - t2 / 6, xp.sin(t) / t)
  b = xp.where(small, 0.5 - t2 / 24, (1 - xp.cos(t)) / t2_safe)
  zero = xp.zeros_like(w[..., 0])
  k = xp.stack([
      xp.stack([zero, -w[..., 2], w[..., 1]], -1),
      xp.stack([w[..., 2], zero, -w[..., 0]], -1),
      xp.stack([-w[..., 1], w[..., 0], zero], -1),
  ], -2)
  eye = xp.eye(3, dtype=w.dtype)
  return eye + a[..., None, None] * k + b[..., None, None] * _xp.matmul(k, k)


def rotation_to_axis_angle(rot):
  """R (..., 3, 3) -> omega (..., 3) with |omega| in [0, pi]."""
  xp = _xp.array_module(rot)
  q = rotation_to_quaternion(rot)
  v = q[..., 1:]
  s = xp.linalg.norm(v, axis=-1)
  angle = 2 * xp.arctan2(s, q[..., 0])
  factor = xp.where(s > 1e-8, angle / xp.where(s > 1e-8, s, 1.0), 2.0 / q[..., 0])
  return v * factor[..., None]


def rotation_angle(rot_a, rot_b=None):
  """Geodesic angle in radians (...,) between rotations (or of rot_a alone when rot_b is None).

  atan2 of the skew and trace parts: accurate for small angles, where arccos((tr - 1) / 2)
  loses ~0.02 degrees to float32 rounding."""
  xp = _xp.array_module(rot_a, rot_b)
  r = _xp.as_float(xp, rot_a)
  if rot_b is not None:
    r = _xp.matmul(xp.swapaxes(r, -1, -2), _xp.as_float(xp, rot_b))
  skew = xp.stack([r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0],
                   r[..., 1, 0] - r[..., 0, 1]], -1)
  sin = xp.linalg.norm(skew, axis=-1) / 2
  cos = (r[..., 0, 0] + r[..., 1, 1] + r[..., 2, 2] - 1) / 2
  return xp.arctan2(sin, cos)
