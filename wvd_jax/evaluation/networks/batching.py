"""Feeding image sets of any size through a jitted network in fixed-size batches."""
from __future__ import annotations

from typing import Callable

import numpy as np


def map_images(apply: Callable, images, batch_size: int) -> np.ndarray:
  """``apply`` over (M, H, W, 3) images in [-1, 1], given them in [0, 1] in batches of
  ``batch_size`` (the last one zero-padded, so one compile serves every M) -> (M, ...) float64.
  """
  images = np.asarray(images, np.float32)
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f'images must be (M, H, W, 3), got shape {images.shape}')
  if images.shape[0] == 0:
    raise ValueError('no images')
  out = []
  for start in range(0, images.shape[0], batch_size):
    chunk = images[start:start + batch_size]
    padded = np.concatenate([chunk, np.zeros((batch_size - len(chunk),) + chunk.shape[1:],
                                              np.float32)])
    out.append(np.asarray(apply(np.clip((padded + 1.0) / 2.0, 0.0, 1.0)),
                          np.float64)[:len(chunk)])
  return np.concatenate(out)
