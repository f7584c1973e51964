"""Sim(3) alignment: exact on exact data."""
import numpy as np
import pytest

from tests.geometry import scenes
from wvd_jax.geometry import anchoring


def _random_similarity(seed):
  rng = np.random.default_rng(seed)
  return anchoring.Similarity(float(rng.uniform(0.2, 5)), scenes.random_rotation(rng, 1)[0],
                              rng.normal(size=3) * 3)


def test_umeyama_recovers_a_similarity():
  sim = _random_similarity(0)
  src = np.random.default_rng(1).normal(size=(50, 3))
  dst = sim.points(src)
  est = anchoring.umeyama(src, dst)
  np.testing.assert_allclose(est.scale, sim.scale, rtol=1e-10)
  np.testing.assert_allclose(est.rotation, sim.rotation, atol=1e-10)
  np.testing.assert_allclose(est.points(src), dst, atol=1e-9)
  # Outliers with zero weight do not matter.
  dst_bad = dst.copy()
  dst_bad[:5] += 10
  w = np.ones(50)
  w[:5] = 0
  np.testing.assert_allclose(anchoring.umeyama(src, dst_bad, w).points(src[5:]), dst[5:],
                             atol=1e-9)
  with pytest.raises(ValueError, match='at least 3'):
    anchoring.umeyama(src[:2], dst[:2])


def test_cameras_aligned_from_one_or_many():
  clip = scenes.box_room(3, n_views=5, size=8)
  sim = _random_similarity(2)
  moved = sim.poses(clip['cam_to_world'])
  est = anchoring.similarity_from_cameras(clip['cam_to_world'], moved)
  np.testing.assert_allclose(est.poses(clip['cam_to_world']), moved, atol=1e-9)
  one = anchoring.similarity_from_cameras(clip['cam_to_world'][:1], moved[:1])
  assert one.scale == 1.0
  np.testing.assert_allclose(one.rotation, sim.rotation, atol=1e-10)
  np.testing.assert_allclose(one.poses(clip['cam_to_world'][:1]), moved[:1], atol=1e-9)


def test_metric_scale():
  assert anchoring.metric_scale(2.0, 3.0) == 1.5
  with pytest.raises(ValueError, match='positive'):
    anchoring.metric_scale(2.0, 0.0)
