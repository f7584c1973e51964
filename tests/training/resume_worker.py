"""Subprocess entry for the kill -9 tests.

  python -m tests.training.resume_worker train <workdir> <kill_at_step|0>
  python -m tests.training.resume_worker run <workdir> <data_dir>   (killed from outside)
  python -m tests.training.resume_worker save_forever <dir>
"""
import os
import signal
import sys

import jax.numpy as jnp
import orbax.checkpoint as ocp

from tests.conftest import tiny_config
from wvd_jax.training import checkpoints, sharding, train


def resume_config():
  config = tiny_config()
  config.train.num_steps = 20
  config.train.checkpoint_every = 10
  config.train.log_every = 1
  config.train.eval_every = 1000
  config.train.log_sample_grids = False
  return config


def kill_config(data_dir):
  """The run killed at random moments: a checkpoint every 2 steps, so each life makes progress;
  8x8 frames and one block, as each life's start-up (tracing the step) is the cost."""
  config = resume_config()
  config.data.image_size = config.data.render_size = 8
  config.model.width, config.model.depth = 24, 1
  config.train.num_steps = 80
  config.train.checkpoint_every = 2
  config.train.peak_tflops = 1.0  # No matmul timing at each start.
  config.data.data_dir = data_dir
  return config


def train_killed_at(workdir, kill_at):
  """Trains; with kill_at > 0, SIGKILLs itself just before step kill_at + 1 (no cleanup)."""
  save = checkpoints.save

  def save_and_wait(manager, *args, **kwargs):  # So the kill point is after a complete save.
    save(manager, *args, **kwargs)
    manager.wait_until_finished()

  checkpoints.save = save_and_wait
  global_batch, calls = sharding.global_batch, [0]

  def counting_global_batch(*args):
    calls[0] += 1
    if kill_at and calls[0] == kill_at + 1:
      os.kill(os.getpid(), signal.SIGKILL)
    return global_batch(*args)

  sharding.global_batch = counting_global_batch
  train.train_and_evaluate(resume_config(), workdir)


def save_forever(directory):
  """Saves a ~100 MB state every step until killed."""
  config = tiny_config()
  manager = checkpoints.make_manager(directory, config, async_save=True)
  step = 0
  while True:
    state = {'step': jnp.asarray(step), 'big': jnp.full((25_000_000,), float(step))}
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)))
    manager.wait_until_finished()
    step += 1
    print('saved', step - 1, flush=True)


if __name__ == '__main__':
  if sys.argv[1] == 'train':
    train_killed_at(sys.argv[2], int(sys.argv[3]))
  elif sys.argv[1] == 'run':
    train.train_and_evaluate(kill_config(sys.argv[3]), sys.argv[2])
  elif sys.argv[1] == 'save_forever':
    save_forever(sys.argv[2])
