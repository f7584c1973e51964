"""The motion curriculum: frame strides (camera motion) grow with the global batch index."""
import numpy as np
import pytest

from tests.conftest import tiny_config
from tests.data.test_pipeline import _assert_batches_equal, _take
from wvd_jax import config_lib
from wvd_jax.data import pipeline, transforms


def _strides(progress, draws=4000, available=10, max_stride=3):
  rng = np.random.default_rng(0)
  out = []
  for _ in range(draws):
    idx = transforms.curriculum_frame_indices(available, 4, max_stride, progress, rng)
    assert idx[0] >= 0 and idx[-1] < available
    out.append(idx[1] - idx[0])
  return np.array(out)


def test_curriculum_stride_distribution():
  np.testing.assert_array_equal(_strides(0.0), 1)
  # p = 1: uniform over 1..3; p = 0.5: stride = 1 + floor(2u), so 1 and 2 equally, never 3.
  full = _strides(1.0)
  np.testing.assert_allclose(np.bincount(full, minlength=4)[1:] / len(full), 1 / 3, atol=0.03)
  half = _strides(0.5)
  np.testing.assert_allclose(np.bincount(half, minlength=4)[1:] / len(half), [0.5, 0.5, 0.0],
                             atol=0.03)
  assert transforms.curriculum_progress(3, 6) == 0.5
  assert transforms.curriculum_progress(60, 6) == 1.0


@pytest.fixture(scope='module')
def world(tmp_path_factory):
  config = tiny_config()
  config.data.max_frame_stride = 3
  config.data.motion_curriculum_steps = 6
  config_lib.validate_config(config)
  workdir = str(tmp_path_factory.mktemp('curriculum'))
  config.data.data_dir = workdir + '/data'
  return config, workdir


def _rotation_deg(cam_to_world):
  """(..., 4, 4) frame-0-canonical poses of the LAST frame -> rotation angle from frame 0."""
  r = cam_to_world[..., -1, :3, :3]
  cos = (np.trace(r, axis1=-2, axis2=-1) - 1) / 2
  return np.degrees(np.arccos(np.clip(cos, -1, 1)))


def test_early_batches_move_less_and_resume_is_exact(world):
  config, workdir = world
  batches = _take(pipeline.make_dataset(config, 'train', workdir), 14)
  early = np.concatenate([_rotation_deg(b['cam_to_world']) for b in batches[:2]])
  late = np.concatenate([_rotation_deg(b['cam_to_world']) for b in batches[8:]])
  assert early.mean() < 0.75 * late.mean(), (early.mean(), late.mean())
  # Resume mid-curriculum (global batch 3) on one or two processes equals the uninterrupted run.
  _assert_batches_equal(batches[3:7], _take(pipeline.make_dataset(config, 'train', workdir,
                                                                  start_batch=3), 4))
  shares = [_take(pipeline.make_dataset(config, 'train', workdir, process_index=p,
                                        process_count=2, start_batch=3), 4) for p in (0, 1)]
  union = [{k: np.concatenate([s[i][k] for s in shares]) for k in shares[0][i]} for i in range(4)]
  _assert_batches_equal(batches[3:7], union)
  # Validation is out of the curriculum: the same clips as with it off.
  off = config.copy_and_resolve_references()
  off.data.motion_curriculum_steps = 0
  _assert_batches_equal(_take(pipeline.make_dataset(config, 'validation', workdir), 1),
                        _take(pipeline.make_dataset(off, 'validation', workdir), 1))
