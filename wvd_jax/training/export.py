"""`--mode=export`: the newest training checkpoint's EMA weights as an inference checkpoint."""
from __future__ import annotations

from absl import logging

from wvd_jax import files
from wvd_jax.models import inference_checkpoint
from wvd_jax.training import checkpoints


def export(config, workdir, out_dir=None) -> str:
  """Writes <workdir>/export (or ``out_dir``): EMA parameters + config, no optimizer state.

  In a multi-host job every process runs it: the parameters stay sharded across processes and
  orbax writes each process's shards (no process needs the whole model in memory)."""
  out_dir = files.as_path(out_dir or files.as_path(workdir) / 'export')
  _, params = checkpoints.restore_params(config, workdir, use_ema=True)
  inference_checkpoint.save(out_dir, config, params)
  logging.info('exported inference checkpoint to %s', out_dir)
  return str(out_dir)
