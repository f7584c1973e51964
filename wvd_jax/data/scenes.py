"""Seeded scene generator of the synthetic world: rooms and object-centric scenes.

World frame: metres, y up, the floor / ground at y = 0. A scene is a fixed-capacity set of
analytic primitives (so one jitted ray caster serves every scene):

  * spheres      (MAX_SPHERES):   centre (3,), radius (0 = unused slot)
  * boxes        (MAX_BOXES):     centre (3,), half extents (3,) (0 = unused), yaw about +y
  * cylinders    (MAX_CYLINDERS): vertical, capped: centre x, z, radius (0 = unused), y0 < y1
  * a room       (rooms only): the inside of the box [room_lo, room_hi] (floor, walls, ceiling)
  * a ground disc (object scenes only): y = 0, centre (x, z), radius; rays that miss every
    surface see the open background, which is masked (no depth, no XYZ)

Surfaces are numbered for materials: spheres, then boxes, then cylinders, then the 6 room faces
(-x, +x, floor, ceiling, -z, +z), then the ground (``NUM_SURFACES`` in all). Each surface has a
texture id (see textures.py), an RGB tint, a texture scale (metres per texture repeat) and a
texture offset. Light: a directional sun plus ambient, and in rooms a point lamp.

Photo appearance (``photo_appearance``, config data.photo_appearance): a second pass over a
finished scene, from its own random stream, re-textures surfaces with random crops (offset),
scales and rotations of real photographs and varies the light (sun direction, colours and
intensities of sun, lamp and ambient light, exposure and white balance). Geometry is untouched:
the same scene and cameras render the same depth with the switch on or off.

Scene kinds, like the paper's mixture of scene-centric (RealEstate10K, ScanNet) and
object-centric (CO3D, MVImgNet) data: ROOM (furniture-like boxes, tables, posters on the walls,
spheres, stools / pillars, free-standing partitions as occluders) and OBJECTS (one to four
objects, some composite, on a textured ground disc under an open sky).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from wvd_jax.data import textures

MAX_SPHERES = 6
MAX_BOXES = 14
MAX_CYLINDERS = 6
ROOM_FACES = 6
SPHERE0 = 0
BOX0 = MAX_SPHERES
CYLINDER0 = BOX0 + MAX_BOXES
ROOM0 = CYLINDER0 + MAX_CYLINDERS
GROUND = ROOM0 + ROOM_FACES
NUM_SURFACES = GROUND + 1

ROOM, OBJECTS = 0, 1
KIND_NAMES = ('room', 'objects')


@dataclasses.dataclass
class Scene:
  """One scene (numpy float32 / int32 arrays; see the module docstring)."""
  kind: int
  spheres: np.ndarray      # (MAX_SPHERES, 4): x, y, z, radius.
  boxes: np.ndarray        # (MAX_BOXES, 7): x, y, z, hx, hy, hz, yaw.
  cylinders: np.ndarray    # (MAX_CYLINDERS, 5): x, z, radius, y0, y1.
  room: np.ndarray         # (6,): lo (3), hi (3); zeros for object scenes.
  ground: np.ndarray       # (3,): centre x, centre z, radius (0 for rooms).
  texture: np.ndarray      # (NUM_SURFACES,) int32.
  tint: np.ndarray         # (NUM_SURFACES, 3).
  tex_scale: np.ndarray    # (NUM_SURFACES,) metres per texture repeat.
  tex_offset: np.ndarray   # (NUM_SURFACES, 2).
  light: np.ndarray        # (15,): see `light_parts`.
  # Photo appearance only (None otherwise): texture rotation (NUM_SURFACES,) radians, and
  # (APPEARANCE_SIZE,) light colours and camera gains (see `appearance_parts`).
  tex_rotation: np.ndarray | None = None
  appearance: np.ndarray | None = None

  def arrays(self) -> dict[str, np.ndarray]:
    """The arrays the ray caster consumes (fixed shapes for every scene; the photo-appearance
    ones only when set), plus ``counts`` (3,) int32: one past the last used sphere, box and
    cylinder slot."""
    out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
           if f.name != 'kind' and getattr(self, f.name) is not None}
    used = (self.spheres[:, 3] > 0, self.boxes[:, 3] > 0, self.cylinders[:, 2] > 0)
    out['counts'] = np.array([np.nonzero(u)[0].max() + 1 if u.any() else 0 for u in used],
                             np.int32)
    return out

  @property
  def has_room(self) -> bool:
    return self.kind == ROOM

  def remove_sphere(self, i):
    self.spheres[i] = 0.0

  def remove_box(self, i):
    self.boxes[i] = 0.0

  def remove_cylinder(self, i):
    self.cylinders[i] = 0.0


def light_parts(light):
  """Splits a (..., 15) light vector into (sun_dir (..., 3) unit, towards the sun; sun;
  ambient; lamp_pos (..., 3); lamp; sky_top (..., 3); sky_bottom (..., 3))."""
  return (light[..., 0:3], light[..., 3], light[..., 4], light[..., 5:8], light[..., 8],
          light[..., 9:12], light[..., 12:15])


APPEARANCE_SIZE = 12


def appearance_parts(appearance):
  """Splits a (..., 12) appearance vector into (sun colour, lamp colour, ambient colour, camera
  gains), (..., 3) each: light colours (max 1) and the per-channel exposure x white balance."""
  return (appearance[..., 0:3], appearance[..., 3:6], appearance[..., 6:9], appearance[..., 9:12])


def _colour_temperature(rng: np.random.Generator, warm: float, cool: float) -> np.ndarray:
  """A light colour between warm (tungsten-like) and cool (overcast-like), max channel 1."""
  u = rng.uniform(warm, cool)
  colour = (1 - u) * np.array([1.0, 0.78, 0.55]) + u * np.array([0.78, 0.88, 1.0])
  return colour / colour.max()


def photo_appearance(scene: Scene, rng: np.random.Generator, photo_share: float = 0.75
                     ) -> Scene:
  """A copy of ``scene`` with photo textures and varied light; geometry unchanged.

  Each surface takes, with probability ``photo_share``, a random photograph of the bank
  (textures.PHOTO_IDS) at a random scale (0.5-2x its material's), crop position and rotation;
  every surface's texture turns by a random angle. Light: the sun's direction re-drawn; sun,
  lamp and ambient intensities scaled and coloured (colour temperature); the camera's exposure
  (2^[-0.4, 0.6]) and white balance (per-channel gains, ~8% spread) vary per clip."""
  s = dataclasses.replace(scene, texture=scene.texture.copy(), tint=scene.tint.copy(),
                          tex_scale=scene.tex_scale.copy(), tex_offset=scene.tex_offset.copy(),
                          light=scene.light.copy())
  photos = rng.random(NUM_SURFACES) < photo_share
  for surface in np.nonzero(photos)[0]:
    tex = int(rng.choice(textures.PHOTO_IDS))
    s.texture[surface] = tex
    strength = 0.5 if textures.is_grey(tex) else 0.1
    colour = rng.uniform(0.4, 1.0, 3)
    s.tint[surface] = (1 - strength) + strength * colour / colour.max()
    s.tex_scale[surface] *= rng.uniform(0.5, 2.0)
    s.tex_offset[surface] = rng.uniform(0, 2, 2)
  s.tex_rotation = rng.uniform(0, 2 * np.pi, NUM_SURFACES).astype(np.float32)
  sun_dir, sun, ambient, lamp_pos, lamp, sky_top, sky_bottom = light_parts(s.light)
  elevation, azimuth = rng.uniform(0.2, 1.5), rng.uniform(0, 2 * np.pi)
  sun_dir = [np.cos(elevation) * np.sin(azimuth), np.sin(elevation),
             np.cos(elevation) * np.cos(azimuth)]
  sun, ambient = sun * rng.uniform(0.7, 1.5), ambient * rng.uniform(0.7, 1.4)
  lamp = lamp * rng.uniform(0.5, 1.5)
  s.light = np.array([*sun_dir, sun, ambient, *lamp_pos, lamp, *sky_top, *sky_bottom],
                     np.float32)
  sky = np.asarray(sky_top) / max(float(np.max(sky_top)), 1e-6)
  ambient_colour = 0.6 + 0.4 * sky  # Ambient light is skylight: bluish outdoors.
  exposure = 2.0 ** rng.uniform(-0.4, 0.6)
  balance = np.exp(rng.normal(0.0, 0.08, 3))
  gains = exposure * balance / np.exp(np.mean(np.log(balance)))
  s.appearance = np.concatenate([_colour_temperature(rng, 0.0, 1.0),
                                 _colour_temperature(rng, 0.0, 0.5),
                                 ambient_colour / ambient_colour.max(), gains]).astype(np.float32)
  return s


class _Builder:
  """Fills a Scene's slots; extra primitives beyond capacity are dropped."""

  def __init__(self, rng: np.random.Generator, kind: int):
    self.rng = rng
    self.scene = Scene(
        kind=kind,
        spheres=np.zeros((MAX_SPHERES, 4), np.float32),
        boxes=np.zeros((MAX_BOXES, 7), np.float32),
        cylinders=np.zeros((MAX_CYLINDERS, 5), np.float32),
        room=np.zeros(6, np.float32),
        ground=np.zeros(3, np.float32),
        texture=np.zeros(NUM_SURFACES, np.int32),
        tint=np.ones((NUM_SURFACES, 3), np.float32),
        tex_scale=np.ones(NUM_SURFACES, np.float32),
        tex_offset=np.zeros((NUM_SURFACES, 2), np.float32),
        light=np.zeros(15, np.float32),
    )
    self.counts = {'sphere': 0, 'box': 0, 'cylinder': 0}

  def material(self, surface: int, group, scale_range=(0.5, 2.0), tint_strength=None):
    rng = self.rng
    tex = int(rng.choice(group))
    s = self.scene
    s.texture[surface] = tex
    grey = textures.is_grey(tex)
    strength = (0.6 if grey else 0.2) if tint_strength is None else tint_strength
    colour = rng.uniform(0.3, 1.0, 3)
    colour /= colour.max()
    s.tint[surface] = (1 - strength) + strength * colour
    s.tex_scale[surface] = rng.uniform(*scale_range)
    s.tex_offset[surface] = rng.uniform(0, 2, 2)

  def sphere(self, centre, radius, group=textures.OBJECT, scale=None) -> bool:
    i = self.counts['sphere']
    if i >= MAX_SPHERES:
      return False
    self.scene.spheres[i] = [*centre, radius]
    self.material(SPHERE0 + i, group, scale or (0.5 * radius, 2.0 * radius))
    self.counts['sphere'] += 1
    return True

  def box(self, centre, half, yaw=0.0, group=textures.OBJECT, scale=None, material_from=None):
    i = self.counts['box']
    if i >= MAX_BOXES:
      return False
    self.scene.boxes[i] = [*centre, *half, yaw]
    if material_from is not None:  # Parts of one piece of furniture share a material.
      self._copy_material(BOX0 + material_from, BOX0 + i)
    else:
      self.material(BOX0 + i, group, scale or (0.5, 2.0 * max(half) + 0.5))
    self.counts['box'] += 1
    return True

  def cylinder(self, x, z, radius, y0, y1, group=textures.OBJECT, scale=None):
    i = self.counts['cylinder']
    if i >= MAX_CYLINDERS:
      return False
    self.scene.cylinders[i] = [x, z, radius, y0, y1]
    self.material(CYLINDER0 + i, group, scale or (2 * radius, 6 * radius + 0.2))
    self.counts['cylinder'] += 1
    return True

  def _copy_material(self, src, dst):
    s = self.scene
    s.texture[dst], s.tint[dst] = s.texture[src], s.tint[src]
    s.tex_scale[dst], s.tex_offset[dst] = s.tex_scale[src], s.tex_offset[src]


def _table(b: _Builder, x, z, yaw, width, depth, height):
  """A slab on four legs (5 boxes sharing a material); returns the top height or None."""
  if b.counts['box'] + 5 > MAX_BOXES:
    return None
  first = b.counts['box']
  thick = 0.04
  b.box((x, height - thick / 2, z), (width / 2, thick / 2, depth / 2), yaw)
  leg = 0.03
  c, s = np.cos(yaw), np.sin(yaw)
  for sx in (-1, 1):
    for sz in (-1, 1):
      lx, lz = sx * (width / 2 - leg), sz * (depth / 2 - leg)
      # The box yaw rotates local (x, z) into the world: world = c*lx + s*lz, -s*lx + c*lz.
      wx, wz = x + c * lx + s * lz, z - s * lx + c * lz
      b.box((wx, (height - thick) / 2, wz), (leg, (height - thick) / 2, leg), yaw,
            material_from=first)
  return height


def random_room(rng: np.random.Generator) -> Scene:
  """A furnished room (see the module docstring)."""
  b = _Builder(rng, ROOM)
  s = b.scene
  size = np.array([rng.uniform(3.5, 7.0), rng.uniform(2.4, 3.2), rng.uniform(3.5, 8.0)])
  lo = np.array([-size[0] / 2, 0.0, -size[2] / 2])
  hi = np.array([size[0] / 2, size[1], size[2] / 2])
  s.room[:] = np.concatenate([lo, hi])
  # Walls share a texture (sometimes one accent wall differs); floor and ceiling their own.
  b.material(ROOM0 + 0, textures.WALL, (0.8, 3.0))
  for face in (1, 4, 5):
    b._copy_material(ROOM0, ROOM0 + face)  # pylint: disable=protected-access
  if rng.random() < 0.3:
    b.material(ROOM0 + int(rng.choice([0, 1, 4, 5])), textures.WALL, (0.8, 3.0))
  b.material(ROOM0 + 2, textures.FLOOR, (0.6, 2.5))
  b.material(ROOM0 + 3, textures.WALL, (1.0, 4.0), tint_strength=0.2)
  b.scene.tint[ROOM0 + 3] = np.clip(b.scene.tint[ROOM0 + 3] * 1.1, 0, 1)

  def spot(margin):
    return (rng.uniform(lo[0] + margin, hi[0] - margin), rng.uniform(lo[2] + margin, hi[2] - margin))

  tops = []  # (x, z, height, extent) of surfaces things can stand on.
  if rng.random() < 0.6:
    x, z = spot(1.0)
    w, d, h = rng.uniform(0.8, 1.8), rng.uniform(0.6, 1.0), rng.uniform(0.65, 0.85)
    if _table(b, x, z, rng.choice([0.0, np.pi / 2, rng.uniform(0, np.pi)]), w, d, h):
      tops.append((x, z, h, min(w, d) / 2))
  # Cabinets, beds, shelves: boxes against walls or free-standing, often wall-aligned.
  for _ in range(rng.integers(2, 6)):
    half = np.array([rng.uniform(0.2, 0.9), rng.uniform(0.2, 1.0), rng.uniform(0.2, 0.6)])
    yaw = rng.choice([0.0, np.pi / 2]) if rng.random() < 0.7 else rng.uniform(0, np.pi)
    if rng.random() < 0.6:  # Against a wall.
      wall = rng.integers(4)
      x, z = spot(0.8)
      if wall == 0:
        x, yaw = lo[0] + half[2] + 0.01, np.pi / 2
      elif wall == 1:
        x, yaw = hi[0] - half[2] - 0.01, np.pi / 2
      elif wall == 2:
        z, yaw = lo[2] + half[2] + 0.01, 0.0
      else:
        z, yaw = hi[2] - half[2] - 0.01, 0.0
    else:
      x, z = spot(0.8)
    if b.box((x, half[1], z), half, yaw):
      tops.append((x, z, 2 * half[1], min(half[0], half[2])))
  # Posters: thin photo-textured boxes on the walls, at eye height.
  photos = [i for i, (_, kind) in enumerate(textures.PHOTOS) if kind == 'photo']
  for _ in range(rng.integers(0, 4)):
    wall = rng.integers(4)
    w, h = rng.uniform(0.4, 1.2), rng.uniform(0.4, 1.0)
    y = rng.uniform(1.0, min(2.0, hi[1] - h / 2 - 0.1))
    thick = 0.015
    if wall < 2:
      x = lo[0] + thick if wall == 0 else hi[0] - thick
      z = rng.uniform(lo[2] + w, hi[2] - w)
      ok = b.box((x, y, z), (w / 2, h / 2, thick), np.pi / 2, group=photos, scale=(w, w))
    else:
      z = lo[2] + thick if wall == 2 else hi[2] - thick
      x = rng.uniform(lo[0] + w, hi[0] - w)
      ok = b.box((x, y, z), (w / 2, h / 2, thick), 0.0, group=photos, scale=(w, w))
    if ok:
      i = b.counts['box'] - 1
      s.tint[BOX0 + i] = 1.0
      s.tex_scale[BOX0 + i] = w  # The photo spans the poster's width once.
      s.tex_offset[BOX0 + i] = 0.5
  # Occluders: free-standing partitions (thin boxes) and pillars.
  for _ in range(rng.integers(0, 3)):
    x, z = spot(1.0)
    if rng.random() < 0.5:
      b.box((x, 0.9, z), (rng.uniform(0.3, 0.9), rng.uniform(0.6, 0.9), 0.04),
            rng.uniform(0, np.pi), group=textures.WALL)
    else:
      b.cylinder(x, z, rng.uniform(0.1, 0.25), 0.0, float(hi[1]), group=textures.WALL)
  # Stools and barrels.
  for _ in range(rng.integers(0, 3)):
    x, z = spot(0.6)
    b.cylinder(x, z, rng.uniform(0.15, 0.35), 0.0, rng.uniform(0.35, 0.9))
  # Balls on the floor or on tops.
  for _ in range(rng.integers(1, 4)):
    r = rng.uniform(0.1, 0.4)
    if tops and rng.random() < 0.5:
      x, z, h, extent = tops[rng.integers(len(tops))]
      r = min(r, max(extent, 0.08))
      b.sphere((x, h + r, z), r)
    else:
      x, z = spot(0.5 + r)
      b.sphere((x, r, z), r)
  _lights(b, room=True, lo=lo, hi=hi)
  return s


def random_objects(rng: np.random.Generator) -> Scene:
  """One to four objects (some composite) on a textured ground disc under an open sky."""
  b = _Builder(rng, OBJECTS)
  s = b.scene
  count = int(rng.choice([1, 1, 2, 3, 4]))
  spread = 0.0 if count == 1 else rng.uniform(0.4, 0.9)
  extent = 0.0
  for k in range(count):
    angle = 2 * np.pi * k / count + rng.uniform(-0.3, 0.3)
    x, z = spread * np.cos(angle), spread * np.sin(angle)
    scale = rng.uniform(0.25, 0.6) * (1.0 if k == 0 else 0.7)
    extent = max(extent, np.hypot(x, z) + scale)
    shape = rng.integers(6)
    if shape == 0:
      b.sphere((x, scale, z), scale)
    elif shape == 1:
      half = scale * rng.uniform(0.5, 1.0, 3)
      b.box((x, half[1], z), half, rng.uniform(0, np.pi))
    elif shape == 2:
      b.cylinder(x, z, scale * rng.uniform(0.4, 0.9), 0.0, scale * rng.uniform(1.0, 2.5))
    elif shape == 3:  # Snowman: stacked spheres.
      r1, r2 = scale * 0.6, scale * 0.4
      b.sphere((x, r1, z), r1)
      b.sphere((x, 2 * r1 + r2 * 0.9, z), r2)
    elif shape == 4:  # Lamp: a post with a ball on top.
      h = scale * rng.uniform(1.5, 2.5)
      b.cylinder(x, z, scale * 0.1, 0.0, h)
      b.sphere((x, h + scale * 0.3, z), scale * 0.35)
    else:
      _table(b, x, z, rng.uniform(0, np.pi), 2 * scale, 1.4 * scale, scale * rng.uniform(0.8, 1.3))
  radius = max(1.5, extent * rng.uniform(2.5, 4.0))
  s.ground[:] = [0.0, 0.0, radius]
  b.material(GROUND, textures.GROUND, (0.5, 2.0))
  _lights(b, room=False)
  return s


def _lights(b: _Builder, room: bool, lo=None, hi=None):
  rng = b.rng
  elevation, azimuth = rng.uniform(0.5, 1.4), rng.uniform(0, 2 * np.pi)
  sun_dir = [np.cos(elevation) * np.sin(azimuth), np.sin(elevation),
             np.cos(elevation) * np.cos(azimuth)]
  overcast = rng.uniform(0.0, 1.0)  # Blue sky ... grey overcast.
  sky_top = (1 - overcast) * np.array([0.3, 0.5, 0.9]) + overcast * np.array([0.7, 0.72, 0.76])
  sky_top = sky_top * rng.uniform(0.8, 1.1)
  sky_bottom = np.clip(sky_top + rng.uniform(0.1, 0.3), 0, 1)  # Brighter at the horizon.
  if room:
    ambient, sun = rng.uniform(0.25, 0.4), rng.uniform(0.3, 0.55)
    lamp_pos = [rng.uniform(lo[0] + 0.5, hi[0] - 0.5), hi[1] - 0.2,
                rng.uniform(lo[2] + 0.5, hi[2] - 0.5)]
    lamp = rng.uniform(1.0, 3.0)
  else:
    ambient, sun = rng.uniform(0.25, 0.45), rng.uniform(0.5, 0.8)
    lamp_pos, lamp = [0.0, 0.0, 0.0], 0.0
  b.scene.light[:] = [*sun_dir, sun, ambient, *lamp_pos, lamp, *sky_top, *sky_bottom]


def random_scene(rng: np.random.Generator, object_fraction: float = 0.5) -> Scene:
  """A room with probability 1 - object_fraction, else an object-centric scene."""
  if rng.random() < object_fraction:
    return random_objects(rng)
  return random_room(rng)


# ------------------------------------------------------------------------------------------------
# Clearance: signed distances from points to the scene's solids (cameras must stay outside).


def sphere_distance(points, spheres):
  """(P, S) signed distance of points (P, 3) to spheres (S, 4); +inf for unused slots."""
  d = np.linalg.norm(points[:, None, :] - spheres[None, :, :3], axis=-1) - spheres[None, :, 3]
  return np.where(spheres[None, :, 3] > 0, d, np.inf)


def box_distance(points, boxes):
  """(P, B) signed distance to yawed boxes (B, 7); +inf for unused slots."""
  rel = points[:, None, :] - boxes[None, :, :3]
  c, s = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
  # World -> box local: the inverse of local -> world (x', z') = (c x + s z, -s x + c z).
  lx = c * rel[..., 0] - s * rel[..., 2]
  lz = s * rel[..., 0] + c * rel[..., 2]
  q = np.abs(np.stack([lx, rel[..., 1], lz], -1)) - boxes[None, :, 3:6]
  outside = np.linalg.norm(np.maximum(q, 0), axis=-1)
  inside = np.minimum(q.max(-1), 0)
  return np.where(boxes[None, :, 3] > 0, outside + inside, np.inf)


def cylinder_distance(points, cylinders):
  """(P, C) signed distance to vertical capped cylinders (C, 5); +inf for unused slots."""
  radial = np.hypot(points[:, None, 0] - cylinders[None, :, 0],
                    points[:, None, 2] - cylinders[None, :, 1]) - cylinders[None, :, 2]
  mid, half = (cylinders[:, 3] + cylinders[:, 4]) / 2, (cylinders[:, 4] - cylinders[:, 3]) / 2
  axial = np.abs(points[:, None, 1] - mid[None]) - half[None]
  q = np.stack([radial, axial], -1)
  d = np.linalg.norm(np.maximum(q, 0), axis=-1) + np.minimum(q.max(-1), 0)
  return np.where(cylinders[None, :, 2] > 0, d, np.inf)


def clearance(scene: Scene, points: np.ndarray) -> np.ndarray:
  """(P,) distance from each point (P, 3) to the nearest solid (negative inside one).

  Solids: every primitive, the room's walls / floor / ceiling (the outside of the room is solid),
  and the ground (everything below y = 0 in object scenes)."""
  points = np.asarray(points, np.float64).reshape(-1, 3)
  d = np.concatenate([sphere_distance(points, scene.spheres), box_distance(points, scene.boxes),
                      cylinder_distance(points, scene.cylinders)], axis=1).min(axis=1)
  if scene.has_room:
    lo, hi = scene.room[:3], scene.room[3:]
    d = np.minimum(d, np.minimum(points - lo, hi - points).min(axis=1))
  else:
    d = np.minimum(d, points[:, 1])
  return d


def primitives_near(scene: Scene, points: np.ndarray, margin: float):
  """Slots (kind, index) of primitives closer than ``margin`` to any of the points."""
  points = np.asarray(points, np.float64).reshape(-1, 3)
  near = []
  for kind, dist in (('sphere', sphere_distance(points, scene.spheres)),
                     ('box', box_distance(points, scene.boxes)),
                     ('cylinder', cylinder_distance(points, scene.cylinders))):
    for i in np.nonzero((dist < margin).any(axis=0))[0]:
      near.append((kind, int(i)))
  return near
