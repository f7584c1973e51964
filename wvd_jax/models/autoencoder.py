"""The autoencoder interface the DiT runs in, and its pixel-space implementation.

An autoencoder maps images (B, H, W, 3) in [-1, 1] to latents (B, H/downsample, W/downsample, C)
already multiplied by its latent scale, and back. RGB and XYZ frames go through the same one
(XYZ in [-1, 1] is treated as a 3-channel image), so a 6D video becomes latents with 2C channels.
"""
from __future__ import annotations

from typing import Protocol

import jax
import jax.numpy as jnp


class Autoencoder(Protocol):
  latent_channels: int  # Per modality.
  downsample: int

  def encode(self, images: jax.Array, rng: jax.Array | None = None) -> jax.Array:
    ...

  def encode_posterior(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(mean, std) of the scaled latent posterior: a sample is mean + std * eps."""
    ...

  def decode(self, latents: jax.Array) -> jax.Array:
    ...


class PixelAutoencoder:
  """Identity: the diffusion runs on pixels (the DiT patchifies them)."""
  latent_channels = 3
  downsample = 1

  def encode(self, images, rng=None):
    del rng
    return images

  def encode_posterior(self, images):
    return images, jnp.zeros_like(images)

  def decode(self, latents):
    return latents


def _video_frames(rgb: jax.Array, xyz: jax.Array) -> jax.Array:
  """(B, N, H, W, 3) RGB and XYZ -> (2 B N, H, W, 3): every RGB frame, then every XYZ frame."""
  b, n = rgb.shape[:2]
  return jnp.concatenate([rgb, xyz], axis=0).reshape((2 * b * n,) + rgb.shape[2:])


def _video_latents(latents: jax.Array, b: int, n: int) -> jax.Array:
  """(2 B N, h, w, C) frame latents (_video_frames' order) -> (B, N, h, w, 2C), RGB first."""
  latents = latents.reshape((2, b, n) + latents.shape[1:])
  return jnp.concatenate([latents[0], latents[1]], axis=-1)


def encode_video(autoencoder: Autoencoder, rgb: jax.Array, xyz: jax.Array,
                 rng: jax.Array | None = None) -> jax.Array:
  """(B, N, H, W, 3) RGB and XYZ -> (B, N, h, w, 2C) latents, RGB channels first (paper eq. 2)."""
  b, n = rgb.shape[:2]
  return _video_latents(autoencoder.encode(_video_frames(rgb, xyz), rng), b, n)


def encode_video_posterior(autoencoder: Autoencoder, rgb: jax.Array, xyz: jax.Array
                           ) -> tuple[jax.Array, jax.Array]:
  """(B, N, H, W, 3) RGB and XYZ -> the posterior's (mean, std), each (B, N, h, w, 2C) with RGB
  channels first (as encode_video); a latent sample is mean + std * eps."""
  b, n = rgb.shape[:2]
  mean, std = autoencoder.encode_posterior(_video_frames(rgb, xyz))
  return _video_latents(mean, b, n), _video_latents(std, b, n)


def decode_video(autoencoder: Autoencoder, latents: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(B, N, h, w, 2C) latents -> RGB (B, N, H, W, 3) and XYZ (B, N, H, W, 3)."""
  b, n, h, w, c2 = latents.shape
  c = c2 // 2
  frames = jnp.concatenate([latents[..., :c], latents[..., c:]], axis=0)
  images = autoencoder.decode(frames.reshape(2 * b * n, h, w, c))
  images = images.reshape((2, b, n) + images.shape[1:])
  return images[0], images[1]


def make_autoencoder(config) -> Autoencoder:
  """The autoencoder a config names."""
  kind = config.autoencoder.kind
  if kind == 'pixel':
    return PixelAutoencoder()
  if kind == 'sd_vae':
    from wvd_jax.models import vae_autoencoder  # pylint: disable=import-outside-toplevel
    return vae_autoencoder.from_config(config)
  raise ValueError(f'unknown autoencoder kind {kind!r}')
