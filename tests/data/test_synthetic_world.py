"""The synthetic world: exact geometry (depth, XYZ, masks), consistent views, safe cameras."""
import numpy as np
import pytest

from wvd_jax.data import clips, scenes, synthetic_world, textures, trajectories
from wvd_jax.geometry import cameras

# Every rendering test uses this one shape (4 frames of 16 x 16, the tiny config's), so the ray
# caster compiles once for the whole suite.
FRAMES, SIZE = 4, 16


def _find(kind, split='test', start=0):
  """Index of the first clip of the given scene kind (scene generation alone is cheap)."""
  for i in range(start, start + 50):
    rng = synthetic_world.clip_rng(0, split, i)
    if scenes.random_scene(rng).kind == kind:
      return i
  raise AssertionError('no such scene')


def _surface_distance(scene, points, surface):
  """|signed distance| of each point (P, 3) to the surface it was rendered on."""
  out = np.full(len(points), np.inf)
  for i, s in enumerate(surface):
    p = points[i:i + 1].astype(np.float64)
    if s < scenes.BOX0:
      d = scenes.sphere_distance(p, scene.spheres[s:s + 1])
    elif s < scenes.CYLINDER0:
      d = scenes.box_distance(p, scene.boxes[s - scenes.BOX0:s - scenes.BOX0 + 1])
    elif s < scenes.ROOM0:
      k = s - scenes.CYLINDER0
      d = scenes.cylinder_distance(p, scene.cylinders[k:k + 1])
    elif s < scenes.GROUND:
      face = s - scenes.ROOM0
      bound = scene.room[3 + face // 2] if face % 2 else scene.room[face // 2]
      d = p[:, face // 2] - bound
    else:
      d = p[:, 1]
    out[i] = abs(float(np.ravel(d)[0]))
  return out


@pytest.mark.parametrize('kind', [scenes.ROOM, scenes.OBJECTS])
def test_depth_lands_on_the_surfaces_and_xyz_is_its_unprojection(kind):
  index = _find(kind)
  clip = synthetic_world.render_clip(0, 'test', index, FRAMES, SIZE, with_surface=True)
  scene, _, _ = synthetic_world.make_clip_spec(0, 'test', index, FRAMES, SIZE)
  mask, surface, depth = clip['mask'], clip['surface'], clip['depth']
  np.testing.assert_array_equal(mask, surface >= 0)
  np.testing.assert_array_equal(mask, depth > 0)
  # XYZ is by definition the unprojection of depth (data's numpy unproject, bit-exact; the
  # geometry function's numbers to float32 rounding).
  np.testing.assert_array_equal(
      clip['xyz'][mask], clips.unproject(depth, clip['intrinsics'], clip['cam_to_world'])[mask])
  expected = cameras.unproject_depth(depth, clip['intrinsics'], clip['cam_to_world'])
  np.testing.assert_allclose(clip['xyz'][mask], expected[mask], rtol=1e-6,
                             atol=1e-6 * max(1.0, depth.max()))
  assert not clip['xyz'][~mask].any()
  # Every valid pixel's point lies on the surface it hit (float32 ray casting precision).
  gap = _surface_distance(scene, clip['xyz'][mask], surface[mask])
  assert gap.max() < 1e-4 * max(1.0, depth.max()), gap.max()
  assert clip['rgb'].dtype == np.uint8 and clip['rgb'].std() > 5  # Textured, not blank.
  if kind == scenes.ROOM:
    assert mask.all()  # Inside a closed room every ray hits something.
  else:
    assert 0 < mask.mean() < 1  # Objects on a ground disc: the open background is masked.


def test_background_pixels_really_see_nothing():
  index = _find(scenes.OBJECTS)
  clip = synthetic_world.render_clip(0, 'test', index, FRAMES, SIZE)
  scene, _, _ = synthetic_world.make_clip_spec(0, 'test', index, FRAMES, SIZE)
  o, d = cameras.world_rays(clip['intrinsics'][0], clip['cam_to_world'][0], SIZE, SIZE)
  o, d = o[~clip['mask'][0]][::3], d[~clip['mask'][0]][::3]
  assert len(o) > 0
  # March each background ray densely: it never enters a solid ...
  t = np.linspace(0.01, 30.0, 1500)
  pts = (o[:, None] + t[None, :, None] * d[:, None]).reshape(-1, 3).astype(np.float64)
  solid = np.concatenate([scenes.sphere_distance(pts, scene.spheres),
                          scenes.box_distance(pts, scene.boxes),
                          scenes.cylinder_distance(pts, scene.cylinders)], 1).min(1)
  assert solid.min() > -1e-6
  # ... and crosses the ground plane (if at all) outside the ground disc.
  down = d[:, 1] < 0
  t_ground = -o[down, 1] / d[down, 1]
  hit = o[down] + t_ground[:, None] * d[down]
  radial = np.hypot(hit[:, 0] - scene.ground[0], hit[:, 2] - scene.ground[1])
  assert np.all(radial > scene.ground[2])


def test_surface_point_seen_in_two_frames_has_one_xyz():
  index = _find(scenes.ROOM, start=3)
  clip = synthetic_world.render_clip(0, 'test', index, FRAMES, SIZE)
  n_checked = 0
  for a, b in ((0, 1), (0, FRAMES - 1)):
    pts = clip['xyz'][a][clip['mask'][a]]
    uv, z = cameras.project_points(pts, clip['intrinsics'][b], clip['cam_to_world'][b])
    col, row = np.floor(uv[:, 0]).astype(int), np.floor(uv[:, 1]).astype(int)
    inside = (z > 0) & (col >= 0) & (col < SIZE) & (row >= 0) & (row < SIZE)
    seen = clip['depth'][b][row[inside], col[inside]]
    visible = np.abs(seen - z[inside]) < 0.03 * z[inside]  # Not occluded in frame b.
    # The pixel frame b sees is within one pixel's footprint of the projected point.
    gap = np.linalg.norm(clip['xyz'][b][row[inside], col[inside]][visible] - pts[inside][visible],
                         axis=-1)
    footprint = 2.0 * z[inside][visible] / clip['intrinsics'][b, 0, 0]
    assert np.mean(gap < footprint) > 0.95
    n_checked += visible.sum()
  assert n_checked > 100


def test_clips_are_seeded_and_splits_hold_out_scenes():
  a = synthetic_world.render_clip(0, 'train', 2, FRAMES, SIZE, complete=False)
  b = synthetic_world.render_clip(0, 'train', 2, FRAMES, SIZE, complete=False)
  for key in ('rgb', 'depth', 'intrinsics', 'cam_to_world'):
    np.testing.assert_array_equal(a[key], b[key])
  other = synthetic_world.render_clip(0, 'validation', 2, FRAMES, SIZE, complete=False)
  assert not np.array_equal(a['depth'], other['depth'])
  with pytest.raises(ValueError, match='unknown split'):
    synthetic_world.clip_rng(0, 'dev', 0)


def test_cameras_stay_outside_solids_and_vary():
  kinds, fovs, motions = [], [], []
  for i in range(120):
    scene, K, poses = synthetic_world.make_clip_spec(1, 'train', i, 9, SIZE)
    assert scenes.clearance(scene, poses[:, :3, 3]).min() >= trajectories.MIN_CLEARANCE - 1e-4
    np.testing.assert_allclose(poses[:, :3, :3] @ np.swapaxes(poses[:, :3, :3], 1, 2),
                               np.broadcast_to(np.eye(3), (9, 3, 3)), atol=1e-5)
    kinds.append(scene.kind)
    fovs.append(2 * np.degrees(np.arctan(SIZE / 2 / K[0, 0, 0])))
    motions.append(np.linalg.norm(poses[-1, :3, 3] - poses[0, :3, 3]))
  kinds = np.array(kinds)
  assert 0.3 < kinds.mean() < 0.7  # Both rooms and object scenes (object_fraction 0.5).
  assert np.ptp(fovs) > 20  # Varied fields of view.
  assert np.median(motions) > 0.05  # Cameras move.


def test_texture_bank_holds_photos_and_patterns():
  bank = textures.texture_bank()
  assert bank.num_textures == len(textures.NAMES) >= 20
  assert 'astronaut' in bank.names and 'checker' in bank.names
  first = bank.texels[bank.offsets[0, 0]:bank.offsets[0, 1]].reshape(
      textures.TEXTURE_SIZE, textures.TEXTURE_SIZE, 3)
  assert first.std() > 0.1 and 0 <= first.min() and first.max() <= 1  # A real photo.
  # Each mip level is the 2x2 average of the one above.
  lvl0 = first.reshape(textures.TEXTURE_SIZE // 2, 2, textures.TEXTURE_SIZE // 2, 2, 3)
  n1 = (textures.TEXTURE_SIZE // 2) ** 2
  lvl1 = bank.texels[bank.offsets[0, 1]:bank.offsets[0, 1] + n1]
  np.testing.assert_allclose(lvl0.mean(axis=(1, 3)).reshape(-1, 3), lvl1, atol=1e-6)
