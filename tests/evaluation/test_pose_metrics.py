"""Relative pose errors, accuracies, Umeyama and trajectory errors against exact answers."""
import numpy as np
import pytest

from wvd_jax.evaluation import pose_metrics
from wvd_jax.geometry import cameras, rotations


def rot(axis, degrees):
  axis = np.asarray(axis, np.float64)
  return rotations.axis_angle_to_rotation(axis / np.linalg.norm(axis) * np.radians(degrees))


def random_poses(n, seed=0):
  rng = np.random.default_rng(seed)
  rs = np.stack([rot(rng.normal(size=3), rng.uniform(5, 170)) for _ in range(n)])
  return cameras.make_pose(rs, rng.normal(size=(n, 3)) * 2)


def similarity(poses, s, r, t):
  """The same cameras in a world mapped by x -> s r x + t (rigid poses stay rigid)."""
  return cameras.make_pose(np.matmul(r, poses[:, :3, :3]), s * poses[:, :3, 3] @ r.T + t)


def test_identical_poses_score_perfectly():
  poses = random_poses(5)
  rre, rte = pose_metrics.relative_pose_errors(poses, poses)
  assert rre.shape == rte.shape == (10,)
  np.testing.assert_allclose(rre, 0, atol=1e-6)
  np.testing.assert_allclose(rte, 0, atol=1e-6)
  acc = pose_metrics.pose_accuracy(rre, rte)
  assert set(acc) == {'rra@5', 'rta@5', 'rra@15', 'rta@15', 'rra@30', 'rta@30', 'maa@30'}
  assert all(v == 1.0 for v in acc.values())


def test_errors_are_invariant_to_a_similarity_of_the_world():
  poses = random_poses(4, seed=1)
  moved = similarity(poses, 3.5, rot([1, 2, 3], 70), np.array([4.0, -1.0, 2.0]))
  rre, rte = pose_metrics.relative_pose_errors(moved, poses)
  np.testing.assert_allclose(rre, 0, atol=1e-6)
  np.testing.assert_allclose(rte, 0, atol=1e-6)


def test_ten_degree_perturbation_of_one_camera():
  poses = random_poses(4, seed=2)
  pred = poses.copy()
  pred[2, :3, :3] = poses[2, :3, :3] @ rot([0.3, -1.0, 0.5], 10.0)  # About its own centre.
  rre, _ = pose_metrics.relative_pose_errors(pred, poses)
  i, j = np.triu_indices(4, k=1)
  touching = (i == 2) | (j == 2)
  np.testing.assert_allclose(rre[touching], 10.0, atol=1e-9)
  np.testing.assert_allclose(rre[~touching], 0.0, atol=1e-9)


def test_translation_direction_sign_is_ignored():
  gt = cameras.make_pose(np.eye(3), np.array([[0.0, 0, 0], [1, 0, 0], [0, 2, 1]]))
  flipped = gt.copy()
  flipped[:, :3, 3] *= -1  # Every relative translation flips: a 180-degree angle.
  rre, rte = pose_metrics.relative_pose_errors(flipped, gt)
  np.testing.assert_allclose(rre, 0, atol=1e-12)
  np.testing.assert_allclose(rte, 0, atol=1e-6)


def test_translation_angles_by_hand():
  gt = cameras.make_pose(np.eye(3), np.array([[0.0, 0, 0], [1, 0, 0]]))
  # With identity rotations the relative translation is c_i - c_j.
  for direction, expected in (([1, 1, 0], 45.0), ([np.cos(np.radians(120)),
                                                    np.sin(np.radians(120)), 0], 60.0)):
    pred = cameras.make_pose(np.eye(3), np.array([[0.0, 0, 0], direction]))
    _, rte = pose_metrics.relative_pose_errors(pred, gt)
    np.testing.assert_allclose(rte, [expected], atol=1e-9)


def test_zero_relative_translations():
  gt = cameras.make_pose(np.eye(3), np.array([[0.0, 0, 0], [1, 0, 0], [1, 0, 0]]))
  collapsed = cameras.make_pose(np.eye(3), np.zeros((3, 3)))
  # Pairs (0, 1), (0, 2): the prediction has no direction, the truth has -> 90.
  # Pair (1, 2): neither has a direction -> 0.
  _, rte = pose_metrics.relative_pose_errors(collapsed, gt)
  np.testing.assert_array_equal(rte, [90.0, 90.0, 0.0])
  assert not np.any(np.isnan(rte))


def test_accuracies_and_maa_by_hand():
  rre = np.array([0.5, 3.2, 10.0, 40.0])
  rte = np.array([0.2, 7.5, 2.0, 0.0])
  acc = pose_metrics.pose_accuracy(rre, rte)
  assert acc['rra@5'] == 0.5 and acc['rta@5'] == 0.75
  assert acc['rra@15'] == 0.75 and acc['rta@15'] == 1.0
  assert acc['rra@30'] == 0.75 and acc['rta@30'] == 1.0
  # max errors 0.5, 7.5, 10, 40 are < k for 30, 23, 20 and 0 of k = 1..30.
  assert acc['maa@30'] == pytest.approx(73 / 120)
  assert pose_metrics.pose_accuracy([5.0], [0.0])['rra@5'] == 0.0  # Strictly below.


def test_umeyama_recovers_a_similarity():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(10, 3))
  r, s, t = rot([1, -2, 0.5], 135.0), 2.5, np.array([1.0, -3.0, 0.25])
  s_fit, r_fit, t_fit = pose_metrics.umeyama(x, s * x @ r.T + t)
  assert s_fit == pytest.approx(s)
  np.testing.assert_allclose(r_fit, r, atol=1e-12)
  np.testing.assert_allclose(t_fit, t, atol=1e-12)
  s_fit, r_fit, _ = pose_metrics.umeyama(x, x @ r.T + t, with_scale=False)
  assert s_fit == 1.0
  np.testing.assert_allclose(r_fit, r, atol=1e-12)


def test_umeyama_returns_a_rotation_for_mirrored_points():
  rng = np.random.default_rng(4)
  x = rng.normal(size=(8, 3))
  _, r_fit, _ = pose_metrics.umeyama(x, x * np.array([1.0, 1.0, -1.0]))
  assert np.linalg.det(r_fit) == pytest.approx(1.0)
  np.testing.assert_allclose(r_fit @ r_fit.T, np.eye(3), atol=1e-12)


def test_umeyama_of_collapsed_points():
  y = np.array([[0.0, 0, 0], [2, 0, 0]])
  s, r, t = pose_metrics.umeyama(np.ones((2, 3)), y)
  assert s == 0.0
  np.testing.assert_array_equal(r, np.eye(3))
  np.testing.assert_allclose(t, [1, 0, 0])


def test_ate():
  gt = np.array([[1.0, 1, 0], [1, -1, 0], [-1, 1, 0], [-1, -1, 0]])
  r = rot([0.2, 1, 0.3], 40)
  assert pose_metrics.absolute_trajectory_error(0.3 * gt @ r.T + 5, gt) < 1e-12
  # Alternating heights e = +-1: Umeyama gives R = I, t = 0, s = tr(D) / var = 2 / 3 and an
  # error (s - 1) (x, y) + (0, 0, s e) per camera: ATE^2 = 2 (1/3)^2 + (2/3)^2 = 2/3.
  pred = gt + np.array([[0, 0, 1.0], [0, 0, -1], [0, 0, -1], [0, 0, 1]])
  assert pose_metrics.absolute_trajectory_error(pred, gt) == pytest.approx(np.sqrt(2 / 3))
  # All cameras at one place: aligned to the centroid -> the truth's RMS spread, sqrt(2).
  assert pose_metrics.absolute_trajectory_error(np.zeros((4, 3)), gt) == pytest.approx(np.sqrt(2))


def test_bad_inputs_raise():
  poses = random_poses(3)
  with pytest.raises(ValueError, match='shape mismatch'):
    pose_metrics.relative_pose_errors(poses[:2], poses)
  with pytest.raises(ValueError, match=r'must have shape \(N, 4, 4\)'):
    pose_metrics.relative_pose_errors(poses[:, :3], poses[:, :3])
  with pytest.raises(ValueError, match='>= 2 cameras'):
    pose_metrics.relative_pose_errors(poses[:1], poses[:1])
  bad = poses.copy()
  bad[1, 0, 3] = np.nan
  with pytest.raises(ValueError, match='pred_cam_to_world contains 1 NaN'):
    pose_metrics.relative_pose_errors(bad, poses)
  with pytest.raises(ValueError, match='NaN'):
    pose_metrics.pose_accuracy([np.nan], [1.0])
  with pytest.raises(ValueError, match='at least one pair'):
    pose_metrics.pose_accuracy([], [])
  with pytest.raises(ValueError, match='shape mismatch'):
    pose_metrics.umeyama(np.zeros((3, 3)), np.zeros((4, 3)))
