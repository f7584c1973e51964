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


def _is_state(node) -> bool:
  return isinstance(node, (optax.ScaleByAdamState, optax.ScaleByScheduleState))


def fused_adamw_ema(config, grads, opt_state, params, ema, ema_decay, finite):
  """One elementwise pass per parameter for clipping, AdamW, the EMA and the non-finite guard.

  Computes what ``make_optimizer(config)``'s update, ``optax.apply_updates``, the EMA
  ``ema_decay * ema + (1 - ema_decay) * params`` and ``where(finite, new, old)`` compute one
  after another, as one function of (g, p, mu, nu, ema) per leaf, so that XLA reads and writes
  each parameter's five arrays once (the separate transformations each make a pass over HBM).
  ``opt_state`` keeps optax's structure (checkpoints are interchangeable with the unfused path).

  Args: grads/params/ema: the parameter tree (float32); opt_state: ``make_optimizer(config)``'s
  state; ema_decay: scalar for this step; finite: bool scalar, False = keep everything as it was.
  Returns (params, opt_state, ema).
  """
  o = config.optim
  adam, = [s for s in jax.tree.leaves(opt_state, is_leaf=_is_state)
           if isinstance(s, optax.ScaleByAdamState)]
  schedule_state, = [s for s in jax.tree.leaves(opt_state, is_leaf=_is_state)
                     if isinstance(s, optax.ScaleByScheduleState)]
  clip = jnp.float32(1.0)
  if o.grad_clip_norm > 0:
    norm = optax.global_norm(grads)
    clip = jnp.where(norm < o.grad_clip_norm, 1.0, o.grad_clip_norm / norm)
  count = optax.safe_increment(adam.count)
  bias1 = 1.0 - o.b1 ** count.astype(jnp.float32)
  bias2 = 1.0 - o.b2 ** count.astype(jnp.float32)
  lr = learning_rate_schedule(config)(schedule_state.count)
  mu_dtype = jnp.dtype(o.mu_dtype)

  def leaf(g, p, mu, nu, e):
    g = g * clip
    mu_new = (1.0 - o.b1) * g + o.b1 * mu.astype(jnp.float32)
    nu_new = (1.0 - o.b2) * jnp.square(g) + o.b2 * nu
    step = (mu_new / bias1) / (jnp.sqrt(nu_new / bias2) + 1e-8) + o.weight_decay * p
    p_new = p - lr * step
    e_new = ema_decay * e + (1.0 - ema_decay) * p_new
    keep = lambda new, old: jnp.where(finite, new.astype(old.dtype), old)
    return (keep(p_new, p), keep(mu_new.astype(mu_dtype), mu), keep(nu_new, nu), keep(e_new, e))

  out = jax.tree.map(leaf, grads, params, adam.mu, adam.nu, ema)
  pick = lambda i: jax.tree.map(lambda _, t: t[i], params, out)
  new_adam = optax.ScaleByAdamState(count=jnp.where(finite, count, adam.count), mu=pick(1),
                                    nu=pick(2))
  new_schedule = optax.ScaleByScheduleState(
      count=jnp.where(finite, optax.safe_increment(schedule_state.count), schedule_state.count))
  opt_state = jax.tree.map(
      lambda s: new_adam if isinstance(s, optax.ScaleByAdamState) else
      new_schedule if isinstance(s, optax.ScaleByScheduleState) else s,
      opt_state, is_leaf=_is_state)
  return pick(0), opt_state, pick(3)
