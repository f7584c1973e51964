"""Cameras and rotations: exact identities, round trips, convention checks, bad inputs."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.geometry import scenes
from wvd_jax.geometry import cameras, rotations


def _random_cameras(seed, n, size=(24, 32)):
  rng = np.random.default_rng(seed)
  h, w = size
  K = cameras.make_intrinsics(rng.uniform(20, 40, n), rng.uniform(20, 40, n),
                              rng.uniform(0.4, 0.6, n) * w, rng.uniform(0.4, 0.6, n) * h)
  c2w = cameras.make_pose(scenes.random_rotation(rng, n), rng.normal(size=(n, 3)))
  return K, c2w


def test_pixel_centers_and_fov_intrinsics():
  pix = cameras.pixel_centers(2, 3)
  assert pix.shape == (2, 3, 2)
  np.testing.assert_array_equal(pix[1, 2], [2.5, 1.5])  # (u, v) = (col + 0.5, row + 0.5)
  K = cameras.intrinsics_from_fov(np.pi / 2, 48, 64)
  np.testing.assert_allclose(K, [[32, 0, 32], [0, 32, 24], [0, 0, 1]], atol=1e-5)
  # Batched fov, jax in -> jax out.
  Kb = cameras.intrinsics_from_fov(jnp.array([np.pi / 2, 2 * np.arctan(0.5)]), 48, 64)
  assert isinstance(Kb, jax.Array) and Kb.shape == (2, 3, 3)
  np.testing.assert_allclose(Kb[1, 0, 0], 64.0, rtol=1e-6)


def test_invert_intrinsics_and_pose():
  K, c2w = _random_cameras(0, 5)
  K = K.copy()
  K[:, 0, 1] = 0.3  # skew is handled too
  np.testing.assert_allclose(cameras.invert_intrinsics(K), np.linalg.inv(K), rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(cameras.invert_pose(c2w), np.linalg.inv(c2w), atol=1e-12)
  np.testing.assert_allclose(cameras.compose_poses(cameras.invert_pose(c2w), c2w),
                             np.broadcast_to(np.eye(4), (5, 4, 4)), atol=1e-12)


def test_transform_points_matches_homogeneous_product():
  rng = np.random.default_rng(1)
  _, c2w = _random_cameras(1, 1)
  pts = rng.normal(size=(4, 5, 3))
  expected = (np.concatenate([pts, np.ones((4, 5, 1))], -1) @ c2w[0].T)[..., :3]
  np.testing.assert_allclose(cameras.transform_points(c2w[0], pts), expected, atol=1e-12)


@pytest.mark.parametrize('use_jax', [False, True])
def test_unproject_project_round_trip(use_jax):
  h, w = 24, 32
  K, c2w = _random_cameras(2, 3, (h, w))
  depth = np.random.default_rng(2).uniform(0.5, 5.0, (3, h, w))
  if use_jax:
    K, c2w, depth = (jnp.asarray(a, jnp.float32) for a in (K, c2w, depth))
  pts = jax.jit(cameras.unproject_depth)(depth, K, c2w) if use_jax else cameras.unproject_depth(
      depth, K, c2w)
  assert isinstance(pts, jax.Array) == use_jax  # numpy in -> numpy out
  assert pts.shape == (3, h, w, 3)
  uv, z = cameras.project_points(pts.reshape(3, -1, 3), K, c2w)
  tol = dict(rtol=2e-5, atol=2e-4) if use_jax else dict(rtol=1e-10, atol=1e-9)
  np.testing.assert_allclose(np.asarray(z).reshape(3, h, w), depth, **tol)
  np.testing.assert_allclose(np.asarray(uv).reshape(3, h, w, 2),
                             np.broadcast_to(cameras.pixel_centers(h, w), (3, h, w, 2)), **tol)
  # unproject(project(X)) == X for random world points in front of the camera.
  rng = np.random.default_rng(3)
  cam_pts = np.concatenate([rng.uniform(-1, 1, (3, 50, 2)), rng.uniform(1, 4, (3, 50, 1))], -1)
  world = cameras.transform_points(np.asarray(c2w)[:, None], cam_pts)
  uv, z = cameras.project_points(world, K, c2w)
  rays = cameras.invert_intrinsics(np.asarray(K))[:, None] @ np.concatenate(
      [np.asarray(uv), np.ones((3, 50, 1))], -1)[..., None]
  back = cameras.transform_points(np.asarray(c2w)[:, None], rays[..., 0] * np.asarray(z)[..., None])
  np.testing.assert_allclose(back, world, rtol=1e-5, atol=1e-5)


def test_rays():
  K, c2w = _random_cameras(4, 2)
  o, d = cameras.world_rays(K, c2w, 24, 32)
  np.testing.assert_allclose(np.linalg.norm(d, axis=-1), 1.0, rtol=1e-12)
  np.testing.assert_allclose(o, np.broadcast_to(c2w[:, None, None, :3, 3], o.shape))
  # Unit depth along the z-scaled ray lands on the unprojected depth-1 point.
  r = cameras.pixel_rays(K, 24, 32)
  np.testing.assert_allclose(r[..., 2], 1.0)
  np.testing.assert_allclose(cameras.transform_points(c2w[:, None, None], r),
                             cameras.unproject_depth(np.ones((2, 24, 32)), K, c2w), atol=1e-12)


def test_quaternions_and_axis_angle():
  rng = np.random.default_rng(5)
  q = rng.normal(size=(100, 4))
  q /= np.linalg.norm(q, axis=-1, keepdims=True)
  q *= np.sign(q[:, :1])
  R = rotations.quaternion_to_rotation(q)
  np.testing.assert_allclose(R @ np.swapaxes(R, -1, -2), np.broadcast_to(np.eye(3), R.shape),
                             atol=1e-12)
  np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-12)
  np.testing.assert_allclose(rotations.rotation_to_quaternion(R), q, atol=1e-12)
  # 180 degree rotations (trace = -1) are where naive formulas break.
  flips = np.stack([np.diag([1.0, -1, -1]), np.diag([-1.0, 1, -1]), np.diag([-1.0, -1, 1])])
  back = rotations.quaternion_to_rotation(rotations.rotation_to_quaternion(flips))
  np.testing.assert_allclose(back, flips, atol=1e-12)
  omega = rotations.rotation_to_axis_angle(R)
  np.testing.assert_allclose(rotations.axis_angle_to_rotation(omega), R, atol=1e-10)
  np.testing.assert_allclose(rotations.rotation_angle(R, R), 0.0, atol=1e-7)
  np.testing.assert_allclose(rotations.rotation_angle(rotations.axis_angle_to_rotation(
      np.array([0.0, 0.0, 1e-4]))), 1e-4, rtol=1e-6)
  # Gradients at omega = 0 are finite (post-optimization starts there).
  g = jax.grad(lambda w: rotations.axis_angle_to_rotation(w).sum())(jnp.zeros(3))
  assert np.all(np.isfinite(g))


def test_colmap_and_opengl_conversions_round_trip():
  _, c2w = _random_cameras(6, 4)
  qvec, tvec = cameras.cam_to_world_to_colmap(c2w)
  assert np.all(qvec[:, 0] >= 0)
  w2c = np.linalg.inv(c2w)
  np.testing.assert_allclose(rotations.quaternion_to_rotation(qvec), w2c[:, :3, :3], atol=1e-12)
  np.testing.assert_allclose(tvec, w2c[:, :3, 3], atol=1e-12)
  np.testing.assert_allclose(cameras.colmap_to_cam_to_world(qvec, tvec), c2w, atol=1e-12)
  gl = cameras.opencv_to_opengl(c2w)
  np.testing.assert_allclose(cameras.opengl_to_opencv(gl), c2w, atol=1e-12)
  # A point straight ahead of the OpenCV camera (and below centre: +y) is at -z, -y in OpenGL.
  p_world = cameras.transform_points(c2w, np.array([0.0, 0.5, 2.0]))
  p_gl = cameras.transform_points(np.linalg.inv(gl), p_world)
  np.testing.assert_allclose(p_gl, np.broadcast_to([0.0, -0.5, -2.0], p_gl.shape), atol=1e-12)
  np.testing.assert_allclose(gl[:, :3, 3], c2w[:, :3, 3])


def test_bad_inputs():
  K, c2w = _random_cameras(7, 1)
  bad_k = K.copy()
  bad_k[0, 0, 0] = 0.0
  with pytest.raises(ValueError, match='focal'):
    cameras.unproject_depth(np.ones((1, 4, 4)), bad_k, c2w)
  with pytest.raises(ValueError, match='focal'):
    cameras.project_points(np.ones((1, 4, 3)), -K, c2w)
  with pytest.raises(ValueError, match=r'\(3, 3\)'):
    cameras.unproject_depth(np.ones((1, 4, 4)), K[:, :2], c2w)
  with pytest.raises(ValueError, match=r'\(4, 4\)'):
    cameras.project_points(np.ones((1, 4, 3)), K, c2w[:, :3])
  with pytest.raises(ValueError, match='points'):
    cameras.transform_points(c2w, np.ones((4, 2)))
  with pytest.raises(ValueError, match='fov'):
    cameras.intrinsics_from_fov(0.0, 4, 4)
  nan_pose = c2w.copy()
  nan_pose[0, 0, 3] = np.nan
  with pytest.raises(ValueError, match='NaN'):
    cameras.unproject_depth(np.ones((1, 4, 4)), K, nan_pose)
