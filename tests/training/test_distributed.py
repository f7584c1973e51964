"""Sharded training and sampling give the single-device result; checkpoints move topology.

Each case runs in a subprocess with simulated CPU devices (the pytest process has one device).
Training across processes is tests/training/test_multihost.py's (the whole main job).
"""
import os
import subprocess
import sys

import numpy as np

from tests.conftest import REPO


def _worker(*args, devices=4, timeout=400):
  env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
  return subprocess.Popen([sys.executable, '-m', 'tests.training.multidevice_worker', *args],
                          cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)


def _wait(proc, timeout=400):
  out, _ = proc.communicate(timeout=timeout)
  assert proc.returncode == 0, out[-4000:]


def test_meshes_train_and_sample_like_one_device(tmp_path):
  """Training on data=2 x fsdp=2, fsdp=2 x tensor=2 and data=2 x fsdp=4 (8 simulated devices),
  and sampling spread over 8 devices, match one device."""
  meshes = ('data2_fsdp2', 'fsdp2_tensor2', 'data2_fsdp4')
  _wait(_worker('mesh', str(tmp_path), ','.join(('single',) + meshes), devices=8))
  _wait(_worker('sampling', str(tmp_path), devices=8))
  r = np.load(tmp_path / 'mesh.npz')
  params = sorted(k for k in r.files if k.startswith('single_param'))
  for name in meshes:
    np.testing.assert_allclose(r[f'{name}_losses'], r['single_losses'], rtol=2e-5)
    for key in params:
      np.testing.assert_allclose(r[key.replace('single', name)], r[key], rtol=1e-4, atol=1e-6)
  assert r['single_losses'][-1] != r['single_losses'][0]  # It trained.
  s = np.load(tmp_path / 'sampling.npz')
  for name in ('rgb', 'xyz'):
    np.testing.assert_allclose(s[f'spread_{name}'], s[f'single_{name}'], atol=2e-5)


def test_checkpoint_restores_onto_other_topologies(tmp_path):
  _wait(_worker('topology', str(tmp_path)))
  r = np.load(tmp_path / 'topology.npz')
  for name in ('fsdp2', 'one'):
    assert float(r[f'{name}_max_diff']) == 0.0
    assert int(r[f'{name}_continued_step']) == 3
    assert np.isfinite(r[f'{name}_continued_loss'])
