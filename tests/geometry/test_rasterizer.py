"""Z-buffered splatting: occlusion, exact masks, self-consistency, ignored points."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.geometry import scenes
from wvd_jax.geometry import cameras
from wvd_jax.geometry.rasterizer import rasterize_points

H, W = 32, 40
K = cameras.intrinsics_from_fov(np.deg2rad(60.0), H, W)


def _shuffled(rng, *arrays):
  perm = rng.permutation(len(arrays[0]))
  return [a[perm] for a in arrays]


def test_two_planes_nearer_wins_and_exact_mask():
  rng = np.random.default_rng(0)
  c2w = cameras.make_pose(scenes.random_rotation(rng, 1)[0], rng.normal(size=3))
  far = cameras.unproject_depth(np.full((H, W), 4.0), K, c2w)
  near = cameras.unproject_depth(np.full((H, W), 2.0), K, c2w)
  rect = np.zeros((H, W), bool)
  rect[5:20, 8:30] = True
  holes = np.zeros((H, W), bool)
  holes[25:, :6] = True  # far-plane points removed here: nothing lands
  pts = np.concatenate([far[~holes], near[rect]])
  cols = np.concatenate([np.zeros(((~holes).sum(), 3)), np.ones((rect.sum(), 3))])
  cols = cols.astype(np.float32)
  pts, cols = _shuffled(rng, pts, cols)  # occlusion must not depend on point order
  r = jax.jit(rasterize_points, static_argnums=(5, 6))(pts, cols, None, K, c2w, H, W)
  np.testing.assert_array_equal(r.mask, ~holes)
  np.testing.assert_allclose(r.depth, np.where(rect, 2.0, np.where(holes, 0.0, 4.0)), rtol=1e-5)
  np.testing.assert_array_equal(r.colors[..., 0], rect.astype(np.float32))
  expected = np.where(rect[..., None], near, np.where(holes[..., None], 0, far))
  np.testing.assert_allclose(r.xyz, expected, atol=1e-5)
  assert np.all(np.asarray(r.index)[holes] == len(pts))


def test_self_consistency_and_batched_cameras():
  """Rasterizing a view's unprojected depth into the same camera gives that depth back."""
  clip = scenes.box_room(1, n_views=3, size=32)
  pts = jnp.asarray(clip['xyz'], jnp.float32)
  r = rasterize_points(pts[1].reshape(-1, 3), None, None, clip['K'][1], clip['cam_to_world'][1],
                       32, 32)
  assert bool(r.mask.all()) and r.colors is None
  np.testing.assert_allclose(r.depth, clip['depth'][1], rtol=1e-4)
  # Batched over cameras == one camera at a time.
  allpts = pts.reshape(-1, 3)
  rb = rasterize_points(allpts, None, None, clip['K'], clip['cam_to_world'], 32, 32)
  for i in range(3):
    ri = rasterize_points(allpts, None, None, clip['K'][i], clip['cam_to_world'][i], 32, 32)
    np.testing.assert_array_equal(rb.index[i], ri.index)
  np.testing.assert_allclose(rb.depth[1], clip['depth'][1], rtol=1e-4)


def test_matches_brute_force_zbuffer():
  rng = np.random.default_rng(2)
  c2w = np.eye(4)
  pts = np.concatenate([rng.uniform(-3, 3, (3000, 2)), rng.uniform(-1, 5, (3000, 1))], -1)
  valid = rng.uniform(size=3000) < 0.9
  pts[:5] = np.nan  # ignored
  r = rasterize_points(pts.astype(np.float32), None, valid, K, c2w, H, W)
  uv, z = cameras.project_points(pts.astype(np.float32), K, c2w)
  col, row = np.floor(uv[:, 0]).astype(int), np.floor(uv[:, 1]).astype(int)
  ok = valid & np.isfinite(z) & (z > 0) & (col >= 0) & (col < W) & (row >= 0) & (row < H)
  depth = np.zeros((H, W))
  seen = np.zeros((H, W), bool)
  for i in np.nonzero(ok)[0]:  # reference, a loop on purpose
    if not seen[row[i], col[i]] or z[i] < depth[row[i], col[i]]:
      depth[row[i], col[i]], seen[row[i], col[i]] = z[i], True
  np.testing.assert_array_equal(r.mask, seen)
  np.testing.assert_allclose(r.depth, depth, rtol=1e-6)
  assert not np.any(np.isnan(r.xyz))


def test_behind_and_outside_ignored():
  pts = np.array([[0.0, 0.0, -2.0], [100.0, 0.0, 1.0], [0.0, 0.0, 0.0]], np.float32)
  r = rasterize_points(pts, np.ones((3, 2)), None, K, np.eye(4), H, W)
  assert not bool(r.mask.any())
  assert float(jnp.abs(r.xyz).max()) == 0.0 and float(jnp.abs(r.colors).max()) == 0.0


def test_bad_inputs():
  pts = np.zeros((4, 3), np.float32)
  with pytest.raises(ValueError, match='points'):
    rasterize_points(np.zeros((4, 2)), None, None, K, np.eye(4), H, W)
  with pytest.raises(ValueError, match='colors'):
    rasterize_points(pts, np.zeros((3, 3)), None, K, np.eye(4), H, W)
  with pytest.raises(ValueError, match='valid'):
    rasterize_points(pts, None, np.ones(5, bool), K, np.eye(4), H, W)
  with pytest.raises(ValueError, match='focal'):
    rasterize_points(pts, None, None, K * np.array([0, 1, 1])[:, None], np.eye(4), H, W)
