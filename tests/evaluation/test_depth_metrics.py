"""Depth alignment, errors and dataset aggregation against hand-computed answers."""
import numpy as np
import pytest

from wvd_jax.evaluation import depth_metrics

ALL = np.ones((2, 2), bool)


def test_errors_of_a_2x2_image_by_hand():
  gt = np.array([[1.0, 2.0], [4.0, 8.0]])
  pred = np.array([[1.0, 2.5], [3.0, 8.0]])
  # Per pixel |p - g| / g = 0, 0.25, 0.25, 0; ratios max(p/g, g/p) = 1, 1.25, 4/3, 1.
  e = depth_metrics.depth_errors(pred, gt, ALL)
  assert e['abs_rel'] == pytest.approx(0.125)
  assert e['sq_rel'] == pytest.approx((0.25 / 2 + 1 / 4) / 4)
  assert e['rmse'] == pytest.approx(np.sqrt((0.25 + 1) / 4))
  assert e['log_rmse'] == pytest.approx(np.sqrt((np.log(1.25) ** 2 + np.log(0.75) ** 2) / 4))
  assert e['delta_1_25'] == 0.5          # 1.25 itself is not < 1.25.
  assert e['delta_1_25_2'] == 1.0
  assert e['delta_1_25_3'] == 1.0
  assert e['delta_1_03'] == 0.5
  assert e['num_valid'] == 4


def test_invalid_and_nonpositive_gt_pixels_are_not_scored():
  gt = np.array([[1.0, 0.0], [np.nan, 2.0]])
  pred = np.array([[2.0, 5.0], [7.0, 2.0]])
  valid = np.array([[True, True], [True, True]])
  e = depth_metrics.depth_errors(pred, gt, valid)
  assert e['num_valid'] == 2 and e['abs_rel'] == pytest.approx(0.5)
  e = depth_metrics.depth_errors(pred, gt, np.array([[False, True], [True, True]]))
  assert e['num_valid'] == 1 and e['abs_rel'] == 0.0


def test_zero_or_negative_prediction_is_an_outlier():
  gt = np.array([[1.0, 2.0], [3.0, 4.0]])
  for bad in (0.0, -2.0):
    pred = gt.copy()
    pred[0, 1] = bad
    e = depth_metrics.depth_errors(pred, gt, ALL)
    assert e['delta_1_03'] == 0.75 and e['delta_1_25_3'] == 0.75
    assert np.isfinite(e['log_rmse']) and e['log_rmse'] > 1.0
  # Clipping to [0.1, 100] (video protocol) turns 0 into 0.1: still an outlier, AbsRel by hand.
  pred = gt.copy()
  pred[0, 1] = 0.0
  e = depth_metrics.depth_errors(pred, gt, ALL, clip=(0.1, 100.0))
  assert e['abs_rel'] == pytest.approx((1.9 / 2) / 4)
  assert e['delta_1_03'] == 0.75
  e = depth_metrics.depth_errors(gt * 1000, gt, ALL, clip=(0.1, 100.0))
  assert e['abs_rel'] == pytest.approx(np.mean((100 - gt) / gt))


def test_median_alignment_removes_scale():
  gt = np.array([[1.0, 2.0], [4.0, 8.0]])
  aligned, scale, shift = depth_metrics.align_depth(3 * gt, gt, ALL, method='median')
  assert scale == pytest.approx(1 / 3) and shift == 0.0
  e = depth_metrics.depth_errors(aligned, gt, ALL)
  assert e['abs_rel'] == pytest.approx(0.0, abs=1e-12) and e['delta_1_03'] == 1.0


def test_lstsq_recovers_scale_and_shift():
  gt = np.array([[1.0, 2.0], [4.0, 8.0]])
  aligned, scale, shift = depth_metrics.align_depth(2 * gt + 1, gt, ALL, method='lstsq')
  assert scale == pytest.approx(0.5) and shift == pytest.approx(-0.5)
  np.testing.assert_allclose(aligned, gt, atol=1e-12)


def test_lstsq_disparity_recovers_and_clamps():
  gt = np.array([[1.0, 2.0], [4.0, 0.0]])
  # Disparities: 1 / gt = 2 / pred - 0.25 on the three valid pixels.
  gt_disp = np.array([1.0, 0.5, 0.25])
  d_pred = (gt_disp + 0.25) / 2
  pred = np.array([[1 / d_pred[0], 1 / d_pred[1]], [1 / d_pred[2], 10.0]])
  valid = np.array([[True, True], [True, False]])
  aligned, scale, shift = depth_metrics.align_depth(pred, gt, valid, method='lstsq_disparity')
  assert scale == pytest.approx(2.0) and shift == pytest.approx(-0.25)
  np.testing.assert_allclose(aligned[valid], gt[valid], rtol=1e-12)
  # The unfitted pixel: disparity 2 / 10 - 0.25 < 0 -> clamped to 1e-3 -> depth 1000.
  assert aligned[1, 1] == pytest.approx(1000.0)
  pred[1, 1] = 0.0
  aligned, _, _ = depth_metrics.align_depth(pred, gt, valid, method='lstsq_disparity')
  assert aligned[1, 1] == 0.0  # No depth for a non-positive prediction.


def test_sequence_alignment_uses_one_scale():
  frame = np.array([[1.0, 2.0], [3.0, 4.0]])
  gt = np.stack([frame, frame])
  pred = np.stack([frame, 2 * frame])
  valid = np.ones_like(gt, bool)
  aligned, scale, _ = depth_metrics.align_depth(pred, gt, valid, method='median')
  # median(gt) = 2.5, median(pred) = median(1, 2, 2, 3, 4, 4, 6, 8) = 3.5.
  assert scale == pytest.approx(5 / 7)
  # Frame 0 is 5/7 of the truth (AbsRel 2/7), frame 1 is 10/7 (AbsRel 3/7).
  e = depth_metrics.depth_errors(aligned, gt, valid)
  assert e['abs_rel'] == pytest.approx(5 / 14) and e['num_valid'] == 8
  per_frame = [depth_metrics.align_depth(pred[i], gt[i], valid[i])[0] for i in range(2)]
  assert depth_metrics.depth_errors(np.stack(per_frame), gt, valid)['abs_rel'] == pytest.approx(0)


def test_none_method_and_nonfinite_predictions_outside_the_fit():
  gt = np.array([[1.0, 2.0], [4.0, 8.0]])
  aligned, scale, shift = depth_metrics.align_depth(gt * 2, gt, ALL, method='none')
  np.testing.assert_array_equal(aligned, gt * 2)
  assert (scale, shift) == (1.0, 0.0)
  pred = 3 * gt
  pred[0, 0] = np.nan
  _, scale, _ = depth_metrics.align_depth(pred, gt, ALL)
  assert scale == pytest.approx(1 / 3)  # median over the three finite predictions.


def test_aggregate_weights_images_by_valid_pixels():
  gt = np.array([[1.0, 2.0], [4.0, 8.0]])
  one_pixel = np.array([[True, False], [False, False]])
  a = depth_metrics.depth_errors(np.full((2, 2), 1.4), gt, one_pixel)  # AbsRel 0.4, RMSE 0.4
  b = depth_metrics.depth_errors(gt, gt, ALL)                          # exact, 4 pixels
  out = depth_metrics.aggregate([a, b])
  assert out['abs_rel'] == pytest.approx(0.4 / 5)
  assert out['rmse'] == pytest.approx(np.sqrt(0.16 / 5))  # RMSE over the pooled pixels.
  assert out['delta_1_25'] == pytest.approx(4 / 5)
  assert out['num_valid'] == 5 and out['num_images'] == 2
  assert depth_metrics.aggregate([b])['abs_rel'] == 0.0


def test_bad_inputs_raise():
  gt = np.array([[1.0, 2.0], [4.0, 8.0]])
  with pytest.raises(ValueError, match='shape mismatch'):
    depth_metrics.depth_errors(gt[:1], gt, ALL)
  with pytest.raises(ValueError, match='shape mismatch'):
    depth_metrics.align_depth(gt, gt, ALL[:1])
  with pytest.raises(ValueError, match='no valid pixels'):
    depth_metrics.depth_errors(gt, gt, np.zeros((2, 2), bool))
  with pytest.raises(ValueError, match='no valid pixels'):
    depth_metrics.align_depth(-gt, gt, ALL, method='median')
  with pytest.raises(ValueError, match='NaN'):
    depth_metrics.depth_errors(np.where(ALL, np.nan, 1.0), gt, ALL)
  with pytest.raises(ValueError, match='unknown alignment'):
    depth_metrics.align_depth(gt, gt, ALL, method='mean')
  with pytest.raises(ValueError, match='lo < hi'):
    depth_metrics.depth_errors(gt, gt, ALL, clip=(1.0, 0.1))
  with pytest.raises(ValueError, match='at least one'):
    depth_metrics.aggregate([])
  e = depth_metrics.depth_errors(gt, gt, ALL)
  with pytest.raises(ValueError, match='keys'):
    depth_metrics.aggregate([e, {k: v for k, v in e.items() if k != 'rmse'}])
