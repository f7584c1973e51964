"""`--mode=sample`: a 6D video (RGB + XYZ frames) from one held-out image.

Loads the newest checkpoint in the workdir, takes frame 0's RGB of a held-out clip as the clean
condition, samples all frames' RGB and XYZ, and writes under <workdir>/samples/:
  sample_<k>.png   rows: ground-truth RGB, sampled RGB, sampled XYZ (as colours), ground-truth XYZ
  sample_<k>.ply   the sampled point cloud, XYZ coloured by the sampled RGB (frame-0 camera
                   coordinates, normalized to [-1, 1]), without the pixels sampled as background
  samples.npz      rgb, xyz (S, N, H, W, 3) in [-1, 1], and the condition
An RGB-only model (config.diffusion.modalities == 'rgb', the paper's ablation) generates no XYZ:
its grid has the two RGB rows only, no PLY is written and samples.npz's xyz is 0.
In a multi-host job every process gathers the parameters and samples the same (seeded) clips on
its own devices; process 0 writes the files.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from wvd_jax import config_lib, errors, files, multihost, visualize
from wvd_jax.data import pipeline
from wvd_jax.diffusion import generate
from wvd_jax.geometry import export
from wvd_jax.models import checkpoint_reader
from wvd_jax.tasks import media


def sample(config, workdir) -> dict[str, np.ndarray]:
  """Runs the sample mode and returns what it wrote to samples.npz."""
  graphdef, params = checkpoint_reader.restore_training_params(config, workdir,
                                                               config.sample.use_ema)
  source = pipeline.load_split(config, config.sample.split, workdir, complete=False)
  index = config.sample.example_index
  if index >= len(source):
    raise errors.UserError(f'config.sample.example_index={index} but the {config.sample.split} '
                           f'split has {len(source)} clips: pick an index below {len(source)}')
  clip = pipeline.model_clip(config, source[index])
  if not config_lib.rgb_only(config):  # Each sample's point cloud is written after sampling.
    export.require_ply_writer('--mode=sample')
  s = config.sample.num_samples
  rgb0 = jnp.broadcast_to(clip['rgb'][0], (s,) + clip['rgb'].shape[1:])
  rgb, xyz = generate.sample_from_first_frame(config, graphdef, params, rgb0, clip['rgb'].shape[0],
                                     jax.random.PRNGKey(config.seed))
  rgb, xyz = np.asarray(rgb), np.asarray(xyz)
  result = dict(rgb=rgb, xyz=xyz, condition_rgb=clip['rgb'][0], gt_rgb=clip['rgb'],
                gt_xyz=clip['xyz'], gt_mask=clip['mask'])
  if not multihost.is_primary():
    return result
  out_dir = files.as_path(workdir) / 'samples'
  out_dir.mkdir(parents=True, exist_ok=True)
  rgb_only = config_lib.rgb_only(config)
  for k in range(s):
    visualize.save_png(out_dir / f'sample_{k}.png',
                       visualize.sample_grid(clip, rgb[k], xyz[k], rgb_only))
    if rgb_only:
      continue
    media.write_surface_ply(out_dir / f'sample_{k}.ply', xyz[k], rgb[k])
  with files.atomic_write(out_dir / 'samples.npz') as f:
    np.savez(f, **result)
  logging.info('wrote %d samples to %s', s, out_dir)
  return result
