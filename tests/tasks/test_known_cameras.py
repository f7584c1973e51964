"""Known intrinsics, poses and a metric distance through the tasks, with an oracle generator
that returns the true XYZ as the model would (frame 0's camera, normalized into [-1, 1])."""
import json
import os

import jax
import numpy as np
import pytest

from tests.geometry import scenes
from wvd_jax.errors import UserError
from wvd_jax.geometry import cameras, export
from wvd_jax.tasks import known_cameras, wvd_tasks

N, S = 4, 24


class ViewsOracle:
  """Multi-view generator of one clip: the inputs are its N views in order."""

  def __init__(self, clip):
    self.xyz = scenes.model_xyz(clip['xyz'], clip['cam_to_world'][0])

  def __call__(self, rgb, rgb_mask, xyz, xyz_mask, cond_mask, rng, cameras=None):
    return np.asarray(rgb), np.broadcast_to(self.xyz, rgb.shape).copy()


@pytest.fixture(scope='module')
def clip():
  return scenes.box_room(21, n_views=N, size=S)


def _run(clip, **known):
  images = np.zeros((N, S, S, 3), np.float32)
  return wvd_tasks.multiview(ViewsOracle(clip), images, num_samples=1,
                             rng=jax.random.PRNGKey(0), **known)


def _absrel(rec, clip):
  return np.max(np.abs(rec.depth - clip['depth']) / clip['depth'])


def test_known_poses_put_the_reconstruction_in_the_users_frame(clip):
  rec = _run(clip, intrinsics=clip['K'][0], cam_to_world=clip['cam_to_world'])
  assert rec.units == wvd_tasks.UNITS_POSES
  np.testing.assert_array_equal(rec.cam_to_world, clip['cam_to_world'].astype(np.float32))
  np.testing.assert_array_equal(rec.intrinsics,
                                np.broadcast_to(clip['K'][0], (N, 3, 3)).astype(np.float32))
  assert _absrel(rec, clip) < 1e-4
  np.testing.assert_allclose(rec.points, clip['xyz'], atol=1e-3)
  # Poses of two views only: the others come out in the same (user's) frame and scale.
  some = clip['cam_to_world'].copy()
  some[1::2] = np.nan
  rec = _run(clip, cam_to_world=some)
  np.testing.assert_allclose(rec.cam_to_world, clip['cam_to_world'], atol=2e-3)
  assert _absrel(rec, clip) < 1e-3


def test_known_distance_gives_metres(clip):
  centres = clip['cam_to_world'][:, :3, 3]
  metres = float(np.linalg.norm(centres[0] - centres[2]))
  rec = _run(clip, metric_distance=known_cameras.MetricDistance(metres, cameras=(0, 2)))
  assert rec.units == wvd_tasks.UNITS_METRES
  assert _absrel(rec, clip) < 1e-4
  # Between the surface points of two pixels, with one known pose (scaled about it).
  a, b = (0, 3, 5), (2, 20, 17)
  metres = float(np.linalg.norm(clip['xyz'][a[0], a[2], a[1]] - clip['xyz'][b[0], b[2], b[1]]))
  one = np.full((N, 4, 4), np.nan)
  one[1] = clip['cam_to_world'][1]
  rec = _run(clip, cam_to_world=one, metric_distance=known_cameras.parse_distance(
      f'{metres}:pixels:{",".join(map(str, a + b))}'))
  assert _absrel(rec, clip) < 1e-4
  np.testing.assert_array_equal(rec.cam_to_world[1], clip['cam_to_world'][1].astype(np.float32))
  np.testing.assert_allclose(rec.cam_to_world, clip['cam_to_world'], atol=1e-3)
  with pytest.raises(UserError, match='both set the scale'):
    _run(clip, cam_to_world=clip['cam_to_world'], metric_distance=1.0)


def test_file_formats(tmp_path, clip):
  assert known_cameras.parse_intrinsics('30,31,12.5,11').tolist() == [
      [30, 0, 12.5], [0, 31, 11], [0, 0, 1]]
  path = tmp_path / 'k.json'
  path.write_text(json.dumps({'K': clip['K'][0].tolist()}))
  np.testing.assert_array_equal(known_cameras.parse_intrinsics(str(path)), clip['K'][0])
  names = [f'v{i}.png' for i in range(N)]
  export.write_colmap_text(str(tmp_path / 'colmap'), clip['K'], clip['cam_to_world'], S, S,
                           image_names=names)
  poses, K = known_cameras.load_poses(str(tmp_path / 'colmap'), names)
  np.testing.assert_allclose(poses, clip['cam_to_world'], atol=1e-12)
  np.testing.assert_allclose(K, clip['K'])
  (tmp_path / 'p.json').write_text(json.dumps({'frames': [
      {'image': 'v2.png', 'cam_to_world': clip['cam_to_world'][2].tolist()}]}))
  poses, K = known_cameras.load_poses(str(tmp_path / 'p.json'), names)
  assert K is None and np.isnan(poses[[0, 1, 3]]).all()
  np.testing.assert_array_equal(poses[2], clip['cam_to_world'][2])
  assert known_cameras.parse_distance('2.5').cameras == (0, 1)
  assert known_cameras.parse_distance('2.5:cameras:3,4').cameras == (3, 4)
  # A photograph's K follows the centre crop and resize of media.load_image.
  k = known_cameras.to_model_pixels(cameras.make_intrinsics(100, 100, 70, 50), 140, 100, 25)
  np.testing.assert_allclose(k, cameras.make_intrinsics(25, 25, 12.5, 12.5))


@pytest.mark.parametrize('bad, match', [
    (lambda: known_cameras.parse_intrinsics('30,31,12'), 'fx,fy,cx,cy'),
    (lambda: known_cameras.check_intrinsics([[30, 0, 12], [1, 30, 12], [0, 0, 1]]),
     'upper triangular'),
    (lambda: known_cameras.parse_intrinsics('-30,30,12,12'), 'non-positive focal'),
    (lambda: known_cameras.check_poses(np.diag([2.0, 1, 1, 1])[None]), 'not a rotation'),
    (lambda: known_cameras.parse_distance('0'), 'positive'),
    (lambda: known_cameras.parse_distance('1:meters'), 'expected'),
    (lambda: known_cameras.load_poses('/nonexistent/poses', ['a.png']), 'no such'),
])
def test_bad_inputs_are_one_line_user_errors(bad, match):
  with pytest.raises(UserError, match=match) as err:
    bad()
  assert '\n' not in str(err.value)


def test_pose_file_naming_images_not_given(tmp_path):
  path = tmp_path / 'p.json'
  path.write_text(json.dumps({'frames': [{'image': 'elsewhere.png',
                                          'cam_to_world': np.eye(4).tolist()}]}))
  with pytest.raises(UserError, match='elsewhere.png') as err:
    known_cameras.load_poses(str(path), ['a.png', 'b.png'])
  assert '\n' not in str(err.value)
  assert os.path.basename(str(path)) in str(err.value)
