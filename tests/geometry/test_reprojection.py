"""Point memory for camera control: union, de-duplication, bounded capacity, rendering.

Every memory here has capacity 1000 and every update adds one 24 x 24 frame, so the jitted
update compiles once for the module."""
import jax.numpy as jnp
import numpy as np
import pytest

from tests.geometry import scenes
from wvd_jax.geometry import reprojection as rp
from wvd_jax.geometry.rasterizer import rasterize_points

CAP, S = 1000, 24


@pytest.fixture(scope='module')
def clip():
  clip = scenes.box_room(3, n_views=3, size=S)
  rgb = np.random.default_rng(0).uniform(-1, 1, clip['xyz'].shape).astype(np.float32)
  return clip, jnp.asarray(clip['xyz'], jnp.float32), jnp.asarray(rgb)


def _add(mem, xyz, rgb, mask=None, voxel_size=1e-4):
  return rp.add_frames(mem, xyz, rgb, mask, voxel_size=voxel_size)


def test_render_into_source_camera_reproduces_frame(clip):
  clip, xyz, rgb = clip
  mem = rp.memory_from_frames(xyz[0], rgb[0], capacity=CAP, voxel_size=1e-4)
  assert int(mem.valid.sum()) == S * S and int(mem.num_dropped) == 0
  r = rp.render_targets(mem, clip['K'][0], clip['cam_to_world'][0], S, S)
  assert bool(r.mask.all())
  np.testing.assert_array_equal(r.colors, rgb[0])
  np.testing.assert_array_equal(r.xyz, xyz[0])


def test_add_frames_union_dedup_and_capacity(clip):
  _, xyz, rgb = clip
  mem = _add(rp.empty_memory(CAP), xyz[0], rgb[0])
  n0 = int(mem.valid.sum())
  assert n0 == S * S
  again = _add(mem, xyz[0], rgb[0])  # the same points again: no growth
  assert int(again.valid.sum()) == n0 and int(again.num_dropped) == 0
  mask = np.ones((S, S), bool)
  mask[:, :S // 2] = False
  mask[0, 20] = False
  both = _add(mem, xyz[1], rgb[1], jnp.asarray(mask))
  assert int(both.valid.sum()) == n0 + mask.sum()
  np.testing.assert_array_equal(both.points[:n0], mem.points[:n0])  # oldest first, in place
  # Over capacity: the surplus is counted, the memory stays full and oldest-first.
  full = _add(mem, xyz[1], rgb[1])
  assert int(full.valid.sum()) == CAP and int(full.num_dropped) == 2 * S * S - CAP
  np.testing.assert_array_equal(full.points[:n0], mem.points[:n0])
  # A coarse voxel merges points: exactly one survivor per occupied voxel.
  coarse = _add(rp.empty_memory(CAP), xyz[0], rgb[0], voxel_size=0.5)
  vox = np.unique(np.floor(np.asarray(xyz[0]).reshape(-1, 3) / 0.5), axis=0)
  assert int(coarse.valid.sum()) == len(vox)


def test_render_targets_equals_rasterizing_the_union(clip):
  clip, xyz, rgb = clip
  mask = np.zeros((S, S), bool)
  mask[:, S // 2:] = True
  mem = _add(_add(rp.empty_memory(CAP), xyz[0], rgb[0]), xyz[1], rgb[1], jnp.asarray(mask))
  target = rp.render_targets(mem, clip['K'][2], clip['cam_to_world'][2], S, S)
  valid = np.concatenate([np.ones(S * S, bool), mask.reshape(-1)])
  ref = rasterize_points(xyz[:2].reshape(-1, 3), rgb[:2].reshape(-1, 3), valid, clip['K'][2],
                         clip['cam_to_world'][2], S, S)
  np.testing.assert_array_equal(target.mask, ref.mask)
  np.testing.assert_allclose(target.depth, ref.depth, rtol=1e-6)
  np.testing.assert_array_equal(target.colors, ref.colors)
  assert 0 < int(target.mask.sum()) < S * S  # partial: holes are left to the model
  assert float(jnp.abs(jnp.where(target.mask[..., None], 0, target.colors)).max()) == 0.0


def test_nan_pixels_skipped(clip):
  _, xyz, rgb = clip
  bad = xyz[0].at[3, 4].set(jnp.nan)
  mem = rp.memory_from_frames(bad, rgb[0], capacity=CAP, voxel_size=1e-4)
  assert int(mem.valid.sum()) == S * S - 1
  assert bool(jnp.all(jnp.isfinite(mem.points)))
