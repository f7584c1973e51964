"""Jitted samplers: DDIM over the VP schedule with inpainting of known values.

The whole loop runs inside jit (lax.fori_loop, fixed shapes, no host round trips). Known values
(``known`` (B, N, h, w, 2C), ``known_mask`` of the same shape, 1 where given) are put back at
every step. Parts flagged as clean conditions in ``cond_mask`` are replaced by their clean value,
exactly as during training.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from wvd_jax.diffusion import schedules


@functools.partial(jax.jit, static_argnames=('apply_fn', 'schedule', 'prediction', 'num_steps',
                                             'clip_x0'))
def ddim_sample(apply_fn, params, rng: jax.Array, known: jax.Array, known_mask: jax.Array,
                cond_mask: jax.Array, *, schedule: schedules.CosineSchedule, prediction: str,
                num_steps: int, eta: float = 0.0, clip_x0: bool = True) -> jax.Array:
  """Samples x0 (B, N, h, w, 2C) given known values.

  Args:
    apply_fn: (params, z_t, t (B,), cond_mask (B, N, 2)) -> network output; hashable (static),
      e.g. ``functools.partial(apply_model, graphdef)``.
    params: the network's parameters (a pytree, traced).
    rng: PRNG key.
    known, known_mask: (B, N, h, w, 2C); the sample equals ``known`` where the mask is 1.
    cond_mask: (B, N, 2) frame/modality clean-condition flags given to the network.
    eta: 0 for deterministic DDIM, 1 for ancestral-like sampling.
    clip_x0: clip the predicted x0 to [-1, 1] (pixel space; off for VAE latents).
  """
  times = jnp.linspace(1.0, 0.0, num_steps + 1)
  batch = known.shape[0]
  rng, init_rng = jax.random.split(rng)
  z = jax.random.normal(init_rng, known.shape)

  def step(i, carry):
    z, rng = carry
    t, s = times[i], times[i + 1]
    z = known_mask * known + (1.0 - known_mask) * z
    alpha_t, sigma_t = schedule.alpha_sigma(t)
    alpha_s, sigma_s = schedule.alpha_sigma(s)
    output = apply_fn(params, z, jnp.full((batch,), t), cond_mask)
    x0, eps = schedules.to_x0_eps(prediction, output, z, alpha_t, sigma_t)
    if clip_x0:
      x0 = jnp.clip(x0, -1.0, 1.0)
      eps = (z - alpha_t * x0) / sigma_t
    ratio = (sigma_s / sigma_t) ** 2 * (1.0 - (alpha_t * sigma_s) ** 2 / (alpha_s * sigma_t) ** 2)
    noise_std = eta * jnp.sqrt(jnp.clip(ratio, 0.0, None))
    rng, noise_rng = jax.random.split(rng)
    z = (alpha_s * x0 + jnp.sqrt(jnp.clip(sigma_s ** 2 - noise_std ** 2, 0.0, None)) * eps
         + noise_std * jax.random.normal(noise_rng, z.shape))
    # The last step lands on t = 0: return the prediction itself, not its tiny-noise version.
    z = jnp.where(i == num_steps - 1, x0, z)
    return z, rng

  z, _ = jax.lax.fori_loop(0, num_steps, step, (z, rng))
  return known_mask * known + (1.0 - known_mask) * z
