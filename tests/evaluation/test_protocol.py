"""The evaluation protocol against exact answers: an oracle generator that returns the truth.

With the true RGB and XYZ of a clip (in the model's normalized frame-0 world) every task must
score perfectly (depth and cameras exact up to post-optimization tolerance, KPM 100%), and a
known colour offset must give its hand-computed PSNR.
"""
import jax
import numpy as np
import pytest

from tests.conftest import tiny_config
from wvd_jax.data import pipeline, transforms
from wvd_jax.evaluation import protocol, runner
from wvd_jax.geometry import normalization

RGB_OFFSET = 0.1  # The oracle's novel views are the truth + this: PSNR = 10 log10(4 / 0.01).


@pytest.fixture(scope='module')
def clip_and_truth(tmp_path_factory):
  config = tiny_config()
  config.data.image_size = config.data.render_size = 32
  config.data.num_frames = 4
  source = pipeline.load_split(config, 'test', str(tmp_path_factory.mktemp('protocol')))
  raw = source[0]
  clip = protocol.prepare_clip(raw, num_frames=4, image_size=32)
  model = transforms.canonicalize({k: raw[k] for k in ('rgb', 'depth', 'intrinsics',
                                                       'cam_to_world')})
  return clip, model


class Oracle:
  """Returns the true clip (RGB, normalized XYZ) for any input, like a perfect model; in camera
  control (cameras given) the RGB is the truth + RGB_OFFSET."""

  def __init__(self, model):
    # A model trained with the sentinel background marks pixels without a surface.
    self.rgb = model['rgb']
    self.xyz = normalization.fill_background(model['xyz'], model['mask'])

  def __call__(self, rgb, rgb_mask, xyz, xyz_mask, cond_mask, rng, cameras=None):
    s, n = rgb.shape[:2]
    out_rgb = np.broadcast_to(self.rgb[:n], rgb.shape).copy()
    if cameras is not None:
      out_rgb[:, 1:] += RGB_OFFSET
    return out_rgb, np.broadcast_to(self.xyz[:n], rgb.shape).copy()


def test_prepare_clip_geometry(clip_and_truth):
  clip, model = clip_and_truth
  np.testing.assert_allclose(clip.relative_path[0], np.eye(4), atol=1e-6)
  np.testing.assert_allclose(clip.cam_to_world[0, :3, :3], np.eye(3), atol=1e-6)
  # Path translations are in units of frame 0's median depth.
  median = np.median(clip.depth[0][clip.mask[0]])
  np.testing.assert_allclose(clip.relative_path[:, :3, 3] * median,
                             clip.metric_cam_to_world[:, :3, 3], rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(clip.rgb, model['rgb'])
  raw = {'rgb': np.zeros((4, 32, 32, 3), np.uint8), 'depth': clip.depth,
         'intrinsics': clip.intrinsics, 'cam_to_world': clip.metric_cam_to_world}
  with pytest.raises(ValueError, match='needs 7'):
    protocol.prepare_clip(raw, num_frames=4, image_size=32, stride=2)


def test_oracle_scores_perfectly(clip_and_truth):
  clip, model = clip_and_truth
  scores, shown = protocol.evaluate_clip(
      Oracle(model), clip, tasks=('mono_depth', 'video_depth', 'novel_view', 'consistency'),
      num_samples=2, alignment='median', has_xyz=True, rng=jax.random.PRNGKey(0))
  # Not 0: the model's XYZ is clipped to [-1, 1], so the few points outside the clip's robust
  # box (2nd-98th percentiles) are displaced; every other pixel's depth is exact.
  assert scores['mono/abs_rel'] < 5e-3 and scores['mono/delta_1_25'] == 1.0
  assert scores['video/abs_rel'] < 5e-3 and scores['video/delta_1_03'] > 0.95
  assert scores['mono_baseline/abs_rel'] > 0.05  # The constant depth is far from it.
  assert np.max(scores['pose/rre']) < 0.1 and np.max(scores['pose/rte']) < 0.5
  assert scores['pose/ate'] < 1e-3
  # 10 log10(range^2 / mse) with range 2 and a uniform 0.1 error: 26.0206 dB.
  np.testing.assert_allclose(scores['nvs/psnr'], 10 * np.log10(4 / RGB_OFFSET ** 2), rtol=1e-4)
  assert scores['nvs/psnr'].shape == (3,)
  assert scores['kpm/generated'] == scores['kpm/ground_truth']
  assert scores['agreement/color_l1'] < 0.05 and scores['agreement/coverage'] > 0.2
  assert shown.video_depth.shape == (4, 32, 32) and shown.novel_frames.shape == (4, 32, 32, 3)
  assert np.all(shown.mono_depth[~clip.mask[0]] == 0)  # Background: no depth.
  assert np.all(shown.mono_depth[clip.mask[0]] > 0)

  pooled = runner.aggregate([scores, scores])
  assert pooled['pose']['rra@5'] == 1.0 and pooled['pose']['maa@30'] > 0.95
  assert pooled['pose_baseline']['rra@5'] <= 1.0
  assert pooled['kpm']['kpm_percent'] == pytest.approx(100.0)
  assert pooled['mono']['num_images'] == 2


def test_rgb_only_runs_consistency_alone(clip_and_truth):
  clip, model = clip_and_truth
  scores, shown = protocol.evaluate_clip(
      Oracle(model), clip, tasks=('mono_depth', 'video_depth', 'novel_view', 'consistency'),
      num_samples=1, alignment='median', has_xyz=False, rng=jax.random.PRNGKey(0))
  assert set(scores) == {'kpm/generated', 'kpm/ground_truth'}
  assert shown.videos_xyz is None and shown.video_depth is None


@pytest.mark.parametrize('alignment', ['median', 'lstsq', 'lstsq_disparity'])
def test_depth_fit_ignores_pixels_without_a_predicted_surface(alignment):
  gt = np.linspace(1.0, 4.0, 64).reshape(8, 8)
  pred = 0.5 * gt
  pred[:2] = 0.0  # 16 of 64 valid pixels: the model saw no surface there.
  scores, aligned = protocol.depth_scores('d', pred, gt, np.ones_like(gt, bool), alignment)
  np.testing.assert_allclose(aligned[2:], gt[2:], rtol=1e-9)  # Exact where predicted.
  assert np.all(aligned[:2] == 0)
  # Each unpredicted pixel is an outlier with |0 - gt| / gt = 1.
  assert scores['d/abs_rel'] == pytest.approx(16 / 64)
  assert scores['d/delta_1_25'] == pytest.approx(48 / 64)
