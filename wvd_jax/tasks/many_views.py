"""Multi-view reconstruction of N images, N far beyond the model's frame count, in flat memory.

The images stream through the generator in windows of the model's frame count F. The first
window is views 0..F-1; every later one takes the last `anchors` views already reconstructed
(more for the last window, so every window has exactly F frames and one compilation serves
all) and the next F - anchors new views. Each window's XYZ (in its own frame-0 camera,
normalized, as the generator returns it) is brought into one world, the first window's, by the
Umeyama Sim(3) between its anchor frames' XYZ and theirs from the previous window; then the
window is post-optimized there, which gives each new view its depth (handed to `on_view` and
dropped) and a compact record: its XYZ subsampled to about `compact_points` pixels. At the
end one joint post-optimization of all cameras (shared focal) runs on the compact records.

Memory: only the previous window's XYZ and the compact records are kept (no view's full XYZ
or depth), so the peak does not grow with N beyond the compact records (~300 bytes a view).
Time: one generator call and one window post-optimization per F - anchors views, plus the
joint solve (linear in N per iteration): linear in N. Depth comes from the window stage, in
the same world and scale as the jointly refined cameras.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

import jax
import numpy as np
import tqdm

from wvd_jax.errors import UserError
from wvd_jax.geometry import anchoring, normalization, post_optimization
from wvd_jax.tasks import known_cameras, wvd_tasks


@dataclasses.dataclass
class ManyViewResult:
  """intrinsics (N, 3, 3) and cam_to_world (N, 4, 4) of every view, in the first window's
  world (normalized units); compact_xyz (N, h, w, 3), compact_rgb (N, h, w, 3) uint8 and
  compact_weight (N, h, w): the subsampled surface of every view (weight 0: no surface);
  points (P, 3) and colors (P, 3) are its surface samples (computed on access);
  window_residuals: each window's post-optimization residual."""
  intrinsics: np.ndarray
  cam_to_world: np.ndarray
  compact_xyz: np.ndarray
  compact_rgb: np.ndarray
  compact_weight: np.ndarray
  window_residuals: list[float]
  units: str = wvd_tasks.UNITS_NORMALIZED
  # Known poses or a distance rescale the world after the depth maps were handed to on_view:
  # multiply those depths by this to have them in `units`.
  depth_scale: float = 1.0

  @property
  def points(self) -> np.ndarray:
    return self.compact_xyz[self.compact_weight > 0]

  @property
  def colors(self) -> np.ndarray:
    return self.compact_rgb[self.compact_weight > 0]


def windows(num_views: int, window: int, anchors: int) -> list[tuple[list[int], list[int]]]:
  """[(frames of the window, which of them are new)] covering views 0..num_views-1."""
  if not 1 <= anchors < window <= num_views:
    raise ValueError(f'need 1 <= anchors ({anchors}) < window ({window}) <= views '
                     f'({num_views})')
  out = [(list(range(window)), list(range(window)))]
  done = window
  while done < num_views:
    new = list(range(done, min(done + window - anchors, num_views)))
    old = list(range(done - (window - len(new)), done))
    out.append((old + new, new))
    done += len(new)
  return out


def _subsample(h: int, w: int, compact_points: int):
  """Stride, pixel offset and the subsampled grid's principal point shift: pixel rows / cols
  stride * j + off; a full-image coordinate u maps to (u - delta) / stride."""
  stride = max(1, int(math.floor(math.sqrt(h * w / compact_points))))
  off = stride // 2
  return stride, off, off + 0.5 - stride / 2


def reconstruct_many(generator: wvd_tasks.Generator, images: Sequence[np.ndarray], *,
                     window: int, anchors: int, num_samples: int, rng: jax.Array,
                     intrinsics=None, cam_to_world=None, metric_distance=None,
                     on_view: Callable | None = None, compact_points: int = 16,
                     progress: bool = True, num_iters: int = 100) -> ManyViewResult:
  """Cameras and depth of N >= window images (see the module docstring).

  Args:
    images: a sequence of N (H, W, 3) images in [-1, 1], read one window at a time (a lazy
      sequence keeps memory flat).
    window: the model's frame count F; anchors: frames shared with what is reconstructed.
    intrinsics: known K (3, 3) in model pixels, or None.
    cam_to_world: known poses (N, 4, 4), all-NaN matrices for unknown views, or None: the
      jointly refined cameras are brought onto the known ones by a similarity (Sim(3)), then
      refined again with the known poses fixed (as wvd_tasks.reconstruct does for one window).
    metric_distance: known_cameras.MetricDistance (or metres between cameras 0 and 1) between
      two camera centres: scales the result to metres (about the known camera when one pose is
      given; refused when two or more distinct known poses set the scale already).
    on_view: called as on_view(view, depth (H, W), confidence (H, W)) once per view, in
      order of reconstruction (write it to disk there).
    compact_points: about this many pixels per view kept for the joint refinement.
  """
  n = len(images)
  plan = windows(n, window, anchors)
  first = np.asarray(images[0], np.float32)
  h, w, _ = first.shape
  stride, off, delta = _subsample(h, w, compact_points)
  hs, ws = len(range(off, h, stride)), len(range(off, w, stride))
  compact_xyz = np.zeros((n, hs, ws, 3), np.float32)
  compact_w = np.zeros((n, hs, ws), np.float16)  # confidence weights: half precision is plenty
  compact_rgb = np.zeros((n, hs, ws, 3), np.uint8)
  prev = {}  # view -> (global XYZ (H, W, 3), weight (H, W)) of the previous window
  residuals = []
  for frames, new in tqdm.tqdm(plan, desc='multiview windows', unit='window',
                               disable=not progress):
    rgb = np.stack([np.asarray(images[i], np.float32) for i in frames])
    rng, key = jax.random.split(rng)
    s = num_samples
    _, xyz = generator(np.broadcast_to(rgb, (s,) + rgb.shape), np.ones((s, window, h, w), bool),
                       np.zeros((s,) + rgb.shape, np.float32), np.zeros((s, window, h, w), bool),
                       np.tile(np.array([1.0, 0.0], np.float32), (s, window, 1)), key)
    xyz = np.asarray(xyz, np.float32)
    _, confidence = wvd_tasks.sample_spread(xyz)
    mean = xyz.mean(0)
    fg = ~np.asarray(normalization.background_mask(mean))
    weights = np.where(fg, confidence + 1e-3, 1e-6).astype(np.float32)
    if prev:
      shared = [k for k, i in enumerate(frames) if i in prev]
      dst = np.stack([prev[frames[k]][0] for k in shared])
      wts = np.stack([prev[frames[k]][1] for k in shared]) * weights[shared] * fg[shared]
      sim = anchoring.umeyama(mean[shared].reshape(-1, 3), dst.reshape(-1, 3), wts.reshape(-1))
      mean = sim.points(mean).astype(np.float32)
    res = post_optimization.post_optimize(mean, weights=weights, K=intrinsics,
                                          num_iters=num_iters)
    residuals.append(float(np.mean(res.residual)))
    depth = np.where(fg, np.asarray(res.depth), 0.0).astype(np.float32)
    prev = {i: (mean[k], weights[k] * fg[k]) for k, i in enumerate(frames)}
    for k, i in enumerate(frames):
      if i not in new:
        continue
      compact_xyz[i] = mean[k, off::stride, off::stride]
      compact_w[i] = (weights[k] * fg[k])[off::stride, off::stride]
      compact_rgb[i] = np.round((rgb[k, off::stride, off::stride] + 1) * 127.5).clip(0, 255)
      if on_view is not None:
        on_view(i, depth[k], confidence[k])
  refine = lambda xyz, **known: _joint_refinement(xyz, compact_w, (h, w), stride, delta,
                                                  intrinsics, num_iters, **known)
  K, c2w = refine(compact_xyz)
  c2w = np.asarray(c2w, np.float64)
  units, depth_scale, pivot, pivot_pose, known = wvd_tasks.UNITS_NORMALIZED, 1.0, None, None, None
  anchor = None if cam_to_world is None else wvd_tasks.KnownPoses.fit(cam_to_world, c2w)
  if anchor is not None:
    known = anchor.known
    compact_xyz = anchor.sim.points(compact_xyz).astype(np.float32)
    K, c2w = refine(compact_xyz, cam_to_world=anchor.fill, pose_known=known)
    c2w = np.asarray(c2w, np.float64)
    depth_scale = anchor.sim.scale
    units, pivot, pivot_pose = anchor.units, anchor.pivot, anchor.pivot_pose
  if metric_distance is not None:
    if units == wvd_tasks.UNITS_POSES:
      raise UserError('a known distance and poses of two or more distinct cameras both set '
                      'the scale: give one of them')
    distance = known_cameras.check_distance(metric_distance)
    if distance.cameras is None:
      raise UserError(f'with more images than the model\'s {window} frames a known distance '
                      'must be between camera centres (D or D:cameras:i,j), not pixels')
    try:
      scale = anchoring.metric_scale(wvd_tasks.measured_distance(
          distance, c2w, None, np.broadcast_to(False, (n, h, w))), distance.metres)
    except ValueError as e:
      raise UserError(f'known distance: {e}; name two different cameras') from None
    pivot = np.zeros(3) if pivot is None else pivot
    compact_xyz = (pivot + scale * (compact_xyz - pivot)).astype(np.float32)
    c2w[:, :3, 3] = pivot + scale * (c2w[:, :3, 3] - pivot)
    if pivot_pose is not None:
      c2w[known] = pivot_pose  # the one known pose, exactly (its centre is the pivot)
    depth_scale *= scale
    units = wvd_tasks.UNITS_METRES
  return ManyViewResult(intrinsics=K, cam_to_world=c2w.astype(np.float32),
                        compact_xyz=compact_xyz, compact_rgb=compact_rgb,
                        compact_weight=compact_w, window_residuals=residuals, units=units,
                        depth_scale=float(depth_scale))


def _joint_refinement(xyz, weights, size, stride, delta, intrinsics, num_iters,
                      cam_to_world=None, pose_known=None):
  """(K (N, 3, 3), cam_to_world (N, 4, 4)) from one post-optimization of all cameras on the
  compact records (views padded with empty
  ones to a power of two, at least 256: one compilation serves every N up to 256, and the
  padding costs little at a few points a view), mapped back to full-image pixels."""
  n, hs, ws, _ = xyz.shape
  h, w = size
  padded = 1 << max(8, (n - 1).bit_length())
  pad = lambda a: np.concatenate([a, np.zeros((padded - n,) + a.shape[1:], a.dtype)]).astype(
      np.float32)
  to_compact = np.array([[1 / stride, 0, -delta / stride], [0, 1 / stride, -delta / stride],
                         [0, 0, 1]])
  K = None if intrinsics is None else to_compact @ np.asarray(intrinsics, np.float64)
  known = {}
  if pose_known is not None:  # Padded views: unknown, at the identity.
    known = dict(cam_to_world=np.concatenate([cam_to_world, np.broadcast_to(
                     np.eye(4), (padded - n, 4, 4))]),
                 pose_known=np.concatenate([pose_known, np.zeros(padded - n, bool)]))
  res = post_optimization.post_optimize(
      pad(xyz), pad(weights), principal_point=np.array([w / 2 - delta, h / 2 - delta]) / stride,
      K=K, check=False, num_iters=num_iters, **known)
  if not np.asarray(res.ok)[:n].all():
    bad = np.nonzero(~np.asarray(res.ok)[:n])[0].tolist()
    raise UserError(f'multiview: views {bad[:10]} could not be placed (no surface seen); '
                    'remove those images')
  K_full = np.linalg.inv(to_compact) @ np.asarray(res.K[:n], np.float64)
  return K_full.astype(np.float32), np.asarray(res.cam_to_world[:n])
