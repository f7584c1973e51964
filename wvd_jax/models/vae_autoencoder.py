"""The project's autoencoder interface backed by Stable Diffusion's VAE (``vae.AutoencoderKL``).

Interface (shared with the pixel-space autoencoder in ``autoencoder.py``):
  ``latent_channels: int``  latent channels per modality (4 for SD's VAE)
  ``downsample: int``       spatial reduction factor (8 for SD's VAE)
  ``encode(images, rng=None) -> latents``  images (..., H, W, 3) float in [-1, 1] ->
      latents (..., H/8, W/8, 4), already normalized for the diffusion model:
      ``(z - shift_factor) * scaling_factor`` with z the posterior mean, or a posterior sample
      when a PRNG key ``rng`` is given.
  ``encode_posterior(images) -> (mean, std)``  the scaled posterior: a sample is mean + std * eps
      (cached latents store both, data/latents.py).
  ``decode(latents) -> images``  the inverse: ``z = latents / scaling_factor + shift_factor``,
      decoded to (..., H, W, 3) float32 (not clipped; clip to [-1, 1] before writing files).

RGB and XYZ frames go through the same VAE unchanged, as in the paper: an XYZ image normalized to
[-1, 1] is treated as a 3-channel image. Leading axes (batch, frames, ...) are flattened into one
batch axis and restored. Everything is jittable; for hot paths use ``jitted_encode_decode`` (split
+ plain ``jax.jit`` + merge, which is faster than ``nnx.jit``).
"""
from __future__ import annotations

import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

from wvd_jax import errors
from wvd_jax.models import vae as vae_lib
from wvd_jax.models import vae_convert


class VAEAutoencoder(nnx.Module):
  """Scaled-latent encode/decode with a (frozen) ``AutoencoderKL``.

  Args:
    vae: the VAE (e.g. from ``VAEAutoencoder.from_pretrained`` or ``vae_convert.load_vae``).
  Attributes:
    latent_channels, downsample: see the module docstring.
    scaling_factor, shift_factor: from the VAE's config (shift 0.0 when the config has None).
  """

  def __init__(self, vae: vae_lib.AutoencoderKL):
    cfg = vae.config
    if cfg.in_channels != 3 or cfg.out_channels != 3:
      raise ValueError(f'VAEAutoencoder needs a 3-channel VAE, got in_channels='
                       f'{cfg.in_channels}, out_channels={cfg.out_channels}')
    self.vae = vae
    self.latent_channels: int = cfg.latent_channels
    self.downsample: int = cfg.downsample_factor
    self.scaling_factor: float = float(cfg.scaling_factor)
    self.shift_factor: float = float(cfg.shift_factor or 0.0)

  @classmethod
  def from_pretrained(cls, path: str | os.PathLike,
                      config: vae_lib.AutoencoderKLConfig | None = None, *,
                      dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
                      precision: Any = None) -> 'VAEAutoencoder':
    """Loads diffusers weights (directory or .safetensors file; see ``vae_convert``)."""
    return cls(vae_convert.load_vae(path, config, dtype=dtype, param_dtype=param_dtype,
                                    precision=precision))

  @classmethod
  def random_init(cls, config: vae_lib.AutoencoderKLConfig, *, seed: int = 0,
                  dtype: Any = jnp.float32, param_dtype: Any = jnp.float32) -> 'VAEAutoencoder':
    """A randomly initialized VAE (tests, benchmarks, demos without weights)."""
    return cls(vae_lib.init_autoencoder_kl(config, seed=seed, dtype=dtype,
                                           param_dtype=param_dtype))

  def encode(self, images: jax.Array, rng: jax.Array | None = None) -> jax.Array:
    """(..., H, W, 3) in [-1, 1] -> scaled latents (..., H/f, W/f, latent_channels) float32.

    H and W must be multiples of ``downsample``. With ``rng`` (a PRNG key) the latent is a
    sample of the posterior, else its mean.
    """
    mean, logvar, lead = self._posterior(images)
    z = mean
    if rng is not None:
      z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape, mean.dtype)
    z = (z - self.shift_factor) * self.scaling_factor
    return z.reshape(lead + z.shape[1:])

  def encode_posterior(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(..., H, W, 3) in [-1, 1] -> the scaled posterior's (mean, std), each
    (..., H/f, W/f, latent_channels) float32: a scaled latent sample is mean + std * eps (the
    scaled mean is ``encode(images)``; std = exp(logvar / 2) * scaling_factor)."""
    mean, logvar, lead = self._posterior(images)
    mean = (mean - self.shift_factor) * self.scaling_factor
    std = jnp.exp(0.5 * logvar) * self.scaling_factor
    return mean.reshape(lead + mean.shape[1:]), std.reshape(lead + std.shape[1:])

  def _posterior(self, images: jax.Array) -> tuple[jax.Array, jax.Array, tuple[int, ...]]:
    """The VAE's unscaled (mean, logvar) of images (..., H, W, 3) flattened to one batch axis,
    and the leading axes to restore."""
    if images.ndim < 4 or images.shape[-1] != 3:
      raise ValueError(f'images must have shape (..., H, W, 3), got {images.shape}')
    mean, logvar = self.vae.encode(images.reshape((-1,) + images.shape[-3:]))
    return mean, logvar, images.shape[:-3]

  def decode(self, latents: jax.Array) -> jax.Array:
    """Scaled latents (..., h, w, latent_channels) -> images (..., h*f, w*f, 3) float32."""
    if latents.ndim < 4 or latents.shape[-1] != self.latent_channels:
      raise ValueError(f'latents must have shape (..., h, w, {self.latent_channels}), '
                       f'got {latents.shape}')
    lead = latents.shape[:-3]
    z = latents.reshape((-1,) + latents.shape[-3:]).astype(jnp.float32)
    z = z / self.scaling_factor + self.shift_factor
    images = self.vae.decode(z)
    return images.reshape(lead + images.shape[1:])


def jitted_encode_decode(autoencoder: VAEAutoencoder,
                         ) -> tuple[Callable[..., jax.Array], Callable[[jax.Array], jax.Array]]:
  """Jitted ``(encode(images, rng=None), decode(latents))`` for a fixed autoencoder.

  The parameters are passed to the jitted functions as arguments (not baked in as constants),
  via ``nnx.split`` + ``jax.jit`` + ``nnx.merge``.
  """
  graphdef, state = nnx.split(autoencoder)

  @jax.jit
  def _encode_mean(state, images):
    return nnx.merge(graphdef, state).encode(images)

  @jax.jit
  def _encode_sample(state, images, rng):
    return nnx.merge(graphdef, state).encode(images, rng)

  @jax.jit
  def _decode(state, latents):
    return nnx.merge(graphdef, state).decode(latents)

  def encode(images: jax.Array, rng: jax.Array | None = None) -> jax.Array:
    if rng is None:
      return _encode_mean(state, images)
    return _encode_sample(state, images, rng)

  def decode(latents: jax.Array) -> jax.Array:
    return _decode(state, latents)

  return encode, decode


def from_config(config) -> VAEAutoencoder:
  """The SD VAE a project config names (``config.autoencoder.kind == 'sd_vae'``).

  Reads ``config.autoencoder.weights`` (a diffusers VAE directory or .safetensors file; required:
  there is no download), computes in ``config.model.compute_dtype`` with float32 parameters, and
  checks that ``config.autoencoder.latent_channels`` / ``.downsample`` match the VAE's, since the
  DiT is built from those values.

  Note: closing over the returned module inside a jitted function bakes its ~84M parameters into
  the program as constants; pass its ``nnx.split`` state as an argument instead (as
  ``jitted_encode_decode`` does), or pre-compute latents.
  """
  weights = config.autoencoder.weights
  if not weights:
    raise errors.UserError("config.autoencoder.weights must name a diffusers AutoencoderKL "
                           "directory or .safetensors file for autoencoder.kind='sd_vae' "
                           "(nothing is downloaded)")
  dtypes = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
  compute = config.model.compute_dtype
  if compute not in dtypes:
    raise errors.UserError(f'config.model.compute_dtype must be one of {sorted(dtypes)}, '
                           f'got {compute!r}')
  ae = VAEAutoencoder.from_pretrained(weights, dtype=dtypes[compute])
  for name in ('latent_channels', 'downsample'):
    want, got = config.autoencoder[name], getattr(ae, name)
    if want != got:
      raise errors.UserError(f'config.autoencoder.{name}={want} but the VAE at {weights} has {got}')
  return ae
