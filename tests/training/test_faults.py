"""Fault injection into training: corrupt and truncated shards, a full disk during a checkpoint
save, non-finite batches. Each ends with one UserError line (what main prints) and leaves the last
checkpoint loadable; the tests print their figures (kept in WORKSPACE.md)."""
import glob
import logging
import os
import shutil
import subprocess
import time

import jax
import numpy as np
import pytest

from tests.conftest import tiny_config
from wvd_jax import errors
from wvd_jax.data import pipeline, storage
from wvd_jax.models import checkpoint_reader
from wvd_jax.training import checkpoints, metrics, sharding, train


def fault_config(data_dir):
  config = tiny_config()
  config.data.data_dir = data_dir
  config.train.num_steps = 4
  config.train.log_every = 1
  config.train.checkpoint_every = 2
  config.train.eval_every = 1000
  config.train.log_sample_grids = False
  config.train.peak_tflops = 1.0
  return config


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp('fault_data'))
  pipeline.make_dataset(fault_config(directory), 'train', directory)  # Renders it once.
  return directory


def _copy_data(data_dir, tmp_path):
  copy = str(tmp_path / 'data')
  shutil.copytree(data_dir, copy)
  shards = glob.glob(os.path.join(copy, '**', 'synthetic_world-train.array_record-*'),
                     recursive=True)
  assert shards
  return copy, shards


def _assert_checkpoint_loads(config, workdir, step):
  assert checkpoint_reader.latest_training_step(workdir) == step
  _, params = checkpoint_reader.restore_training_params(config, workdir)
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))


def test_bytes_flipped_in_a_shard_mid_training(data_dir, tmp_path, monkeypatch):
  """Bytes flipped in the train shard while training reads it: the chunk hash catches it, the
  error names the shard, the last checkpoint stays loadable."""
  copy, shards = _copy_data(data_dir, tmp_path)
  config = fault_config(copy)
  config.train.num_steps = 8
  global_batch, calls = sharding.global_batch, [0]

  def corrupting_global_batch(*args):
    calls[0] += 1
    if calls[0] == 3:  # After the step-2 checkpoint: flip every 50th byte of the second half.
      with open(shards[0], 'r+b') as f:
        data = bytearray(f.read())
        for offset in range(len(data) // 4, len(data) - 200, 50):
          data[offset] ^= 0xFF
        f.seek(0)
        f.write(data)
    return global_batch(*args)

  monkeypatch.setattr(sharding, 'global_batch', corrupting_global_batch)
  workdir = str(tmp_path / 'w')
  with pytest.raises(errors.UserError, match='dataset shard') as error:
    train.train_and_evaluate(config, workdir)
  assert shards[0] in str(error.value) and '\n' not in str(error.value)
  print(f'flipped bytes: training stopped after {calls[0] - 1} batches with: '
        f'{str(error.value)[:160]}...')
  checkpoints.make_manager(workdir, config).close()
  _assert_checkpoint_loads(config, workdir, 2)


def test_truncated_shard_is_named_and_the_checkpoint_kept(data_dir, tmp_path, caplog):
  """(And a second train of the finished run says so and returns at once.)"""
  copy, shards = _copy_data(data_dir, tmp_path)
  config = fault_config(copy)
  workdir = str(tmp_path / 'w')
  train.train_and_evaluate(config, workdir)
  lines = len(metrics.read_jsonl(workdir))
  with caplog.at_level(logging.WARNING):
    assert int(train.train_and_evaluate(config, workdir).step) == 4  # Finished: says so.
  assert 'already finished (step 4, config.train.num_steps=4)' in caplog.text
  assert len(metrics.read_jsonl(workdir)) == lines
  size = os.path.getsize(shards[0])
  os.truncate(shards[0], size // 2)
  config.train.num_steps = 8
  with pytest.raises(storage.CorruptShardError, match='expected') as error:
    train.train_and_evaluate(config, workdir)
  assert isinstance(error.value, errors.UserError) and shards[0] in str(error.value)
  print(f'truncated shard ({size} -> {size // 2} bytes): {str(error.value)[:160]}...')
  _assert_checkpoint_loads(config, workdir, 4)


def test_full_disk_during_a_checkpoint_save(data_dir, tmp_path):
  """The checkpoint directory on a tmpfs with room for about one checkpoint: the second save
  fails with ENOSPC inside orbax's writer threads; one UserError names the problem, and the first
  checkpoint loads."""
  config = fault_config(data_dir)
  workdir = str(tmp_path / 'w')
  mount = checkpoint_reader.training_dir(workdir)
  os.makedirs(mount)
  if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=1100k', 'tmpfs', mount],
                    capture_output=True, check=False).returncode != 0:
    pytest.skip('mounting a tmpfs needs root')
  try:
    start = time.time()
    with pytest.raises(errors.UserError, match='disk full while writing a checkpoint') as error:
      train.train_and_evaluate(config, workdir)
    message = str(error.value)
    print(f'full disk (1100 KiB tmpfs): {message} ({time.time() - start:.1f} s)')
    assert 'step 2' in message and '\n' not in message
    _assert_checkpoint_loads(config, workdir, 2)
  finally:
    subprocess.run(['umount', '-l', mount], check=False)


def test_nonfinite_batches_are_skipped_and_counted(data_dir, tmp_path, monkeypatch):
  config = fault_config(data_dir)
  config.train.num_steps = 6
  config.train.max_nonfinite_steps = 3
  global_batch, calls = sharding.global_batch, [0]

  def poisoned_global_batch(batch, mesh):
    calls[0] += 1
    if calls[0] in (3, 4):
      batch = dict(batch, rgb=np.full_like(batch['rgb'], np.nan))
    return global_batch(batch, mesh)

  monkeypatch.setattr(sharding, 'global_batch', poisoned_global_batch)
  workdir = str(tmp_path / 'w')
  state = train.train_and_evaluate(config, workdir)
  records = {r['step']: r for r in metrics.read_jsonl(workdir) if 'train/loss' in r}
  skipped = [s for s, r in sorted(records.items()) if r['train/skipped_steps']]
  counts = [records[s]['train/num_nonfinite'] for s in range(1, 7)]
  print(f'non-finite batches at steps 3, 4: skipped steps {skipped}, consecutive count {counts}')
  assert skipped == [3, 4] and counts == [0, 0, 1, 2, 0, 0]
  assert int(state.step) == 6
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))
  # Too many in a row: a clear stop, the last checkpoint intact.
  monkeypatch.setattr(sharding, 'global_batch', lambda batch, mesh: global_batch(
      dict(batch, rgb=np.full_like(batch['rgb'], np.nan)), mesh))
  config.train.num_steps = 12
  with pytest.raises(errors.UserError, match='3 non-finite updates in a row at step 9'):
    train.train_and_evaluate(config, workdir)
  _assert_checkpoint_loads(config, workdir, 8)
