"""Sampling: shapes, finiteness and the condition kept; the CLI writes PNG and PLY files."""
import os
import subprocess
import sys

import jax
import numpy as np
import trimesh
from PIL import Image

from tests.conftest import REPO
from wvd_jax.diffusion import generate
from wvd_jax.training import optimizer, sharding
from wvd_jax.training import state as state_lib


def _perturbed_params(params):
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(0), len(leaves))
  return jax.tree.unflatten(
      tree, [l + 0.05 * jax.random.normal(k, l.shape) for l, k in zip(leaves, keys)])


def test_sampler_keeps_condition_and_is_finite(config):
  mesh = sharding.make_mesh(config)
  graphdef, state, _ = state_lib.create_train_state(config, mesh, optimizer.make_optimizer(config))
  params = _perturbed_params(state.params)
  rgb0 = jax.random.uniform(jax.random.PRNGKey(1), (2, 16, 16, 3), minval=-1, maxval=1)
  rgb, xyz = generate.sample_from_first_frame(config, graphdef, params, rgb0, 4,
                                            jax.random.PRNGKey(2))
  assert rgb.shape == xyz.shape == (2, 4, 16, 16, 3)
  assert np.isfinite(rgb).all() and np.isfinite(xyz).all()
  np.testing.assert_array_equal(rgb[:, 0], rgb0)
  assert np.abs(rgb[:, 1:]).max() <= 1.0 and np.abs(xyz).max() <= 1.0
  # Deterministic for a seed.
  again, _ = generate.sample_from_first_frame(config, graphdef, params, rgb0, 4,
                                            jax.random.PRNGKey(2))
  np.testing.assert_array_equal(rgb, again)


def test_cli_train_then_sample_writes_files(tmp_path):
  overrides = ['--config.data.image_size=16', '--config.data.render_size=16',
               '--config.data.num_train_scenes=4', '--config.data.num_validation_scenes=2',
               '--config.data.num_test_scenes=2', '--config.data.batch_size=2',
               '--config.model.width=48', '--config.model.depth=1', '--config.train.num_steps=2',
               '--config.train.log_every=1', '--config.train.eval_every=2',
               '--config.train.checkpoint_every=2', '--config.sample.num_steps=2']
  for mode in ('train', 'sample'):
    result = subprocess.run(
        [sys.executable, '-m', 'wvd_jax.main', '--config=configs/demo.py',
         f'--workdir={tmp_path}', f'--mode={mode}', *overrides],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    written = tmp_path / 'samples' if mode == 'sample' else tmp_path
    assert result.stdout.strip().splitlines()[-1] == f'wrote {written}'
    assert 'Downloading and preparing' not in result.stdout + result.stderr
  out = tmp_path / 'samples'
  grid = np.asarray(Image.open(out / 'sample_0.png'))
  assert grid.shape == (4 * 18, 4 * 18, 3)
  cloud = trimesh.load(out / 'sample_0.ply')
  xyz = np.load(out / 'samples.npz')['xyz'][0]
  surface = int(np.sum(~np.all(xyz < -0.9, axis=-1)))  # Pixels not sampled as background.
  assert 0 < surface <= 4 * 16 * 16
  assert cloud.vertices.shape == (surface, 3) and cloud.colors.shape[0] == surface
  assert os.listdir(tmp_path / 'tensorboard')
  assert (tmp_path / 'checkpoints' / '2').exists()
  assert (tmp_path / 'checkpoints' / 'config.json').exists()  # Checked before a resume or sample.
