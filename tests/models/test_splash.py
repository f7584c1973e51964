"""The Pallas splash-attention kernel (TPU) in interpret mode on CPU equals XLA attention."""
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from wvd_jax.models import layers, splash


def test_splash_kernel_matches_xla_attention_and_gradient():
  q, k, v = (jax.random.normal(key, (2, 128, 2, 16))
             for key in jax.random.split(jax.random.PRNGKey(0), 3))

  def loss(fn, q):
    return jnp.sum(fn(q, k, v) * v)

  ours = jax.jit(lambda q: splash.splash_attention(q, k, v, interpret=True))
  np.testing.assert_allclose(ours(q), jax.nn.dot_product_attention(q, k, v), atol=2e-6)
  grad = jax.grad(lambda q: loss(lambda *a: splash.splash_attention(*a, interpret=True), q))(q)
  ref = jax.grad(lambda q: loss(jax.nn.dot_product_attention, q))(q)
  np.testing.assert_allclose(grad, ref, atol=2e-6)


def test_attention_layer_with_splash_equals_xla():
  """The DiT's attention layer (QK norm, 3D RoPE) with implementation='splash_interpret' (128
  tokens: 2 frames of 8 x 8 patches)."""
  assert layers.resolve_attention_implementation('auto', jnp.float32) == 'xla'  # Not TPU here.
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 128, 48))
  rope = layers.rope_3d(2, 8, 8, 12)
  outs = []
  for impl in ('xla', 'splash_interpret'):
    attention = layers.Attention(48, 4, implementation=impl, dtype=jnp.float32,
                                 rngs=nnx.Rngs(0))
    outs.append(attention(x, rope))
  np.testing.assert_allclose(outs[1], outs[0], atol=2e-6)
