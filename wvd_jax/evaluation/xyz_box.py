"""How the XYZ normalization treats a clip's points: clipping to the [-1, 1] box and collisions
with the background sentinel (pure numpy; benchmarks/xyz_box_stats.py runs it over a dataset).

The pipeline (data/transforms.canonicalize) normalizes a clip's frame-0-canonical points by N
(geometry/normalization.py: the 2nd-98th percentile box per axis, its largest half-side the
scale) and then clips them to [-1, 1]: a point beyond the box on some axis is moved onto the
box's face, i.e. its geometry is flattened there. Pixels without a surface are trained toward
the sentinel (-1, -1, -1), and a generated point with every coordinate below -0.9
(normalization.background_mask) is read as background, so a real point clipped or lying near
that corner is dropped from every task's output.
"""
from __future__ import annotations

import numpy as np

from wvd_jax.geometry import normalization


def clip_statistics(normalized: np.ndarray, surface: np.ndarray) -> dict:
  """Counts for one clip.

  Args:
    normalized: (..., 3) surface points after N, BEFORE clipping to [-1, 1].
    surface: (...) bool, a valid surface point.
  Returns:
    dict of numbers: ``points`` (surface points), ``clipped`` (points with some |coordinate|
    > 1, which clipping moves), ``excess`` (float array, max |coordinate| - 1 of each clipped
    point: how far outside [-1, 1], in normalized units), ``shift`` (float array,
    the distance each clipped point moves, same units), ``at_sentinel`` (points that the
    background test calls background after clipping), ``at_sentinel_unclipped`` (of those,
    the ones that were inside the box: real geometry in the sentinel's corner).
  """
  points = np.asarray(normalized, np.float64)[np.asarray(surface, bool)]
  clipped_points = np.clip(points, -1.0, 1.0)
  outside = np.any(np.abs(points) > 1.0, axis=-1)
  background = np.asarray(normalization.background_mask(clipped_points[:, None, :]))[:, 0]
  return dict(points=int(len(points)), clipped=int(outside.sum()),
              excess=np.abs(points[outside]).max(axis=-1) - 1.0,
              shift=np.linalg.norm(points[outside] - clipped_points[outside], axis=-1),
              at_sentinel=int(background.sum()),
              at_sentinel_unclipped=int((background & ~outside).sum()))


def summarize(per_clip: list[dict]) -> dict:
  """Pooled figures over clips (``clip_statistics`` results): fractions of all surface points,
  the share of clips affected, and quantiles of the excess / shift of the clipped points."""
  points = sum(c['points'] for c in per_clip)
  excess = np.concatenate([c['excess'] for c in per_clip] or [np.zeros(0)])
  shift = np.concatenate([c['shift'] for c in per_clip] or [np.zeros(0)])
  fractions = np.array([c['clipped'] / max(c['points'], 1) for c in per_clip])

  def quantiles(x):
    return ({f'p{q}': float(np.percentile(x, q)) for q in (50, 90, 99)} | {'max': float(x.max())}
            if len(x) else {})

  return dict(
      clips=len(per_clip), surface_points=points,
      clipped_fraction=sum(c['clipped'] for c in per_clip) / max(points, 1),
      clipped_fraction_per_clip=({'median': float(np.median(fractions)),
                                  'max': float(fractions.max())} if len(fractions) else {}),
      excess=quantiles(excess), shift=quantiles(shift),
      clipped_shift_over_0p1=float(np.mean(shift > 0.1)) if len(shift) else 0.0,
      at_sentinel_fraction=sum(c['at_sentinel'] for c in per_clip) / max(points, 1),
      at_sentinel_unclipped_fraction=(sum(c['at_sentinel_unclipped'] for c in per_clip)
                                      / max(points, 1)),
      clips_with_points_at_sentinel=sum(c['at_sentinel'] > 0 for c in per_clip))
