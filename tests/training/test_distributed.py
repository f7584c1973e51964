"""Sharded and multi-process training give the single-device result; checkpoints move topology.

Each case runs in a subprocess with simulated CPU devices (the pytest process has one device).
"""
import os
import subprocess
import sys

import numpy as np
import portpicker

from tests.conftest import REPO


def _worker(*args, devices=4, timeout=400):
  env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
  if args[0] == 'multihost':
    # As in test_multihost.py: with the persistent cache one process may load while the other
    # compiles, and gloo gives up when they reach a collective 30 s apart.
    env['JAX_ENABLE_COMPILATION_CACHE'] = 'false'
  return subprocess.Popen([sys.executable, '-m', 'tests.training.multidevice_worker', *args],
                          cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)


def _wait(proc, timeout=400):
  out, _ = proc.communicate(timeout=timeout)
  assert proc.returncode == 0, out[-4000:]


def test_meshes_match_single_device(tmp_path):
  _wait(_worker('mesh', str(tmp_path), 'single,data2_fsdp2,fsdp2_tensor2'))
  r = np.load(tmp_path / 'mesh.npz')
  params = sorted(k for k in r.files if k.startswith('single_param'))
  for name in ('data2_fsdp2', 'fsdp2_tensor2'):
    np.testing.assert_allclose(r[f'{name}_losses'], r['single_losses'], rtol=2e-5)
    for key in params:
      np.testing.assert_allclose(r[key.replace('single', name)], r[key], rtol=1e-4, atol=1e-6)
  assert r['single_losses'][-1] != r['single_losses'][0]  # It trained.


def test_eight_devices_train_and_sample_like_one(tmp_path):
  """Training on data=2 x fsdp=4 and sampling spread over 8 devices match one device."""
  _wait(_worker('mesh', str(tmp_path), 'single,data2_fsdp4', devices=8))
  _wait(_worker('sampling', str(tmp_path), devices=8))
  r = np.load(tmp_path / 'mesh.npz')
  np.testing.assert_allclose(r['data2_fsdp4_losses'], r['single_losses'], rtol=2e-5)
  for key in (k for k in r.files if k.startswith('single_param')):
    np.testing.assert_allclose(r[key.replace('single', 'data2_fsdp4')], r[key], rtol=1e-4,
                               atol=1e-6)
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


def test_two_processes_match_one(tmp_path):
  port = portpicker.pick_unused_port()
  procs = [_worker('multihost', str(tmp_path), str(i), str(port), devices=2) for i in range(2)]
  for proc in procs:
    _wait(proc)
  _wait(_worker('mesh', str(tmp_path), 'data2_fsdp2'))
  two = np.load(tmp_path / 'multihost.npz')
  one = np.load(tmp_path / 'mesh.npz')  # 'data2_fsdp2': the same mesh shape in one process.
  np.testing.assert_allclose(two['losses'], one['data2_fsdp2_losses'], rtol=2e-5)
  for key in (k for k in two.files if k.startswith('param')):
    np.testing.assert_allclose(two[key], one[f'data2_fsdp2_{key}'], rtol=1e-4, atol=1e-6)
