"""The WVD training objective over RGB+XYZ latents, with image conditioning.

For each clip a conditioning pattern is drawn: unconditional, single-image (frame 0 RGB known),
or all RGB known (the multi-view task). Known parts replace their noised version by the clean
value (the paper's image conditioning: "the added noise on the conditional image is simply
removed") and are left out of the loss; the network is told which frames/modalities are known
through ``cond_mask``.

RGB-only ablation (``xyz_known=True``, config.diffusion.modalities == 'rgb'): the XYZ half of the
latents is set to a constant zero that is a clean condition in every frame (cond_mask[..., 1] = 1)
and never in the loss, so the same network (same FLOPs) learns RGB video alone and its input
carries no XYZ information.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from wvd_jax.diffusion import schedules

UNCONDITIONAL, FIRST_RGB, ALL_RGB = 0, 1, 2


def sample_cond_mask(rng, batch: int, num_frames: int, p_unconditional: float,
                     p_rgb_known: float) -> jax.Array:
  """(B, N, 2) float mask: [..., 0] RGB known, [..., 1] XYZ known, per clip's drawn pattern."""
  u = jax.random.uniform(rng, (batch,))
  pattern = jnp.where(u < p_unconditional, UNCONDITIONAL,
                      jnp.where(u < p_unconditional + p_rgb_known, ALL_RGB, FIRST_RGB))
  frame = jnp.arange(num_frames)[None, :]
  rgb_known = jnp.where(pattern[:, None] == ALL_RGB, True,
                        (pattern[:, None] == FIRST_RGB) & (frame == 0))
  return jnp.stack([rgb_known, jnp.zeros_like(rgb_known)], axis=-1).astype(jnp.float32)


def expand_cond_mask(cond_mask: jax.Array, latent_channels: int) -> jax.Array:
  """(B, N, 2) -> (B, N, 1, 1, 2C): each modality's flag repeated over its channels."""
  per_channel = jnp.repeat(cond_mask, latent_channels, axis=-1)
  return per_channel[:, :, None, None, :]


def rgb_only_condition(latents: jax.Array, cond_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The RGB-only ablation's XYZ, in training and sampling alike: latents (..., 2C) with the XYZ
  half set to 0 (a set, not a product: NaNs there do not leak) and cond_mask (..., 2) flagging
  XYZ as a clean condition in every frame."""
  c = latents.shape[-1] // 2
  return (latents.at[..., c:].set(0.0),
          jnp.asarray(cond_mask, jnp.float32).at[..., 1].set(1.0))


def xyz_supervision(surface: jax.Array, known: jax.Array, sentinel_background: bool
                    ) -> tuple[jax.Array, jax.Array]:
  """Which pixels' XYZ is in the loss, and which of them target the background sentinel.

  Args:
    surface: (B, N, H, W) bool, a valid surface point (the batch's ``mask``).
    known: (B, N, H, W) bool, depth known (the batch's ``xyz_valid``): a surface, or known empty
      background; False only for converted datasets' unknown pixels.
    sentinel_background: config.diffusion.background == 'sentinel' (XYZ model).
  Returns:
    (in_loss, background), (B, N, H, W) bool each: unknown pixels are never in the loss; known
    background is in it (toward the sentinel) only with ``sentinel_background``.
  """
  surface = surface & known
  if sentinel_background:
    return known, known & ~surface
  return surface, jnp.zeros_like(surface)


def diffusion_loss(apply_fn, latents: jax.Array, valid: jax.Array, rng: jax.Array, *,
                   schedule: schedules.CosineSchedule, prediction: str, p_unconditional: float,
                   p_rgb_known: float, rgb_weight: float, xyz_weight: float,
                   xyz_known: bool = False):
  """Mean weighted squared error of the network's prediction.

  Args:
    apply_fn: (z_t (B,N,h,w,2C), t (B,), cond_mask (B,N,2)) -> prediction like z_t.
    latents: (B, N, h, w, 2C) clean latents, RGB channels first.
    valid: (B, N, h, w) bool, where XYZ is defined (XYZ loss is masked by it; RGB is not).
    xyz_known: the RGB-only ablation: XYZ latents are replaced by 0 (whatever ``latents`` holds
      there), flagged as clean conditions in every frame and left out of the loss (loss_xyz = 0).
      Times, noise and the RGB conditioning pattern are drawn as without it.
  Returns:
    (loss, metrics dict of scalars).
  """
  b, n, h, w, c2 = latents.shape
  c = c2 // 2
  rng_t, rng_eps, rng_cond = jax.random.split(rng, 3)
  cond_mask = sample_cond_mask(rng_cond, b, n, p_unconditional, p_rgb_known)
  if xyz_known:
    latents, cond_mask = rgb_only_condition(latents, cond_mask)
  t = jax.random.uniform(rng_t, (b,))
  eps = jax.random.normal(rng_eps, latents.shape)
  if schedule.per_modality:  # RGB and XYZ at their own levels of t (schedules.py).
    alpha, sigma = schedule.channel_alpha_sigma(t, c)
    alpha, sigma = alpha[:, None, None, None, :], sigma[:, None, None, None, :]
  else:
    alpha, sigma = schedule.alpha_sigma(t)
    alpha, sigma = alpha[:, None, None, None, None], sigma[:, None, None, None, None]
  z_t = alpha * latents + sigma * eps
  known = expand_cond_mask(cond_mask, c)
  z_t = known * latents + (1.0 - known) * z_t
  output = apply_fn(z_t, t, cond_mask)
  err = jnp.square(output - schedules.target(prediction, latents, eps, alpha, sigma))
  modality_weight = jnp.concatenate([jnp.full((c,), rgb_weight), jnp.full((c,), xyz_weight)])
  xyz_valid = jnp.concatenate([jnp.ones((b, n, h, w, c)),
                               jnp.broadcast_to(valid[..., None], (b, n, h, w, c))], axis=-1)
  weight = (1.0 - known) * modality_weight * xyz_valid
  loss = jnp.sum(weight * err) / jnp.maximum(jnp.sum(weight), 1.0)
  rgb_err = jnp.sum((weight * err)[..., :c]) / jnp.maximum(jnp.sum(weight[..., :c]), 1.0)
  xyz_err = jnp.sum((weight * err)[..., c:]) / jnp.maximum(jnp.sum(weight[..., c:]), 1.0)
  return loss, {'loss': loss, 'loss_rgb': rgb_err, 'loss_xyz': xyz_err}
