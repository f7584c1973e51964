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
  """One tiny run killed with SIGKILL at 10 seeded random moments, resumed every time, then run
  to the end; its loss curve, metrics.jsonl and final weights equal an uninterrupted run's. Even
  kills come a random 0-0.15 s after the life logs a new step (mid-step or mid-save: a checkpoint
  every 2 steps); odd kills a random time into the life's start-up (imports, restore, compile)."""
  data_dir, straight, killed = (str(tmp_path / n) for n in ('data', 'straight', 'killed'))
  config = resume_worker.kill_config(data_dir)
  steps = config.train.num_steps
  train.train_and_evaluate(config, straight)  # The reference, in this process.
  rng = np.random.default_rng(17)
  command = [sys.executable, '-m', 'tests.training.resume_worker', 'run', killed, data_dir]
  kills, start_up_s, start = [], [], time.time()
  for k in range(10):
    before = _max_step(killed)
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    born = time.time()
    try:
      if k % 2 == 0:
        # (A resumed life first drops the records after its checkpoint: wait for a new step.)
        while proc.poll() is None and _max_step(killed) <= before:
          time.sleep(0.01)
        start_up_s.append(time.time() - born)
        delay = start_up_s[-1] + float(rng.uniform(0.0, 0.15))
      else:
        delay = float(rng.uniform(0.0, min(start_up_s)))
      while proc.poll() is None and time.time() < born + delay:
        time.sleep(0.005)
      assert proc.poll() is None, 'the run ended before its kill'
      proc.send_signal(signal.SIGKILL)
    finally:
      proc.wait(timeout=60)
    after = _max_step(killed)
    kills.append(f'{delay:.2f}s:' + (f'steps {before}->{after}' if after > before else 'start-up'))
  assert _max_step(killed) < steps
  result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=400)
  assert result.returncode == 0, result.stderr[-3000:]
  print(f'kill -9 at 10 moments (time into the life: progress): {", ".join(kills)}; '
        f'{time.time() - start:.1f} s for the killed run, its resumes and the finish')
  records = metrics.read_jsonl(killed)
  assert [r['step'] for r in records if 'train/loss' in r] == list(range(1, steps + 1))
  a, b = _losses(straight), _losses(killed)
  assert [a[s] for s in range(1, steps + 1)] == [b[s] for s in range(1, steps + 1)]  # Bit-exact.
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
