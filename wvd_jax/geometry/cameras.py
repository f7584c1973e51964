"""Pinhole cameras: intrinsics, poses, rays, (un)projection, COLMAP / OpenGL conversions.

Conventions (the whole project's):
  * Camera frame is OpenCV: x right, y down, z forward (points in front have z > 0).
  * `cam_to_world` is a 4x4 rigid transform, world = R @ cam + t; `world_to_cam` is its inverse.
  * K is 3x3 in pixel units, [[fx, s, cx], [0, fy, cy], [0, 0, 1]].
  * Pixel (u, v) = (col + 0.5, row + 0.5) is the centre of pixel [row, col]; a camera with
    cx = W / 2, cy = H / 2 has its principal point at the image centre.
  * Leading (batch) axes broadcast numpy-style; every function accepts numpy arrays (and then
    returns numpy, so the data pipeline never touches jax) or jax arrays / tracers (jittable).

Matrix products are written elementwise (`_xp.matvec` / `_xp.matmul`) so that they stay exact
float32 on GPUs, where jnp.matmul may use TF32.
"""
from __future__ import annotations

import numpy as np

from wvd_jax.geometry import _checks
from wvd_jax.geometry import _xp
from wvd_jax.geometry import rotations

# Camera-axis flip between OpenCV (x right, y down, z forward) and OpenGL (x right, y up,
# z backward): diag(1, -1, -1) on the camera side of the pose.
_CV_GL_FLIP = np.diag(np.array([1.0, -1.0, -1.0, 1.0], np.float32))


def pixel_centers(height: int, width: int, dtype=np.float32) -> np.ndarray:
  """(H, W, 2) pixel centres (u, v) = (col + 0.5, row + 0.5). A numpy constant (jit-safe)."""
  u = np.arange(width, dtype=dtype) + 0.5
  v = np.arange(height, dtype=dtype) + 0.5
  uu, vv = np.meshgrid(u, v, indexing='xy')
  return np.stack([uu, vv], axis=-1)


def make_intrinsics(fx, fy, cx, cy, skew=0.0):
  """K (..., 3, 3) from focal lengths and principal point (pixels), each (...,) or scalar."""
  xp = _xp.array_module(fx, fy, cx, cy, skew)
  fx, fy, cx, cy, skew = xp.broadcast_arrays(*[_xp.as_float(xp, a) for a in (fx, fy, cx, cy, skew)])
  zero, one = xp.zeros_like(fx), xp.ones_like(fx)
  return xp.stack([xp.stack([fx, skew, cx], -1), xp.stack([zero, fy, cy], -1),
                   xp.stack([zero, zero, one], -1)], -2)


def intrinsics_from_fov(fov_x_radians, height: int, width: int):
  """K (..., 3, 3) of a camera with horizontal field of view fov_x (radians, (...,) or scalar),
  square pixels (fy = fx) and principal point at the image centre (W / 2, H / 2)."""
  xp = _xp.array_module(fov_x_radians)
  fov = _xp.as_float(xp, fov_x_radians)
  if _checks.is_concrete(fov) and not np.all((np.asarray(fov) > 0) & (np.asarray(fov) < np.pi)):
    raise ValueError(f'fov_x_radians must be in (0, pi), got {fov}')
  f = (width / 2.0) / xp.tan(fov / 2.0)
  return make_intrinsics(f, f, xp.full_like(f, width / 2.0), xp.full_like(f, height / 2.0))


def invert_intrinsics(K):
  """Closed-form inverse (..., 3, 3) of an upper-triangular K (no generic matrix inverse)."""
  xp = _xp.array_module(K)
  K = _xp.as_float(xp, K)
  fx, s, cx = K[..., 0, 0], K[..., 0, 1], K[..., 0, 2]
  fy, cy = K[..., 1, 1], K[..., 1, 2]
  zero, one = xp.zeros_like(fx), xp.ones_like(fx)
  return xp.stack([
      xp.stack([1 / fx, -s / (fx * fy), (s * cy - cx * fy) / (fx * fy)], -1),
      xp.stack([zero, 1 / fy, -cy / fy], -1),
      xp.stack([zero, zero, one], -1)], -2)


def make_pose(rotation, translation):
  """4x4 (..., 4, 4) from R (..., 3, 3) and t (..., 3)."""
  xp = _xp.array_module(rotation, translation)
  rotation, translation = _xp.as_float(xp, rotation), _xp.as_float(xp, translation)
  batch = np.broadcast_shapes(rotation.shape[:-2], translation.shape[:-1])
  top = xp.concatenate([xp.broadcast_to(rotation, batch + (3, 3)),
                        xp.broadcast_to(translation, batch + (3,))[..., None]], -1)
  bottom = xp.broadcast_to(xp.asarray([0, 0, 0, 1], top.dtype), batch + (1, 4))
  return xp.concatenate([top, bottom], -2)


def invert_pose(T):
  """Inverse (..., 4, 4) of a rigid transform T (..., 4, 4): [R^T, -R^T t]. Turns
  cam_to_world into world_to_cam and back. Assumes R is orthonormal (no scale)."""
  xp = _xp.array_module(T)
  T = _xp.as_float(xp, T)
  rt = xp.swapaxes(T[..., :3, :3], -1, -2)
  return make_pose(rt, -_xp.matvec(rt, T[..., :3, 3]))


def compose_poses(a, b):
  """a @ b for 4x4 transforms (..., 4, 4) (broadcasting), e.g. world_to_cam0 @ cam_to_world
  re-expresses poses in camera 0's frame."""
  xp = _xp.array_module(a, b)
  return _xp.matmul(_xp.as_float(xp, a), _xp.as_float(xp, b))


def transform_points(T, points):
  """Applies T (..., 4, 4) to points (..., 3) -> (..., 3): R @ p + t.

  T's batch shape broadcasts numpy-style against points.shape[:-1] (aligned from the right):
  one T for an (N, H, W, 3) image stack works as is; per-frame T (N, 4, 4) on points
  (N, P, 3) needs T[:, None]."""
  _checks.check_last_dims('T', T, (4, 4))
  _checks.check_last_dims('points', points, (3,))
  xp = _xp.array_module(T, points)
  T, points = _xp.as_float(xp, T), _xp.as_float(xp, points)
  return _xp.matvec(T[..., :3, :3], points) + T[..., :3, 3]


def pixel_rays(K, height: int, width: int):
  """Camera-frame ray directions (..., H, W, 3) through pixel centres, scaled so z = 1
  (so cam point = depth * ray, depth measured along z)."""
  _checks.check_intrinsics(K)
  xp = _xp.array_module(K)
  kinv = invert_intrinsics(K)[..., None, None, :, :]
  pix = pixel_centers(height, width)
  pix_h = np.concatenate([pix, np.ones_like(pix[..., :1])], -1)
  return _xp.matvec(kinv, xp.asarray(pix_h, kinv.dtype))


def world_rays(K, cam_to_world, height: int, width: int, normalize: bool = True):
  """World-frame rays (origins, directions), each (..., H, W, 3). Directions are unit length
  when `normalize`, else the z = 1 scaling of `pixel_rays` rotated into the world."""
  xp = _xp.array_module(K, cam_to_world)
  d_cam = pixel_rays(K, height, width)
  c2w = _xp.as_float(xp, cam_to_world)[..., None, None, :, :]
  d = _xp.matvec(c2w[..., :3, :3], d_cam)
  if normalize:
    d = d / xp.linalg.norm(d, axis=-1, keepdims=True)
  o = xp.broadcast_to(c2w[..., :3, 3], d.shape)
  return o, d


def unproject_depth(depth, K, cam_to_world):
  """World points (..., H, W, 3) of a z-depth map.

  Args:
    depth: (..., H, W) distance along the camera z axis (not along the ray). Any value is
      unprojected; mask invalid (<= 0 or non-finite) pixels yourself.
    K: (..., 3, 3) intrinsics.
    cam_to_world: (..., 4, 4) pose; batch shapes of all three broadcast.
  """
  _checks.check_intrinsics(K)
  _checks.check_pose(cam_to_world)
  if np.ndim(depth) < 2:
    raise ValueError(f'depth must be (..., H, W), got shape {np.shape(depth)}')
  xp = _xp.array_module(depth, K, cam_to_world)
  depth = _xp.as_float(xp, depth)
  h, w = depth.shape[-2:]
  cam = pixel_rays(K, h, w) * depth[..., None]
  return transform_points(_xp.as_float(xp, cam_to_world)[..., None, None, :, :], cam)


def world_to_camera_points(points, cam_to_world):
  """Camera-frame coordinates (..., P, 3) of world points (..., P, 3); pose (..., 4, 4)."""
  xp = _xp.array_module(points, cam_to_world)
  w2c = invert_pose(cam_to_world)
  return transform_points(w2c[..., None, :, :], _xp.as_float(xp, points))


def project_points(points, K, cam_to_world, eps: float = 1e-8):
  """Projects world points into a camera.

  Args:
    points: (..., P, 3) world points.
    K: (..., 3, 3); cam_to_world: (..., 4, 4) (batch shapes broadcast with points[..., 0, :]).
  Returns:
    uv (..., P, 2) pixel coordinates (centre convention: pixel [row, col] spans
    u in [col, col + 1)); depth (..., P), the camera z. Points with depth <= eps have
    meaningless (but finite) uv: test depth > 0 before using them.
  """
  _checks.check_intrinsics(K)
  _checks.check_pose(cam_to_world)
  _checks.check_last_dims('points', points, (3,))
  xp = _xp.array_module(points, K, cam_to_world)
  cam = world_to_camera_points(points, cam_to_world)
  z = cam[..., 2]
  z_safe = xp.where(xp.abs(z) > eps, z, eps)
  pix = _xp.matvec(_xp.as_float(xp, K)[..., None, :, :], cam / z_safe[..., None])
  return pix[..., :2], z


def opencv_to_opengl(cam_to_world):
  """cam_to_world (..., 4, 4) of an OpenCV camera -> the same camera in OpenGL axes
  (x right, y up, z backward), e.g. for viewers / NeRF-style datasets. Its own inverse."""
  xp = _xp.array_module(cam_to_world)
  c2w = _xp.as_float(xp, cam_to_world)
  return _xp.matmul(c2w, xp.asarray(_CV_GL_FLIP, c2w.dtype))


def opengl_to_opencv(cam_to_world):
  """cam_to_world (..., 4, 4) in OpenGL camera axes -> OpenCV axes (same flip)."""
  return opencv_to_opengl(cam_to_world)


def cam_to_world_to_colmap(cam_to_world):
  """COLMAP's image pose from cam_to_world (..., 4, 4): (qvec (..., 4) as (w, x, y, z) with
  w >= 0, tvec (..., 3)) of world_to_cam; COLMAP cameras use OpenCV axes like ours."""
  w2c = invert_pose(cam_to_world)
  return rotations.rotation_to_quaternion(w2c[..., :3, :3]), w2c[..., :3, 3]


def colmap_to_cam_to_world(qvec, tvec):
  """cam_to_world (..., 4, 4) from COLMAP's world_to_cam qvec (..., 4) (w, x, y, z) and
  tvec (..., 3)."""
  return invert_pose(make_pose(rotations.quaternion_to_rotation(qvec), tvec))



def check_pinhole(K, name: str = 'K') -> None:
  """Raises ValueError unless K (..., 3, 3) is a finite pinhole intrinsic matrix: upper
  triangular with last row (0, 0, 1), no skew, positive focal lengths."""
  k = np.asarray(K, np.float64)
  _checks.check_last_dims(name, k, (3, 3))
  if not np.all(np.isfinite(k)):
    raise ValueError(f'{name} contains NaN or inf')
  if np.any(k[..., 1, 0] != 0) or np.any(k[..., 2, :2] != 0) or np.any(k[..., 2, 2] != 1):
    raise ValueError(f'{name} must be upper triangular with last row (0, 0, 1), got '
                     f'{k.reshape(-1, 3, 3)[0].tolist()}')
  if np.any(k[..., 0, 1] != 0):
    raise ValueError(f'{name} has skew {k[..., 0, 1].max()}; only pinhole K without skew is '
                     'supported')
  if np.any(k[..., 0, 0] <= 0) or np.any(k[..., 1, 1] <= 0):
    raise ValueError(f'{name} has a non-positive focal length (fx {k[..., 0, 0].min()}, '
                     f'fy {k[..., 1, 1].min()})')


def check_rigid(T, name: str = 'cam_to_world', tol: float = 1e-4) -> None:
  """Raises ValueError unless T (..., 4, 4) is a finite rigid transform: a rotation (R^T R = I
  within tol, det +1), a translation, last row (0, 0, 0, 1)."""
  t = np.asarray(T, np.float64)
  _checks.check_last_dims(name, t, (4, 4))
  if not np.all(np.isfinite(t)):
    raise ValueError(f'{name} contains NaN or inf')
  if t.size == 0:
    return
  r = t[..., :3, :3]
  ortho = np.abs(np.einsum('...ji,...jk->...ik', r, r) - np.eye(3)).max()
  if ortho > tol or np.any(np.linalg.det(r) <= 0):
    raise ValueError(f'{name} rotation part is not a rotation (|R^T R - I| = {ortho:.3g}, '
                     f'min det {np.linalg.det(r).min():.3g})')
  if np.any(np.abs(t[..., 3, :] - np.array([0, 0, 0, 1.0])) > 0):
    raise ValueError(f'{name} must have last row (0, 0, 0, 1)')
