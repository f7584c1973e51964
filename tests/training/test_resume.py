"""Exact resume after kill -9, and a kill -9 during a save never loses the last checkpoint."""
import glob
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from tests.conftest import REPO, tiny_config
from tests.training import resume_worker
from wvd_jax.training import checkpoints, metrics


def _run(*args):
  return subprocess.run([sys.executable, '-m', 'tests.training.resume_worker', *args], cwd=REPO,
                        capture_output=True, text=True, timeout=400)


def _losses(workdir):
  """step -> train loss; a resumed run's records replace the killed run's."""
  return {r['step']: r['train/loss'] for r in metrics.read_jsonl(workdir) if 'train/loss' in r}


def test_kill_and_resume_is_bit_exact(tmp_path):
  straight, killed = str(tmp_path / 'straight'), str(tmp_path / 'killed')
  for args in (('train', straight, '0'), ('train', killed, '13')):
    result = _run(*args)
    expected = -signal.SIGKILL if args[2] == '13' else 0
    assert result.returncode == expected, result.stderr[-3000:]
  assert sorted(os.listdir(os.path.join(killed, 'checkpoints'))) == ['10']
  result = _run('train', killed, '0')  # Resumes from step 10.
  assert result.returncode == 0, result.stderr[-3000:]
  a, b = _losses(straight), _losses(killed)
  assert sorted(a) == sorted(b) == list(range(1, 21))
  assert [a[s] for s in range(1, 21)] == [b[s] for s in range(1, 21)]  # Bit-exact loss curve.
  config = resume_worker.resume_config()
  params = [checkpoints.restore_params(config, w)[1] for w in (straight, killed)]
  for x, y in zip(*map(jax.tree.leaves, params)):
    np.testing.assert_array_equal(x, y)


def test_kill_during_save_keeps_previous_checkpoint(tmp_path):
  directory = str(tmp_path)
  proc = subprocess.Popen([sys.executable, '-m', 'tests.training.resume_worker', 'save_forever',
                           directory], cwd=REPO, stdout=subprocess.PIPE, text=True)
  try:
    # Wait until step 1 is complete and step 2's save is under way, then kill -9.
    deadline = time.time() + 300
    while time.time() < deadline:
      assert proc.poll() is None, proc.stdout.read()
      done = os.path.isdir(os.path.join(directory, 'checkpoints', '1'))
      if done and glob.glob(os.path.join(directory, 'checkpoints', '*tmp*')):
        break
      time.sleep(0.01)
    else:
      raise AssertionError('no save was caught in progress')
    proc.send_signal(signal.SIGKILL)
  finally:
    proc.wait(timeout=60)
  manager = checkpoints.make_manager(directory, tiny_config(), async_save=False)
  step = manager.latest_step()
  assert step is not None and step >= 1
  target = {'step': jax.ShapeDtypeStruct((), jnp.int32),
            'big': jax.ShapeDtypeStruct((25_000_000,), jnp.float32)}
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
  assert int(restored['state']['step']) == step
  assert float(restored['state']['big'][0]) == float(step) == float(restored['state']['big'][-1])
