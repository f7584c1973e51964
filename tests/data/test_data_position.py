"""The global data position: a process-count-independent example sequence, resumable anywhere."""
import numpy as np
import pytest

from wvd_jax.data import pipeline

from tests.conftest import tiny_config


def _take(ds, n):
  return [b for _, b in zip(range(n), ds)]


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def _union(shares):
  """Per-process batch lists (process order) -> the global batches they make up."""
  return [{k: np.concatenate([s[i][k] for s in shares]) for k in shares[0][i]}
          for i in range(len(shares[0]))]


@pytest.fixture(scope='module')
def world(tmp_path_factory):
  config = tiny_config()
  config.data.max_frame_stride = 2  # Random frames per example: they must not depend on P.
  config.data.render_frames = 5
  workdir = str(tmp_path_factory.mktemp('position'))
  config.data.data_dir = workdir + '/data'
  return config, workdir


def _batches(world, n, *, processes=1, start_batch=0):
  config, workdir = world
  shares = [_take(pipeline.make_dataset(config, 'train', workdir, process_index=p,
                                        process_count=processes, start_batch=start_batch), n)
            for p in range(processes)]
  return _union(shares)


def test_process_shares_make_up_the_global_batch(world):
  # 8 clips, global batch 4: 6 batches cover 3 epochs (each reshuffled).
  single = _batches(world, 6)
  for processes in (2, 4):
    _assert_batches_equal(single, _batches(world, 6, processes=processes))
  assert not np.array_equal(single[0]['rgb'], single[2]['rgb'])


def test_start_batch_skips_global_batches(world):
  single = _batches(world, 5)
  _assert_batches_equal(single[3:], _batches(world, 2, start_batch=3))


def test_resume_on_another_process_count(world):
  uninterrupted = _batches(world, 5)
  # Two processes consumed 3 global batches; one process resumes (and the reverse).
  _assert_batches_equal(uninterrupted[:3], _batches(world, 3, processes=2))
  _assert_batches_equal(uninterrupted[3:], _batches(world, 2, processes=1, start_batch=3))
  _assert_batches_equal(uninterrupted[3:], _batches(world, 2, processes=2, start_batch=3))


def test_finite_pass_covers_each_clip_once(world):
  config, workdir = world
  shares = [_take(pipeline.make_dataset(config, 'train', workdir, process_index=p,
                                        process_count=2, repeat=False), 10) for p in (0, 1)]
  assert [len(s) for s in shares] == [2, 2]  # 8 clips = 2 global batches of 4.
  single = _take(pipeline.make_dataset(config, 'train', workdir, repeat=False), 10)
  _assert_batches_equal(single, _union(shares))
  with pytest.raises(ValueError, match='start_batch'):
    pipeline.make_dataset(config, 'train', workdir, start_batch=-1)
