"""The RGB-only ablation (config.diffusion.modalities == 'rgb'): XYZ is a constant zero clean
condition in training and sampling, never in the loss, and the XYZ tasks refuse such a model."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.conftest import tiny_config
from wvd_jax import config_lib
from wvd_jax.diffusion import generate, objective, samplers, schedules
from wvd_jax.models import autoencoder, inference_checkpoint
from wvd_jax.tasks import api
from wvd_jax.training import sharding, train
from wvd_jax.training import state as state_lib

SCHEDULE = schedules.CosineSchedule()


def _rgb_config():
  config = tiny_config()
  config.diffusion.modalities = 'rgb'
  config_lib.validate_config(config)
  return config


def test_validate_config_rejects_unknown_modalities():
  config = tiny_config()
  assert config.diffusion.modalities == 'rgb_xyz' and not config_lib.rgb_only(config)
  assert config_lib.rgb_only(_rgb_config())
  config.diffusion.modalities = 'xyz'
  with pytest.raises(config_lib.ConfigError, match='diffusion.modalities'):
    config_lib.validate_config(config)


# ---------------------------------------------------------------------------------------------
# Training objective.


def _loss(latents, xyz_known, xyz_weight, seen):
  """diffusion_loss with a network that reads only the RGB input and RGB flags; records inputs."""
  c = latents.shape[-1] // 2

  def net(z, t, cond):
    seen.append((z, cond))
    rgb = z[..., :c]
    return jnp.concatenate([0.5 * rgb + t[:, None, None, None, None],
                            rgb - cond[..., :1][:, :, :, None, None]], axis=-1)

  valid = jnp.ones(latents.shape[:4], bool).at[:, :, 0].set(False)
  return objective.diffusion_loss(
      net, latents, valid, jax.random.PRNGKey(3), schedule=SCHEDULE, prediction='v',
      p_unconditional=0.3, p_rgb_known=0.3, rgb_weight=1.0, xyz_weight=xyz_weight,
      xyz_known=xyz_known)


def test_objective_xyz_known_is_rgb_loss_with_zero_xyz_condition():
  latents = jax.random.normal(jax.random.PRNGKey(0), (8, 3, 2, 2, 6))
  rgb_only_seen, reference_seen = [], []
  loss, metrics = _loss(latents, True, 1.0, rgb_only_seen)
  ref_loss, ref_metrics = _loss(latents, False, 0.0, reference_seen)
  (z, cond), (z_ref, cond_ref) = rgb_only_seen[0], reference_seen[0]
  # The network sees XYZ as a clean zero condition in every frame; RGB exactly as without it.
  np.testing.assert_array_equal(z[..., 3:], 0.0)
  np.testing.assert_array_equal(cond[..., 1], 1.0)
  np.testing.assert_array_equal(z[..., :3], z_ref[..., :3])
  np.testing.assert_array_equal(cond[..., 0], cond_ref[..., 0])
  assert 0.0 < float(cond[..., 0].mean()) < 1.0  # Both known and noised RGB frames occur.
  # Hence the loss is the XYZ-weight-0 loss, bit for bit, and XYZ is out of it.
  assert float(loss) == float(ref_loss) == float(metrics['loss_rgb'])
  assert float(metrics['loss_xyz']) == 0.0
  # The XYZ values given are never read: NaNs there change nothing.
  nan_loss, _ = _loss(latents.at[..., 3:].set(jnp.nan), True, 1.0, [])
  assert float(nan_loss) == float(loss)


def _synthetic_batch(seed, config):
  b, n, s = config.data.batch_size, config.data.num_frames, config.data.image_size
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
  return dict(rgb=np.array(jax.random.uniform(k1, (b, n, s, s, 3), minval=-1, maxval=1)),
              xyz=np.array(jax.random.uniform(k2, (b, n, s, s, 3), minval=-1, maxval=1)),
              mask=np.array(jax.random.uniform(k3, (b, n, s, s)) > 0.3),
              xyz_valid=np.ones((b, n, s, s), bool))


def test_train_loss_and_gradients_ignore_the_batch_xyz():
  config = _rgb_config()
  mesh = sharding.make_mesh(config)
  graphdef, state, _ = state_lib.create_train_state(config, mesh, optax.adam(1e-3))
  loss_fn = jax.jit(jax.value_and_grad(
      train.make_loss_fn(config, graphdef, autoencoder.PixelAutoencoder()), has_aux=True))
  batch = _synthetic_batch(0, config)
  other = dict(batch, xyz=_synthetic_batch(1, config)['xyz'], mask=~batch['mask'])
  other['xyz'][0, 1, 2, 3] = np.nan
  (loss, metrics), grads = loss_fn(state.params, batch, jax.random.PRNGKey(0))
  (loss2, _), grads2 = loss_fn(state.params, other, jax.random.PRNGKey(0))
  assert np.isfinite(float(loss)) and float(metrics['loss_xyz']) == 0.0
  assert float(loss) == float(loss2)
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(grads2)):
    np.testing.assert_array_equal(a, b)


def test_tiny_training_run_in_rgb_mode(tmp_path):
  """Steps of the real train step: finite, the weights move, loss_xyz stays 0."""
  config = _rgb_config()
  config.optim.warmup_steps = 1
  mesh = sharding.make_mesh(config)
  from wvd_jax.training import optimizer  # pylint: disable=import-outside-toplevel
  tx = optimizer.make_optimizer(config)
  graphdef, state, _ = state_lib.create_train_state(config, mesh, tx)
  step = jax.jit(train.make_train_step(config, graphdef, tx, autoencoder.PixelAutoencoder()))
  start = jax.tree.leaves(state.params)
  batch = sharding.global_batch(_synthetic_batch(2, config), mesh)
  for _ in range(3):
    state, metrics = step(state, batch)
    assert np.isfinite(float(metrics['loss'])) and float(metrics['loss_xyz']) == 0.0
  assert int(state.step) == 3 and int(metrics['num_nonfinite']) == 0
  assert any(not np.array_equal(a, b) for a, b in zip(start, jax.tree.leaves(state.params)))


# ---------------------------------------------------------------------------------------------
# Sampling.


def _trap_net(params, z, t, cond_mask):
  """A network that outputs NaN for any sample where it sees XYZ other than a clean zero."""
  del t
  c = z.shape[-1] // 2
  ok = jnp.all(cond_mask[..., 1] == 1.0, axis=1) & jnp.all(z[..., c:] == 0.0, axis=(1, 2, 3, 4))
  return jnp.where(ok[:, None, None, None, None], params['scale'] * z, jnp.nan)


@pytest.mark.parametrize('xyz_always_known', [True, False])
def test_guided_sampler_keeps_xyz_a_clean_zero_condition(xyz_always_known):
  known = jnp.zeros((2, 3, 2, 2, 6)).at[:, 0, ..., :3].set(0.5)
  known_mask = jnp.zeros_like(known).at[..., 3:].set(1.0).at[:, 0, ..., :3].set(1.0)
  cond_mask = jnp.zeros((2, 3, 2)).at[..., 1].set(1.0).at[:, 0, 0].set(1.0)
  config = samplers.SamplerConfig(num_steps=3, guidance=2.0, langevin_steps=1,
                                  xyz_always_known=xyz_always_known)
  x = samplers.sample(_trap_net, dict(scale=jnp.float32(0.9)), jax.random.PRNGKey(0), known,
                      known_mask, cond_mask, schedule=SCHEDULE, prediction='v', config=config)
  if xyz_always_known:
    np.testing.assert_array_equal(x[..., 3:], 0.0)
    np.testing.assert_array_equal(x[:, 0, ..., :3], 0.5)
    assert np.isfinite(x).all()
  else:  # The plain unconditional pass drops every condition, XYZ's too: the trap fires.
    assert not np.isfinite(x).all()


def test_generate_rgb_only_samples_zero_xyz_and_keeps_frame_0():
  config = _rgb_config()
  config.sample.guidance = 2.0
  config.sample.num_steps = 2
  assert samplers.SamplerConfig.from_config(config).xyz_always_known
  mesh = sharding.make_mesh(config)
  graphdef, state, _ = state_lib.create_train_state(config, mesh, optax.adam(1e-3))
  leaves, tree = jax.tree.flatten(state.params)
  keys = jax.random.split(jax.random.PRNGKey(0), len(leaves))
  params = jax.tree.unflatten(
      tree, [l + 0.05 * jax.random.normal(k, l.shape) for l, k in zip(leaves, keys)])
  rgb0 = jax.random.uniform(jax.random.PRNGKey(1), (2, 16, 16, 3), minval=-1, maxval=1)
  rgb, xyz = generate.sample_from_first_frame(config, graphdef, params, rgb0, 4,
                                              jax.random.PRNGKey(2))
  assert rgb.shape == xyz.shape == (2, 4, 16, 16, 3) and np.isfinite(rgb).all()
  np.testing.assert_array_equal(xyz, 0.0)
  np.testing.assert_array_equal(rgb[:, 0], rgb0)
  assert np.abs(rgb[:, 1:] - rgb0[:, None]).max() > 0.0
  # Callers need not know: XYZ inputs and flags given to generate_video are overridden.
  rgb_in = jnp.zeros((2, 4, 16, 16, 3)).at[:, 0].set(rgb0)
  rgb_mask = jnp.zeros((2, 4, 16, 16), bool).at[:, 0].set(True)
  garbage = jax.random.normal(jax.random.PRNGKey(3), rgb_in.shape)
  cond = jnp.zeros((2, 4, 2)).at[:, 0, 0].set(1.0).at[:, 1, 1].set(1.0)
  rgb2, xyz2 = generate.generate_video(config, graphdef, params, rgb_in, rgb_mask, garbage,
                                       rgb_mask, cond, jax.random.PRNGKey(2))
  np.testing.assert_array_equal(rgb2, rgb)
  np.testing.assert_array_equal(xyz2, 0.0)


# ---------------------------------------------------------------------------------------------
# Tasks.


def test_xyz_tasks_refuse_an_rgb_only_model():
  config = _rgb_config()

  def generator(*args, **kwargs):
    raise AssertionError('the generator must not run')

  wvd = api.WVD(config, None, None, generator=generator)
  image = np.zeros((16, 16, 3), np.float32)
  for call in (lambda: wvd.image_to_3d(image), lambda: wvd.monocular_depth(image),
               lambda: wvd.multiview(np.stack([image, image])),
               lambda: wvd.camera_control(image, 'orbit')):
    with pytest.raises(ValueError, match=r"config\.diffusion\.modalities='rgb'"):
      call()


def test_exported_rgb_only_checkpoint_rejects_an_rgb_xyz_config(tmp_path):
  """The parameters fit either way; the modalities must match or XYZ tasks would run."""
  with open(os.path.join(tmp_path, 'config.json'), 'w') as f:
    json.dump(json.loads(_rgb_config().to_json_best_effort()), f)
  with pytest.raises(ValueError, match='diffusion.modalities'):
    inference_checkpoint.load(str(tmp_path), tiny_config())


def test_checkpoint_stored_before_modalities_existed_is_rgb_xyz(tmp_path):
  stored = json.loads(tiny_config().to_json_best_effort())
  del stored['diffusion']['modalities']
  with open(os.path.join(tmp_path, 'config.json'), 'w') as f:
    json.dump(stored, f)
  with pytest.raises(ValueError, match="modalities: config 'rgb' vs checkpoint 'rgb_xyz'"):
    inference_checkpoint.load(str(tmp_path), _rgb_config())
  # The architecture is accepted; restoring the (absent) parameters fails next.
  with pytest.raises(Exception) as error:
    inference_checkpoint.load(str(tmp_path), tiny_config())
  assert 'another config' not in str(error.value)
