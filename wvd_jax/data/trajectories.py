"""Camera trajectories of the synthetic world, like the paper's datasets' camera motion.

Rooms (RealEstate10K / ScanNet-like): forward walks with a slow turn, pans (rotation about a
nearly fixed point), and sideways dolly moves. Object scenes (CO3D / MVImgNet-like): orbits
around the objects at varying elevation, distance and arc. Every trajectory gets smooth
hand-held jitter (rotation and translation random walks) and a field of view drawn per clip.

Cameras never start (or pass) inside a solid: every frame's centre must keep ``MIN_CLEARANCE``
metres from every primitive, wall, floor and ceiling (``scenes.clearance``). A trajectory that
fails is redrawn with shorter steps; after ``_ATTEMPTS`` failures the primitives in the way are
removed from the scene (deterministically, so the result still depends only on the seed).

Poses are camera-to-world 4x4 in OpenCV axes (x right, y down, z forward); world y is up.
"""
from __future__ import annotations

import numpy as np

from wvd_jax.data import scenes

MIN_CLEARANCE = 0.25  # metres from a camera centre to any surface.
_ATTEMPTS = 24
ROOM_FOV_DEG = (50.0, 85.0)  # horizontal field of view ranges
OBJECT_FOV_DEG = (35.0, 65.0)


def look_rotation(forward: np.ndarray, roll: float = 0.0) -> np.ndarray:
  """(3, 3) camera-to-world rotation of an OpenCV camera looking along ``forward`` (world y up),
  rolled by ``roll`` radians about its optical axis. Columns: right, down, forward."""
  f = np.asarray(forward, np.float64)
  f = f / np.linalg.norm(f)
  right = np.cross(f, [0.0, 1.0, 0.0])
  norm = np.linalg.norm(right)
  if norm < 1e-6:  # Looking straight up or down: any right vector.
    right = np.array([1.0, 0.0, 0.0])
  else:
    right = right / norm
  down = np.cross(f, right)
  c, s = np.cos(roll), np.sin(roll)
  right, down = c * right + s * down, -s * right + c * down
  return np.stack([right, down, f], axis=1)


def direction(yaw, pitch) -> np.ndarray:
  """Unit view direction for yaw (about +y, 0 = looking along -z) and pitch (up positive)."""
  return np.array([np.sin(yaw) * np.cos(pitch), np.sin(pitch), -np.cos(yaw) * np.cos(pitch)])


def _pose(position, rotation) -> np.ndarray:
  pose = np.eye(4)
  pose[:3, :3] = rotation
  pose[:3, 3] = position
  return pose


def _jitter(rng: np.random.Generator, n: int, amount: float):
  """Smooth hand-held shake: (n, 3) rotation offsets (yaw, pitch, roll; radians) and (n, 3)
  position offsets (metres), random walks with a little damping."""
  rot_step = np.deg2rad(0.4) * amount
  pos_step = 0.006 * amount
  rot = np.cumsum(rng.normal(0, rot_step, (n, 3)), axis=0)
  pos = np.cumsum(rng.normal(0, pos_step, (n, 3)), axis=0)
  return rot - rot[:1], pos - pos[:1]


def _room_path(rng: np.random.Generator, scene: scenes.Scene, n: int, step_scale: float):
  """(n, 4, 4) poses of a walk, pan or dolly inside the room."""
  lo, hi = scene.room[:3].astype(np.float64), scene.room[3:].astype(np.float64)
  centre = (lo + hi) / 2
  margin = 0.6
  start = np.array([rng.uniform(lo[0] + margin, hi[0] - margin), rng.uniform(1.1, 1.8),
                    rng.uniform(lo[2] + margin, hi[2] - margin)])
  start[1] = min(start[1], hi[1] - 0.4)
  # Face roughly towards the room's centre (with spread), so the camera sees the room.
  to_centre = centre - start
  yaw0 = np.arctan2(to_centre[0], -to_centre[2]) + rng.uniform(-0.9, 0.9)
  pitch0 = rng.uniform(-0.35, 0.1)
  motion = rng.choice(['walk', 'pan', 'dolly'], p=[0.45, 0.25, 0.3])
  t = np.arange(n, dtype=np.float64)
  if motion == 'walk':
    speed = rng.uniform(0.05, 0.2) * step_scale
    turn = rng.uniform(-0.04, 0.04) * step_scale
    yaws = yaw0 + turn * t
    heading = yaws[:, None]
    steps = speed * np.concatenate([np.sin(heading), np.zeros_like(heading), -np.cos(heading)], 1)
    positions = start + np.concatenate([np.zeros((1, 3)), np.cumsum(steps[:-1], 0)])
    pitches = np.full(n, pitch0)
  elif motion == 'pan':
    rate = rng.uniform(0.04, 0.12) * rng.choice([-1, 1]) * step_scale
    yaws = yaw0 + rate * t
    drift = rng.normal(0, 0.01, 3) * step_scale
    positions = start + t[:, None] * drift
    pitches = pitch0 + rng.uniform(-0.01, 0.01) * t
  else:  # Dolly sideways while keeping a point in view.
    speed = rng.uniform(0.05, 0.15) * rng.choice([-1, 1]) * step_scale
    sideways = np.array([np.cos(yaw0), 0.0, np.sin(yaw0)])
    positions = start + speed * t[:, None] * sideways
    target = start + 2.5 * direction(yaw0, pitch0)
    look = target - positions
    yaws = np.arctan2(look[:, 0], -look[:, 2])
    pitches = np.arctan2(look[:, 1], np.hypot(look[:, 0], look[:, 2]))
  rot, pos = _jitter(rng, n, rng.uniform(0.0, 1.0))
  return np.stack([_pose(positions[i] + pos[i],
                         look_rotation(direction(yaws[i] + rot[i, 0], pitches[i] + rot[i, 1]),
                                       rot[i, 2]))
                   for i in range(n)])


def _scene_extent(scene: scenes.Scene):
  """Centre (3,) and radius of the objects of an object-centric scene."""
  pts, radii = [], []
  for sph in scene.spheres:
    if sph[3] > 0:
      pts.append(sph[:3])
      radii.append(sph[3])
  for box in scene.boxes:
    if box[3] > 0:
      pts.append(box[:3])
      radii.append(np.linalg.norm(box[3:6]))
  for cyl in scene.cylinders:
    if cyl[2] > 0:
      pts.append([cyl[0], (cyl[3] + cyl[4]) / 2, cyl[1]])
      radii.append(np.hypot(cyl[2], (cyl[4] - cyl[3]) / 2))
  pts, radii = np.array(pts, np.float64), np.array(radii)
  lo, hi = (pts - radii[:, None]).min(0), (pts + radii[:, None]).max(0)
  centre = (lo + hi) / 2
  radius = np.max(np.linalg.norm(pts - centre, axis=1) + radii)
  return centre, radius


def _orbit_path(rng: np.random.Generator, scene: scenes.Scene, n: int, fov_x: float,
                step_scale: float):
  """(n, 4, 4) poses orbiting the objects, looking at (near) their centre."""
  centre, radius = _scene_extent(scene)
  distance = radius / np.tan(fov_x / 2) * rng.uniform(1.1, 1.9)
  distance = min(max(distance, radius + 0.5), 0.9 * scene.ground[2] + radius)
  elevation0 = rng.uniform(0.12, 0.8)
  azimuth0 = rng.uniform(0, 2 * np.pi)
  rate = rng.uniform(0.06, 0.25) * rng.choice([-1, 1]) * step_scale
  t = np.arange(n, dtype=np.float64)
  elevation = elevation0 + rng.uniform(-0.015, 0.015) * t * step_scale
  dist = distance * (1 + rng.uniform(-0.015, 0.015) * t * step_scale)
  azimuth = azimuth0 + rate * t
  positions = centre + dist[:, None] * np.stack(
      [np.cos(elevation) * np.sin(azimuth), np.sin(elevation), np.cos(elevation) * np.cos(azimuth)], 1)
  look_at = centre + rng.normal(0, 0.1 * radius, 3)
  rot, pos = _jitter(rng, n, rng.uniform(0.0, 1.0))
  poses = []
  for i in range(n):
    forward = look_at - positions[i]
    yaw = np.arctan2(forward[0], -forward[2]) + rot[i, 0]
    pitch = np.arctan2(forward[1], np.hypot(forward[0], forward[2])) + rot[i, 1]
    poses.append(_pose(positions[i] + pos[i], look_rotation(direction(yaw, pitch), rot[i, 2])))
  return np.stack(poses)


def sample_cameras(rng: np.random.Generator, scene: scenes.Scene, num_frames: int):
  """Draws a trajectory and field of view for ``scene``; may remove primitives in the way.

  Returns (cam_to_world (N, 4, 4) float64, fov_x radians). Guarantees every camera centre is at
  least MIN_CLEARANCE from every solid of the (possibly edited) scene."""
  fov_range = ROOM_FOV_DEG if scene.has_room else OBJECT_FOV_DEG
  fov_x = np.deg2rad(rng.uniform(*fov_range))
  step_scale = 1.0
  for _ in range(_ATTEMPTS):
    if scene.has_room:
      poses = _room_path(rng, scene, num_frames, step_scale)
    else:
      poses = _orbit_path(rng, scene, num_frames, fov_x, step_scale)
    if clearance_ok(scene, poses):
      return poses, fov_x
    step_scale *= 0.85
  # Still blocked: remove what is in the way of the last drawn path (walls cannot be removed,
  # so the room path is clamped into the room's interior first).
  if scene.has_room:
    lo, hi = scene.room[:3] + MIN_CLEARANCE + 1e-3, scene.room[3:] - MIN_CLEARANCE - 1e-3
    poses[:, :3, 3] = np.clip(poses[:, :3, 3], lo, hi)
  else:
    poses[:, 1, 3] = np.maximum(poses[:, 1, 3], MIN_CLEARANCE + 1e-3)
  for kind, index in scenes.primitives_near(scene, poses[:, :3, 3], MIN_CLEARANCE):
    getattr(scene, f'remove_{kind}')(index)
  if not clearance_ok(scene, poses):
    raise AssertionError('camera clearance could not be established')  # Unreachable.
  return poses, fov_x


def clearance_ok(scene: scenes.Scene, cam_to_world: np.ndarray) -> bool:
  """Whether every camera centre keeps MIN_CLEARANCE from every solid."""
  return bool(scenes.clearance(scene, cam_to_world[:, :3, 3]).min() >= MIN_CLEARANCE)
