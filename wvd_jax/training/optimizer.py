"""AdamW with warmup, decay and gradient clipping, as configured in config.optim.

With ``config.model.fp8`` the parameter tree also holds FP8 delayed-scaling state
(models/layers.Fp8Meta, under each FP8 Linear's 'dot_general' key). Its "gradient" is its next
value. The train step hands the optimizer zeros in its place (so it stays outside the clipping
norm; its moments, a few floats a layer, stay zero) and then overwrites whatever the optimizer
made of it with the returned values (:func:`with_fp8_meta`).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

FP8_META_KEY = 'dot_general'  # The nnx.Linear attribute holding an Fp8DotGeneral.


def is_fp8_meta(path) -> bool:
  """Whether a pure-dict tree path (jax key path) leads to FP8 scaling state."""
  return any(getattr(key, 'key', None) == FP8_META_KEY for key in path)


def without_fp8_meta(grads):
  """The gradients with the FP8 state's entries zeroed (for norms and the optimizer)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, g: jnp.zeros_like(g) if is_fp8_meta(path) else g, grads)


def with_fp8_meta(params, grads):
  """``params`` with each FP8 state entry replaced by its "gradient" (its next value)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, p, g: g if is_fp8_meta(path) else p, params, grads)


def learning_rate_schedule(config) -> optax.Schedule:
  o = config.optim
  warmup = optax.linear_schedule(0.0, o.learning_rate, max(o.warmup_steps, 1))
  if o.decay == 'cosine':
    after = optax.cosine_decay_schedule(o.learning_rate,
                                        max(config.train.num_steps - o.warmup_steps, 1))
  else:
    after = optax.constant_schedule(o.learning_rate)
  return optax.join_schedules([warmup, after], [o.warmup_steps])


def make_optimizer(config) -> optax.GradientTransformation:
  o = config.optim
  parts = []
  if o.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(o.grad_clip_norm))
  parts.append(optax.adamw(learning_rate_schedule(config), b1=o.b1, b2=o.b2,
                           weight_decay=o.weight_decay, mu_dtype=jnp.dtype(o.mu_dtype)))
  return optax.chain(*parts)
