"""A minimal procedural 3D world rendered by ray casting, with exact RGB, depth and XYZ.

Each scene is a box-shaped room (floor, ceiling, four walls with procedural textures) holding a few
spheres and boxes, lit by a directional light with Lambertian shading. A clip is ``num_frames``
views along a short camera path (a forward walk with a pan) inside the room.

World frame: y up, metres. Cameras: OpenCV (x right, y down, z forward), camera-to-world 4x4,
pixel centres at (col + 0.5, row + 0.5). Rays are cast through pixel centres with unnormalized
directions ``R @ K^-1 [u, v, 1]``, so the ray parameter at a hit is exactly the z-depth and
``XYZ = origin + depth * direction`` equals the unprojection of the depth map.
"""
from __future__ import annotations

import numpy as np

_ROOM_HALF = np.array([3.0, 1.5, 3.0])  # Half extents (x, y, z) of the room, centred at 0.


def look_at(eye: np.ndarray, target: np.ndarray, up=(0.0, 1.0, 0.0)) -> np.ndarray:
  """Camera-to-world 4x4 (OpenCV axes) of a camera at ``eye`` looking at ``target``."""
  forward = target - eye
  forward = forward / np.linalg.norm(forward)
  right = np.cross(forward, np.asarray(up))
  right = right / np.linalg.norm(right)
  down = np.cross(forward, right)
  pose = np.eye(4)
  pose[:3, :3] = np.stack([right, down, forward], axis=1)
  pose[:3, 3] = eye
  return pose


def _random_scene(rng: np.random.Generator) -> dict:
  """Primitives of one room: spheres (centre, radius) and axis-aligned boxes (lo, hi)."""
  num_spheres = rng.integers(1, 4)
  radii = rng.uniform(0.3, 0.7, num_spheres)
  centres = np.stack([rng.uniform(-2.0, 2.0, num_spheres), -_ROOM_HALF[1] + radii,
                      rng.uniform(-2.0, 2.0, num_spheres)], axis=1)
  num_boxes = rng.integers(1, 3)
  size = rng.uniform(0.4, 1.2, (num_boxes, 3))
  base = np.stack([rng.uniform(-2.2, 2.2, num_boxes), np.full(num_boxes, -_ROOM_HALF[1]),
                   rng.uniform(-2.2, 2.2, num_boxes)], axis=1)
  box_lo = base - size * np.array([0.5, 0.0, 0.5])
  box_hi = base + size * np.array([0.5, 1.0, 0.5])
  # Object colours first, then the 6 room faces (-x, +x, -y floor, +y ceiling, -z, +z).
  colours = rng.uniform(0.15, 0.95, (num_spheres + num_boxes + 6, 3))
  light = np.array([rng.uniform(-0.5, 0.5), 1.0, rng.uniform(-0.5, 0.5)])
  return dict(centres=centres, radii=radii, box_lo=box_lo, box_hi=box_hi, colours=colours,
              light=light / np.linalg.norm(light), checker=rng.uniform(0.3, 0.8))


def _intersect(origins: np.ndarray, dirs: np.ndarray, scene: dict):
  """Nearest hit of rays (R,3) against the scene: t (R,), normal (R,3), primitive id (R,)."""
  inf = np.inf
  n_rays = dirs.shape[0]
  best_t = np.full(n_rays, inf)
  best_id = np.full(n_rays, -1)
  best_n = np.zeros((n_rays, 3))
  # Spheres: |o + t d - c|^2 = r^2.
  for i, (c, r) in enumerate(zip(scene['centres'], scene['radii'])):
    oc = origins - c
    a = np.einsum('ij,ij->i', dirs, dirs)
    b = 2 * np.einsum('ij,ij->i', oc, dirs)
    cc = np.einsum('ij,ij->i', oc, oc) - r * r
    disc = b * b - 4 * a * cc
    sqrt_disc = np.sqrt(np.maximum(disc, 0))
    t = (-b - sqrt_disc) / (2 * a)
    hit = (disc > 0) & (t > 1e-4) & (t < best_t)
    best_t = np.where(hit, t, best_t)
    best_id = np.where(hit, i, best_id)
    normal = (origins + t[:, None] * dirs - c) / r
    best_n = np.where(hit[:, None], normal, best_n)
  # Boxes: slab method; the entry face gives the normal.
  offset = len(scene['radii'])
  with np.errstate(divide='ignore', invalid='ignore'):
    inv = 1.0 / dirs
    for i, (lo, hi) in enumerate(zip(scene['box_lo'], scene['box_hi'])):
      t0 = (lo - origins) * inv
      t1 = (hi - origins) * inv
      t_near = np.minimum(t0, t1)
      t_enter = t_near.max(axis=1)
      t_exit = np.maximum(t0, t1).min(axis=1)
      hit = (t_enter <= t_exit) & (t_enter > 1e-4) & (t_enter < best_t)
      axis = t_near.argmax(axis=1)
      normal = np.zeros((n_rays, 3))
      normal[np.arange(n_rays), axis] = -np.sign(dirs[np.arange(n_rays), axis])
      best_t = np.where(hit, t_enter, best_t)
      best_id = np.where(hit, offset + i, best_id)
      best_n = np.where(hit[:, None], normal, best_n)
    # Room: the exit face of the inner box; every ray from inside hits it.
    offset += len(scene['box_lo'])
    t_wall = np.maximum((-_ROOM_HALF - origins) * inv, (_ROOM_HALF - origins) * inv)
  axis = t_wall.argmin(axis=1)
  t = t_wall[np.arange(n_rays), axis]
  hit = t < best_t
  sign = np.sign(dirs[np.arange(n_rays), axis])
  face = offset + 2 * axis + (sign > 0)
  normal = np.zeros((n_rays, 3))
  normal[np.arange(n_rays), axis] = -sign
  best_t = np.where(hit, t, best_t)
  best_id = np.where(hit, face, best_id)
  best_n = np.where(hit[:, None], normal, best_n)
  return best_t, best_n, best_id


def _shade(points, normals, ids, scene):
  """Lambertian shading of a procedural checker texture; returns float RGB in [0, 1]."""
  base = scene['colours'][ids]
  checker = (np.floor(points * 2.0).sum(axis=1) % 2)[:, None]
  texture = base * (1.0 - scene['checker'] * 0.5 * checker)
  diffuse = np.clip(np.einsum('ij,j->i', normals, scene['light']), 0.0, 1.0)[:, None]
  return np.clip(texture * (0.35 + 0.65 * diffuse), 0.0, 1.0)


def _trajectory(rng: np.random.Generator, num_frames: int) -> np.ndarray:
  """(N, 4, 4) camera-to-world poses: a forward walk with a pan, inside the room."""
  start = np.array([rng.uniform(-1.0, 1.0), rng.uniform(-0.4, 0.4), rng.uniform(1.5, 2.3)])
  heading = rng.uniform(-0.6, 0.6)
  pan = rng.uniform(-0.08, 0.08)
  step = rng.uniform(0.05, 0.15)
  poses = []
  for i in range(num_frames):
    yaw = heading + pan * i
    forward = np.array([np.sin(yaw), 0.0, -np.cos(yaw)])
    eye = start + step * i * np.array([np.sin(heading), 0.0, -np.cos(heading)])
    poses.append(look_at(eye, eye + forward + np.array([0.0, -0.15, 0.0])))
  return np.stack(poses)


def render_clip(seed: int, num_frames: int, size: int) -> dict[str, np.ndarray]:
  """Renders one clip of a random scene.

  Returns:
    rgb (N, H, W, 3) uint8; depth (N, H, W) float32 z-depth; xyz (N, H, W, 3) float32 world
    points; mask (N, H, W) bool; intrinsics (N, 3, 3) float32; cam_to_world (N, 4, 4) float32.
  """
  rng = np.random.default_rng(seed)
  scene = _random_scene(rng)
  poses = _trajectory(rng, num_frames)
  fov_x = rng.uniform(np.deg2rad(50), np.deg2rad(75))
  focal = 0.5 * size / np.tan(0.5 * fov_x)
  K = np.array([[focal, 0, size / 2], [0, focal, size / 2], [0, 0, 1.0]])
  v, u = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5, indexing='ij')
  pixels = np.stack([u, v, np.ones_like(u)], axis=-1).reshape(-1, 3)
  camera_rays = pixels @ np.linalg.inv(K).T  # z component is 1: t is the z-depth.
  out = {k: [] for k in ('rgb', 'depth', 'xyz', 'mask')}
  for pose in poses:
    dirs = camera_rays @ pose[:3, :3].T
    origins = np.broadcast_to(pose[:3, 3], dirs.shape)
    t, normals, ids = _intersect(origins, dirs, scene)
    points = origins + t[:, None] * dirs
    colour = _shade(points, normals, ids, scene)
    out['rgb'].append(np.round(colour * 255).astype(np.uint8).reshape(size, size, 3))
    out['depth'].append(t.reshape(size, size))
    out['xyz'].append(points.reshape(size, size, 3))
    out['mask'].append(np.isfinite(t).reshape(size, size))
  return dict(
      rgb=np.stack(out['rgb']),
      depth=np.stack(out['depth']).astype(np.float32),
      xyz=np.stack(out['xyz']).astype(np.float32),
      mask=np.stack(out['mask']),
      intrinsics=np.broadcast_to(K, (num_frames, 3, 3)).astype(np.float32),
      cam_to_world=poses.astype(np.float32),
  )
