"""The whole main job on 2 processes x 2 CPU devices (gloo) through launch/local_multiprocess.sh,
against one process: train (validation, sample grid, checkpoints) with fsdp=4 across the
processes, export, --mode=depth, --mode=eval; resume 2 -> 1 and 1 -> 2 processes from the global
data position; SIGTERM to one process stops both at the same step; sample and the other task
modes on two processes write their files once.

One test, so the trained workdirs are shared by every check (the runs cost most of the time).
In-process runs (this pytest process, one device) stand for "one process" where they can: they
also change the device count.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import portpicker
from PIL import Image

from tests.conftest import REPO
from tests.training import multihost_config
from wvd_jax.evaluation import runner
from wvd_jax.models import inference_checkpoint
from wvd_jax.training import checkpoints, export, metrics, train

CONFIG = os.path.join(REPO, 'tests', 'training', 'multihost_config.py')
ONE_PROCESS_MESH = ('--config.mesh.dcn_fsdp=1',)  # fsdp=4 on one process's 4 devices.


def _launch(workdir, *flags, processes=2, devices=2, log):
  env = dict(os.environ, PYTHON=sys.executable, PORT=str(portpicker.pick_unused_port()),
             NUM_PROCESSES=str(processes), DEVICES_PER_PROCESS=str(devices))
  if processes > 1:
    # JAX's persistent cache stores multi-process executables for the process of the lowest
    # device id: seen here, process 0 loaded while process 1 compiled, and CPU (gloo)
    # collectives give up when the processes arrive 30 s apart.
    env['JAX_ENABLE_COMPILATION_CACHE'] = 'false'
  with open(log, 'w') as out:
    return subprocess.Popen(['bash', 'launch/local_multiprocess.sh', CONFIG, str(workdir),
                             *flags], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


def _wait(proc, log, timeout=400):
  assert proc.wait(timeout=timeout) == 0, open(log).read()[-5000:]


def _losses(workdir):
  return {r['step']: r['train/loss'] for r in metrics.read_jsonl(workdir) if 'train/loss' in r}


def _one_device_config(data_dir, **train):
  config = multihost_config.get_config()
  config.data.data_dir = str(data_dir)
  config.mesh.data, config.mesh.fsdp, config.mesh.dcn_fsdp = -1, 1, 1
  for key, value in train.items():
    config.train[key] = value
  return config


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_main_job_on_two_processes(tmp_path):
  data = ('--config.data.data_dir=' + str(tmp_path / 'data'),)
  two, one, r = tmp_path / 'two', tmp_path / 'one', tmp_path / 'resumed_by_two'
  logs = {k: str(tmp_path / f'{k}.log') for k in ('two', 'one', 'export', 'r', 'depth', 'eval')}
  # The dataset is rendered once, before the concurrent runs.
  from wvd_jax.data import pipeline  # pylint: disable=import-outside-toplevel
  config = _one_device_config(tmp_path / 'data')
  for split in ('train', 'validation', 'test'):
    pipeline.load_split(config, split, str(tmp_path))

  # Train 4 steps on two processes; 6 steps straight on one process (4 devices, same mesh).
  procs = [(_launch(two, *data, log=logs['two']), logs['two']),
           (_launch(one, *data, *ONE_PROCESS_MESH, '--config.train.num_steps=6', processes=1,
                    devices=4, log=logs['one']), logs['one'])]
  for proc, log in procs:
    _wait(proc, log)
  straight = _losses(one)
  assert sorted(straight) == list(range(1, 7))
  two_losses = _losses(two)
  np.testing.assert_allclose([two_losses[s] for s in range(1, 5)],
                             [straight[s] for s in range(1, 5)], rtol=2e-5)
  for workdir in (two, one):  # Validation with a sample grid (process 0's TensorBoard).
    assert any('validation/loss' in rec for rec in metrics.read_jsonl(workdir))
    assert os.listdir(workdir / 'tensorboard')
  assert sorted(d for d in os.listdir(two / 'checkpoints') if d.isdigit()) == ['2', '4']

  # Export on two processes (orbax writes each process's shards) == a one-process export.
  proc = _launch(two, *data, '--mode=export', log=logs['export'])
  (r / 'checkpoints').mkdir(parents=True)
  shutil.copytree(one / 'checkpoints' / '4', r / 'checkpoints' / '4')
  export.export(_one_device_config(tmp_path / 'data'), r, tmp_path / 'export_one')
  _wait(proc, logs['export'])
  _, _, exported_two = inference_checkpoint.load(str(two / 'export'))
  _, _, exported_one = inference_checkpoint.load(str(tmp_path / 'export_one'))
  for a, b in zip(_leaves(exported_two), _leaves(exported_one)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)

  # A one-process checkpoint (step 4) resumed by two processes, which then get SIGTERM (to
  # process 1 only): both save the same step and exit 0.
  proc = _launch(r, *data, '--config.train.num_steps=5000', '--config.train.eval_every=10000',
                 '--config.train.checkpoint_every=10000', log=logs['r'])
  deadline = time.time() + 300
  while not (r / 'metrics.jsonl').exists() or max(_losses(r), default=0) < 6:
    assert proc.poll() is None and time.time() < deadline, open(logs['r']).read()[-5000:]
    time.sleep(0.2)
  pid = int(re.search(r'process 1 pid (\d+)', open(logs['r']).read()).group(1))
  os.kill(pid, signal.SIGTERM)
  _wait(proc, logs['r'])
  saved = re.findall(r'saved a checkpoint at step (\d+)', open(logs['r']).read())
  assert len(saved) == 2 and saved[0] == saved[1], saved  # Both processes, the same step.
  stopped = int(saved[0])
  assert 6 <= stopped < 5000
  assert checkpoints.make_manager(r, _one_device_config(tmp_path / 'data')).latest_step() == stopped
  r_losses = _losses(r)
  np.testing.assert_allclose([r_losses[5], r_losses[6]], [straight[5], straight[6]], rtol=2e-5)
  # The two-process checkpoint (step 4) resumed by one process (this one, one device): the next
  # batches are the uninterrupted run's, so the losses of steps 5 and 6 equal its.
  resumed = train.train_and_evaluate(_one_device_config(tmp_path / 'data', num_steps=6), two)
  assert int(resumed.step) == 6
  two_losses = _losses(two)
  np.testing.assert_allclose([two_losses[5], two_losses[6]], [straight[5], straight[6]],
                             rtol=2e-5)
  # The resumed run continues from the step both saved.
  resumed = train.train_and_evaluate(_one_device_config(tmp_path / 'data', num_steps=stopped + 1), r)
  assert int(resumed.step) == stopped + 1
  assert max(_losses(r)) == stopped + 1

  # --mode=depth on the two-process export, and --mode=eval on two processes == on one.
  image = tmp_path / 'image.png'
  Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), np.uint8)).save(image)
  procs = [(_launch(two, *data, '--mode=depth', f'--input={image}', log=logs['depth']),
            logs['depth']),
           (_launch(two, *data, '--mode=eval', f'--config.eval.output_dir={tmp_path / "eval_two"}',
                    log=logs['eval']), logs['eval'])]
  config = _one_device_config(tmp_path / 'data')
  config.eval.output_dir = str(tmp_path / 'eval_one')
  runner.evaluate(config, str(two), str(two / 'export'))
  for proc, log in procs:
    _wait(proc, log)
  assert np.load(two / 'depth' / 'depth.npy').shape == (16, 16)
  reports = [json.load(open(tmp_path / name / 'results.json')) for name in ('eval_one', 'eval_two')]
  assert reports[0]['num_clips'] == reports[1]['num_clips'] == 2
  flat = [jax.tree.leaves(rep['metrics']) for rep in reports]
  np.testing.assert_allclose(flat[1], flat[0], rtol=1e-4, atol=1e-6)
  per_clip = [open(tmp_path / name / 'per_clip.jsonl').read().splitlines()
              for name in ('eval_one', 'eval_two')]
  assert len(per_clip[1]) == 2 and os.listdir(tmp_path / 'eval_two' / 'gallery')

  # The other modes on two processes (parameters gathered or read whole on every process, the
  # same seeded work everywhere, process 0 writing): sample, image_to_3d, multiview,
  # camera_control. Two jobs at a time (four processes on the test machine's cores).
  views = tmp_path / 'views'
  views.mkdir()
  for k in range(2):
    shutil.copy(image, views / f'v{k}.png')
  rounds = ((('sample',), ('image_to_3d', f'--input={image}')),
            (('multiview', f'--input={views}'), ('camera_control', f'--input={image}')))
  for jobs in rounds:
    procs = [(_launch(two, *data, f'--mode={mode}', *extra, log=str(tmp_path / f'{mode}.log')),
              str(tmp_path / f'{mode}.log')) for mode, *extra in jobs]
    for proc, log in procs:
      _wait(proc, log)
  assert (two / 'samples' / 'samples.npz').is_file()
  assert (two / 'image_to_3d' / 'points.ply').is_file()
  assert (two / 'multiview' / 'cameras' / 'images.txt').is_file()
  assert (two / 'camera_control' / 'video.mp4').is_file()
  for mode in ('sample', 'image_to_3d', 'multiview', 'camera_control'):  # Written by one process.
    assert len(re.findall(r'^wrote ', open(tmp_path / f'{mode}.log').read(), re.M)) == 1, mode
