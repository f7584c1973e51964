"""Seeded synthetic scenes for the geometry tests: a box room seen by random cameras.

Depth is exact (analytic ray / box intersection), so every XYZ image is exact to float32.
"""
from __future__ import annotations

import numpy as np

from wvd_jax.geometry import cameras, normalization, rotations


def random_rotation(rng, n):
  return rotations.quaternion_to_rotation(rng.normal(size=(n, 4)))


def look_at(eye, target, up=(0.0, -1.0, 0.0)):
  """cam_to_world (4, 4) of an OpenCV camera at eye looking at target (y down ~ -up)."""
  z = np.asarray(target, np.float64) - eye
  z /= np.linalg.norm(z)
  x = np.cross(-np.asarray(up, np.float64), z)
  x /= np.linalg.norm(x)
  y = np.cross(z, x)
  return cameras.make_pose(np.stack([x, y, z], 1), eye)


def box_room_depth(K, cam_to_world, height, width, half_size):
  """z-depth (N, H, W) of the inside walls of the box [-half_size, half_size]^3."""
  o, d = cameras.world_rays(K, cam_to_world, height, width, normalize=False)  # d has cam z = 1
  bound = np.where(d > 0, half_size, -half_size)
  with np.errstate(divide='ignore'):
    t = np.where(np.abs(d) > 1e-12, (bound - o) / d, np.inf)
  return t.min(-1)


def box_room(seed, n_views=8, size=64, fov_deg=60.0, half_size=(3.0, 2.0, 4.0), planar_view=False,
             per_view_fov=False, principal_point=None):
  """A clip: dict(xyz (N, H, W, 3), depth, K (N, 3, 3), cam_to_world (N, 4, 4)), float64.

  Cameras sit in the inner half of the room and look at random points on the walls, so most
  views see 2-3 walls; `planar_view` makes view 1 see a single wall (a plane)."""
  rng = np.random.default_rng(seed)
  half = np.asarray(half_size, np.float64)
  poses = []
  for i in range(n_views):
    eye = rng.uniform(-0.5, 0.5, 3) * half
    target = rng.uniform(-1, 1, 3) * half
    if planar_view and i == 1:  # sees only the z = +half wall, obliquely (focal observable)
      eye = np.array([0.0, 0.0, half[2] - 1.5])
      target = np.array([0.5, 0.3, half[2]])
    up = rng.normal(size=3) * 0.3 + np.array([0.0, 1.0, 0.0])
    if planar_view and i == 1:
      up = np.array([0.1, 1.0, 0.0])
    poses.append(look_at(eye, target, up))
  c2w = np.stack(poses)
  fov = np.deg2rad(fov_deg) * (rng.uniform(0.8, 1.2, n_views) if per_view_fov else np.ones(n_views))
  K = cameras.intrinsics_from_fov(fov, size, size)
  if principal_point is not None:
    K[:, :2, 2] = principal_point
  depth = box_room_depth(K, c2w, size, size, half)
  xyz = cameras.unproject_depth(depth, K, c2w)
  return dict(xyz=xyz, depth=depth, K=K, cam_to_world=c2w)


def canonicalize(clip):
  """The same clip with frame 0's camera as the world frame."""
  w2c0 = cameras.invert_pose(clip['cam_to_world'][0])
  out = dict(clip)
  out['xyz'] = cameras.transform_points(w2c0, clip['xyz'])
  out['cam_to_world'] = cameras.compose_poses(w2c0, clip['cam_to_world'])
  return out


def model_xyz(xyz, cam_to_world0):
  """True XYZ (N, H, W, 3) -> what a generator returns: frame 0's camera frame, the exact box
  normalized into [-1, 1] (float32)."""
  canon = cameras.transform_points(cameras.invert_pose(cam_to_world0), xyz)
  norm = normalization.fit_normalization(canon, percentile=100.0)
  return np.asarray(normalization.normalize_points(canon, norm), np.float32)
