"""Variance-preserving noise schedule in continuous time t in [0, 1].

z_t = alpha_t x + sigma_t eps with alpha_t^2 + sigma_t^2 = 1, defined through the log
signal-to-noise ratio lambda_t = log(alpha_t^2 / sigma_t^2). The cosine schedule has
lambda_t = -2 log tan(pi t / 2); a shift s > 1 moves every level toward more noise,
lambda_t -> lambda_t - 2 log s (for larger images and longer videos, where the same per-pixel
noise destroys less information), then lambda is clipped to [logsnr_min, logsnr_max].
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class CosineSchedule:
  logsnr_min: float = -15.0
  logsnr_max: float = 15.0
  shift: float = 1.0

  @classmethod
  def from_config(cls, config) -> 'CosineSchedule':
    d = config.diffusion
    return cls(logsnr_min=d.logsnr_min, logsnr_max=d.logsnr_max, shift=d.schedule_shift)

  def logsnr(self, t: jax.Array) -> jax.Array:
    t = jnp.asarray(t, jnp.float32)
    # Clip in t-space through the inverse so that t=0 and t=1 stay finite.
    t_min = jnp.arctan(jnp.exp(-0.5 * self.logsnr_max)) * 2 / jnp.pi
    t_max = jnp.arctan(jnp.exp(-0.5 * self.logsnr_min)) * 2 / jnp.pi
    t = t_min + t * (t_max - t_min)
    logsnr = -2.0 * jnp.log(jnp.tan(jnp.pi * t / 2)) - 2.0 * jnp.log(self.shift)
    return jnp.clip(logsnr, self.logsnr_min, self.logsnr_max)

  def alpha_sigma(self, t: jax.Array) -> tuple[jax.Array, jax.Array]:
    logsnr = self.logsnr(t)
    return jnp.sqrt(jax.nn.sigmoid(logsnr)), jnp.sqrt(jax.nn.sigmoid(-logsnr))


def to_x0_eps(prediction: str, output: jax.Array, z_t: jax.Array, alpha: jax.Array,
              sigma: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The network output under a parameterization -> (x0_hat, eps_hat).

  alpha, sigma broadcast against z_t. v = alpha eps - sigma x (so x = alpha z - sigma v).
  """
  if prediction == 'v':
    x0 = alpha * z_t - sigma * output
    eps = sigma * z_t + alpha * output
  elif prediction == 'epsilon':
    eps = output
    x0 = (z_t - sigma * eps) / alpha
  elif prediction == 'x0':
    x0 = output
    eps = (z_t - alpha * x0) / sigma
  else:
    raise ValueError(f'unknown prediction {prediction!r}')
  return x0, eps


def target(prediction: str, x0: jax.Array, eps: jax.Array, alpha, sigma) -> jax.Array:
  """The regression target of a parameterization."""
  if prediction == 'v':
    return alpha * eps - sigma * x0
  if prediction == 'epsilon':
    return eps
  if prediction == 'x0':
    return x0
  raise ValueError(f'unknown prediction {prediction!r}')
