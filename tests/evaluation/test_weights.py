"""Weight files: PyTorch files through torch.load(weights_only=True) (only where torch is
installed: the project's environment has no torch, so these skip there), the conversion CLI."""
import numpy as np
import pytest
from safetensors import numpy as safetensors_numpy

from wvd_jax import errors
from wvd_jax.evaluation.networks import weights

STATE = {'a.weight': np.arange(6, dtype=np.float32).reshape(2, 3), 'a.bias': np.ones(2, np.float32)}


def test_safetensors_round_trip_and_shape_checks(tmp_path):
  path = tmp_path / 'w.safetensors'
  path.write_bytes(safetensors_numpy.save(STATE))
  read = weights.read_state_dict(path)
  assert set(read) == set(STATE) and np.array_equal(read['a.weight'], STATE['a.weight'])
  weights.check_tensors(str(path), 'a test net', read, {'a.weight': (2, 3), 'a.bias': (2,)})
  with pytest.raises(errors.UserError, match=r"'a.weight' has shape \(2, 3\), expected \(3, 2\)"):
    weights.check_tensors(str(path), 'a test net', read, {'a.weight': (3, 2), 'a.bias': (2,)})
  np.testing.assert_array_equal(weights.conv_kernel(np.zeros((4, 3, 2, 1))).shape, (2, 1, 3, 4))


def test_converter_usage(capsys):
  assert weights.main(['only_one_argument']) == 2
  assert 'usage:' in capsys.readouterr().err


def test_torch_files_load_without_unpickling_objects(tmp_path):
  torch = pytest.importorskip('torch', reason='torch is not installed (an optional extra)')
  pth = tmp_path / 'w.pth'
  torch.save({'state_dict': {k: torch.from_numpy(v) for k, v in STATE.items()}}, pth)
  read = weights.read_state_dict(pth)  # The 'state_dict' wrapper of .ckpt files is unwrapped.
  assert np.array_equal(read['a.weight'], STATE['a.weight'])
  assert weights.main([str(pth), str(tmp_path / 'w.safetensors')]) == 0
  assert np.array_equal(weights.read_state_dict(tmp_path / 'w.safetensors')['a.bias'],
                        STATE['a.bias'])

  class Payload:  # Any object other than tensors and containers: weights_only refuses it.
    pass

  evil = tmp_path / 'evil.pth'
  torch.save({'x': Payload()}, evil)
  with pytest.raises(errors.UserError, match='weights_only=True'):
    weights.read_state_dict(evil)
