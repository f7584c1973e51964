"""XYZ normalization N (paper eq. 1): exact inverse, robust fit, camera consistency."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.geometry import scenes
from wvd_jax.geometry import cameras
from wvd_jax.geometry import normalization as nz


@pytest.fixture(scope='module')
def clip():
  return scenes.box_room(0, n_views=3, size=16)


def test_round_trip_float32(clip):
  xyz = jnp.asarray(clip['xyz'], jnp.float32)
  norm = nz.fit_normalization(xyz, jnp.ones(xyz.shape[:-1], bool))
  back = nz.denormalize_points(nz.normalize_points(xyz, norm), norm)
  np.testing.assert_allclose(back, xyz, rtol=1e-6, atol=1e-6)
  c2w = jnp.asarray(clip['cam_to_world'], jnp.float32)
  back = nz.denormalize_cam_to_world(nz.normalize_cam_to_world(c2w, norm), norm)
  np.testing.assert_allclose(back, c2w, atol=1e-6)
  depth = jnp.asarray(clip['depth'], jnp.float32)
  np.testing.assert_allclose(nz.denormalize_depth(nz.normalize_depth(depth, norm), norm), depth,
                             rtol=1e-6)


def test_fit_maps_robust_box_into_unit_cube(clip):
  xyz = clip['xyz']
  norm = nz.fit_normalization(xyz, None, percentile=100.0)
  y = nz.normalize_points(xyz, norm)
  assert isinstance(y, np.ndarray)  # numpy in -> numpy out (data pipeline)
  np.testing.assert_allclose(np.abs(y).max(), 1.0, rtol=1e-12)  # largest axis spans [-1, 1]
  half = (y.max(axis=(0, 1, 2)) + y.min(axis=(0, 1, 2))) / 2
  np.testing.assert_allclose(half, 0.0, atol=1e-12)  # box centred
  # Robustness: 1% far outliers barely move the default (percentile) fit ...
  rng = np.random.default_rng(0)
  pts = xyz.reshape(-1, 3)
  outl = pts.copy()
  idx = rng.choice(len(pts), len(pts) // 100, replace=False)
  outl[idx] = rng.normal(size=(len(idx), 3)) * 1e3
  clean, noisy = nz.fit_normalization(pts), nz.fit_normalization(outl)
  assert abs(noisy.scale / clean.scale - 1) < 0.05
  assert np.linalg.norm(noisy.center - clean.center) < 0.05 * clean.scale
  # ... and the valid mask excludes them entirely.
  masked = nz.fit_normalization(outl, np.isin(np.arange(len(pts)), idx, invert=True))
  inl = nz.normalize_points(pts, masked)
  assert np.mean(np.all(np.abs(inl) <= 1, -1)) > 0.95


def test_cameras_follow_the_normalization(clip):
  """unproject(depth / scale, K, N(c2w)) == N(unproject(depth, K, c2w))."""
  norm = nz.fit_normalization(clip['xyz'])
  a = cameras.unproject_depth(nz.normalize_depth(clip['depth'], norm), clip['K'],
                              nz.normalize_cam_to_world(clip['cam_to_world'], norm))
  b = nz.normalize_points(
      cameras.unproject_depth(clip['depth'], clip['K'], clip['cam_to_world']), norm)
  np.testing.assert_allclose(a, b, atol=1e-12)


def test_masking_nans_empty_and_jit(clip):
  xyz = clip['xyz'].astype(np.float32).copy()
  valid = np.ones(xyz.shape[:-1], bool)
  ref = nz.fit_normalization(xyz, valid)
  xyz[0, 0, 0] = np.nan
  valid[0, 0, 0] = False
  fit = jax.jit(nz.fit_normalization)(jnp.asarray(xyz), jnp.asarray(valid))
  assert np.all(np.isfinite(fit.center)) and np.isfinite(fit.scale)
  np.testing.assert_allclose(fit.center, ref.center, rtol=0.05, atol=0.05 * float(ref.scale))
  # NaNs are ignored even when marked valid; an empty set gives the identity, never NaN.
  assert np.all(np.isfinite(nz.fit_normalization(xyz).center))
  empty = jax.jit(nz.fit_normalization)(jnp.asarray(xyz), jnp.zeros(valid.shape, bool))
  np.testing.assert_array_equal(empty.center, 0.0)
  np.testing.assert_array_equal(empty.scale, 1.0)


def test_batched_per_clip(clip):
  xyz = np.stack([clip['xyz'], clip['xyz'] * 2 + 1])  # (B, N, H, W, 3)
  norm = nz.fit_normalization(xyz, point_axes=3)
  assert norm.center.shape == (2, 3) and norm.scale.shape == (2,)
  single = nz.fit_normalization(clip['xyz'])
  np.testing.assert_allclose(norm.center[1], single.center * 2 + 1, rtol=1e-12)
  np.testing.assert_allclose(norm.scale, [single.scale, 2 * single.scale], rtol=1e-12)
  expanded = nz.Normalization(norm.center[:, None, None, None], norm.scale[:, None, None, None])
  np.testing.assert_allclose(nz.normalize_points(xyz, expanded)[1],
                             nz.normalize_points(clip['xyz'], single), atol=1e-12)


def test_bad_inputs(clip):
  with pytest.raises(ValueError, match='valid'):
    nz.fit_normalization(clip['xyz'], np.ones((2, 16, 16), bool))
  with pytest.raises(ValueError, match=r'\(\.\.\., 3\)'):
    nz.fit_normalization(np.ones((10, 2)))
  with pytest.raises(ValueError, match='percentile'):
    nz.fit_normalization(clip['xyz'], percentile=10)


def test_background_sentinel_round_trip():
  rng = np.random.default_rng(0)
  xyz = rng.uniform(-0.85, 1.0, (2, 5, 6, 3)).astype(np.float32)
  mask = rng.uniform(size=(2, 5, 6)) < 0.6
  filled = nz.fill_background(xyz, mask)
  np.testing.assert_array_equal(filled[mask], xyz[mask])
  assert np.all(filled[~mask] == nz.BACKGROUND_XYZ)
  np.testing.assert_array_equal(nz.background_mask(filled), ~mask)
  # A point near the corner on two axes only is a surface; jax arrays give the same answer.
  near = np.array([[[-0.95, -0.95, 0.2], [-0.95, -0.92, -0.97]]], np.float32)
  np.testing.assert_array_equal(nz.background_mask(near), [[False, True]])
  np.testing.assert_array_equal(np.asarray(jax.jit(nz.fill_background)(jnp.asarray(xyz), mask)),
                                filled)


def test_fill_maps_the_robust_box_into_a_smaller_cube(clip):
  xyz = clip['xyz']
  full = nz.fit_normalization(xyz, None, percentile=100.0)
  filled = nz.fit_normalization(xyz, None, percentile=100.0, fill=0.8)
  np.testing.assert_allclose(filled.center, full.center)
  np.testing.assert_allclose(np.abs(nz.normalize_points(xyz, filled)).max(), 0.8, rtol=1e-12)
  with pytest.raises(ValueError, match='fill'):
    nz.fit_normalization(xyz, None, fill=1.5)
