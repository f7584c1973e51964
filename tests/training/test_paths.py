"""Workdirs as local paths, file:// URIs and remote URIs (gs://...) through etils.epath."""
import io
import json
import os

import jax.numpy as jnp
import orbax.checkpoint as ocp
from etils import epath

from wvd_jax import files
from wvd_jax.training import checkpoints, metrics


def test_as_path_local_file_uri_and_remote(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert os.fspath(files.as_path('run')) == str(tmp_path / 'run')
  assert os.fspath(files.as_path(f'file://{tmp_path}/run')) == str(tmp_path / 'run')
  assert os.fspath(files.as_path('gs://bucket/runs/a') / 'checkpoints') == \
      'gs://bucket/runs/a/checkpoints'
  assert files.is_local(f'file://{tmp_path}') and not files.is_local('s3://b/x')


def _write_and_read(workdir, local_dir, config):
  writer = metrics.MetricWriter(workdir)
  writer.write_scalars(3, {'loss': 0.5}, prefix='train/')
  writer.close()
  assert metrics.read_jsonl(local_dir) == [{'step': 3, 'train/loss': 0.5}]
  assert os.listdir(os.path.join(local_dir, 'tensorboard'))
  manager = checkpoints.make_manager(workdir, config, async_save=False)
  state = {'step': jnp.asarray(3, jnp.int32), 'w': jnp.arange(4.0)}
  manager.save(3, args=ocp.args.Composite(state=ocp.args.StandardSave(state)))
  manager.wait_until_finished()
  assert sorted(os.listdir(os.path.join(local_dir, 'checkpoints'))) == ['3']
  with files.atomic_write(files.as_path(workdir) / 'note.txt', 'w') as f:
    f.write('ok')
  assert open(os.path.join(local_dir, 'note.txt')).read() == 'ok'


def test_local_and_file_uri_workdirs(config, tmp_path):
  _write_and_read(str(tmp_path / 'local'), str(tmp_path / 'local'), config)
  _write_and_read(f'file://{tmp_path}/uri', str(tmp_path / 'uri'), config)


def test_remote_uri_reaches_checkpoints_and_writers_unchanged(config, monkeypatch):
  """A gs:// workdir is handed as is to orbax and TensorBoard (no file system is contacted:
  both are replaced by recorders, and so is the URI path's open)."""
  seen = {}

  class Manager:
    def __init__(self, directory, **kwargs):
      seen['manager'] = directory

  class SummaryWriter:
    def __init__(self, logdir, purge_step=None):
      seen['tensorboard'] = logdir
      seen['purge_step'] = purge_step

    def add_scalar(self, *args):
      pass

    def close(self):
      pass

  opened = io.StringIO()
  opened.close = lambda: None

  def fake_open(path, mode='r', **kwargs):
    seen['jsonl'] = (os.fspath(path), mode)
    return opened

  monkeypatch.setattr(ocp, 'CheckpointManager', Manager)
  monkeypatch.setattr('tensorboardX.SummaryWriter', SummaryWriter)
  remote = type(epath.Path('gs://bucket'))
  monkeypatch.setattr(remote, 'open', fake_open)
  monkeypatch.setattr(remote, 'exists', lambda path: False)  # A new run: no metrics.jsonl yet.
  checkpoints.make_manager('gs://bucket/runs/a', config)
  assert isinstance(seen['manager'], epath.Path)
  assert os.fspath(seen['manager']) == 'gs://bucket/runs/a/checkpoints'
  writer = metrics.MetricWriter('gs://bucket/runs/a', enabled=True)
  writer.write_scalars(1, {'loss': 1.0})
  assert seen['tensorboard'] == 'gs://bucket/runs/a/tensorboard' and seen['purge_step'] is None
  assert seen['jsonl'] == ('gs://bucket/runs/a/metrics.jsonl', 'a')
  assert json.loads(opened.getvalue()) == {'step': 1, 'loss': 1.0}
