"""The evaluation protocol of one held-out clip: the WVD tasks run on it, scored against its truth.

Per clip (N frames at the model's resolution), with S = config.sample.num_samples samples:

  mono_depth   frame 0 alone -> S videos of RGB + XYZ -> post-optimization (paper eq. 3) ->
               depth of frame 0, scale-aligned to the truth per image (eval.depth_alignment).
               Baseline: a constant depth (after median alignment: the truth's median depth).
  video_depth  all N frames' RGB known, XYZ generated (the multi-view task) -> depth of every
               frame with ONE scale for the whole sequence, and the N cameras: RRE/RTE over
               all pairs, ATE after Sim(3) alignment in the model's normalized frame-0 world.
               Baselines: constant depth; identity cameras.
  novel_view   frame 0 + the clip's true camera path (relative to frame 0, translations in units
               of frame 0's median depth, as camera paths are) -> frames 1..N-1 by camera-
               controlled generation; PSNR / SSIM against the true frames. Baseline: frame 0
               repeated.
  consistency  key-point matches between frame 0 and the later frames of the generated videos
               of mono_depth (SIFT + ratio test + RANSAC; KPM = generated / true clips' count,
               in %), and (XYZ models) agreement of generated XYZ and RGB across frames.

RGB-only models (config.diffusion.modalities == 'rgb', the paper's ablation) have no XYZ: only
``consistency`` key-point matches apply. Every function returns plain numbers per clip; the
runner aggregates them over the split.
"""
from __future__ import annotations

import dataclasses

import jax
import numpy as np

from wvd_jax.data import pipeline, transforms
from wvd_jax.evaluation import consistency, depth_metrics, image_metrics, pose_metrics
from wvd_jax.geometry import cameras, normalization
from wvd_jax.tasks import wvd_tasks

VIDEO_DEPTH_CLIP = (0.1, 100.0)  # Robust MVD clips predictions (after alignment) to this range.


@dataclasses.dataclass
class EvalClip:
  """A held-out clip at model resolution.

  rgb (N, H, W, 3) float32 in [-1, 1]; depth (N, H, W) true z-depth in the dataset's units
  (0 = invalid); mask (N, H, W) bool; intrinsics (N, 3, 3) pixels at model size;
  cam_to_world (N, 4, 4) true cameras in the model's world (frame 0's OpenCV camera frame,
  shifted and scaled as in training; frame 0's rotation is the identity);
  metric_cam_to_world (N, 4, 4) the same cameras relative to camera 0 in the dataset's units;
  relative_path (N, 4, 4) those with translations in units of frame 0's median depth (the
  camera-path convention of tasks/camera_paths.py)."""
  rgb: np.ndarray
  depth: np.ndarray
  mask: np.ndarray
  intrinsics: np.ndarray
  cam_to_world: np.ndarray
  metric_cam_to_world: np.ndarray
  relative_path: np.ndarray


def prepare_clip(raw: dict[str, np.ndarray], *, num_frames: int, image_size: int,
                 stride: int = 1, box_fill: float = 1.0) -> EvalClip:
  """A raw stored clip (storage items) -> EvalClip of frames 0, stride, ..., centre-cropped and
  resized to image_size and normalized (``box_fill``: config.data.xyz_box_fill) exactly as
  training does."""
  clip = pipeline.resized_frames(raw, num_frames=num_frames, image_size=image_size,
                                 stride=stride)
  model = transforms.canonicalize(clip, box_fill=box_fill)
  depth = np.asarray(clip['depth'], np.float32)
  c2w = np.asarray(clip['cam_to_world'], np.float64)
  relative = np.einsum('ij,njk->nik', np.asarray(cameras.invert_pose(c2w[0]), np.float64), c2w)
  first = depth[0][depth[0] > 0]
  if first.size == 0:
    raise ValueError('frame 0 of the clip has no valid depth')
  path = relative.copy()
  path[:, :3, 3] /= float(np.median(first))
  return EvalClip(rgb=model['rgb'], depth=depth, mask=depth > 0,
                  intrinsics=model['intrinsics'], cam_to_world=model['cam_to_world'],
                  metric_cam_to_world=relative.astype(np.float32),
                  relative_path=path.astype(np.float32))


def _prefixed(prefix: str, values: dict) -> dict:
  return {f'{prefix}/{k}': v for k, v in values.items()}


def depth_scores(prefix: str, pred, gt, valid, alignment: str, clip=None
                 ) -> tuple[dict, np.ndarray]:
  """Scores of a depth prediction (0 = no surface predicted) and the aligned prediction (still
  0 where no surface was predicted).

  The scale (and shift) is fitted on pixels with a predicted surface only: for 'lstsq' a 0
  would otherwise pull the fit (median alignment skips depths <= 0 itself). Every valid pixel
  is scored; one without a predicted surface counts as an outlier."""
  aligned, _, _ = depth_metrics.align_depth(pred, gt, valid & (pred > 0), method=alignment)
  scores = depth_metrics.depth_errors(aligned, gt, valid, clip=clip)
  return _prefixed(prefix, scores), np.where(pred > 0, aligned, 0.0)


def mono_depth(clip: EvalClip, rec: wvd_tasks.Reconstruction, alignment: str
               ) -> tuple[dict, np.ndarray]:
  """Scores of frame 0's depth from single-image generation, and the constant baseline; the
  aligned depth (H, W)."""
  gt, valid = clip.depth[0], clip.mask[0]
  out, aligned = depth_scores('mono', rec.depth[0], gt, valid, alignment)
  out.update(depth_scores('mono_baseline', np.ones_like(gt), gt, valid, 'median')[0])
  return out, aligned


def video_depth_and_pose(clip: EvalClip, rec: wvd_tasks.Reconstruction
                         ) -> tuple[dict, np.ndarray]:
  """Scores of the multi-view reconstruction: per-sequence aligned depth, cameras; baselines;
  and the aligned depth (N, H, W).

  RRE / RTE arrays (one per frame pair) are returned under 'pose/rre', 'pose/rte' for the
  runner to pool over the split."""
  out, aligned = depth_scores('video', rec.depth, clip.depth, clip.mask, 'median',
                              VIDEO_DEPTH_CLIP)
  out.update(depth_scores('video_baseline', np.ones_like(clip.depth), clip.depth, clip.mask,
                          'median', VIDEO_DEPTH_CLIP)[0])
  identity = np.broadcast_to(np.eye(4), clip.cam_to_world.shape)
  for prefix, poses in (('pose', rec.cam_to_world), ('pose_baseline', identity)):
    rre, rte = pose_metrics.relative_pose_errors(poses, clip.cam_to_world)
    out[f'{prefix}/rre'], out[f'{prefix}/rte'] = rre, rte
    out[f'{prefix}/ate'] = pose_metrics.absolute_trajectory_error(
        np.asarray(poses)[:, :3, 3], clip.cam_to_world[:, :3, 3])
  return out, aligned


def novel_views(clip: EvalClip, frames: np.ndarray) -> dict:
  """PSNR / SSIM of generated frames 1..N-1 (N, H, W, 3) against the truth, and of frame 0
  repeated (baseline). Per-target arrays, pooled by the runner."""
  target = clip.rgb[1:]
  copied = np.broadcast_to(clip.rgb[:1], target.shape)
  return {'nvs/psnr': image_metrics.psnr(frames[1:], target),
          'nvs/ssim': image_metrics.ssim(frames[1:], target),
          'nvs_baseline/psnr': image_metrics.psnr(copied, target),
          'nvs_baseline/ssim': image_metrics.ssim(copied, target)}


def keypoint_scores(clip: EvalClip, generated_rgb: np.ndarray) -> dict:
  """Mean key-point matches (frame 0 vs later frames) of the S generated videos
  (S, N, H, W, 3) and of the true clip (KPM's reference)."""
  generated = np.mean([consistency.video_keypoint_matches(v) for v in generated_rgb])
  return {'kpm/generated': float(generated),
          'kpm/ground_truth': float(consistency.video_keypoint_matches(clip.rgb))}


def xyz_rgb_scores(clip: EvalClip, rec: wvd_tasks.Reconstruction) -> dict:
  """Agreement of generated XYZ and RGB (sample 0, its post-optimized cameras) across frames;
  the true clip's agreement (its own XYZ and cameras) is the reference."""
  surface = ~np.asarray(normalization.background_mask(rec.xyz[0]))
  generated = consistency.xyz_rgb_agreement(rec.rgb[0], rec.xyz[0], rec.intrinsics,
                                            rec.cam_to_world, surface)
  world = cameras.unproject_depth(clip.depth, clip.intrinsics, clip.metric_cam_to_world)
  truth = consistency.xyz_rgb_agreement(clip.rgb, np.asarray(world), clip.intrinsics,
                                        clip.metric_cam_to_world, clip.mask)
  return {**_prefixed('agreement', generated), **_prefixed('agreement_truth', truth)}


@dataclasses.dataclass
class ClipOutputs:
  """What the gallery shows of one clip (any field None when its task did not run)."""
  videos_rgb: np.ndarray | None = None      # (S, N, H, W, 3) from frame 0
  videos_xyz: np.ndarray | None = None      # (S, N, H, W, 3)
  intrinsics: np.ndarray | None = None      # (N, 3, 3) of the videos' post-optimization
  cam_to_world: np.ndarray | None = None    # (N, 4, 4) likewise, model world
  mono_depth: np.ndarray | None = None      # (H, W), aligned as scored (0: no surface)
  video_depth: np.ndarray | None = None     # (N, H, W), likewise
  novel_frames: np.ndarray | None = None    # (N, H, W, 3)


def evaluate_clip(generator, clip: EvalClip, *, tasks: tuple[str, ...], num_samples: int,
                  alignment: str, has_xyz: bool, rng: jax.Array, box_fill: float = 1.0
                  ) -> tuple[dict, ClipOutputs]:
  """Runs the requested tasks on one clip; returns its scores and what the gallery shows.
  ``box_fill``: the model's config.data.xyz_box_fill (camera control normalizes known XYZ by
  it)."""
  n = clip.rgb.shape[0]
  scores, shown = {}, ClipOutputs()
  rng_first, rng_multi, rng_path = jax.random.split(rng, 3)
  if {'mono_depth', 'consistency'} & set(tasks):
    rgb, xyz = wvd_tasks.videos_from_first_frame(generator, clip.rgb[0], num_frames=n,
                                                 num_samples=num_samples, rng=rng_first)
    shown.videos_rgb = rgb
    rec = None
    if has_xyz:
      rec = wvd_tasks.reconstruct(rgb, xyz)
      shown.videos_xyz = xyz
      shown.intrinsics, shown.cam_to_world = rec.intrinsics, rec.cam_to_world
    if 'mono_depth' in tasks and rec is not None:
      mono_scores, shown.mono_depth = mono_depth(clip, rec, alignment)
      scores.update(mono_scores)
    if 'consistency' in tasks:
      scores.update(keypoint_scores(clip, rgb))
      if rec is not None:
        scores.update(xyz_rgb_scores(clip, rec))
  if 'video_depth' in tasks and has_xyz:
    rec = wvd_tasks.multiview(generator, clip.rgb, num_samples=num_samples, rng=rng_multi)
    video_scores, shown.video_depth = video_depth_and_pose(clip, rec)
    scores.update(video_scores)
  if 'novel_view' in tasks and has_xyz:
    result = wvd_tasks.camera_control(generator, clip.rgb[0], clip.relative_path, num_frames=n,
                                      rng=rng_path, intrinsics=clip.intrinsics[0],
                                      box_fill=box_fill)
    scores.update(novel_views(clip, result.frames))
    shown.novel_frames = result.frames
  return scores, shown
