"""benchmarks/pose_ceiling.py: the eval's multi-view scores with the true XYZ plus a known error."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import pose_ceiling
from tests.conftest import REPO


def _truth(seed=0):
  rng = np.random.default_rng(seed)
  xyz = rng.uniform(-0.7, 0.7, (3, 4, 5, 3)).astype(np.float32)
  mask = rng.uniform(size=(3, 4, 5)) > 0.3
  return xyz, mask


def test_no_error_is_the_truth_and_background_is_the_sentinel():
  xyz, mask = _truth()
  for kind in pose_ceiling.ERRORS:
    out = pose_ceiling.noisy_xyz(xyz, mask, kind, 0.0, np.random.default_rng(1))
    np.testing.assert_allclose(out[mask], xyz[mask], atol=1e-6)
    assert (out[~mask] == -1.0).all()


def test_frame_affine_error_is_one_affine_map_per_frame():
  xyz, mask = _truth()
  mask[:] = True
  out = pose_ceiling.noisy_xyz(xyz, mask, 'frame_affine', 0.05, np.random.default_rng(2))
  maps = []
  for f in range(xyz.shape[0]):
    src = np.concatenate([xyz[f].reshape(-1, 3), np.ones((20, 1))], axis=1)
    fit, residual, *_ = np.linalg.lstsq(src, out[f].reshape(-1, 3), rcond=None)
    assert np.allclose(src @ fit, out[f].reshape(-1, 3), atol=1e-5)  # Exactly affine.
    maps.append(fit)
  assert not np.allclose(maps[0], maps[1], atol=1e-3)  # Frames disagree with each other.
  iid = pose_ceiling.noisy_xyz(xyz, mask, 'iid', 0.05, np.random.default_rng(2))
  assert 0.03 < np.std(iid - xyz) < 0.07
  with pytest.raises(ValueError, match='unknown error kind'):
    pose_ceiling.noisy_xyz(xyz, mask, 'warp', 0.05, np.random.default_rng(2))


def test_exact_xyz_gives_exact_cameras_through_the_eval_path(tmp_path):
  """One real test clip of configs/small.py, reconstructed and scored as the eval does."""
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=REPO)
  proc = subprocess.run(
      [sys.executable, os.path.join(REPO, 'benchmarks', 'pose_ceiling.py'), '--clips=1',
       '--cases=iid:0,frame_affine:0.1', f'--data_dir={tmp_path}'],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  cases = json.loads(proc.stdout.strip().splitlines()[-1])['cases']
  exact, disagreeing = cases['iid:0'], cases['frame_affine:0.1']
  assert exact['rra@5'] == exact['rta@5'] == exact['maa@30'] == 1.0, exact
  assert exact['video_abs_rel'] < 0.01, exact
  assert disagreeing['maa@30'] < exact['maa@30'], disagreeing
