"""Sampling 6D videos from the config's model: known RGB/XYZ in, decoded RGB and XYZ out.

``generate_video`` is the one entry every task uses: a known RGB and XYZ video with per-pixel
masks (any mix: a first frame, all frames' RGB, re-projected partial XYZ) and the frame-level
clean-condition flags the model was trained with. Known pixels are encoded by the autoencoder;
in the VAE case a latent is known only where its whole 8x8 cell is.

RGB-only models (config.diffusion.modalities == 'rgb', the paper's ablation) were trained with
the XYZ latents a constant zero clean condition: here XYZ is forced to that (whatever the caller
passes), only RGB is sampled, and the returned XYZ is exactly 0.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from wvd_jax import config_lib
from wvd_jax.diffusion import objective, samplers, schedules
from wvd_jax.models import autoencoder as autoencoder_lib
from wvd_jax.models import builder


def _latent_mask(mask: jax.Array, downsample: int, channels: int) -> jax.Array:
  """(B, N, H, W) pixel mask -> (B, N, h, w, channels) float latent mask."""
  if downsample > 1:
    b, n, h, w = mask.shape
    mask = mask.reshape(b, n, h // downsample, downsample, w // downsample, downsample)
    mask = mask.all(axis=(3, 5))
  return jnp.broadcast_to(mask[..., None], mask.shape + (channels,)).astype(jnp.float32)


def generate_video(config, graphdef, params, rgb: jax.Array, rgb_mask: jax.Array,
                   xyz: jax.Array, xyz_mask: jax.Array, cond_mask: jax.Array,
                   rng: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Samples RGB and XYZ (B, N, H, W, 3) in [-1, 1] consistent with the known parts.

  Args:
    rgb, xyz: (B, N, H, W, 3) known values in [-1, 1] (anything where unknown).
    rgb_mask, xyz_mask: (B, N, H, W) bool, where the values are known.
    cond_mask: (B, N, 2) frames whose RGB / XYZ are clean conditions (as in training); their
      masks should be all True. Other known pixels are imposed by replacement (+ Langevin).
      For an RGB-only model (config.diffusion.modalities == 'rgb') xyz, xyz_mask and
      cond_mask[..., 1] are ignored: XYZ is a known zero latent, a clean condition everywhere,
      and the returned XYZ is 0.
  """
  rgb_only = config_lib.rgb_only(config)
  if rgb_only:
    xyz, xyz_mask = jnp.zeros_like(rgb), jnp.ones(rgb_mask.shape, bool)
  autoencoder = autoencoder_lib.make_autoencoder(config)
  known = autoencoder_lib.encode_video(autoencoder, jnp.where(rgb_mask[..., None], rgb, 0.0),
                                       jnp.where(xyz_mask[..., None], xyz, 0.0))
  channels = known.shape[-1] // 2
  if rgb_only:  # The zero latent of training, not the autoencoder's code of a zero image.
    known, cond_mask = objective.rgb_only_condition(known, cond_mask)
  known_mask = jnp.concatenate(
      [_latent_mask(rgb_mask, autoencoder.downsample, channels),
       _latent_mask(xyz_mask, autoencoder.downsample, channels)], axis=-1)
  # Weights cast (FP8 kernels quantized) once, not per step; XLA's norms (faster at batch 1).
  params = builder.inference_params(params, config.model.compute_dtype)
  graphdef = builder.with_xla_norms(graphdef, params)
  known, known_mask, cond_mask, params = _spread_over_devices(
      known, known_mask, cond_mask.astype(jnp.float32), params)
  params = builder.split_for_loop(params)  # Layers apart once, not copied every step.
  latents = samplers.sample(
      _apply_fn(graphdef), params, rng, known, known_mask, cond_mask,
      schedule=schedules.CosineSchedule.from_config(config),
      prediction=config.diffusion.prediction,
      config=samplers.SamplerConfig.from_config(config))
  rgb_out, xyz_out = autoencoder_lib.decode_video(autoencoder, latents)
  if rgb_only:
    xyz_out = jnp.zeros_like(xyz_out)
  return rgb_out, xyz_out


def _spread_over_devices(known, known_mask, cond_mask, params):
  """Splits the batch over this process's devices (parameters replicated) when it divides.

  The sampler is then data parallel: every device denoises its share of the samples. Noise is
  drawn inside the jitted sampler with a sharding-independent generator, so the samples equal
  the single-device ones.
  """
  devices = jax.local_devices()
  if len(devices) == 1 or known.shape[0] % len(devices) or jax.process_count() > 1:
    return known, known_mask, cond_mask, params
  mesh = Mesh(np.array(devices), ('data',))
  split, replicated = NamedSharding(mesh, P('data')), NamedSharding(mesh, P())
  known, known_mask, cond_mask = jax.device_put((known, known_mask, cond_mask), split)
  return known, known_mask, cond_mask, jax.device_put(params, replicated)


@functools.lru_cache(maxsize=16)
def _apply_fn(graphdef):
  # One LoopModel per model structure: the jitted sampler hashes it by identity and is reused.
  # It computes the adaLN rows of all time levels before the loop (builder.LoopModel).
  return builder.LoopModel(graphdef)


def sample_from_first_frame(config, graphdef, params, rgb0: jax.Array, num_frames: int,
                            rng: jax.Array) -> tuple[jax.Array, jax.Array]:
  """RGB and XYZ (B, N, H, W, 3) sampled given frame 0's RGB (B, H, W, 3) as clean condition.

  For an RGB-only model the XYZ is 0 (see ``generate_video``)."""
  b, h, w, _ = rgb0.shape
  rgb = jnp.zeros((b, num_frames, h, w, 3)).at[:, 0].set(rgb0)
  rgb_mask = jnp.zeros((b, num_frames, h, w), bool).at[:, 0].set(True)
  cond_mask = jnp.zeros((b, num_frames, 2)).at[:, 0, 0].set(1.0)
  return generate_video(config, graphdef, params, rgb, rgb_mask, jnp.zeros_like(rgb),
                        jnp.zeros_like(rgb_mask), cond_mask, rng)
