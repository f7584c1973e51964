"""Every task end to end on the tiny config: train 2 steps, export, run, check the files."""
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import trimesh
from PIL import Image

from tests.conftest import REPO, tiny_config
from wvd_jax import errors, visualize
from wvd_jax.models import inference_checkpoint
from wvd_jax.tasks import api
from wvd_jax.training import export, train


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('tasks'))
  config = tiny_config()
  config.train.num_steps = 2
  config.train.log_sample_grids = False
  config.sample.num_steps = 2
  config.sample.num_samples = 2
  train.train_and_evaluate(config, workdir)
  path = export.export(config, workdir)
  # An input image of another size and aspect: it is centre-cropped and resized.
  image = (np.random.default_rng(0).uniform(0, 255, (30, 40, 3))).astype(np.uint8)
  Image.fromarray(image).save(os.path.join(workdir, 'input.png'))
  views = os.path.join(workdir, 'views')
  os.makedirs(views)
  for i in range(3):
    Image.fromarray(np.roll(image, 3 * i, axis=1)).save(os.path.join(views, f'v{i}.png'))
  return config, workdir, path


def test_export_has_no_optimizer_state(exported):
  config, _, path = exported
  assert sorted(os.listdir(path)) == ['config.json', 'params']
  stored, _, params = inference_checkpoint.load(path, config)
  assert stored.model.width == config.model.width
  assert 'mu' not in json.dumps(list(params.keys()))


def test_checkpoint_of_another_config_is_rejected(exported):
  config, _, path = exported
  other = tiny_config()
  other.model.width = 96
  with pytest.raises(errors.UserError, match=r'model.width: config 96 vs checkpoint 48'):
    inference_checkpoint.load(path, other)
  with pytest.raises(errors.UserError, match='not an exported'):
    inference_checkpoint.load(os.path.dirname(path), config)


def test_all_tasks_write_their_files(exported):
  config, workdir, path = exported
  model = api.WVD.load(path, config)
  out = os.path.join(workdir, 'out')
  image = os.path.join(workdir, 'input.png')

  rec = model.image_to_3d(image, os.path.join(out, 'i23d'))
  assert rec.rgb.shape == rec.xyz.shape == (2, 4, 16, 16, 3)
  assert np.isfinite(rec.xyz).all() and np.isfinite(rec.cam_to_world).all()
  cloud = trimesh.load(os.path.join(out, 'i23d', 'points.ply'))
  assert cloud.vertices.shape == (rec.foreground.sum(), 3) and rec.foreground.sum() > 0
  np.testing.assert_allclose(cloud.vertices, rec.points[rec.foreground], rtol=1e-6)
  with open(os.path.join(out, 'i23d', 'points.ply'), 'rb') as f:
    assert b'comment units: normalized' in f.read(200)
  assert os.path.exists(os.path.join(out, 'i23d', 'cameras', 'images.txt'))

  rec = model.monocular_depth(image, os.path.join(out, 'depth'))
  depth = np.load(os.path.join(out, 'depth', 'depth.npy'))
  assert depth.shape == (16, 16) and np.isfinite(depth).all()
  confidence = np.load(os.path.join(out, 'depth', 'confidence.npy'))
  assert confidence.shape == (16, 16) and (0 <= confidence).all() and (confidence <= 1).all()
  shown = np.asarray(Image.open(os.path.join(out, 'depth', 'depth.png')))
  assert shown.shape == (256, 256, 3)  # Enlarged 16x (nearest) for display; colour-mapped.
  np.testing.assert_array_equal(shown[::16, ::16], visualize.colorize_depth(depth))
  assert np.asarray(Image.open(os.path.join(out, 'depth', 'confidence.png'))).shape == (256, 256)

  pose = np.eye(4)
  pose[:3, 3] = [1.0, 2.0, 3.0]
  with open(os.path.join(workdir, 'poses.json'), 'w') as f:
    json.dump({'frames': [{'image': 'v1.png', 'cam_to_world': pose.tolist()}]}, f)
  rec = model.multiview(os.path.join(workdir, 'views'), os.path.join(out, 'mv'),
                        intrinsics='40,40,20,15', cam_to_world=os.path.join(workdir, 'poses.json'),
                        metric_distance='2.0:cameras:0,2')
  assert rec.depth.shape == (3, 16, 16) and rec.cam_to_world.shape == (3, 4, 4)
  # Known cameras: K mapped through the 40x30 -> 30x30 crop -> 16x16 resize, the pose kept,
  # cameras 0 and 2 two metres apart, and every output saying metres.
  np.testing.assert_allclose(rec.intrinsics[:, 0, 0], 40 * 16 / 30, rtol=1e-6)
  np.testing.assert_allclose(rec.intrinsics[:, :2, 2], 8.0, rtol=1e-6)
  np.testing.assert_array_equal(rec.cam_to_world[1], pose.astype(np.float32))
  centres = rec.cam_to_world[:, :3, 3]
  np.testing.assert_allclose(np.linalg.norm(centres[0] - centres[2]), 2.0, rtol=1e-5)
  with open(os.path.join(out, 'mv', 'units.json')) as f:
    assert json.load(f)['units'] == 'metres'
  with open(os.path.join(out, 'mv', 'cameras', 'cameras.txt')) as f:
    assert '# units: metres' in f.read()
  np.testing.assert_array_equal(rec.rgb[0, 1], model._image(os.path.join(workdir, 'views',
                                                                         'v1.png')))
  with open(os.path.join(out, 'mv', 'cameras', 'images.txt')) as f:
    assert sum('v2.png' in line for line in f) == 1

  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    result = model.camera_control(image, 'pan', os.path.join(out, 'cc'), num_targets=5)
  assert not [w for w in caught if 'fork' in str(w.message)]  # ffmpeg starts without fork().
  assert result.frames.shape == (5, 16, 16, 3) and np.isfinite(result.frames).all()
  assert os.path.getsize(os.path.join(out, 'cc', 'video.mp4')) > 0
  assert len(os.listdir(os.path.join(out, 'cc', 'frames'))) == 5


def test_cli_task_mode_and_bad_inputs(exported, tmp_path):
  config, workdir, path = exported
  flags = ['--config=configs/demo.py', f'--workdir={workdir}', '--config.data.image_size=16',
           '--config.data.render_size=16', '--config.model.width=48',
           '--config.model.depth=2', '--config.sample.num_steps=2']
  run = lambda *extra: subprocess.run([sys.executable, '-m', 'wvd_jax.main', *flags, *extra],
                                      cwd=REPO, capture_output=True, text=True, timeout=300)
  result = run('--mode=depth', f'--input={workdir}/input.png', f'--output={tmp_path}/d',
               '--intrinsics=40,40,20,15')
  assert result.returncode == 0, result.stderr[-3000:]
  assert np.load(tmp_path / 'd' / 'depth.npy').shape == (16, 16)
  assert result.stdout.strip().splitlines()[-1] == f'wrote {tmp_path}/d'
  (tmp_path / 'broken.png').write_bytes(b'not an image')
  result = run('--mode=depth', f'--input={tmp_path}/broken.png', f'--output={tmp_path}/e')
  assert result.returncode != 0 and 'cannot read image' in result.stderr
  (tmp_path / 'path.json').write_text('{"cam_to_world": 3}')
  result = run('--mode=camera_control', f'--input={workdir}/input.png',
               f'--camera_path={tmp_path}/path.json', f'--output={tmp_path}/f')
  assert result.returncode != 0 and 'cam_to_world' in result.stderr
  result = run('--mode=depth', f'--input={workdir}/input.png', '--config.model.width=96')
  assert result.returncode == 2 and 'trained with another model' in result.stderr
