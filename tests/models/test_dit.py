"""The DiT: shapes, dtypes, conditioning and gradients."""
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from wvd_jax.models import dit, layers


def _model(**kw):
  cfg = dit.DiTConfig(in_channels=6, patch_size=4, width=48, depth=2, num_heads=4, **kw)
  model = dit.DiT(cfg, rngs=nnx.Rngs(0))
  # adaLN-zero and the zero head make a fresh model output 0; perturb to test the wiring.
  graphdef, state = nnx.split(model)
  leaves, tree = jax.tree.flatten(state)
  keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  leaves = [l + 0.05 * jax.random.normal(k, l.shape) for l, k in zip(leaves, keys)]
  return nnx.merge(graphdef, jax.tree.unflatten(tree, leaves))


def _inputs(b=2, n=3):
  x = jax.random.normal(jax.random.PRNGKey(2), (b, n, 16, 16, 6))
  return x, jnp.linspace(0.1, 0.9, b), jnp.zeros((b, n, 2))


def test_shapes_and_dtype():
  x, t, c = _inputs()
  assert _model()(x, t, c).shape == x.shape
  out = _model(compute_dtype='bfloat16')(x, t, c)
  assert out.dtype == jnp.float32 and out.shape == x.shape


def test_fresh_model_outputs_zero():
  cfg = dit.DiTConfig(in_channels=6, patch_size=4, width=48, depth=1, num_heads=4)
  x, t, c = _inputs()
  np.testing.assert_array_equal(dit.DiT(cfg, rngs=nnx.Rngs(0))(x, t, c), 0.0)


def test_condition_embedding_and_time_change_output():
  model = _model()
  x, t, c = _inputs()
  base = model(x, t, c)
  assert np.abs(model(x, t, c.at[:, 0, 0].set(1.0)) - base).max() > 1e-4
  assert np.abs(model(x, t + 0.05, c) - base).max() > 1e-4


def test_frames_interact_through_attention():
  model = _model()
  x, t, c = _inputs()
  moved = model(x.at[:, 2].add(1.0), t, c)
  assert np.abs(moved[:, 0] - model(x, t, c)[:, 0]).max() > 1e-4


def test_gradients_finite():
  model = _model()
  x, t, c = _inputs()
  graphdef, state = nnx.split(model)
  loss = lambda s: jnp.mean(nnx.merge(graphdef, s)(x, t, c) ** 2)
  grads = jax.grad(loss)(state)
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))


def test_rope_preserves_norm_and_is_relative():
  angles = layers.rope_3d_angles(2, 3, 3, 12)
  q = jax.random.normal(jax.random.PRNGKey(0), (1, 18, 1, 12))
  rotated = layers.apply_rope(q, angles)
  np.testing.assert_allclose(jnp.linalg.norm(rotated, axis=-1), jnp.linalg.norm(q, axis=-1),
                             rtol=1e-5)
  # Same vector at two positions: the dot product depends only on the offset.
  v = jnp.broadcast_to(q[:, :1], q.shape)
  r = layers.apply_rope(v, angles)[0, :, 0]
  np.testing.assert_allclose(r[0] @ r[4], r[4] @ r[8], rtol=1e-4)  # offsets (0,1,1) both
