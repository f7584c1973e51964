"""`--mode=export`: the newest training checkpoint's EMA weights as an inference checkpoint."""
from __future__ import annotations

import os

import jax
from absl import logging

from wvd_jax.models import inference_checkpoint
from wvd_jax.training import checkpoints


def export(config, workdir: str, out_dir: str | None = None) -> str:
  """Writes <workdir>/export (or ``out_dir``): EMA parameters + config, no optimizer state."""
  out_dir = out_dir or os.path.join(workdir, 'export')
  _, params = checkpoints.restore_params(config, workdir, use_ema=True)
  if jax.process_index() == 0:
    inference_checkpoint.save(out_dir, config, jax.device_get(params))
    logging.info('exported inference checkpoint to %s', out_dir)
  return out_dir
