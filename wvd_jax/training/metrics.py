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
  scripts and tests read. A run resumed at ``resume_step`` first drops the records of later steps
  (written after the checkpoint it resumes from, and about to be written again), in the JSON lines
  and in TensorBoard (purge_step), so each step has one record. ``workdir`` may be a URI
  (gs://...): TensorBoard gets it as a string, unchanged."""

  def __init__(self, workdir: str | os.PathLike, enabled: bool | None = None,
               resume_step: int = 0):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self._writer = None
    self._jsonl = None
    if self.enabled:
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
      workdir = files.as_path(workdir)
      path = workdir / 'metrics.jsonl'
      if path.exists():
        kept = [r for r in read_jsonl(workdir) if r.get('step', 0) <= resume_step]
        with files.atomic_write(path, 'w') as f:
          f.writelines(json.dumps(r) + '\n' for r in kept)
      self._writer = SummaryWriter(os.fspath(workdir / 'tensorboard'),
                                   purge_step=resume_step + 1 if resume_step else None)
      self._jsonl = path.open('a')

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
  """The records of <workdir>/metrics.jsonl, in order (a last line cut off by a kill is skipped)."""
  records = []
  with (files.as_path(workdir) / 'metrics.jsonl').open() as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return records
