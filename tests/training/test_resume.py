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
from wvd_jax.training import checkpoints, metrics, train


def _run(*args):
  return subprocess.run([sys.executable, '-m', 'tests.training.resume_worker', *args], cwd=REPO,
                        capture_output=True, text=True, timeout=400)


def _losses(workdir):
  """step -> train loss; a resumed run's records replace the killed run's."""
  return {r['step']: r['train/loss'] for r in metrics.read_jsonl(workdir) if 'train/loss' in r}


def _max_step(workdir):
  try:
    return max([r['step'] for r in metrics.read_jsonl(workdir)], default=0)
  except FileNotFoundError:
    return 0


def test_kill_at_random_moments_resumes_bit_exact(tmp_path):
  """One tiny run killed with SIGKILL at 10 seeded random moments (a random number of steps
  after the last one seen, then a random delay: mid-step, mid-save or between), resumed each
  time; its loss curve, metrics.jsonl and final weights equal an uninterrupted run's."""
  data_dir, straight, killed = (str(tmp_path / n) for n in ('data', 'straight', 'killed'))
  config = resume_worker.kill_config(data_dir)
  train.train_and_evaluate(config, straight)  # The reference, in this process.
  rng = np.random.default_rng(17)
  kills, start = [], time.time()
  while len(kills) < 10:
    proc = subprocess.Popen([sys.executable, '-m', 'tests.training.resume_worker', 'run', killed,
                             data_dir], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
      target = _max_step(killed) + int(rng.integers(1, 3))
      delay = float(rng.uniform(0.0, 0.3))
      while proc.poll() is None and _max_step(killed) < target:
        time.sleep(0.01)
      time.sleep(delay)
      if proc.poll() is not None:
        break  # Finished before this kill: the run is done.
      proc.send_signal(signal.SIGKILL)
      kills.append((_max_step(killed), round(delay, 3)))
    finally:
      proc.wait(timeout=60)
  if _max_step(killed) < config.train.num_steps or proc.returncode != 0:
    result = subprocess.run([sys.executable, '-m', 'tests.training.resume_worker', 'run', killed,
                             data_dir], cwd=REPO, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
  print(f'kill -9 at {len(kills)} moments (last logged step, extra delay s): {kills}; '
        f'{time.time() - start:.1f} s for the killed run and its resumes')
  assert len(kills) == 10
  records = metrics.read_jsonl(killed)
  assert [r['step'] for r in records if 'train/loss' in r] == list(range(1, 31))  # One a step.
  a, b = _losses(straight), _losses(killed)
  assert [a[s] for s in range(1, 31)] == [b[s] for s in range(1, 31)]  # Bit-exact loss curve.
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
