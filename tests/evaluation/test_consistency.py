"""Key-point matches, KPM, and XYZ-RGB agreement on an exact two-camera scene."""
import cv2
import numpy as np
import pytest
from skimage import data

from wvd_jax.evaluation import consistency
from wvd_jax.geometry import cameras

# --------------------------------------------------------------------------------- key points


@pytest.fixture(scope='module')
def astronaut():
  """A textured 64x64 uint8 image (the model's resolution)."""
  return cv2.resize(data.astronaut(), (64, 64), interpolation=cv2.INTER_AREA)


def test_shifted_image_matches_and_noise_does_not(astronaut):
  shifted = np.roll(astronaut, 3, axis=1)[:, 8:56]
  count = consistency.keypoint_matches(astronaut[:, 8:56], shifted)
  assert count > 50
  assert consistency.keypoint_matches(astronaut[:, 8:56], shifted) == count  # Deterministic.
  rng = np.random.default_rng(0)
  noise = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
  assert consistency.keypoint_matches(astronaut, noise) < 8


def test_float_and_uint8_inputs_agree(astronaut):
  as_float = astronaut.astype(np.float32) / 127.5 - 1.0
  shifted = np.roll(astronaut, 2, axis=0)
  assert (consistency.keypoint_matches(as_float, np.roll(as_float, 2, axis=0))
          == consistency.keypoint_matches(astronaut, shifted))


def test_video_matches_average_pairs_with_frame_zero(astronaut):
  frames = np.stack([astronaut, np.roll(astronaut, 2, 1), np.roll(astronaut, 4, 0)])
  expected = np.mean([consistency.keypoint_matches(frames[0], frames[j], upscale=2)
                      for j in (1, 2)])
  assert consistency.video_keypoint_matches(frames, upscale=2) == expected


def test_kpm_arithmetic():
  assert consistency.kpm([10, 20], [40, 20]) == pytest.approx(50.0)
  assert consistency.kpm([3.5], [3.5]) == pytest.approx(100.0)
  assert consistency.kpm([0, 0], [0, 0]) == 100.0
  assert consistency.kpm([1], [0]) == np.inf
  with pytest.raises(ValueError, match='negative'):
    consistency.kpm([-1], [2])


def test_keypoint_bad_inputs_raise(astronaut):
  with pytest.raises(ValueError, match=r'\(H, W, 3\)'):
    consistency.keypoint_matches(astronaut[..., 0], astronaut)
  with pytest.raises(ValueError, match='dtype'):
    consistency.keypoint_matches(astronaut.astype(np.int32), astronaut)
  with pytest.raises(ValueError, match='NaN'):
    consistency.keypoint_matches(np.full((8, 8, 3), np.nan), astronaut)
  with pytest.raises(ValueError, match='>= 2 frames'):
    consistency.video_keypoint_matches(astronaut[None])


# ------------------------------------------------------------------------- XYZ-RGB agreement
# A plane z = 4 in front of cameras translated along x by 1: with f = 16 a point moves
# 16 * 1 / 4 = 4 pixels between frames and lands exactly on a pixel centre.
H, W, F, PLANE = 16, 24, 16.0, 4.0


def plane_scene(camera_x=(0.0, 1.0), occluder=False):
  """rgb, xyz, K, cam_to_world of the textured plane; colours are a function of the world point,
  so corresponding pixels have equal colours. With `occluder`, frame 1 sees a 4x4 patch (rows 4-7,
  cols 8-11) at depth 2 coloured +0.5 off the texture."""
  n = len(camera_x)
  K = cameras.make_intrinsics(F, F, W / 2, H / 2)
  poses = cameras.make_pose(np.eye(3), np.stack([[x, 0.0, 0.0] for x in camera_x]))
  depth = np.full((n, H, W), PLANE)
  if occluder:
    depth[1, 4:8, 8:12] = PLANE / 2
  xyz = cameras.unproject_depth(depth, K, poses)
  rgb = 0.6 * np.stack([np.sin(1.3 * xyz[..., 0]), np.cos(2.1 * xyz[..., 1]),
                        np.sin(xyz[..., 0] + xyz[..., 1])], -1)
  if occluder:
    rgb[1, 4:8, 8:12] += 0.5
  return rgb, xyz, np.broadcast_to(K, (n, 3, 3)), poses


def test_exact_scene_agrees():
  rgb, xyz, K, poses = plane_scene()
  out = consistency.xyz_rgb_agreement(rgb, xyz, K, poses)
  assert set(out) == {'color_l1', 'color_psnr', 'coverage'}
  assert out['color_l1'] < 1e-12
  assert out['color_psnr'] == pytest.approx(consistency.MAX_AGREEMENT_PSNR)
  # Frame 0 columns 4..23 land in frame 1 (and frame 1 columns 0..19 in frame 0): 20 of 24.
  assert out['coverage'] == pytest.approx(20 / 24)


def test_corrupted_colours_give_their_offset():
  rgb, xyz, K, poses = plane_scene()
  rgb[1] += 0.2
  out = consistency.xyz_rgb_agreement(rgb, xyz, K[0], poses)  # One K for all frames.
  assert out['color_l1'] == pytest.approx(0.2)
  assert out['color_psnr'] == pytest.approx(10 * np.log10(4 / 0.04))
  assert out['coverage'] == pytest.approx(20 / 24)


def test_occluded_points_are_not_counted():
  rgb, xyz, K, poses = plane_scene(occluder=True)
  out = consistency.xyz_rgb_agreement(rgb, xyz, K, poses)
  # The 16 frame-0 pixels behind the patch and the 16 patch pixels (in front of frame 0's
  # surface) fail the depth test; the patch's wrong colour never enters.
  assert out['color_l1'] < 1e-12
  assert out['coverage'] == pytest.approx((2 * 320 - 32) / (2 * 384))
  # Without a meaningful visibility test the patch would be compared.
  loose = consistency.xyz_rgb_agreement(rgb, xyz, K, poses, depth_tolerance=10.0)
  assert loose['color_l1'] > 0.01 and loose['coverage'] == pytest.approx(640 / 768)


def test_valid_mask_and_three_frames():
  rgb, xyz, K, poses = plane_scene()
  valid = np.ones((2, H, W), bool)
  valid[1, :, 12:] = False
  # 12 columns each way are kept, of 24 + 12 valid source columns.
  out = consistency.xyz_rgb_agreement(rgb, xyz, K, poses, valid)
  assert out['coverage'] == pytest.approx(24 / 36)
  xyz[1, :, 12:] = np.nan  # Invalid pixels may hold anything.
  assert consistency.xyz_rgb_agreement(rgb, xyz, K, poses, valid) == out
  rgb, xyz, K, poses = plane_scene(camera_x=(0.0, 1.0, 2.0))
  # Shifts of 4 px between neighbours (20 columns kept) and 8 px between 0 and 2 (16 columns).
  out = consistency.xyz_rgb_agreement(rgb, xyz, K, poses)
  assert out['coverage'] == pytest.approx((4 * 20 + 2 * 16) / (3 * 2 * 24))


def test_no_overlap_gives_worst_values():
  rgb, xyz, K, poses = plane_scene(camera_x=(0.0, 100.0))
  out = consistency.xyz_rgb_agreement(rgb, xyz, K, poses)
  assert out == {'color_l1': 2.0, 'color_psnr': 0.0, 'coverage': 0.0}


def test_agreement_bad_inputs_raise():
  rgb, xyz, K, poses = plane_scene()
  with pytest.raises(ValueError, match='shape mismatch'):
    consistency.xyz_rgb_agreement(rgb, xyz[:, :8], K, poses)
  with pytest.raises(ValueError, match='>= 2 frames'):
    consistency.xyz_rgb_agreement(rgb[:1], xyz[:1], K[:1], poses[:1])
  with pytest.raises(ValueError, match='valid has no pixel'):
    consistency.xyz_rgb_agreement(rgb, xyz, K, poses, np.zeros((2, H, W), bool))
  bad = rgb.copy()
  bad[0, 0, 0, 0] = np.nan
  with pytest.raises(ValueError, match='rgb contains 1 NaN'):
    consistency.xyz_rgb_agreement(bad, xyz, K, poses)
  bad = xyz.copy()
  bad[1, 2, 3] = np.inf
  with pytest.raises(ValueError, match='xyz'):
    consistency.xyz_rgb_agreement(rgb, bad, K, poses)
  with pytest.raises(ValueError, match='cam_to_world must be'):
    consistency.xyz_rgb_agreement(rgb, xyz, K, poses[:1])
  with pytest.raises(ValueError, match='valid has shape'):
    consistency.xyz_rgb_agreement(rgb, xyz, K, poses, np.ones((H, W), bool))
