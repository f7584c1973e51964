"""Vectorized ray caster of the synthetic world (jitted JAX, batched over the frames of a clip).

For every pixel centre (u, v) = (col + 0.5, row + 0.5) a ray leaves the camera centre along
``d = R K^-1 [u, v, 1]`` (OpenCV camera, ``R`` the rotation of cam_to_world), scaled so its
camera-frame z is 1: the ray parameter of the nearest hit is then exactly the pixel's z-depth.
Primitives are intersected analytically (spheres, yawed boxes, capped vertical cylinders, the
room's inside faces, the ground disc); each scene slot is an unrolled, fused loop body, so XLA
turns the whole intersection into a few passes over the rays.

Shading: the hit's texture (mip level from the pixel footprint, bilinear within the level,
mirror-repeat wrapping) times the material tint, lit by ambient + Lambertian sun + (rooms) a
Lambertian point lamp with distance falloff. Rays that miss everything see a sky gradient and
get depth 0 (invalid). No shadows or inter-reflections. Scenes with photo appearance
(scenes.photo_appearance) also turn each surface's texture by its rotation, colour the sun, lamp
and ambient light and apply the camera's per-channel gains (exposure x white balance) to every
pixel; that is a separate trace, so default scenes render exactly as before.

Outputs per frame: RGB uint8, z-depth float32 (0 where the ray hits nothing), and the hit
surface id (int32, -1 for the background; see scenes.py for the numbering).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from wvd_jax.data import scenes
from wvd_jax.data import textures

_EPS_T = 1e-4  # Minimum ray parameter of a hit (metres of camera z).
_SAFE = 1e-12


def _safe(x):
  """x with values closer to 0 than _SAFE replaced by +-_SAFE (avoids 0 * inf = NaN)."""
  return jnp.where(jnp.abs(x) < _SAFE, jnp.where(x < 0, -_SAFE, _SAFE), x)


def _take(table, index):
  """table[index] for a small (M, C) table and (R,) indices (clamped)."""
  return jnp.take(table, jnp.clip(index, 0, table.shape[0] - 1), axis=0)


def _intersect(o, dx, dy, dz, s):
  """Nearest hit: (t (R,), surface id (R,) int32, -1 where nothing is hit).

  Each primitive kind is a ``fori_loop`` over its slots (a small loop body XLA compiles in
  seconds; unrolling every slot made XLA:CPU compile for minutes)."""
  best = jnp.full(dx.shape, jnp.inf, jnp.float32)
  sid = jnp.full(dx.shape, -1, jnp.int32)

  def keep(t, hit, surface, best, sid):
    hit = hit & (t > _EPS_T) & (t < best)
    return jnp.where(hit, t, best), jnp.where(hit, surface, sid)

  a = dx * dx + dy * dy + dz * dz

  def sphere(i, carry):
    sph = s['spheres'][i]
    ox, oy, oz = o[0] - sph[0], o[1] - sph[1], o[2] - sph[2]
    b = dx * ox + dy * oy + dz * oz
    c = ox * ox + oy * oy + oz * oz - sph[3] * sph[3]
    disc = b * b - a * c
    t = (-b - jnp.sqrt(jnp.maximum(disc, 0.0))) / a
    return keep(t, (disc > 0) & (sph[3] > 0), scenes.SPHERE0 + i, *carry)

  iy = 1.0 / _safe(dy)

  def box(i, carry):
    bx = s['boxes'][i]
    cs, sn = jnp.cos(bx[6]), jnp.sin(bx[6])
    ox, oy, oz = o[0] - bx[0], o[1] - bx[1], o[2] - bx[2]
    lox, loz = cs * ox - sn * oz, sn * ox + cs * oz  # World -> box frame (yaw about +y).
    ix, iz = 1.0 / _safe(cs * dx - sn * dz), 1.0 / _safe(sn * dx + cs * dz)
    tx0, tx1 = (-bx[3] - lox) * ix, (bx[3] - lox) * ix
    ty0, ty1 = (-bx[4] - oy) * iy, (bx[4] - oy) * iy
    tz0, tz1 = (-bx[5] - loz) * iz, (bx[5] - loz) * iz
    t_in = jnp.maximum(jnp.maximum(jnp.minimum(tx0, tx1), jnp.minimum(ty0, ty1)),
                       jnp.minimum(tz0, tz1))
    t_out = jnp.minimum(jnp.minimum(jnp.maximum(tx0, tx1), jnp.maximum(ty0, ty1)),
                        jnp.maximum(tz0, tz1))
    return keep(t_in, (t_in <= t_out) & (bx[3] > 0), scenes.BOX0 + i, *carry)

  a_xz = _safe(dx * dx + dz * dz)

  def cylinder(i, carry):
    cyl = s['cylinders'][i]
    ox, oz = o[0] - cyl[0], o[2] - cyl[1]
    r2 = cyl[2] * cyl[2]
    b = dx * ox + dz * oz
    disc = b * b - a_xz * (ox * ox + oz * oz - r2)
    t = (-b - jnp.sqrt(jnp.maximum(disc, 0.0))) / a_xz
    y = o[1] + t * dy
    used = cyl[2] > 0
    surface = scenes.CYLINDER0 + i
    carry = keep(t, used & (disc > 0) & (y >= cyl[3]) & (y <= cyl[4]), surface, *carry)
    for cap in (cyl[3], cyl[4]):
      t = (cap - o[1]) * iy
      px, pz = ox + t * dx, oz + t * dz
      carry = keep(t, used & (px * px + pz * pz <= r2), surface, *carry)
    return carry

  # Loop over the used slots only (a scene fills its slots from the front; a removed primitive
  # leaves an unused slot that is skipped by its zero size).
  counts = s['counts']
  carry = (best, sid)
  carry = jax.lax.fori_loop(0, counts[0], sphere, carry)
  carry = jax.lax.fori_loop(0, counts[1], box, carry)
  best, sid = jax.lax.fori_loop(0, counts[2], cylinder, carry)
  # The room: the exit face of its box, from inside.
  room_lo, room_hi = s['room'][:3], s['room'][3:]
  has_room = room_hi[1] > room_lo[1]
  t_faces = []
  for axis, d in enumerate((dx, dy, dz)):
    inv = 1.0 / _safe(d)
    t_faces.append(jnp.where(d > 0, (room_hi[axis] - o[axis]) * inv,
                             (room_lo[axis] - o[axis]) * inv))
  t_room = jnp.minimum(jnp.minimum(t_faces[0], t_faces[1]), t_faces[2])
  axis = jnp.where(t_faces[0] == t_room, 0, jnp.where(t_faces[1] == t_room, 1, 2))
  positive = jnp.where(axis == 0, dx > 0, jnp.where(axis == 1, dy > 0, dz > 0))
  face = scenes.ROOM0 + 2 * axis + positive.astype(jnp.int32)
  hit = has_room & (t_room > _EPS_T) & (t_room < best)
  best, sid = jnp.where(hit, t_room, best), jnp.where(hit, face, sid)
  # The ground disc (object scenes), seen from above.
  gx, gz, g_radius = s['ground'][0], s['ground'][1], s['ground'][2]
  t = -o[1] * iy
  px, pz = o[0] + t * dx - gx, o[2] + t * dz - gz
  best, sid = keep(t, (g_radius > 0) & (dy < 0) & (px * px + pz * pz <= g_radius * g_radius),
                   scenes.GROUND, best, sid)
  return best, sid


def _surface_frame(x, y, z, sid, s):
  """Normal components (3 x (R,)) (unit, not yet facing the camera) and surface coordinates
  (2 x (R,)) in metres of hit points (x, y, z) on surfaces ``sid``."""
  zero, one = jnp.zeros_like(x), jnp.ones_like(x)
  # Spheres.
  sph = _take(s['spheres'], sid - scenes.SPHERE0)
  r = jnp.maximum(sph[:, 3], 1e-6)
  nx, ny, nz = (x - sph[:, 0]) / r, (y - sph[:, 1]) / r, (z - sph[:, 2]) / r
  # Spheres and cylinder sides share one arctan2 (the angle around the vertical axis).
  round_sphere = (sid >= scenes.SPHERE0) & (sid < scenes.BOX0)
  # Boxes: the face is the local axis where the point is (relatively) furthest out.
  box = _take(s['boxes'], sid - scenes.BOX0)
  cs, sn = jnp.cos(box[:, 6]), jnp.sin(box[:, 6])
  rx, ry, rz = x - box[:, 0], y - box[:, 1], z - box[:, 2]
  qx, qz = cs * rx - sn * rz, sn * rx + cs * rz
  fx = jnp.abs(qx) / jnp.maximum(box[:, 3], 1e-6)
  fy = jnp.abs(ry) / jnp.maximum(box[:, 4], 1e-6)
  fz = jnp.abs(qz) / jnp.maximum(box[:, 5], 1e-6)
  on_x = (fx >= fy) & (fx >= fz)
  on_y = ~on_x & (fy >= fz)
  on_z = ~on_x & ~on_y
  lnx = jnp.where(on_x, jnp.sign(qx), 0.0)
  lnz = jnp.where(on_z, jnp.sign(qz), 0.0)
  boxes = ((cs * lnx + sn * lnz, jnp.where(on_y, jnp.sign(ry), 0.0), -sn * lnx + cs * lnz),
           (jnp.where(on_x, qz, qx), jnp.where(on_y, qz, ry)))
  # Cylinders: side or cap.
  cyl = _take(s['cylinders'], sid - scenes.CYLINDER0)
  cx, cz = x - cyl[:, 0], z - cyl[:, 1]
  radius = jnp.maximum(cyl[:, 2], 1e-6)
  d_bottom, d_top = jnp.abs(y - cyl[:, 3]), jnp.abs(y - cyl[:, 4])
  on_cap = (jnp.minimum(d_bottom, d_top) < 1e-4 * (1 + radius)) & (
      cx * cx + cz * cz < (radius * (1 - 1e-3)) ** 2)
  cap_ny = jnp.where(d_top < d_bottom, one, -one)
  around = jnp.where(round_sphere, r, radius) * jnp.arctan2(jnp.where(round_sphere, nx, cx),
                                                           jnp.where(round_sphere, nz, cz))
  sphere = ((nx, ny, nz), (around, y - sph[:, 1]))  # Cylindrical texture projection.
  cylinders = ((jnp.where(on_cap, zero, cx / radius), jnp.where(on_cap, cap_ny, zero),
                jnp.where(on_cap, zero, cz / radius)),
               (jnp.where(on_cap, cx, around), jnp.where(on_cap, cz, y)))
  # Room faces: face k = 2 * axis + (wall on the + side); normals point into the room.
  k = sid - scenes.ROOM0
  axis = (k >= 2).astype(jnp.int32) + (k >= 4).astype(jnp.int32)  # k // 2 without division.
  sign = jnp.where(k - 2 * axis == 1, -1.0, 1.0)
  room = ((jnp.where(axis == 0, sign, 0.0), jnp.where(axis == 1, sign, 0.0),
           jnp.where(axis == 2, sign, 0.0)),
          (jnp.where(axis == 0, z, x), jnp.where(axis == 1, z, y)))
  ground = ((zero, one, zero), (x, z))

  kinds = (sphere, boxes, cylinders, room)
  bounds = ((scenes.SPHERE0, scenes.BOX0), (scenes.BOX0, scenes.CYLINDER0),
            (scenes.CYLINDER0, scenes.ROOM0), (scenes.ROOM0, scenes.GROUND))
  normal, uv = list(ground[0]), list(ground[1])  # Ground (and the background: unused).
  for (lo, hi), (n, c) in zip(bounds, kinds):
    inside = (sid >= lo) & (sid < hi)
    normal = [jnp.where(inside, a, b) for a, b in zip(n, normal)]
    uv = [jnp.where(inside, a, b) for a, b in zip(c, uv)]
  return normal, uv


def _sample_texture(texels, offsets, tex, s_coord, t_coord, level):
  """Bilinear lookup of textures ``tex`` (R,) at coordinates (s right, t down) in [0, 1] and
  integer mip ``level`` (R,). texels: (T,) uint32 packed RGB (``textures.pack_rgb``).
  Returns 3 x (R,) float32 channels in [0, 1]."""
  size = jnp.right_shift(textures.TEXTURE_SIZE, level)
  base = offsets[tex, level]
  fx = s_coord * size.astype(jnp.float32) - 0.5
  fy = t_coord * size.astype(jnp.float32) - 0.5
  x0, y0 = jnp.floor(fx), jnp.floor(fy)
  wx, wy = fx - x0, fy - y0
  x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)
  top = size - 1
  xa, xb = jnp.clip(x0, 0, top), jnp.clip(x0 + 1, 0, top)
  ya, yb = base + jnp.clip(y0, 0, top) * size, base + jnp.clip(y0 + 1, 0, top) * size
  taps = [(texels[ya + xa], (1 - wy) * (1 - wx)), (texels[ya + xb], (1 - wy) * wx),
          (texels[yb + xa], wy * (1 - wx)), (texels[yb + xb], wy * wx)]
  out = []
  for c in range(3):
    acc = 0.0
    for packed, weight in taps:
      acc = acc + weight * jnp.bitwise_and(jnp.right_shift(packed, 8 * c), 255).astype(jnp.float32)
    out.append(acc * (1.0 / 255.0))
  return out


def _mirror(x):
  """Mirror-repeat wrap of texture coordinates to [0, 1] (period 2, seamless)."""
  m = x - 2.0 * jnp.floor(0.5 * x)  # x mod 2 without fmod (a slow libm call on XLA:CPU).
  return 1.0 - jnp.abs(m - 1.0)


def _render_view(s, texels, offsets, K, cam_to_world, height: int, width: int):
  """One view: (depth (H, W) f32, rgb (H, W, 3) u8, surface id (H, W) i32)."""
  v, u = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32) + 0.5,
                      jnp.arange(width, dtype=jnp.float32) + 0.5, indexing='ij')
  u, v = u.reshape(-1), v.reshape(-1)
  fx, skew, cx, fy, cy = K[0, 0], K[0, 1], K[0, 2], K[1, 1], K[1, 2]
  cam_y = (v - cy) / fy
  cam_x = (u - cx - skew * cam_y) / fx
  rot = cam_to_world[:3, :3]
  o = cam_to_world[:3, 3]
  dx = rot[0, 0] * cam_x + rot[0, 1] * cam_y + rot[0, 2]
  dy = rot[1, 0] * cam_x + rot[1, 1] * cam_y + rot[1, 2]
  dz = rot[2, 0] * cam_x + rot[2, 1] * cam_y + rot[2, 2]
  t, sid = _intersect(o, dx, dy, dz, s)
  hit = sid >= 0
  t = jnp.where(hit, t, 0.0)
  x, y, z = o[0] + t * dx, o[1] + t * dy, o[2] + t * dz
  (nx, ny, nz), (su, sv) = _surface_frame(x, y, z, sid, s)
  # Barriers materialize intermediates that XLA would otherwise recompute inside every consumer
  # fusion (measured: 3x the work when the RGB channels each re-derived the shading).
  nx, ny, nz, su, sv = jax.lax.optimization_barrier((nx, ny, nz, su, sv))
  d_len = jnp.sqrt(dx * dx + dy * dy + dz * dz)
  cos = (nx * dx + ny * dy + nz * dz) / d_len
  flip = jnp.where(cos > 0, -1.0, 1.0)  # Normals face the camera.
  nx, ny, nz = nx * flip, ny * flip, nz * flip
  # Material and texture.
  # One gather of the hit surface's material row: texture, scale, offset (2), tint (3).
  table = jnp.concatenate([s['texture'][:, None].astype(jnp.float32), s['tex_scale'][:, None],
                           s['tex_offset'], s['tint']], axis=1)
  material = _take(table, sid)
  tex, scale = material[:, 0].astype(jnp.int32), material[:, 1]
  photo = 'appearance' in s  # Photo-appearance scenes (a Python-level choice: its own trace).
  if photo:
    angle = _take(s['tex_rotation'][:, None], sid)[:, 0]
    cos_a, sin_a = jnp.cos(angle), jnp.sin(angle)
    su, sv = cos_a * su - sin_a * sv, sin_a * su + cos_a * sv
  s_coord = _mirror(su / scale + material[:, 2])
  t_coord = _mirror(-(sv / scale + material[:, 3]))  # Texture rows run down.
  texels_per_pixel = (t / fx) / jnp.maximum(jnp.abs(cos), 0.2) * textures.TEXTURE_SIZE / scale
  level = jnp.clip(jnp.floor(jnp.log2(jnp.maximum(texels_per_pixel, 1e-6)) + 0.5), 0,
                   textures.MIP_LEVELS - 1).astype(jnp.int32)
  albedo = jax.lax.optimization_barrier(
      _sample_texture(texels, offsets, tex, s_coord, t_coord, level))
  # Light.
  sun_dir, sun, ambient, lamp_pos, lamp, sky_top, sky_bottom = scenes.light_parts(s['light'])
  light = sun * jnp.maximum(nx * sun_dir[0] + ny * sun_dir[1] + nz * sun_dir[2], 0.0)
  lx, ly, lz = lamp_pos[0] - x, lamp_pos[1] - y, lamp_pos[2] - z
  lamp_dist2 = jnp.maximum(lx * lx + ly * ly + lz * lz, 1e-6)
  lamp_cos = jnp.maximum(nx * lx + ny * ly + nz * lz, 0.0) * jax.lax.rsqrt(lamp_dist2)
  if photo:  # Per-channel light: (sun, lamp) terms kept apart to colour them.
    sun_colour, lamp_colour, ambient_colour, gains = scenes.appearance_parts(s['appearance'])
    lamp_light = lamp * lamp_cos / (1.0 + 0.35 * lamp_dist2)
    light, lamp_light, up = jax.lax.optimization_barrier(
        (light, lamp_light, jnp.clip(0.5 + 0.5 * dy / d_len, 0.0, 1.0)))
  else:
    light = ambient + light + lamp * lamp_cos / (1.0 + 0.35 * lamp_dist2)
    light, up = jax.lax.optimization_barrier(
        (light, jnp.clip(0.5 + 0.5 * dy / d_len, 0.0, 1.0)))  # Sky: brighter towards the horizon.
  rgb = []
  for c in range(3):
    tint = material[:, 4 + c]
    sky = sky_bottom[c] + (sky_top[c] - sky_bottom[c]) * up
    if photo:
      shade = ambient * ambient_colour[c] + light * sun_colour[c] + lamp_light * lamp_colour[c]
      value = jnp.where(hit, albedo[c] * tint * shade, sky) * gains[c]
    else:
      value = jnp.where(hit, albedo[c] * tint * light, sky)
    rgb.append(jnp.floor(jnp.clip(value, 0.0, 1.0) * 255.0 + 0.5).astype(jnp.uint8)
               .reshape(height, width))
  # Channels stay planar here (a channels-last stack fused badly); `render` interleaves them.
  return t.reshape(height, width), tuple(rgb), sid.reshape(height, width)


@functools.partial(jax.jit, static_argnames=('height', 'width'))
def render_views(scene_arrays, texels, offsets, K, cam_to_world, *, height: int, width: int):
  """Renders views (F, ...) of one scene; jitted, compiled once per (F, H, W).

  Args:
    scene_arrays: ``Scene.arrays()`` (fixed shapes).
    texels, offsets: the texture bank (``textures.texture_bank()``).
    K: (F, 3, 3) float32 intrinsics; cam_to_world: (F, 4, 4) float32 poses.
  Returns:
    depth (F, H, W) float32 z-depth (0 = background), rgb: 3 planes (F, H, W) uint8 (R, G, B),
    surface (F, H, W) int32 hit surface id (-1 = background).
  """
  return jax.vmap(lambda k, c: _render_view(scene_arrays, texels, offsets, k, c, height, width))(
      K, cam_to_world)


def cpu_device():
  """The renderer's device: this process's first CPU device (also under jax.distributed, and on
  accelerator hosts, where rendering stays off the accelerator)."""
  return jax.local_devices(backend='cpu')[0]


@functools.lru_cache(maxsize=None)
def _device_bank(device):
  """The texture bank (packed texels, offsets) on ``device`` (put once per process)."""
  bank = textures.texture_bank()
  return (jax.device_put(textures.pack_rgb(bank.texels), device),
          jax.device_put(bank.offsets, device))


def render(scene: scenes.Scene, K: np.ndarray, cam_to_world: np.ndarray, height: int,
           width: int) -> dict[str, np.ndarray]:
  """Renders on the CPU (`cpu_device`); numpy in and out.

  Returns depth (F, H, W) float32, rgb (F, H, W, 3) uint8, surface (F, H, W) int32."""
  device = cpu_device()
  texels, offsets = _device_bank(device)
  put = lambda x, dtype=None: jax.device_put(np.asarray(x, dtype), device)
  arrays = {k: put(v) for k, v in scene.arrays().items()}
  depth, rgb, surface = render_views(arrays, texels, offsets, put(K, np.float32),
                                     put(cam_to_world, np.float32), height=height, width=width)
  return dict(depth=np.asarray(depth), rgb=np.stack([np.asarray(c) for c in rgb], axis=-1),
              surface=np.asarray(surface))
