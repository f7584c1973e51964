"""FP8 matmuls with delayed scaling (models/layers.Fp8DotGeneral) against the plain path, on CPU.

XLA emulates the FP8 GEMMs here with the same quantization, so the numbers are those of the GPU
path; the GPU's own parity check is benchmarks/fp8_parity.py.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from wvd_jax.models import autoencoder, layers
from wvd_jax.training import optimizer, sharding, train
from wvd_jax.training import state as state_lib
from tests.training.test_train import _fixed_batch

E4M3_MAX = float(jnp.finfo(jnp.float8_e4m3fn).max)  # 448


def _mlp_pair(width=32, hidden=64):
  plain = layers.Mlp(width, hidden, dtype=jnp.float32, rngs=nnx.Rngs(0))
  fp8 = layers.Mlp(width, hidden, dtype=jnp.float32, fp8=True, rngs=nnx.Rngs(0))
  return plain, fp8


def _meta(module):
  return module.fc1.dot_general


def test_plain_and_fp8_share_parameters():
  plain, fp8 = _mlp_pair()
  plain_leaves = nnx.to_pure_dict(nnx.state(plain))
  fp8_state = nnx.to_pure_dict(nnx.state(fp8))
  for name in ('fc1', 'fc2'):
    for kind in ('kernel', 'bias'):
      np.testing.assert_array_equal(plain_leaves[name][kind], fp8_state[name][kind])
  assert 'dot_general' not in plain_leaves['fc1'] and 'dot_general' in fp8_state['fc1']


def test_fp8_forward_is_quantized_and_close():
  plain, fp8 = _mlp_pair()
  # Scales matched to the data (as after a step of delayed scaling): e4m3 keeps 3 mantissa bits.
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 16, 32))
  for linear, inp in ((fp8.fc1, x), (fp8.fc2, None)):
    if inp is not None:
      linear.dot_general.input_scale[...] = jnp.full((1,), jnp.abs(inp).max() / E4M3_MAX)
    linear.dot_general.kernel_scale[...] = jnp.full(
        (1,), jnp.abs(linear.kernel[...]).max() / E4M3_MAX)
  h = jax.nn.gelu(fp8.fc1(x), approximate=True)
  fp8.fc2.dot_general.input_scale[...] = jnp.full((1,), jnp.abs(h).max() / E4M3_MAX)
  want, got = plain(x), fp8(x)
  rel = float(jnp.linalg.norm(got - want) / jnp.linalg.norm(want))
  assert 1e-4 < rel < 0.08, rel  # Really quantized, and within FP8's precision.


def test_delayed_scaling_state_comes_back_as_gradient():
  """The meta's "gradient" is its next value: amax history rolled with this step's max |x|,
  the scale from the previous history (zeros: kept at 1)."""
  _, fp8 = _mlp_pair()
  graphdef, state = nnx.split(fp8)
  params = nnx.to_pure_dict(state)
  x = 3.0 * jax.random.normal(jax.random.PRNGKey(2), (2, 8, 32))

  def loss(p):
    return jnp.sum(nnx.merge(graphdef, p)(x) ** 2)

  grads = jax.grad(loss)(params)
  meta = grads['fc1']['dot_general']
  np.testing.assert_allclose(meta['input_amax_history'][0], jnp.abs(x).max(), rtol=1e-6)
  np.testing.assert_allclose(meta['kernel_amax_history'][0],
                             jnp.abs(params['fc1']['kernel']).max(), rtol=1e-6)
  assert float(meta['output_grad_amax_history'][0]) > 0
  np.testing.assert_array_equal(meta['input_scale'], 1.0)  # Empty history: scale kept.
  # Second step: the scale follows the recorded amax.
  params2 = optimizer.with_fp8_meta(params, grads)
  meta2 = jax.grad(loss)(params2)['fc1']['dot_general']
  np.testing.assert_allclose(meta2['input_scale'], jnp.abs(x).max() / E4M3_MAX, rtol=1e-6)


def _train(config, batch, steps):
  mesh = sharding.make_mesh(config)
  tx = optimizer.make_optimizer(config)
  graphdef, state, _ = state_lib.create_train_state(config, mesh, tx)
  step = jax.jit(train.make_train_step(config, graphdef, tx, autoencoder.PixelAutoencoder()))
  batch = sharding.global_batch(batch, mesh)
  states, losses = [state], []
  for _ in range(steps):
    state, metrics = step(state, batch)
    states.append(state)
    losses.append(float(metrics['loss']))
  return states, np.array(losses)


def test_fp8_train_step_tracks_the_plain_step(config, tmp_path):
  """Same seed, same batches: the FP8 run's losses follow the plain run's (loss-curve parity),
  its scaling state is written back (never trained), and the EMA carries the current state."""
  config.optim.learning_rate = 3e-3
  config.optim.warmup_steps = 1
  batch = _fixed_batch(config, tmp_path)
  _, plain_losses = _train(config, batch, 12)
  config.model.fp8 = True
  states, losses = _train(config, batch, 12)
  assert np.all(np.isfinite(losses)) and int(states[-1].num_nonfinite) == 0
  np.testing.assert_allclose(losses, plain_losses, rtol=0.05)
  assert not np.allclose(losses, plain_losses, rtol=1e-6)  # Really another computation.
  state, previous = states[-1], states[-2]
  meta = state.params['blocks']['mlp']['fc1']['dot_general']
  # The last step recorded the kernel it ran with (the previous params), per layer.
  np.testing.assert_allclose(
      meta['kernel_amax_history'][:, 0],
      jnp.abs(previous.params['blocks']['mlp']['fc1']['kernel']).max(axis=(1, 2)), rtol=1e-6)
  # A ring buffer (flax's fp8_ops): the previous step's entry rolled to the end.
  np.testing.assert_allclose(meta['kernel_amax_history'][:, -1],
                             previous.params['blocks']['mlp']['fc1']['dot_general'][
                                 'kernel_amax_history'][:, 0])
  for a, b in zip(jax.tree.leaves(meta),
                  jax.tree.leaves(state.ema_params['blocks']['mlp']['fc1']['dot_general'])):
    np.testing.assert_array_equal(a, b)
  # Gradient clipping and the reported norm ignore the scaling state.
  ones = jax.tree.map(jnp.ones_like, state.params)
  trained = sum(x.size for p, x in jax.tree_util.tree_leaves_with_path(state.params)
                if not optimizer.is_fp8_meta(p))
  np.testing.assert_allclose(float(optax.global_norm(optimizer.without_fp8_meta(ones))) ** 2,
                             trained, rtol=1e-6)
