"""Camera control with an oracle generator: re-projection, memory and chunking checked exactly.

The oracle is "the model" of a scene with two planes (a wall and a floor) seen from the input
camera: given cameras, it returns the exact XYZ (normalized into [-1, 1]) and a texture. For a
camera-control chunk the cameras come in the chunk's normalized frame-0 world with the
similarity to the task's (model) world; the oracle renders there and answers in the chunk's
frame, as the model would.
"""
import jax
import numpy as np
import pytest

from wvd_jax import errors
from wvd_jax.geometry import cameras, normalization
from wvd_jax.tasks import camera_paths, wvd_tasks

SIZE, FOCAL = 24, 20.0
CENTER, SCALE = np.array([0.0, 0.3, 2.5]), 2.0  # Raw -> model world: (p - CENTER) / SCALE.


class PlanesOracle:
  """Wall z = 3 and floor y = 1 in the input camera's frame (OpenCV: y down)."""

  def __init__(self):
    self.K = np.array([[FOCAL, 0, SIZE / 2], [0, FOCAL, SIZE / 2], [0, 0, 1]], np.float32)
    self.calls = []

  def render(self, K, cam_to_world_model):
    raw = np.array(cam_to_world_model, np.float64)
    raw[:3, 3] = raw[:3, 3] * SCALE + CENTER
    rays = np.asarray(cameras.world_rays(K, raw, SIZE, SIZE, normalize=False)[1], np.float64)
    origin = raw[:3, 3]
    with np.errstate(divide='ignore', invalid='ignore'):
      t_wall = (3.0 - origin[2]) / rays[..., 2]
      t_floor = (1.0 - origin[1]) / rays[..., 1]
    t = np.where(t_wall > 0, t_wall, np.inf)
    t = np.minimum(t, np.where(t_floor > 0, t_floor, np.inf))
    points = origin + t[..., None] * rays
    xyz = (points - CENTER) / SCALE
    checker = (np.floor(points[..., 0] * 4) + np.floor(points[..., 1] * 4)
               + np.floor(points[..., 2] * 4)) % 2
    rgb = np.stack([checker, 1 - checker, np.full_like(checker, 0.5)], -1) * 1.6 - 0.8
    return rgb.astype(np.float32), xyz.astype(np.float32)

  def __call__(self, rgb, rgb_mask, xyz, xyz_mask, cond_mask, rng, cameras=None):
    b, n = rgb.shape[:2]
    self.calls.append(dict(xyz=np.array(xyz), xyz_mask=np.array(xyz_mask), cameras=cameras))
    identity = np.eye(4)
    identity[:3, 3] = -CENTER / SCALE
    out_rgb, out_xyz = np.zeros_like(rgb), np.zeros_like(rgb)
    for i in range(b):
      for j in range(n):
        if cameras is None:
          out_rgb[i, j], out_xyz[i, j] = self.render(self.K, identity)
        else:
          to_world = cameras[2]
          out_rgb[i, j], world = self.render(cameras[0][i, j], to_world.poses(cameras[1][i, j]))
          out_xyz[i, j] = to_world.inverse().points(world)
    return out_rgb, out_xyz


def test_reconstruction_recovers_the_input_camera():
  oracle = PlanesOracle()
  image = oracle.render(oracle.K, np.eye(4))[0]
  rec = wvd_tasks.single_image_to_3d(oracle, image, num_frames=3, num_samples=2,
                                     rng=jax.random.PRNGKey(0))
  np.testing.assert_allclose(rec.intrinsics[0, 0, 0], FOCAL, rtol=5e-3)
  np.testing.assert_allclose(rec.cam_to_world[0, :3, 3], -CENTER / SCALE, atol=5e-3)
  np.testing.assert_allclose(rec.cam_to_world[0, :3, :3], np.eye(3), atol=5e-3)
  assert np.all(rec.spread == 0) and np.all(rec.confidence == 1)  # Identical samples.


def test_camera_control_reprojects_memory_and_chunks():
  oracle = PlanesOracle()
  image = oracle.render(oracle.K, np.eye(4))[0]
  relative = camera_paths.preset('dolly', 7, amount=0.3)
  result = wvd_tasks.camera_control(oracle, image, relative, num_frames=4,
                                    rng=jax.random.PRNGKey(0))
  assert result.frames.shape == (7, SIZE, SIZE, 3)
  assert len(oracle.calls) == 3  # Single image to 3D, then chunks of 3 targets: [1-3], [4-6].
  # The path comes back as given (the user's frame); in the model world the input camera is
  # the oracle's.
  np.testing.assert_allclose(result.cam_to_world, relative, atol=1e-6)
  first = result.user_to_model.poses(result.cam_to_world[0])
  np.testing.assert_allclose(first[:3, 3], -CENTER / SCALE, atol=5e-3)
  _check_reprojection(oracle, result, range(1, 7))
  # Chunk 2 is conditioned on its previous frame (frame 3, generated in chunk 1), expressed in
  # its own camera (the chunk's frame 0), and on points.
  second = oracle.calls[2]
  to_world = second['cameras'][2]
  # (the training rule clips the box's outer 2% on each axis, so compare inside it)
  inside = result.foreground[3] & np.all(np.abs(second['xyz'][0, 0]) < 1, -1)
  assert inside.mean() > 0.5
  np.testing.assert_allclose(result.user_to_model.inverse().points(to_world.points(
      second['xyz'][0, 0]))[inside], result.xyz[3][inside], atol=1e-4)
  assert second['xyz_mask'][0, 1:].mean() > 0.5
  # The memory is de-duplicated: the first step's 4 frames are the same view (the oracle has
  # no camera for them), so 3 of them add nothing; 4 + 6 frames were added in all.
  assert 0 < result.memory_points <= (4 + 6 - 3) * SIZE * SIZE


def _check_reprojection(oracle, result, frames):
  for t in frames:
    mask = result.reprojected_mask[t]
    assert mask.mean() > 0.5, (t, mask.mean())
    xyz = result.reprojected_xyz[t][mask]
    # Every re-projected point is a point of the scene (on the wall or the floor) ...
    raw = result.user_to_model.points(xyz) * SCALE + CENTER
    on_surface = np.minimum(np.abs(raw[:, 2] - 3.0), np.abs(raw[:, 1] - 1.0))
    assert on_surface.max() < 1e-4
    # ... and projects into the pixel it was splatted to (z-buffer kept the nearest).
    uv, depth = cameras.project_points(xyz, result.intrinsics[t], result.cam_to_world[t])
    rows, cols = np.nonzero(mask)
    # (float32 rounding may put a point exactly on a pixel border on either side).
    assert np.abs(np.asarray(uv)[:, 0] - (cols + 0.5)).max() <= 0.5 + 1e-3
    assert np.abs(np.asarray(uv)[:, 1] - (rows + 0.5)).max() <= 0.5 + 1e-3
    model_cam = result.user_to_model.poses(result.cam_to_world[t])
    exact = oracle.render(result.intrinsics[t], model_cam)[1][mask]
    # The splatted point is within about half a pixel footprint (at the wall, depth 3) of the
    # exact ray hit.
    assert np.median(np.linalg.norm(exact - result.user_to_model.points(xyz), axis=-1)) < (
        0.5 * 3.0 / FOCAL / SCALE)


def test_long_orbit_every_chunk_conditioned_like_training():
  """60 frames in chunks of 3: each chunk's conditioning is in its own frame-0 camera
  (identity rotation; frame 0's points project into their own pixels) and inside [-1, 1]."""
  oracle = PlanesOracle()
  image = oracle.render(oracle.K, np.eye(4))[0]
  relative = camera_paths.preset('orbit', 60, amount=30)
  result = wvd_tasks.camera_control(oracle, image, relative, num_frames=4,
                                    rng=jax.random.PRNGKey(0))
  assert len(oracle.calls) == 1 + 20
  pix = cameras.pixel_centers(SIZE, SIZE)
  for call in oracle.calls[1:]:
    K, c2w, _ = call['cameras']
    np.testing.assert_allclose(c2w[0, 0, :3, :3], np.eye(3), atol=1e-6)
    assert np.abs(call['xyz'][call['xyz_mask']]).max() <= 1.0
    frame0 = call['xyz'][0, 0]
    fg = ~normalization.background_mask(frame0) & np.all(np.abs(frame0) < 1, -1)  # unclipped
    uv, depth = cameras.project_points(frame0[fg], K[0, 0], c2w[0, 0])
    assert (np.asarray(depth) > 0).all()
    np.testing.assert_allclose(np.asarray(uv), pix[fg], atol=2e-3)
  _check_reprojection(oracle, result, range(1, 60))
  # The memory's world is the first reconstruction's; the orbit sees beyond its [-1, 1] box.
  model_points = result.user_to_model.points(result.xyz[result.foreground])
  assert np.abs(model_points).max() > 1.2


def test_camera_path_files_and_presets(tmp_path):
  poses = camera_paths.preset('orbit', 5, amount=40)
  np.testing.assert_allclose(poses[0], np.eye(4))
  path = str(tmp_path / 'path.json')
  camera_paths.save(path, poses, np.eye(3))
  loaded, K = camera_paths.load(path)
  np.testing.assert_allclose(loaded, poses)
  bad = tmp_path / 'bad.json'
  bad.write_text('{"cam_to_world": [[1, 2]]}')
  with pytest.raises(errors.UserError, match='shape'):
    camera_paths.load(str(bad))
  bad.write_text('not json')
  with pytest.raises(errors.UserError, match='not valid JSON'):
    camera_paths.load(str(bad))
  bad.write_text('{"cam_to_world": [[[2,0,0,0],[0,1,0,0],[0,0,1,0],[0,0,0,1]]]}')
  with pytest.raises(errors.UserError, match='rigid'):
    camera_paths.load(str(bad))
  with pytest.raises(errors.UserError, match='preset'):
    camera_paths.preset('spiral', 4)
  with pytest.raises(errors.UserError, match='neither a preset .orbit, dolly, pan. nor'):
    camera_paths.resolve('spin', 4)
