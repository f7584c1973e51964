"""generate_video prepares the weights for its loop: FP8 kernels quantized once, XLA norms."""
import jax
import numpy as np
import optax

from tests.conftest import tiny_config
from wvd_jax import config_lib
from wvd_jax.diffusion import generate
from wvd_jax.training import sharding
from wvd_jax.training import state as state_lib


def _sample(norm_kernel: str):
  config = tiny_config()
  config.model.fp8 = True
  config.model.compute_dtype = 'bfloat16'
  config.model.norm_kernel = norm_kernel
  config.sample.num_steps = 2
  config_lib.validate_config(config)
  graphdef, state, _ = state_lib.create_train_state(config, sharding.make_mesh(config),
                                                    optax.adam(1e-3))
  leaves, tree = jax.tree.flatten(state.params)
  keys = jax.random.split(jax.random.PRNGKey(0), len(leaves))
  params = jax.tree.unflatten(  # adaLN-zero switched on; FP8 state stays as initialized.
      tree, [l + 0.05 * jax.random.normal(k, l.shape) if l.ndim > 1 and 'float' in str(l.dtype)
             else l for l, k in zip(leaves, keys)])
  rgb0 = jax.random.uniform(jax.random.PRNGKey(1), (1, 16, 16, 3), minval=-1, maxval=1)
  return generate.sample_from_first_frame(config, graphdef, params, rgb0, 2,
                                          jax.random.PRNGKey(2))


def test_fp8_model_samples_with_the_xla_norms_whatever_it_trained_with():
  rgb, xyz = _sample('xla')
  assert np.isfinite(rgb).all() and np.isfinite(xyz).all()
  rgb_k, xyz_k = _sample('pallas_interpret')  # Trained with the kernels: sampled without.
  np.testing.assert_array_equal(rgb_k, rgb)
  np.testing.assert_array_equal(xyz_k, xyz)
