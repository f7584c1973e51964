"""Many views through windows of the model's frame count, with an oracle generator that returns
each window's true XYZ as the model would (its frame 0's camera, normalized into [-1, 1])."""
import time
import tracemalloc

import jax
import numpy as np

from tests.geometry import scenes
from wvd_jax.geometry import cameras, rotations
from wvd_jax.tasks import many_views

SIZE, WINDOW, ANCHORS = 20, 8, 2
HALF = np.array([3.0, 2.0, 4.0])


class Trajectory:
  """A lazy image sequence: view i of a camera circling inside the box room while turning; the
  image encodes its index (pixel (0, 0)), which the oracle reads back."""

  def __init__(self, n):
    self.n = n
    self.K = cameras.intrinsics_from_fov(np.deg2rad(60.0), SIZE, SIZE)

  def __len__(self):
    return self.n

  def pose(self, i):
    a = 2 * np.pi * i / 150
    eye = np.array([np.cos(a), 0.3 * np.sin(3 * a), np.sin(a)]) * [1.2, 1.0, 1.5]
    target = np.array([np.cos(a + 0.9), 0.2, np.sin(a + 0.9)]) * HALF
    return scenes.look_at(eye, target)

  def view(self, i):
    """(depth (H, W), XYZ (H, W, 3)) of view i."""
    c2w = self.pose(i)
    depth = scenes.box_room_depth(self.K, c2w, SIZE, SIZE, HALF)
    return depth, cameras.unproject_depth(depth, self.K, c2w)

  def __getitem__(self, i):
    image = np.zeros((SIZE, SIZE, 3), np.float32)
    image[0, 0, 0] = i / 1000.0
    return image


class WindowOracle:
  def __init__(self, trajectory):
    self.trajectory = trajectory
    self.calls = 0

  def __call__(self, rgb, rgb_mask, xyz, xyz_mask, cond_mask, rng, cameras=None):
    self.calls += 1
    views = np.round(np.asarray(rgb)[0, :, 0, 0, 0] * 1000).astype(int)
    true = np.stack([self.trajectory.view(i)[1] for i in views])
    out = scenes.model_xyz(true, self.trajectory.pose(views[0]))
    return rgb, np.broadcast_to(out, rgb.shape).copy()


def _run(n, on_view=None):
  """Two samples a window, as tasks draw for confidence (the window's arrays, not the views'
  compact records of ~300 bytes, then dominate the peak, as at real image sizes)."""
  traj = Trajectory(n)
  oracle = WindowOracle(traj)
  result = many_views.reconstruct_many(oracle, traj, window=WINDOW, anchors=ANCHORS,
                                       num_samples=2, rng=jax.random.PRNGKey(0),
                                       on_view=on_view, progress=False)
  return traj, oracle, result


def test_window_plan():
  plan = many_views.windows(20, 8, 3)
  assert plan[0] == (list(range(8)), list(range(8)))
  assert all(len(frames) == 8 for frames, _ in plan)
  assert sorted(v for _, new in plan for v in new) == list(range(20))
  assert plan[-1][1] == [18, 19] and plan[-1][0][:6] == list(range(12, 18))


def _peak_and_time(n):
  tracemalloc.start()
  start = time.perf_counter()
  _run(n)
  elapsed = time.perf_counter() - start
  peak = tracemalloc.get_traced_memory()[1]
  tracemalloc.stop()
  return peak, elapsed


def test_150_views_recovered_then_memory_flat_and_time_linear():
  """One test: the 150-view run compiles the window and joint solves that the timed 50- and
  200-view runs then reuse (a compilation inside tracemalloc would count its tracing)."""
  depths = {}

  def on_view(i, depth, confidence):
    assert depth.shape == confidence.shape == (SIZE, SIZE)
    depths[i] = depth
  traj, oracle, result = _run(150, on_view)
  assert sorted(depths) == list(range(150))
  assert oracle.calls == len(many_views.windows(150, WINDOW, ANCHORS))
  true = np.stack([traj.pose(i) for i in range(150)])
  # The world is window 0's: frame 0's camera, normalized. Compare rotations relative to view 0
  # and depth after the one global scale.
  rel = np.einsum('ji,njk->nik', true[0, :3, :3], true[:, :3, :3])
  rot = np.rad2deg(rotations.rotation_angle(rel, result.cam_to_world[:, :3, :3]))
  assert rot.max() < 0.5, rot.max()
  np.testing.assert_allclose(result.intrinsics, np.broadcast_to(traj.K, (150, 3, 3)), rtol=1e-3)
  depth = np.stack([depths[i] for i in range(150)])
  true_depth = np.stack([traj.view(i)[0] for i in range(150)])
  scale = np.median(true_depth / depth)
  absrel = np.mean(np.abs(depth * scale - true_depth) / true_depth)
  assert absrel < 1e-3, absrel

  peak50, t50 = _peak_and_time(50)
  peak200, t200 = _peak_and_time(200)
  print(f'many views: 150 views max rotation error {rot.max():.3g} deg, depth AbsRel '
        f'{absrel:.2g}; 50 views {peak50 / 1e6:.3f} MB peak (tracemalloc), '
        f'{t50 / 50 * 1e3:.1f} ms/view; 200 views {peak200 / 1e6:.3f} MB, '
        f'{t200 / 200 * 1e3:.1f} ms/view')
  assert peak200 < 1.1 * peak50, (peak50, peak200)
  assert t200 / 200 < 3 * t50 / 50  # loose: roughly constant time per view


def test_api_multiview_beyond_the_frame_count(tmp_path):
  """WVD.multiview on more images than the model's frames: windows, files for every view."""
  import pytest  # pylint: disable=import-outside-toplevel  (the benchmark imports this module)
  from tests.conftest import tiny_config  # pylint: disable=import-outside-toplevel
  from wvd_jax.errors import UserError  # pylint: disable=import-outside-toplevel
  from wvd_jax.tasks import api  # pylint: disable=import-outside-toplevel
  config = tiny_config()
  config.data.image_size, config.data.num_frames, config.sample.num_samples = SIZE, WINDOW, 1
  traj = Trajectory(11)
  model = api.WVD(config, None, None, generator=WindowOracle(traj))
  images = [traj[i] for i in range(11)]
  result = model.multiview(images, str(tmp_path))
  assert result.cam_to_world.shape == (11, 4, 4)
  for k in range(11):
    assert np.load(tmp_path / f'depth_{k}.npy').shape == (SIZE, SIZE)
  text = (tmp_path / 'cameras' / 'images.txt').read_text()
  assert 'frame_00010.png' in text and '# units: normalized' in text

  # Known poses of two views (distinct centres): every camera and depth in the poses' world and
  # units; the known poses exactly.
  true = np.stack([traj.pose(i) for i in range(11)])
  true_depth = np.stack([traj.view(i)[0] for i in range(11)])
  poses = np.full((11, 4, 4), np.nan)
  poses[[0, 5]] = true[[0, 5]]
  out = tmp_path / 'posed'
  result = model.multiview(images, str(out), cam_to_world=poses)
  assert result.units == 'units of the given poses'
  np.testing.assert_array_equal(result.cam_to_world[[0, 5]], true[[0, 5]].astype(np.float32))
  rot = np.rad2deg(rotations.rotation_angle(true[:, :3, :3], result.cam_to_world[:, :3, :3]))
  assert rot.max() < 0.5, rot
  np.testing.assert_allclose(result.cam_to_world[:, :3, 3], true[:, :3, 3], atol=2e-3)
  depth = np.stack([np.load(out / f'depth_{k}.npy') for k in range(11)])
  assert np.mean(np.abs(depth - true_depth) / true_depth) < 1e-3
  assert '# units: units of the given poses' in (out / 'cameras' / 'images.txt').read_text()
  # One known pose and a known distance between camera centres: metres, about that camera.
  poses[5] = np.nan
  d = float(np.linalg.norm(true[0, :3, 3] - true[10, :3, 3]))
  result = model.multiview(images, str(tmp_path / 'metric'), cam_to_world=poses,
                           metric_distance=f'{d}:cameras:0,10')
  assert result.units == 'metres'
  np.testing.assert_array_equal(result.cam_to_world[0], true[0].astype(np.float32))
  np.testing.assert_allclose(result.cam_to_world[:, :3, 3], true[:, :3, 3], atol=2e-3)
  depth = np.stack([np.load(tmp_path / 'metric' / f'depth_{k}.npy') for k in range(11)])
  assert np.mean(np.abs(depth - true_depth) / true_depth) < 1e-3
  with pytest.raises(UserError, match='between camera centres'):
    model.multiview(images, metric_distance='1.0:pixels:0,5,5,1,5,5')
  poses[5] = true[5]
  with pytest.raises(UserError, match='both set the scale'):
    model.multiview(images, cam_to_world=poses, metric_distance=1.0)
