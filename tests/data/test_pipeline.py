"""The grain pipeline: exact crop / resize, canonical frames, determinism, resume, sharding."""
import json

import numpy as np
import pytest

from wvd_jax import config_lib
from wvd_jax.data import clips, pipeline, synthetic_world, transforms
from wvd_jax.geometry import cameras


def _take(ds, n):
  return [b for _, b in zip(range(n), ds)]


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key], err_msg=key)


@pytest.fixture
def tiny(config, tmp_path):
  config.data.batch_size = 2
  config.data.data_dir = str(tmp_path / 'data')
  return config


def test_batches_have_the_model_layout(tiny, tmp_path):
  batch = next(iter(pipeline.make_dataset(tiny, 'train', str(tmp_path))))
  b, n, s = 2, tiny.data.num_frames, tiny.data.image_size
  shapes = dict(rgb=(b, n, s, s, 3), xyz=(b, n, s, s, 3), mask=(b, n, s, s),
                intrinsics=(b, n, 3, 3), cam_to_world=(b, n, 4, 4), norm_center=(b, 3),
                norm_scale=(b,), source=(b,), xyz_valid=(b, n, s, s))
  assert {k: v.shape for k, v in batch.items()} == shapes
  assert batch['mask'].dtype == bool and batch['rgb'].dtype == np.float32
  assert -1 <= batch['rgb'].min() and batch['rgb'].max() <= 1
  assert -1 <= batch['xyz'].min() and batch['xyz'].max() <= 1
  assert not batch['xyz'][~batch['mask']].any()


def test_deterministic_resumable_and_disjoint(tiny, tmp_path):
  workdir = str(tmp_path)
  first = _take(pipeline.make_dataset(tiny, 'train', workdir), 5)
  _assert_batches_equal(first, _take(pipeline.make_dataset(tiny, 'train', workdir), 5))
  # Resume: a fresh iterator restored to the state after 2 batches continues with batch 3.
  it = iter(pipeline.make_dataset(tiny, 'train', workdir))
  _take(it, 2)
  state = json.loads(json.dumps(it.get_state()))  # What a checkpoint stores.
  resumed = iter(pipeline.make_dataset(tiny, 'train', workdir))
  resumed.set_state(state)
  _assert_batches_equal(first[2:], _take(resumed, 3))
  # Another seed: another order.
  tiny.seed = 1
  tiny.data.data_dir = str(tmp_path / 'data1')
  other = _take(pipeline.make_dataset(tiny, 'train', workdir), 1)
  assert not np.array_equal(other[0]['rgb'], first[0]['rgb'])
  # Two JAX processes: batches of 1 from disjoint halves of the 8 training clips. With
  # num_frames == rendered frames the canonical RGB identifies its clip.
  tiny.seed = 0
  tiny.data.data_dir = str(tmp_path / 'data')
  shares = [_take(pipeline.make_dataset(tiny, 'train', workdir, process_index=p, process_count=2,
                                        repeat=False), 10) for p in (0, 1)]
  seen = [{x.tobytes() for b in share for x in b['rgb']} for share in shares]
  assert all(len(share) == 4 and share[0]['rgb'].shape[0] == 1 for share in shares)
  assert len(seen[0]) == len(seen[1]) == 4 and not seen[0] & seen[1]
  everything = _take(pipeline.make_dataset(tiny, 'train', workdir, repeat=False, shuffle=False), 9)
  assert seen[0] | seen[1] == {x.tobytes() for b in everything for x in b['rgb']}


def test_random_stride_frames_come_from_the_clip(tiny, tmp_path):
  tiny.data.num_frames, tiny.data.max_frame_stride = 2, 3  # Renders 4 frames, picks 2.
  tiny.data.batch_size = 1
  assert config_lib.render_frames(tiny) == 4
  source = pipeline.load_split(tiny, 'train', str(tmp_path))
  ds = pipeline.make_dataset(tiny, 'train', str(tmp_path), shuffle=False)
  strides = set()
  for i, batch in zip(range(16), ds):  # Two epochs of the 8 clips.
    frames = source[i % len(source)]['rgb'].astype(np.float32) / 127.5 - 1
    picked = [int(np.argmin(np.abs(frames - f).reshape(4, -1).max(1))) for f in batch['rgb'][0]]
    for f, k in zip(batch['rgb'][0], picked):
      np.testing.assert_allclose(f, frames[k], atol=1e-6)
    strides.add(picked[1] - picked[0])
  assert strides <= {1, 2, 3} and len(strides) > 1


def test_model_clip_matches_the_training_transform(tiny, tmp_path):
  tiny.data.num_frames, tiny.data.max_frame_stride = 2, 3
  tiny.data.image_size = 8  # 16 rendered -> 8.
  clip = pipeline.load_split(tiny, 'test', str(tmp_path))[0]
  out = pipeline.model_clip(tiny, clip, start=1, stride=2)
  assert out['rgb'].shape == (2, 8, 8, 3) and out['xyz'].shape == (2, 8, 8, 3)
  manual = transforms.canonicalize(transforms.crop_and_resize(
      transforms.select_frames({k: clip[k] for k in ('rgb', 'depth', 'intrinsics', 'cam_to_world')},
                               np.array([1, 3])), 8))
  for key in out:
    np.testing.assert_array_equal(out[key], manual[key])
  with pytest.raises(ValueError, match='not all in the clip'):
    pipeline.model_clip(tiny, clip, start=2, stride=3)


def test_frame_indices_cover_strides_and_starts():
  rng = np.random.default_rng(0)
  draws = [transforms.frame_indices(10, 4, 5, rng) for _ in range(300)]
  strides = {int(d[1] - d[0]) for d in draws}
  assert strides == {1, 2, 3}  # (10 - 1) // 3 = 3 is the largest usable stride.
  assert all(d.min() >= 0 and d.max() <= 9 and len(set(np.diff(d))) == 1 for d in draws)
  assert {int(d[0]) for d in draws} == set(range(7))
  with pytest.raises(ValueError, match='cannot give'):
    transforms.frame_indices(3, 4, 1, rng)


def _plane_depth(K, cam_to_world, height, width):
  """Exact z-depth of a back wall z = 4 and a square panel z = 2.5 (|x|, |y| < 0.9): planes only,
  so inverse depth is affine in the pixel coordinates on each of them."""
  rays = cameras.pixel_rays(K, height, width)  # (H, W, 3), z = 1.
  d = rays @ cam_to_world[:3, :3].T
  o = cam_to_world[:3, 3]
  depth = (4.0 - o[2]) / d[..., 2]
  t = (2.5 - o[2]) / d[..., 2]
  p = o + t[..., None] * d
  panel = (np.abs(p[..., 0]) < 0.9) & (np.abs(p[..., 1]) < 0.9) & (t > 0)
  return np.where(panel, t, depth).astype(np.float32)


def test_crop_resize_is_exact_and_never_blurs_depth_edges():
  pose = np.eye(4, dtype=np.float32)
  pose[:3, 3] = [0.1, -0.05, 0.0]
  yaw = 0.2
  pose[:3, :3] = [[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]]
  h, w, size = 24, 36, 12  # Non-square: centre crop 24 x 24, then 2x down.
  K = np.asarray(cameras.make_intrinsics(30.0, 30.0, w / 2 + 0.3, h / 2 - 0.2), np.float32)
  depth = _plane_depth(K, pose, h, w)
  rgb = np.random.default_rng(0).integers(0, 255, (1, h, w, 3), dtype=np.uint8)
  clip = dict(rgb=rgb, depth=depth[None], intrinsics=K[None], cam_to_world=pose[None],
              xyz=np.zeros((1, h, w, 3), np.float32), mask=np.ones((1, h, w), bool))
  out = transforms.crop_and_resize(clip, size)
  K2 = out['intrinsics'][0]
  np.testing.assert_allclose(K2, [[15, 0, 6.15], [0, 15, 5.9], [0, 0, 1]], rtol=1e-6)
  # XYZ is exactly the unprojection of the resized depth with the adjusted K (clips.unproject:
  # geometry's unproject_depth to float32 rounding).
  np.testing.assert_array_equal(out['xyz'][0], clips.unproject(out['depth'][0], K2, pose))
  np.testing.assert_allclose(out['xyz'][0], cameras.unproject_depth(out['depth'][0], K2, pose),
                             rtol=1e-6, atol=1e-6)
  # On planes the resized depth is what a camera with K' sees, to float precision ...
  truth = _plane_depth(K2, pose, size, size)
  rel = np.abs(out['depth'][0] - truth) / truth
  assert np.mean(rel < 1e-5) > 0.75, np.mean(rel < 1e-5)
  # ... and at the panel's edges it is one of the source depths, never a blend of both planes.
  src = depth[:, 6:30]
  blocks = np.stack([src[0::2, 0::2], src[0::2, 1::2], src[1::2, 0::2], src[1::2, 1::2]])
  edge = blocks.max(0) > 1.1 * blocks.min(0)
  assert edge.sum() >= 8
  assert np.all(np.any(out['depth'][0][None] == blocks, axis=0)[edge])
  assert out['rgb'].shape == (1, size, size, 3)
  np.testing.assert_allclose(out['rgb'][0, 0, 0], rgb[0, :2, 6:8].reshape(-1, 3).mean(0), atol=1)
  # A frame already at the target size passes through untouched.
  same = transforms.crop_and_resize(dict(clip, depth=depth[None, :, 6:30],
                                         rgb=rgb[:, :, 6:30]), 24)
  np.testing.assert_array_equal(same['depth'], depth[None, :, 6:30])


def test_canonical_clip_is_in_frame0_camera_and_normalized():
  clip = synthetic_world.render_clip(7, 'train', 0, 4, 16)
  out = pipeline.canonicalize_clip(clip)
  np.testing.assert_allclose(out['cam_to_world'][0, :3, :3], np.eye(3), atol=1e-5)
  np.testing.assert_allclose(out['cam_to_world'][0, :3, 3],
                             -out['norm_center'] / out['norm_scale'], atol=1e-5)
  assert out['xyz'].min() >= -1 and out['xyz'].max() <= 1
  assert out['rgb'].min() >= -1 and out['rgb'].max() <= 1
  # Frame 0's XYZ is its own normalized depth unprojected with the identity pose.
  depth0 = clip['depth'][0] / out['norm_scale']
  xyz0 = cameras.unproject_depth(depth0, clip['intrinsics'][0], np.eye(4, dtype=np.float32))
  expected = np.clip(xyz0 - out['norm_center'] / out['norm_scale'], -1, 1)
  m = clip['mask'][0]
  np.testing.assert_allclose(out['xyz'][0][m], expected[m], atol=1e-4)
  # Undoing N and frame 0's pose gives back the world XYZ the source returns.
  world = (out['xyz'] * out['norm_scale'] + out['norm_center'])
  world = cameras.transform_points(clip['cam_to_world'][0], world)
  inside = clip['mask'] & (np.abs(out['xyz']) < 1).all(-1)
  np.testing.assert_allclose(world[inside], clip['xyz'][inside], atol=1e-4)


def test_worker_processes_give_the_same_batches_and_resume(tiny, tmp_path):
  workdir = str(tmp_path)
  expected = _take(pipeline.make_dataset(tiny, 'train', workdir), 4)
  tiny.data.worker_count = 1  # Each worker start costs seconds (imports in a fresh process).
  it = iter(pipeline.make_dataset(tiny, 'train', workdir))
  try:
    _assert_batches_equal(expected[:2], _take(it, 2))
    state = json.loads(json.dumps(it.get_state()))
  finally:
    it.close()
  resumed = iter(pipeline.make_dataset(tiny, 'train', workdir))
  try:
    resumed.set_state(state)
    _assert_batches_equal(expected[2:], _take(resumed, 2))
  finally:
    resumed.close()


def test_valid_mask_travels_to_the_batch_and_bounds_the_normalization():
  """Unknown pixels (valid False) leave the normalization, the mask and XYZ; resizing takes the
  nearest pixel's validity; a clip without ``valid`` (the synthetic world) is all valid."""
  from wvd_jax.geometry import normalization  # pylint: disable=import-outside-toplevel
  clip = synthetic_world.render_clip(3, 'train', 0, 4, 16, object_fraction=0.0)
  full = transforms.canonicalize(clips.stored_fields(clip))
  assert full['xyz_valid'].all()
  np.testing.assert_array_equal(full['mask'], clip['depth'] > 0)
  valid = np.ones(clip['depth'].shape, bool)
  valid[:, :, :6] = False  # The left columns unknown; their depth is garbage.
  stored = {k: clip[k] for k in clips.STORED_FIELDS}
  stored['depth'] = np.where(valid, clip['depth'], 1e4).astype(np.float32)
  stored['valid'] = valid
  out = transforms.canonicalize(clips.stored_fields(stored))
  np.testing.assert_array_equal(out['xyz_valid'], valid)
  np.testing.assert_array_equal(out['mask'], valid & (clip['depth'] > 0))
  assert not out['xyz'][~valid].any()
  c2w = clip['cam_to_world']
  relative = np.asarray(np.linalg.inv(c2w[0]) @ c2w, np.float32)
  points = clips.unproject(clip['depth'], clip['intrinsics'], relative)
  norm = normalization.fit_normalization(points, out['mask'])
  np.testing.assert_allclose(out['norm_center'], norm.center, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out['norm_scale'], norm.scale, rtol=1e-5)
  # 2x down: validity of the nearest source pixel; interpolated depth only from valid pixels.
  small = transforms.crop_and_resize(clips.stored_fields(stored), 8)
  np.testing.assert_array_equal(small['valid'], valid[:, 1::2, 1::2])
  assert not small['depth'][~small['valid']].any()
  assert small['depth'].max() < 1e3


def test_worker_count_minus_one_is_one_per_core_less_one(monkeypatch):
  monkeypatch.setattr(pipeline.os, 'sched_getaffinity', lambda pid: set(range(16)))
  assert pipeline.resolve_worker_count(-1) == 15
  monkeypatch.setattr(pipeline.os, 'sched_getaffinity', lambda pid: {0})
  assert pipeline.resolve_worker_count(-1) == 1  # Never 0 workers: -1 asks for processes.
  assert pipeline.resolve_worker_count(3) == 3
  with pytest.raises(ValueError, match='worker_count'):
    pipeline.resolve_worker_count(-2)
