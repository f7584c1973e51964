"""Metric writing: console lines (absl logging) and TensorBoard scalars/images in the workdir."""
from __future__ import annotations

import os

import jax
import numpy as np
from absl import logging


class MetricWriter:
  """Writes scalars to TensorBoard (process 0 only) and one console line per call."""

  def __init__(self, workdir: str, enabled: bool | None = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self._writer = None
    if self.enabled:
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
      self._writer = SummaryWriter(os.path.join(workdir, 'tensorboard'))

  def write_scalars(self, step: int, scalars: dict, prefix: str = ''):
    if not self.enabled:
      return
    for name, value in scalars.items():
      self._writer.add_scalar(f'{prefix}{name}', float(value), step)
    line = ', '.join(f'{prefix}{k}={float(v):.5g}' for k, v in scalars.items())
    logging.info('step %d: %s', step, line)

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
