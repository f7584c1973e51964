"""TFDS / ArrayRecord storage: bit-exact round trip, reuse, metadata, corruption named."""
import json
import os
import shutil

import numpy as np
import pytest

from wvd_jax.data import storage, synthetic_world

PARAMS = storage.WorldParams(seed=0, size=16, frames=4, num_train=3, num_validation=2,
                             num_test=2)


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('storage'))
  storage.prepare(PARAMS, path)
  return path


def test_round_trip_is_bit_exact_and_has_metadata(data_dir):
  for split in synthetic_world.SPLITS:
    source = storage.open_split(PARAMS, data_dir, split)
    assert len(source) == PARAMS.count(split)
    indices = []
    for i in range(len(source)):
      got = source[i]
      indices.append(int(got['scene_index']))
      want = synthetic_world.render_clip(0, split, indices[-1], 4, 16)
      for key in ('rgb', 'depth', 'intrinsics', 'cam_to_world', 'xyz', 'mask'):
        assert got[key].dtype == want[key].dtype, key
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    assert sorted(indices) == list(range(PARAMS.count(split)))
  info = storage.prepare(PARAMS, data_dir).info
  meta = info.metadata
  assert (meta['resolution'], meta['frames'], meta['seed']) == (16, 4, 0)
  assert meta['generator_version'] == synthetic_world.GENERATOR_VERSION
  assert info.splits['train'].num_examples == 3


def test_built_once_then_reused(data_dir):
  directory = storage.dataset_dir(PARAMS, data_dir)
  shard = os.path.join(directory, sorted(f for f in os.listdir(directory) if 'train' in f)[0])
  before = os.stat(shard).st_mtime_ns
  storage.open_split(PARAMS, data_dir, 'train')
  assert os.stat(shard).st_mtime_ns == before
  # A config that changes any count or size gets its own dataset, never this one.
  other = storage.WorldParams(**{**PARAMS.__dict__, 'num_train': 4})
  assert storage.dataset_dir(other, data_dir) != directory


def _copy(data_dir, tmp_path):
  target = str(tmp_path / 'copy')
  shutil.copytree(data_dir, target)
  directory = storage.dataset_dir(PARAMS, target)
  name = [f for f in os.listdir(directory) if '-train.array_record' in f][0]
  return target, os.path.join(directory, name)


def test_truncated_shard_is_named(data_dir, tmp_path):
  target, shard = _copy(data_dir, tmp_path)
  with open(shard, 'r+b') as f:
    f.truncate(os.path.getsize(shard) // 2)
  with pytest.raises(storage.CorruptShardError, match=shard):
    storage.open_split(PARAMS, target, 'train')


def test_corrupted_shard_is_named(data_dir, tmp_path):
  target, shard = _copy(data_dir, tmp_path)
  with open(shard, 'rb') as f:
    data = f.read()
  records_end = data.find(b'\0' * 1024)  # The records, then zero padding up to the footer.
  with open(shard, 'r+b') as f:  # Flip bytes inside the records, keeping the size.
    f.seek(records_end // 2)
    f.write(bytes(255 - b for b in data[records_end // 2:records_end // 2 + 256]))
  source = storage.open_split(PARAMS, target, 'train')
  with pytest.raises(storage.CorruptShardError, match=shard):
    for i in range(len(source)):
      source[i]


def test_missing_shard_sizes_record_is_rebuilt_not_trusted(data_dir, tmp_path):
  target, _ = _copy(data_dir, tmp_path)
  sizes = os.path.join(storage.dataset_dir(PARAMS, target), 'shard_sizes.json')
  with open(sizes) as f:
    assert json.load(f)
  os.remove(sizes)  # An interrupted build: TFDS finished but the size record is missing.
  source = storage.open_split(PARAMS, target, 'test')
  assert os.path.exists(sizes) and len(source) == 2


def test_build_past_the_memory_buffer_needs_no_tensorflow(data_dir, tmp_path, monkeypatch):
  """Past TFDS's in-memory shuffle buffer the examples spill to bucket files (through our
  local-file stand-in for tf.io.gfile); the shards then hold the same clips in the same order."""
  import importlib.util  # pylint: disable=import-outside-toplevel
  from tensorflow_datasets.core import shuffle  # pylint: disable=import-outside-toplevel
  assert importlib.util.find_spec('tensorflow') is None  # The case this guards.
  monkeypatch.setattr(shuffle, 'MAX_MEM_BUFFER_SIZE', 1000)  # Every split spills.
  spilled = str(tmp_path / 'spilled')
  storage.prepare(PARAMS, spilled)
  for split in synthetic_world.SPLITS:
    a, b = storage.open_split(PARAMS, data_dir, split), storage.open_split(PARAMS, spilled, split)
    for i in range(len(a)):
      np.testing.assert_array_equal(a[i]['rgb'], b[i]['rgb'])
      assert a[i]['scene_index'] == b[i]['scene_index']
  assert not [f for f in os.listdir(storage.dataset_dir(PARAMS, spilled)) if 'bucket' in f]


def test_bucket_files_past_the_open_files_limit_raise_it(tmp_path):
  resource = pytest.importorskip('resource')
  storage._tfds()  # The stand-in serves TFDS's shuffler, so TFDS is loaded when it runs.
  soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
  opened = []
  try:
    low = len(os.listdir('/proc/self/fd')) + 4
    if hard != resource.RLIM_INFINITY and hard <= low + 8:
      pytest.skip('the hard limit leaves no room to raise the soft one')
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
    for i in range(12):  # More than the lowered limit allows: the stand-in raises it.
      opened.append(storage._LocalFiles.io.gfile.GFile(str(tmp_path / f'bucket_{i}'), 'wb'))
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] > low
  finally:
    for f in opened:
      f.close()
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
