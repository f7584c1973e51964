"""The minimal renderer's ground truth is exactly consistent, and the pipeline canonicalizes."""
import numpy as np

from wvd_jax.data import minimal_world, pipeline, storage
from wvd_jax.geometry import cameras


def test_xyz_is_the_unprojection_of_depth():
  clip = minimal_world.render_clip(seed=3, num_frames=3, size=24)
  assert clip['mask'].all()  # Inside a closed room every ray hits something.
  xyz = cameras.unproject_depth(clip['depth'], clip['intrinsics'], clip['cam_to_world'])
  np.testing.assert_allclose(xyz, clip['xyz'], atol=2e-5 * np.abs(clip['xyz']).max())


def test_surface_point_seen_twice_has_one_xyz():
  clip = minimal_world.render_clip(seed=5, num_frames=2, size=32)
  # Project frame 0's points into frame 1; where they land unoccluded, frame 1 sees the same XYZ.
  uv, depth = cameras.project_points(clip['xyz'][0].reshape(-1, 3), clip['intrinsics'][1],
                                     clip['cam_to_world'][1])
  uv, depth = np.asarray(uv), np.asarray(depth)
  col, row = np.floor(uv[:, 0]).astype(int), np.floor(uv[:, 1]).astype(int)
  inside = (depth > 0) & (col >= 0) & (col < 32) & (row >= 0) & (row < 32)
  seen_depth = clip['depth'][1][row[inside], col[inside]]
  visible = np.abs(seen_depth - depth[inside]) < 0.02 * depth[inside]
  assert visible.sum() > 100
  # Pixel quantization moves the hit a little: compare within the footprint of one pixel.
  gap = np.linalg.norm(clip['xyz'][1][row[inside], col[inside]][visible]
                       - clip['xyz'][0].reshape(-1, 3)[inside][visible], axis=-1)
  footprint = depth[inside][visible] / clip['intrinsics'][1, 0, 0] * 3
  assert np.mean(gap < footprint) > 0.95


def test_canonical_clip_is_in_frame0_camera_and_normalized():
  clip = minimal_world.render_clip(seed=7, num_frames=3, size=16)
  out = pipeline.canonicalize_clip(clip)
  # Frame 0's camera has the identity rotation; normalization moved it to -center / scale.
  np.testing.assert_allclose(out['cam_to_world'][0, :3, :3], np.eye(3), atol=1e-5)
  np.testing.assert_allclose(out['cam_to_world'][0, :3, 3],
                             -out['norm_center'] / out['norm_scale'], atol=1e-5)
  assert out['xyz'].min() >= -1 and out['xyz'].max() <= 1
  assert out['rgb'].min() >= -1 and out['rgb'].max() <= 1
  # Frame 0's XYZ is its own normalized depth unprojected with the identity pose.
  depth0 = clip['depth'][0] / out['norm_scale']
  xyz0 = cameras.unproject_depth(depth0, clip['intrinsics'][0], np.eye(4, dtype=np.float32))
  expected = np.clip(xyz0 - out['norm_center'] / out['norm_scale'], -1, 1)
  np.testing.assert_allclose(out['xyz'][0], expected, atol=1e-4)


def test_split_cache_is_reused_and_corruption_is_named(tmp_path):
  first = storage.build_split(str(tmp_path), 'test', 2, 2, 8, seed=0)
  path = storage.split_path(str(tmp_path), 'test', 2, 2, 8, seed=0)
  again = storage.build_split(str(tmp_path), 'test', 2, 2, 8, seed=0)
  for key in storage.FIELDS:
    np.testing.assert_array_equal(first[key], again[key])
  with open(path, 'r+b') as f:
    f.truncate(100)
  try:
    storage.load_split(path)
  except ValueError as e:
    assert path in str(e)
  else:
    raise AssertionError('a truncated file must fail')


def test_splits_hold_different_scenes(tmp_path):
  train = storage.build_split(str(tmp_path), 'train', 2, 1, 8, seed=0)
  test = storage.build_split(str(tmp_path), 'test', 2, 1, 8, seed=0)
  assert not np.array_equal(train['rgb'], test['rgb'])


def test_pipeline_is_deterministic_and_processes_disjoint(tmp_path, config):
  config.data.batch_size = 2
  take = lambda ds, n: [b for _, b in zip(range(n), ds)]
  a = take(pipeline.make_dataset(config, 'train', str(tmp_path)), 3)
  b = take(pipeline.make_dataset(config, 'train', str(tmp_path)), 3)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x['rgb'], y['rgb'])
  assert a[0]['rgb'].shape == (2, 4, 16, 16, 3)
  # batch_size is global: each of 2 processes gets batches of 1 from its half of 8 scenes.
  p0 = take(pipeline.make_dataset(config, 'train', str(tmp_path), process_index=0,
                                  process_count=2, repeat=False), 10)
  p1 = take(pipeline.make_dataset(config, 'train', str(tmp_path), process_index=1,
                                  process_count=2, repeat=False), 10)
  assert p0[0]['rgb'].shape[0] == 1 and len(p0) == len(p1) == 4
  seen0 = {x.tobytes() for b in p0 for x in b['rgb']}
  seen1 = {x.tobytes() for b in p1 for x in b['rgb']}
  assert len(seen0) == 4 and len(seen1) == 4 and not seen0 & seen1
