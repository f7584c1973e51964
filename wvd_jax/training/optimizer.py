"""AdamW with warmup, decay and gradient clipping, as configured in config.optim."""
from __future__ import annotations

import jax.numpy as jnp
import optax


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
