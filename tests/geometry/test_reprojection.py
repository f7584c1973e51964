"""Point memory for camera control: union, de-duplication, bounded capacity, rendering."""
import jax
import jax.numpy as jnp
import numpy as np

from tests.geometry import scenes
from wvd_jax.geometry import reprojection as rp
from wvd_jax.geometry.rasterizer import rasterize_points


def _clip():
  clip = scenes.box_room(3, n_views=3, size=24)
  rgb = np.random.default_rng(0).uniform(-1, 1, clip['xyz'].shape).astype(np.float32)
  return clip, jnp.asarray(clip['xyz'], jnp.float32), jnp.asarray(rgb)


def test_render_into_source_camera_reproduces_frame():
  clip, xyz, rgb = _clip()
  mem = rp.memory_from_frames(xyz[0], rgb[0], voxel_size=1e-4)
  assert int(mem.valid.sum()) == 24 * 24 and int(mem.num_dropped) == 0
  r = rp.render_targets(mem, clip['K'][0], clip['cam_to_world'][0], 24, 24)
  assert bool(r.mask.all())
  np.testing.assert_allclose(r.colors, rgb[0], atol=0)
  np.testing.assert_allclose(r.xyz, xyz[0], atol=0)


def test_add_frames_union_dedup_and_capacity():
  clip, xyz, rgb = _clip()
  add = jax.jit(rp.add_frames, static_argnames=('voxel_size',))
  mem = rp.empty_memory(3000)
  mem = add(mem, xyz[0], rgb[0], None, voxel_size=1e-4)
  n0 = int(mem.valid.sum())
  again = add(mem, xyz[0], rgb[0], None, voxel_size=1e-4)  # same points: no growth
  assert int(again.valid.sum()) == n0
  mask = np.ones((24, 24), bool)
  mask[:, :12] = False
  mask[0, 20] = False
  both = add(mem, xyz[1], rgb[1], jnp.asarray(mask), voxel_size=1e-4)
  assert int(both.valid.sum()) == n0 + mask.sum()
  # Oldest first: the first frame's points are kept in place.
  np.testing.assert_array_equal(both.points[:n0], mem.points[:n0])
  # Over capacity: the surplus is counted, the memory stays full and oldest-first.
  small = add(rp.empty_memory(700), xyz[0], rgb[0], None, voxel_size=1e-4)
  full = add(small, xyz[1], rgb[1], None, voxel_size=1e-4)
  assert int(full.valid.sum()) == 700 and int(full.num_dropped) == 2 * 576 - 700
  np.testing.assert_array_equal(full.points[:576], small.points[:576])
  # A coarse voxel merges points: fewer survivors, never more than unique voxels.
  coarse = add(rp.empty_memory(3000), xyz, rgb, None, voxel_size=0.5)
  vox = np.unique(np.floor(np.asarray(xyz).reshape(-1, 3) / 0.5), axis=0)
  assert int(coarse.valid.sum()) == len(vox)


def test_render_targets_equals_rasterizing_the_union():
  clip, xyz, rgb = _clip()
  mem = rp.memory_from_frames(xyz[:2], rgb[:2], voxel_size=1e-5)
  target = rp.render_targets(mem, clip['K'][2], clip['cam_to_world'][2], 24, 24)
  ref = rasterize_points(xyz[:2].reshape(-1, 3), rgb[:2].reshape(-1, 3), None, clip['K'][2],
                         clip['cam_to_world'][2], 24, 24)
  np.testing.assert_array_equal(target.mask, ref.mask)
  np.testing.assert_allclose(target.depth, ref.depth, rtol=1e-6)
  assert 0 < int(target.mask.sum()) < 24 * 24  # partial: holes are left to the model
  assert float(jnp.abs(jnp.where(target.mask[..., None], 0, target.colors)).max()) == 0.0


def test_nan_pixels_skipped():
  _, xyz, rgb = _clip()
  bad = xyz[0].at[3, 4].set(jnp.nan)
  mem = rp.memory_from_frames(bad, rgb[0], voxel_size=1e-4)
  assert int(mem.valid.sum()) == 24 * 24 - 1
  assert bool(jnp.all(jnp.isfinite(mem.points)))
