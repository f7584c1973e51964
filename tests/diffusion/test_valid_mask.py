"""Unknown depth (converted datasets' valid == False) is out of the XYZ loss entirely."""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from tests.conftest import tiny_config
from wvd_jax.diffusion import objective, schedules
from wvd_jax.models import autoencoder
from wvd_jax.training import sharding, train
from wvd_jax.training import state as state_lib


def _masks(shape, seed=0):
  rng = np.random.default_rng(seed)
  known = rng.random(shape) > 0.4
  surface = rng.random(shape) > 0.5  # Surface also where unknown: xyz_supervision drops it.
  return jnp.asarray(surface), jnp.asarray(known)


def test_xyz_supervision_follows_the_valid_mask():
  surface, known = _masks((2, 3, 4, 4))
  in_loss, background = objective.xyz_supervision(surface, known, sentinel_background=True)
  np.testing.assert_array_equal(in_loss, known)
  np.testing.assert_array_equal(background, known & ~surface)
  in_loss, background = objective.xyz_supervision(surface, known, sentinel_background=False)
  np.testing.assert_array_equal(in_loss, known & surface)
  assert not background.any()


def test_xyz_prediction_gradient_is_zero_at_unknown_pixels():
  b, n, h, w, c = 2, 3, 4, 4, 3
  surface, known = _masks((b, n, h, w))
  in_loss, _ = objective.xyz_supervision(surface, known, sentinel_background=True)
  latents = jax.random.normal(jax.random.PRNGKey(0), (b, n, h, w, 2 * c))

  def loss(prediction):
    return objective.diffusion_loss(
        lambda z, t, cond: prediction, latents, in_loss, jax.random.PRNGKey(1),
        schedule=schedules.CosineSchedule(), prediction='v', p_unconditional=1.0,
        p_rgb_known=0.0, rgb_weight=1.0, xyz_weight=1.0)[0]

  grad = jax.grad(loss)(jax.random.normal(jax.random.PRNGKey(2), latents.shape))
  xyz_grad = np.asarray(grad[..., c:])
  assert np.all(xyz_grad[~np.asarray(known)] == 0.0)
  assert np.all(xyz_grad[np.asarray(known)] != 0.0)
  assert np.all(np.asarray(grad[..., :c]) != 0.0)  # RGB is everywhere in the loss.


def test_a_clip_of_unknown_depth_trains_on_rgb_only():
  config = tiny_config()
  b, n, s = config.data.batch_size, config.data.num_frames, config.data.image_size
  mesh = sharding.make_mesh(config)
  graphdef, state, _ = state_lib.create_train_state(config, mesh, optax.adam(1e-3))
  loss_fn = jax.jit(jax.value_and_grad(
      train.make_loss_fn(config, graphdef, autoencoder.PixelAutoencoder()), has_aux=True))
  keys = jax.random.split(jax.random.PRNGKey(0), 2)
  batch = dict(rgb=np.asarray(jax.random.uniform(keys[0], (b, n, s, s, 3), minval=-1, maxval=1)),
               xyz=np.zeros((b, n, s, s, 3), np.float32),  # The pipeline's XYZ where unknown.
               mask=np.zeros((b, n, s, s), bool), xyz_valid=np.zeros((b, n, s, s), bool))
  (loss, metrics), grads = loss_fn(state.params, batch, jax.random.PRNGKey(1))
  assert float(metrics['loss_xyz']) == 0.0
  assert float(loss) == float(metrics['loss_rgb']) > 0
  assert np.isfinite(float(optax.global_norm(grads))) and float(optax.global_norm(grads)) > 0
  # The same batch with known empty background: the sentinel makes XYZ a target again.
  (_, known), _ = loss_fn(state.params, dict(batch, xyz_valid=~batch['xyz_valid']),
                          jax.random.PRNGKey(1))
  assert float(known['loss_xyz']) > 0
