"""Metric writing: console lines (absl logging) and TensorBoard scalars/images in the workdir."""
from __future__ import annotations

import json
import os

import jax
import numpy as np
from absl import logging

from wvd_jax import files


class MetricWriter:
  """Writes scalars to TensorBoard and to <workdir>/metrics.jsonl (process 0 only), and one
  console line per call. The JSON lines file ({"step": s, "train/loss": ...} per line) is what
  scripts and tests read; a resumed run appends to it. ``workdir`` may be a URI (gs://...):
  TensorBoard gets it as a string, unchanged."""

  def __init__(self, workdir: str | os.PathLike, enabled: bool | None = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self._writer = None
    self._jsonl = None
    if self.enabled:
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
      workdir = files.as_path(workdir)
      self._writer = SummaryWriter(os.fspath(workdir / 'tensorboard'))
      self._jsonl = (workdir / 'metrics.jsonl').open('a')

  def write_scalars(self, step: int, scalars: dict, prefix: str = ''):
    if not self.enabled:
      return
    scalars = {f'{prefix}{k}': float(v) for k, v in scalars.items()}
    for name, value in scalars.items():
      self._writer.add_scalar(name, value, step)
    self._jsonl.write(json.dumps({'step': step, **scalars}) + '\n')
    self._jsonl.flush()
    logging.info('step %d: %s', step, ', '.join(f'{k}={v:.5g}' for k, v in scalars.items()))

  def write_image(self, step: int, name: str, image: np.ndarray):
    """image (H, W, 3) uint8."""
    if self.enabled:
      self._writer.add_image(name, image, step, dataformats='HWC')

  def flush(self):
    if self._writer is not None:
      self._writer.flush()

  def close(self):
    if self._writer is not None:
      self._writer.close()
      self._jsonl.close()


def read_jsonl(workdir: str | os.PathLike) -> list[dict]:
  """The records of <workdir>/metrics.jsonl, in order."""
  with (files.as_path(workdir) / 'metrics.jsonl').open() as f:
    return [json.loads(line) for line in f if line.strip()]
