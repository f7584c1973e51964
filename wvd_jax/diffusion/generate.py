"""Sampling 6D videos from the config's model: conditions in, decoded RGB and XYZ frames out."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from wvd_jax.diffusion import objective, samplers, schedules
from wvd_jax.models import autoencoder as autoencoder_lib
from wvd_jax.models import builder


def sample_from_first_frame(config, graphdef, params, rgb0: jax.Array, num_frames: int,
                            rng: jax.Array) -> tuple[jax.Array, jax.Array]:
  """RGB and XYZ (B, N, H, W, 3) in [-1, 1] sampled given frame 0's RGB (B, H, W, 3).

  Frame 0's RGB is a clean condition (flagged in cond_mask, as in training); everything else,
  frame 0's XYZ included, is generated.
  """
  autoencoder = autoencoder_lib.make_autoencoder(config)
  b, h, w, _ = rgb0.shape
  rgb = jnp.zeros((b, num_frames, h, w, 3)).at[:, 0].set(rgb0)
  known = autoencoder_lib.encode_video(autoencoder, rgb, jnp.zeros_like(rgb))
  cond_mask = jnp.zeros((b, num_frames, 2)).at[:, 0, 0].set(1.0)
  channels = known.shape[-1] // 2
  known_mask = jnp.broadcast_to(objective.expand_cond_mask(cond_mask, channels), known.shape)
  latents = samplers.ddim_sample(
      functools.partial(builder.apply_model, graphdef), params, rng, known, known_mask,
      cond_mask, schedule=schedules.CosineSchedule.from_config(config),
      prediction=config.diffusion.prediction, num_steps=config.sample.num_steps,
      eta=config.sample.eta, clip_x0=config.autoencoder.kind == 'pixel')
  return autoencoder_lib.decode_video(autoencoder, latents)
