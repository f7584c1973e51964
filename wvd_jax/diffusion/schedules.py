"""Variance-preserving noise schedule in continuous time t in [0, 1].

z_t = alpha_t x + sigma_t eps with alpha_t^2 + sigma_t^2 = 1, defined through the log
signal-to-noise ratio lambda_t = log(alpha_t^2 / sigma_t^2). The cosine schedule has
lambda_t = -2 log tan(pi t / 2); a shift s > 1 moves every level toward more noise,
lambda_t -> lambda_t - 2 log s (for larger images and longer videos, where the same per-pixel
noise destroys less information), then lambda is clipped to [logsnr_min, logsnr_max].

Per-modality shift (``xyz_shift``, config.diffusion.xyz_schedule_shift; 1 = off). RGB and XYZ
share one time t per clip (the network sees t only); with xyz_shift s_x != 1 the XYZ latents are
noised at their own, noisier level of the same t, the shifted cosine of simple diffusion
(Hoogeboom et al. 2023) applied to XYZ alone:

  lambda_rgb(t) = clip(-2 log tan(pi t' / 2) - 2 log s,       logsnr_min, logsnr_max),
  lambda_xyz(t) = clip(-2 log tan(pi t' / 2) - 2 log (s s_x), logsnr_min, logsnr_max),

with t' the t-space clipping below. A logSNR shift by -2 log s_x is the same as SD3's timestep
shift for rectified flow, t -> s_x t / (1 + (s_x - 1) t) (both multiply sigma/alpha by s_x). As
lambda_xyz is a fixed function of t the network needs no second time input; training
(objective.py) and every sampler step (samplers.py) use ``channel_logsnr``, so both modalities
move between their own levels t -> s consistently.
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
  xyz_shift: float = 1.0  # The XYZ modality's extra shift (module docstring); 1 = off.

  @classmethod
  def from_config(cls, config) -> 'CosineSchedule':
    d = config.diffusion
    return cls(logsnr_min=d.logsnr_min, logsnr_max=d.logsnr_max, shift=d.schedule_shift,
               xyz_shift=d.get('xyz_schedule_shift', 1.0))

  @property
  def per_modality(self) -> bool:
    """True when RGB and XYZ have different levels (xyz_shift != 1): callers then take
    per-channel levels from ``channel_logsnr``; otherwise one level (``logsnr``) serves all."""
    return self.xyz_shift != 1.0

  def logsnr(self, t: jax.Array) -> jax.Array:
    """The level of RGB (and of XYZ when not ``per_modality``) at t; shape of t."""
    return self._logsnr(t, self.shift)

  def xyz_logsnr(self, t: jax.Array) -> jax.Array:
    """The XYZ level at t: ``logsnr`` shifted further by -2 log xyz_shift (then clipped)."""
    return self._logsnr(t, self.shift * self.xyz_shift)

  def _logsnr(self, t: jax.Array, shift: float) -> jax.Array:
    t = jnp.asarray(t, jnp.float32)
    # Clip in t-space through the inverse so that t=0 and t=1 stay finite.
    t_min = jnp.arctan(jnp.exp(-0.5 * self.logsnr_max)) * 2 / jnp.pi
    t_max = jnp.arctan(jnp.exp(-0.5 * self.logsnr_min)) * 2 / jnp.pi
    t = t_min + t * (t_max - t_min)
    logsnr = -2.0 * jnp.log(jnp.tan(jnp.pi * t / 2)) - 2.0 * jnp.log(shift)
    return jnp.clip(logsnr, self.logsnr_min, self.logsnr_max)

  def channel_logsnr(self, t: jax.Array, channels: int) -> jax.Array:
    """t (...) -> (..., 2C) levels of the latent channels: C RGB then C XYZ (paper eq. 2)."""
    t = jnp.asarray(t, jnp.float32)[..., None]
    shape = t.shape[:-1] + (channels,)
    return jnp.concatenate([jnp.broadcast_to(self.logsnr(t), shape),
                            jnp.broadcast_to(self.xyz_logsnr(t), shape)], axis=-1)

  def alpha_sigma(self, t: jax.Array) -> tuple[jax.Array, jax.Array]:
    return alpha_sigma(self.logsnr(t))

  def channel_alpha_sigma(self, t: jax.Array, channels: int) -> tuple[jax.Array, jax.Array]:
    """(alpha, sigma), each (..., 2C) for t (...): ``channel_logsnr``'s levels."""
    return alpha_sigma(self.channel_logsnr(t, channels))


def alpha_sigma(logsnr: jax.Array) -> tuple[jax.Array, jax.Array]:
  """VP (alpha, sigma) of a logSNR: alpha^2 = sigmoid(lambda), sigma^2 = sigmoid(-lambda)."""
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
