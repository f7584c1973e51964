"""Converters: every format's fixture converts back to the synthetic truth; the trainer's view."""
import os

import numpy as np
import pytest

from tests.data import convert_fixtures as fx
from wvd_jax.data import convert, converted, storage, transforms
from wvd_jax.data.formats import co3d, common
from wvd_jax.errors import UserError

PARAMS = converted.ClipParams(image_size=fx.HEIGHT, frames=3, stride=1)


def _convert(fmt, input_dir, output, depth='', **kwargs):
  options = common.FormatOptions(input=str(input_dir), depth=str(depth) if depth else '')
  return convert.convert(fmt, options, str(output), PARAMS, split='train', progress=False,
                         log=lambda line: None, **kwargs)


def _check_scene(output, name, truth, names, *, jpeg=False):
  got = convert.read_scene(str(output), name)
  assert got['names'] == names
  np.testing.assert_array_equal(got['indices'], np.arange(fx.FRAMES))
  np.testing.assert_allclose(got['intrinsics'], truth['intrinsics'], atol=1e-5, rtol=0)
  np.testing.assert_allclose(got['cam_to_world'], truth['cam_to_world'], atol=1e-5, rtol=0)
  np.testing.assert_array_equal(got['depth'] > 0, truth['depth'] > 0)
  np.testing.assert_allclose(got['depth'], truth['depth'], rtol=1e-4, atol=0)
  if jpeg:  # Lossy: the mean error of a good JPEG.
    assert np.abs(got['rgb'].astype(int) - truth['rgb']).mean() < 4
  else:
    np.testing.assert_array_equal(got['rgb'], truth['rgb'])
  return got


def _check_trainer_view(output, truth):
  """Every stored clip, canonicalized as the trainer does, has the truth's XYZ to 1e-4."""
  source = storage.DirectoryClipSource(str(output), 'train', complete=False)
  assert len(source) == 3  # Windows [0, 1, 2], [2, 3, 4] and the last, [3, 4, 5].
  seen = set()
  for i in range(len(source)):
    clip = source[i]
    # Which frames: the clip's first camera matches one truth pose exactly.
    start = int(np.argmin(np.abs(truth['cam_to_world'] - clip['cam_to_world'][0]).sum((1, 2))))
    seen.add(start)
    want = transforms.canonicalize({k: np.asarray(v[start:start + 3], np.float32)
                                    if k != 'rgb' else v[start:start + 3]
                                    for k, v in truth.items()})
    got = transforms.canonicalize(clip)
    np.testing.assert_array_equal(got['mask'], want['mask'])
    np.testing.assert_allclose(got['xyz'], want['xyz'], atol=1e-4, rtol=0)
  assert seen == {0, 2, 3}


@pytest.mark.parametrize('binary', [False, True])
def test_colmap_round_trip(tmp_path, binary):
  scene = fx.synthetic_scene()
  fx.write_colmap(str(tmp_path / 'garden'), scene, binary=binary)
  summary = _convert('colmap', tmp_path / 'garden', tmp_path / 'out')
  assert (summary.scenes, summary.clips, summary.frames, summary.skipped) == (1, 3, 6, [])
  truth = fx.cropped_truth(scene)
  _check_scene(tmp_path / 'out', 'garden', truth, fx.COLMAP_NAMES)
  if not binary:
    _check_trainer_view(tmp_path / 'out', truth)
  assert not os.path.exists(str(tmp_path / 'out') + convert.PARTIAL_SUFFIX)


def test_colmap_simple_pinhole_with_png_depth_from_depth_flag(tmp_path):
  scene = fx.synthetic_scene()
  fx.write_colmap(str(tmp_path / 'in' / 'truck'), scene, mvs_depth=False,
                  camera_model='SIMPLE_PINHOLE')
  millimetres = np.round(scene['depth'] * 1000)
  for i, name in enumerate(fx.COLMAP_NAMES):
    fx.png16(str(tmp_path / 'depth' / 'truck' / name), millimetres[i])
  options = common.FormatOptions(input=str(tmp_path / 'in'), depth=str(tmp_path / 'depth'),
                                 depth_scale=0.001)
  convert.convert('colmap', options, str(tmp_path / 'out'), PARAMS, split='train',
                  progress=False)
  got = convert.read_scene(str(tmp_path / 'out'), 'truck')
  K = fx.cropped_truth(scene)['intrinsics'][0].copy()
  K[1, 1] = K[0, 0]  # SIMPLE_PINHOLE: one focal length.
  np.testing.assert_allclose(got['intrinsics'], np.broadcast_to(K, (fx.FRAMES, 3, 3)), atol=1e-5)
  want = fx.cropped_truth(scene, (millimetres * 0.001).astype(np.float32))['depth']
  np.testing.assert_allclose(got['depth'], want, rtol=1e-6, atol=0)


def test_co3d_legacy_ndc_bounds_intrinsics():
  # 'ndc_norm_image_bounds': x scaled by W / 2, y by H / 2; +X left, +Y up.
  K = co3d.ndc_to_pixels([2.0, 3.0], [0.1, -0.2], 'ndc_norm_image_bounds', 30, 50, 'test')
  np.testing.assert_allclose(K, [[50.0, 0, 25 - 0.1 * 25], [0, 45.0, 15 + 0.2 * 15], [0, 0, 1]])
  with pytest.raises(UserError, match='intrinsics_format'):
    co3d.ndc_to_pixels([2.0, 3.0], [0, 0], 'screen', 30, 50, 'frame_annotations.jgz')


def test_co3d_camera_conversion_matches_pytorch3d_projection():
  """The classic trap: project world points with PyTorch3D's own formulas (row vectors, +X
  left, +Y up, NDC of the shorter side) and with the converted OpenCV camera."""
  scene = fx.synthetic_scene()
  K, c2w = scene['K'], scene['cam_to_world'][2]
  R, T, focal, principal = fx.pytorch3d_camera(K, c2w)
  points = np.asarray(transforms.unproject(scene['depth'][2:3], K, c2w[None]))[0]
  points = points[scene['depth'][2] > 0]
  x_cam = points @ R + T
  ndc = np.asarray(focal) * x_cam[:, :2] / x_cam[:, 2:] + np.asarray(principal)
  s = min(fx.WIDTH, fx.HEIGHT) / 2
  pixels_p3d = np.array([fx.WIDTH / 2, fx.HEIGHT / 2]) - ndc * s
  K_cv = co3d.ndc_to_pixels(focal, principal, 'ndc_isotropic', fx.HEIGHT, fx.WIDTH, 'test')
  c2w_cv = co3d.pytorch3d_to_cam_to_world(R, T)
  cam = (points - c2w_cv[:3, 3]) @ c2w_cv[:3, :3]
  pixels_cv = (cam @ K_cv.T)[:, :2] / cam[:, 2:]
  np.testing.assert_allclose(pixels_cv, pixels_p3d, atol=1e-5)
  # And both land on the pixel centres the points were unprojected from.
  rows, cols = np.nonzero(scene['depth'][2] > 0)
  np.testing.assert_allclose(pixels_cv, np.stack([cols + 0.5, rows + 0.5], -1), atol=1e-3)
  np.testing.assert_allclose(K_cv, K, atol=1e-9)
  np.testing.assert_allclose(c2w_cv, c2w, atol=1e-9)


def test_co3d_round_trip(tmp_path):
  scene = fx.synthetic_scene()
  fx.write_co3d(str(tmp_path / 'co3d'), 'teddybear', ['34_1479_4753', '35_1500_4800'], scene)
  summary = _convert('co3d', tmp_path / 'co3d', tmp_path / 'out')
  assert (summary.scenes, summary.clips, summary.skipped) == (2, 6, [])
  truth = fx.cropped_truth(scene, fx.co3d_depth(scene))
  names = [f'frame{i + 1:06d}.jpg' for i in range(fx.FRAMES)]
  # Depth: the float16 PNG's values exactly (2^-11 relative to the true depth, checked below);
  # RGB through JPEG (quality 95).
  got = _check_scene(tmp_path / 'out', 'teddybear/34_1479_4753', truth, names, jpeg=True)
  exact = fx.cropped_truth(scene)['depth']
  known = got['depth'] > 0
  np.testing.assert_allclose(got['depth'][known], exact[known], rtol=2.0 ** -11, atol=0)
  assert not known[(slice(None), slice(0, 4), slice(0, 5))].any()  # Depth-mask holes.
  convert.read_scene(str(tmp_path / 'out'), 'teddybear/35_1500_4800')


@pytest.mark.parametrize('with_depth', [True, False])
def test_re10k_round_trip(tmp_path, with_depth):
  scene = fx.synthetic_scene()
  depth_dir = tmp_path / 'depth' if with_depth else ''
  fx.write_re10k(str(tmp_path / 're10k'), '0a1b2c3d4e5f', scene,
                 str(depth_dir) if with_depth else None)
  summary = _convert('re10k', tmp_path / 're10k', tmp_path / 'out', depth=depth_dir)
  assert (summary.scenes, summary.clips, summary.skipped) == (1, 3, [])
  truth = fx.cropped_truth(scene, fx.re10k_depth(scene, with_depth))
  _check_scene(tmp_path / 'out', '0a1b2c3d4e5f', truth, fx.RE10K_TIMESTAMPS)
  source = storage.DirectoryClipSource(str(tmp_path / 'out'), 'train', complete=False)
  example = source._open()[0]  # pylint: disable=protected-access
  np.testing.assert_array_equal(example['valid'], example['depth'] > 0)
  if with_depth:  # One frame came as a point map, one without depth.
    _check_trainer_view(tmp_path / 'out', truth)


def test_scannet_round_trip(tmp_path):
  scene = fx.synthetic_scene()
  fx.write_scannet(str(tmp_path / 'scans'), 'scene0000_00', scene)
  summary = _convert('scannetpp', tmp_path / 'scans', tmp_path / 'out')
  assert (summary.scenes, summary.clips, summary.skipped) == (1, 3, [])
  truth = fx.cropped_truth(scene, fx.scannet_depth(scene))
  # Depth: millimetre PNG, so truth within 0.5 mm; RGB: JPEG at twice the size, area-resized.
  got = _check_scene(tmp_path / 'out', 'scene0000_00', truth, [str(i) for i in range(6)],
                     jpeg=True)
  exact = fx.cropped_truth(scene)['depth']
  assert np.abs(got['depth'] - exact).max() <= 0.5e-3 + 1e-6
  _check_trainer_view(tmp_path / 'out', truth)


def test_scannetpp_iphone_round_trip(tmp_path):
  scene = fx.synthetic_scene()
  extracted = fx.write_scannetpp_iphone(str(tmp_path / 'data'), '0a7cc12c0e', scene)
  summary = _convert('scannetpp', tmp_path / 'data', tmp_path / 'out')
  assert (summary.scenes, summary.frames, summary.skipped) == (1, 5, [])
  got = convert.read_scene(str(tmp_path / 'out'), '0a7cc12c0e')
  assert got['names'] == extracted  # Frame 3 was not extracted: left out.
  keep = [0, 1, 2, 4, 5]
  truth = fx.cropped_truth(scene, fx.scannet_depth(scene))
  np.testing.assert_allclose(got['intrinsics'], truth['intrinsics'][keep], atol=1e-5, rtol=0)
  np.testing.assert_allclose(got['cam_to_world'], truth['cam_to_world'][keep], atol=1e-5, rtol=0)
  np.testing.assert_allclose(got['depth'], truth['depth'][keep], rtol=1e-6, atol=0)
  assert np.abs(got['rgb'].astype(int) - truth['rgb'][keep]).mean() < 4


def test_output_must_not_exist_and_scene_must_exist(tmp_path):
  scene = fx.synthetic_scene()
  fx.write_colmap(str(tmp_path / 'garden'), scene)
  os.makedirs(tmp_path / 'out')
  with pytest.raises(UserError, match='exists'):
    _convert('colmap', tmp_path / 'garden', tmp_path / 'out')
  _convert('colmap', tmp_path / 'garden', tmp_path / 'out2')
  with pytest.raises(UserError, match="no scene 'lawn'"):
    convert.read_scene(str(tmp_path / 'out2'), 'lawn')


def test_clip_windows_cover_the_sequence_and_end_at_its_last_frame():
  params = converted.ClipParams(image_size=8, frames=4, stride=2)
  windows = converted.clip_windows(12, params)
  assert [w.tolist() for w in windows] == [[0, 2, 4, 6], [5, 7, 9, 11]]
  assert [w.tolist() for w in converted.clip_windows(13, params)] == [
      [0, 2, 4, 6], [6, 8, 10, 12]]
  assert converted.clip_windows(6, params) == []  # Shorter than one clip.


def test_camera_motion_and_bounds():
  first = np.eye(4)
  last = np.eye(4)
  angle = np.radians(30)
  last[:3, :3] = [[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]]
  last[:3, 3] = [0.0, 0.0, 1.0]
  depth = np.array([[0.0, 2.0], [2.0, 4.0]])  # Median valid depth 2: distance 0.5 depths.
  rotation, relative = converted.camera_motion(first, last, depth)
  assert rotation == pytest.approx(30.0) and relative == pytest.approx(0.5)
  assert converted.camera_motion(first, last, np.zeros((2, 2)))[1] is None
  ok = converted.ClipParams(max_rotation_deg=31, max_translation=0.6)
  assert converted.motion_ok(ok, rotation, relative)
  assert not converted.motion_ok(converted.ClipParams(max_rotation_deg=29), rotation, relative)
  assert not converted.motion_ok(converted.ClipParams(min_translation=0.6, max_translation=1),
                                 rotation, relative)
  assert converted.motion_ok(ok, rotation, None)  # No depth: rotation only.


def test_scene_without_clips_in_bounds_is_skipped(tmp_path):
  scene = fx.synthetic_scene()
  fx.write_re10k(str(tmp_path / 'in'), 'aaaa', scene)
  fx.write_re10k(str(tmp_path / 'in'), 'bbbb', scene)
  options = common.FormatOptions(input=str(tmp_path / 'in'))
  with pytest.raises(UserError, match='no clip within the motion bounds'):
    convert.convert('re10k', options, str(tmp_path / 'out'),
                    converted.ClipParams(image_size=16, frames=3, max_rotation_deg=0.0),
                    progress=False, log=lambda line: None)


def test_splits_by_scene_name_hash():
  names = [f'scene{i}' for i in range(4000)]
  splits = [converted.split_of(n, 0.1, 0.2) for n in names]
  assert splits == [converted.split_of(n, 0.1, 0.2) for n in names]  # Deterministic.
  assert abs(splits.count('test') / 4000 - 0.2) < 0.03
  assert abs(splits.count('validation') / 4000 - 0.1) < 0.03
  assert set(converted.split_of(n, 0.0, 0.0) for n in names[:50]) == {'train'}


def test_co3d_depth_at_half_resolution_is_brought_to_the_image_size_without_blending():
  depth = np.array([[1.0, 0.0], [2.0, 4.0]], np.float32)
  got = co3d._at_image_size(depth, (4, 4), 'd.png')  # pylint: disable=protected-access
  np.testing.assert_array_equal(got, np.kron(depth, np.ones((2, 2), np.float32)))
  with pytest.raises(UserError, match='d.png: the depth map is 2x2 but its image is 6x4'):
    co3d._at_image_size(depth, (4, 6), 'd.png')  # pylint: disable=protected-access
