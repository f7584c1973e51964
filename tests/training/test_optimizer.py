"""The fused AdamW + EMA pass (optimizer.fused_adamw_ema) against optax and the unfused step."""
import jax
import numpy as np

from wvd_jax.models import autoencoder
from wvd_jax.training import optimizer, sharding, train
from wvd_jax.training import state as state_lib
from tests.training.test_train import _fixed_batch


def _run(config, batches, fused):
  config.optim.fused_update = fused
  mesh = sharding.make_mesh(config)
  tx = optimizer.make_optimizer(config)
  graphdef, state, _ = state_lib.create_train_state(config, mesh, tx)
  step = jax.jit(train.make_train_step(config, graphdef, tx, autoencoder.PixelAutoencoder()))
  losses = []
  for batch in batches:
    state, metrics = step(state, sharding.global_batch(batch, mesh))
    losses.append(float(metrics['loss']))
  return state, losses


def test_fused_update_equals_the_optax_step(config, tmp_path):
  """Clipping active (tiny clip norm), weight decay, warmup, FP8 scaling state, and a
  non-finite batch in the middle (skipped by both): the same states up to float32 rounding.

  The first moment is float32 here: in bfloat16, float32 rounding differences flip some of its
  roundings (one bfloat16 ulp, 0.4% of a step), which would hide real differences."""
  config.model.fp8 = True
  config.optim.grad_clip_norm = 0.05
  config.optim.weight_decay = 0.1
  config.optim.warmup_steps = 3
  config.optim.learning_rate = 1e-3
  batch = _fixed_batch(config, tmp_path)
  poisoned = {k: np.array(v) for k, v in batch.items()}
  poisoned['rgb'][0, 0, 0, 0, 0] = np.nan
  batches = [batch, poisoned, batch, batch]
  plain, plain_losses = _run(config, batches, fused=False)
  fused, fused_losses = _run(config, batches, fused=True)
  np.testing.assert_allclose(fused_losses, plain_losses, rtol=1e-5)
  assert int(fused.step) == 4 and int(fused.num_nonfinite) == 0
  for name in ('params', 'ema_params', 'opt_state'):
    want, got = jax.tree.leaves(getattr(plain, name)), jax.tree.leaves(getattr(fused, name))
    assert len(want) == len(got)
    for a, b in zip(want, got):
      assert a.dtype == b.dtype and a.shape == b.shape
      np.testing.assert_allclose(b, a,
                                 rtol=1e-5, atol=1e-7)
