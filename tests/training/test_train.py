"""Training: the model overfits a fixed batch, checkpoints round-trip, the loop resumes."""
import jax
import numpy as np
import optax

from wvd_jax.data import pipeline
from wvd_jax.models import autoencoder
from wvd_jax.training import checkpoints, metrics, optimizer, sharding, train
from wvd_jax.training import state as state_lib


def _fixed_batch(config, tmp_path):
  ds = pipeline.make_dataset(config, 'train', str(tmp_path))
  return next(iter(ds))


def test_overfits_a_fixed_batch(config, tmp_path):
  """With the noise and times fixed too, the loss on one batch must fall by 10x."""
  config.optim.learning_rate = 3e-3
  mesh = sharding.make_mesh(config)
  tx = optax.adam(3e-3)
  graphdef, state, _ = state_lib.create_train_state(config, mesh, tx)
  loss_fn = train.make_loss_fn(config, graphdef, autoencoder.PixelAutoencoder())
  batch = sharding.global_batch(_fixed_batch(config, tmp_path), mesh)
  rng = jax.random.PRNGKey(0)

  @jax.jit
  def step(params, opt_state, batch):
    (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, rng)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  params, opt_state = state.params, tx.init(state.params)
  losses = []
  for _ in range(150):
    params, opt_state, loss = step(params, opt_state, batch)
    losses.append(float(loss))
  assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])


def test_checkpoint_round_trip_is_exact(config, tmp_path):
  mesh = sharding.make_mesh(config)
  tx = optimizer.make_optimizer(config)
  graphdef, state, shardings = state_lib.create_train_state(config, mesh, tx)
  step = jax.jit(train.make_train_step(config, graphdef, tx, autoencoder.PixelAutoencoder()))
  batch = sharding.global_batch(_fixed_batch(config, tmp_path), mesh)
  state, _ = step(state, batch)
  manager = checkpoints.make_manager(str(tmp_path), config, async_save=False)
  checkpoints.save(manager, state)
  manager.wait_until_finished()
  shapes = jax.eval_shape(lambda: state)
  restored = checkpoints.restore_latest(manager, checkpoints.abstract_like(shardings, shapes))
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
    np.testing.assert_array_equal(a, b)
  assert int(restored.step) == 1


def test_nonfinite_update_is_skipped(config, tmp_path):
  mesh = sharding.make_mesh(config)
  tx = optimizer.make_optimizer(config)
  graphdef, state, _ = state_lib.create_train_state(config, mesh, tx)
  step = jax.jit(train.make_train_step(config, graphdef, tx, autoencoder.PixelAutoencoder()))
  batch = _fixed_batch(config, tmp_path)
  batch['rgb'][0, 1, 0, 0, 0] = np.nan
  new_state, metrics = step(state, sharding.global_batch(batch, mesh))
  assert int(metrics['num_nonfinite']) == 1 and int(new_state.step) == 1
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(new_state.params)):
    np.testing.assert_array_equal(a, b)


def test_loss_falls_on_the_demo_dataset(config, tmp_path):
  """The CI-sized run: 60 steps of the tiny model on the synthetic world."""
  config.train.num_steps = 60
  config.train.log_every = 1
  config.train.eval_every = 1000
  config.train.checkpoint_every = 1000
  config.train.log_sample_grids = False
  config.optim.learning_rate = 2e-3
  config.optim.warmup_steps = 5
  train.train_and_evaluate(config, str(tmp_path))
  losses = [r['train/loss'] for r in metrics.read_jsonl(str(tmp_path)) if 'train/loss' in r]
  assert len(losses) == 60
  first, last = np.mean(losses[:10]), np.mean(losses[-10:])
  assert last < 0.8 * first, (first, last)


def test_sentinel_background_is_an_xyz_target(config, tmp_path):
  """'sentinel' == 'masked' on the batch whose empty pixels hold the background corner and
  count as valid (bit-identical), and it differs from 'masked' on the raw batch."""
  from wvd_jax.geometry import normalization  # pylint: disable=import-outside-toplevel
  config.data.object_fraction = 1.0  # Object scenes: a masked background in every clip.
  mesh = sharding.make_mesh(config)
  graphdef, state, _ = state_lib.create_train_state(config, mesh, optax.adam(1e-3))
  batch = _fixed_batch(config, tmp_path)
  assert not batch['mask'].all()
  rng = jax.random.PRNGKey(3)

  def loss(background, b):
    config.diffusion.background = background
    fn = train.make_loss_fn(config, graphdef, autoencoder.PixelAutoencoder())
    return float(jax.jit(fn)(state.params, b, rng)[0])

  filled = dict(batch, xyz=np.asarray(normalization.fill_background(batch['xyz'], batch['mask'])),
                mask=np.ones_like(batch['mask']))
  assert loss('sentinel', batch) == loss('masked', filled)
  assert loss('sentinel', batch) != loss('masked', batch)


def test_max_minutes_stops_at_a_stop_check(config, tmp_path):
  config.train.num_steps = 6
  config.train.log_every = 3
  config.train.stop_check_every = 2
  config.train.max_minutes = 1e-6
  config.train.log_sample_grids = False
  state = train.train_and_evaluate(config, str(tmp_path))
  assert int(state.step) == 2
  manager = checkpoints.make_manager(str(tmp_path), config)
  assert manager.latest_step() == 2
