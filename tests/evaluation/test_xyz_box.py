"""Clipping and sentinel counts of the XYZ normalization, on points with known answers."""
import numpy as np

from tests.conftest import tiny_config
from wvd_jax import errors
from wvd_jax.data import transforms
from wvd_jax.evaluation import xyz_box
from wvd_jax.models import checkpoint_reader


def test_clip_statistics_exact():
  points = np.array([[0.5, 0.0, 0.0],      # inside
                     [1.5, 0.0, 0.0],      # clipped by 0.5 on x
                     [-1.2, 1.1, 0.0],     # clipped on x and y: excess 0.2, shift |(0.2, 0.1)|
                     [-0.95, -0.95, -0.99],  # inside, but at the background corner
                     [-3.0, -0.95, -0.92],   # clipped onto the corner
                     [9.0, 9.0, 9.0]])     # not a surface point: ignored
  surface = np.array([True, True, True, True, True, False])
  s = xyz_box.clip_statistics(points, surface)
  assert (s['points'], s['clipped'], s['at_sentinel'], s['at_sentinel_unclipped']) == (5, 3, 2, 1)
  np.testing.assert_allclose(s['excess'], [0.5, 0.2, 2.0])
  np.testing.assert_allclose(s['shift'], [0.5, np.hypot(0.2, 0.1), 2.0])
  total = xyz_box.summarize([s, xyz_box.clip_statistics(points[:1], surface[:1])])
  assert total['clipped_fraction'] == 3 / 6 and total['clips_with_points_at_sentinel'] == 1
  assert total['at_sentinel_unclipped_fraction'] == 1 / 6
  np.testing.assert_allclose(total['excess']['max'], 2.0)


def test_box_fill_in_the_pipeline_and_the_checkpoint_check():
  """canonicalize with box_fill keeps the clip's robust box inside [-fill, fill]: fewer points
  reach +-1 (clipped) than with the box filling [-1, 1]; a model's fill is an architecture key."""
  rng = np.random.default_rng(0)
  depth = rng.uniform(1.0, 4.0, (2, 16, 16)).astype(np.float32)
  K = np.array([[16.0, 0, 8], [0, 16, 8], [0, 0, 1]], np.float32)
  clip = dict(rgb=np.zeros((2, 16, 16, 3), np.uint8), depth=depth,
              intrinsics=np.broadcast_to(K, (2, 3, 3)), cam_to_world=np.broadcast_to(np.eye(4),
                                                                                   (2, 4, 4)))
  at_edge = {fill: np.mean(np.abs(transforms.canonicalize(clip, box_fill=fill)['xyz'])
                           .max(axis=-1) >= 1.0) for fill in (1.0, 0.8)}
  assert at_edge[1.0] > 0.02 and at_edge[0.8] < at_edge[1.0] / 4, at_edge
  config, stored = tiny_config(), tiny_config()
  stored.data.xyz_box_fill = 0.8
  try:
    checkpoint_reader.check_architecture(config, stored, 'ckpt')
  except errors.UserError as e:
    assert 'data.xyz_box_fill: config 1.0 vs checkpoint 0.8' in str(e)
  else:
    raise AssertionError('a different xyz_box_fill passed the architecture check')
