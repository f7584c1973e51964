"""Frame Consistency (FC; WVD Table 1, its reference [23]; the definition of Esser et al. 2023,
Gen-1): how alike a video's frames are to CLIP.

FC = 100 * mean over consecutive frame pairs (i, i + 1) of the cosine similarity of their CLIP
image embeddings (networks/clip.py: the visual projection of the pooled class token), in percent
as the paper reports it. The eval scores every generated video from frame 0 and the true clip.
"""
from __future__ import annotations

import numpy as np

from wvd_jax.evaluation import _checks
from wvd_jax.evaluation.networks import batching, clip

BATCH = 16  # Frames per CLIP call.


def frame_consistency(embeddings) -> float:
  """100 * mean cosine similarity of consecutive rows of (N, E) embeddings, N >= 2."""
  e = _checks.as_float64('embeddings', embeddings)
  if e.ndim != 2 or e.shape[0] < 2:
    raise ValueError(f'embeddings must be (N, E) with N >= 2, got shape {e.shape}')
  _checks.all_finite('embeddings', e)
  norms = np.linalg.norm(e, axis=1)
  if np.any(norms == 0):
    raise ValueError('an embedding is all zeros: its direction is undefined')
  unit = e / norms[:, None]
  return float(100.0 * np.mean(np.sum(unit[:-1] * unit[1:], axis=1)))


class ClipEmbedder:
  """Callable: frames (M, H, W, 3) in [-1, 1] -> (M, E) float64 CLIP image embeddings, in
  batches of ``batch_size`` (one compile per frame size; the last batch is padded)."""

  def __init__(self, config: clip.ClipVisionConfig, params, batch_size: int = BATCH):
    self.config, self.params, self.batch_size = config, params, batch_size

  def __call__(self, frames) -> np.ndarray:
    return batching.map_images(
        lambda unit: clip.image_embeddings(self.config, self.params, unit), frames,
        self.batch_size)
