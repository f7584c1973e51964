"""The four WVD tasks as functions of a video generator (the model, or an oracle in tests).

A generator maps known RGB/XYZ videos to complete ones:
  generator(rgb, rgb_mask, xyz, xyz_mask, cond_mask, rng, cameras=None) -> (rgb, xyz)
with rgb, xyz (B, N, H, W, 3) in [-1, 1], masks (B, N, H, W) bool, cond_mask (B, N, 2) (frames
whose RGB / XYZ are clean conditions, as in training) and, where the task knows them, the frames'
cameras (K (B, N, 3, 3), cam_to_world (B, N, 4, 4), to_world) in the clip's normalized frame-0
world and the anchoring.Similarity from there to the task's world (a model ignores them; a test
oracle renders them). The model's world is frame 0's camera frame, shifted and scaled
into [-1, 1] (unknown shift and scale at inference), so cameras and depths recovered here are in
those normalized units: depth is defined up to scale, as from any single-image method. Known
cameras change that (`reconstruct`): known poses bring the reconstruction into the user's frame
and scale (Sim(3) on the known cameras), a known distance makes it metric; `units` says which.

Several samples per input give a per-pixel confidence from the spread of XYZ across samples
(the paper names missing confidence as a limitation): spread = RMS distance of the samples' XYZ
to their mean; confidence = exp(-spread / median spread), so 1 is certain and the median pixel
scores 1/e.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import numpy as np

from wvd_jax.errors import UserError
from wvd_jax.geometry import anchoring, cameras, normalization, post_optimization, reprojection
from wvd_jax.tasks import known_cameras

UNITS_NORMALIZED = 'normalized (the model\'s [-1, 1] world; scale unknown)'
UNITS_POSES = 'units of the given poses'
UNITS_METRES = 'metres'

Generator = Callable[..., tuple]


@dataclasses.dataclass
class Reconstruction:
  """Samples of a 6D video and the geometry recovered from them.

  rgb, xyz: (S, N, H, W, 3) samples in [-1, 1]; spread, confidence: (N, H, W);
  depth: (N, H, W) of the mean XYZ after post-optimization, 0 at background; foreground:
  (N, H, W) bool, pixels the samples give a surface (not the background corner, see
  geometry.normalization.background_mask); intrinsics (N, 3, 3); cam_to_world (N, 4, 4) in the
  model's world, or the user's when poses were given; points (N, H, W, 3) the surface in that
  world (0 at background); residual: the post-optimization residual; units: of depth, points
  and camera centres (UNITS_*).
  """
  rgb: np.ndarray
  xyz: np.ndarray
  spread: np.ndarray
  confidence: np.ndarray
  foreground: np.ndarray
  depth: np.ndarray
  intrinsics: np.ndarray
  cam_to_world: np.ndarray
  residual: float
  points: np.ndarray | None = None
  units: str = UNITS_NORMALIZED


def sample_spread(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(S, N, H, W, 3) samples -> spread and confidence (N, H, W) (see the module docstring)."""
  mean = xyz.mean(axis=0)
  spread = np.sqrt(np.mean(np.sum((xyz - mean) ** 2, axis=-1), axis=0))
  scale = max(float(np.median(spread)), 1e-6)
  return spread.astype(np.float32), np.exp(-spread / scale).astype(np.float32)


def reconstruct(rgb: np.ndarray, xyz: np.ndarray, focal: float | None = None, *,
                intrinsics=None, cam_to_world=None, metric_distance=None,
                principal_point_mode: str = 'fixed') -> Reconstruction:
  """Post-optimizes (paper eq. 3) the mean of the samples, weighted by their confidence;
  background pixels (the mean XYZ at the background corner) get no weight and depth 0.

  Known cameras (all optional): intrinsics K (3, 3) or (N, 3, 3) in the model image's pixels
  (fixed); cam_to_world (N, 4, 4) with all-NaN matrices for views without a known pose: the
  mean XYZ is mapped into the user's frame by the Sim(3) that takes the freely recovered
  cameras onto the known ones, then post-optimized again with the known poses fixed;
  metric_distance (known_cameras.MetricDistance or metres between cameras 0 and 1) scales the
  result to metres (about the known camera, if one pose is given; refused when two or more
  distinct poses already fix the scale)."""
  rgb, xyz = np.asarray(rgb, np.float32), np.asarray(xyz, np.float32)
  spread, confidence = sample_spread(xyz)
  mean = xyz.mean(axis=0)
  n = mean.shape[0]
  foreground = ~np.asarray(normalization.background_mask(mean))
  # A tiny weight rather than post_optimize's mask: a frame drawn (nearly) all background still
  # gets a camera instead of failing the minimum-points check.
  weights = np.where(foreground, confidence + 1e-3, 1e-6).astype(np.float32)
  K = None if intrinsics is None else known_cameras.check_intrinsics(intrinsics)
  solve = lambda points, **kw: post_optimization.post_optimize(
      points, weights=weights, focal=focal, K=K, shared_focal=True,
      principal_point_mode=principal_point_mode, **kw)
  result, units, pivot, pivot_pose = solve(mean), UNITS_NORMALIZED, None, None
  anchor = None if cam_to_world is None else KnownPoses.fit(cam_to_world, result.cam_to_world)
  if anchor is not None:
    known = anchor.known
    result = solve(anchor.sim.points(mean).astype(np.float32), cam_to_world=anchor.fill,
                   pose_known=known)
    units, pivot, pivot_pose = anchor.units, anchor.pivot, anchor.pivot_pose
  depth = np.where(foreground, np.asarray(result.depth), 0.0)
  points = np.where(foreground[..., None], np.asarray(result.xyz), 0.0)
  c2w = np.asarray(result.cam_to_world, np.float64)
  if metric_distance is not None:
    if units == UNITS_POSES:
      raise UserError('a known distance and poses of two or more distinct cameras both set '
                      'the scale: give one of them')
    distance = known_cameras.check_distance(metric_distance)
    try:
      scale = anchoring.metric_scale(measured_distance(distance, c2w, points, foreground),
                                     distance.metres)
    except ValueError as e:
      raise UserError(f'known distance: {e}; name two different cameras or pixels') from None
    pivot = np.zeros(3) if pivot is None else pivot
    depth = depth * scale
    points = np.where(foreground[..., None], pivot + scale * (points - pivot), 0.0)
    c2w[:, :3, 3] = pivot + scale * (c2w[:, :3, 3] - pivot)
    if pivot_pose is not None:
      c2w[known] = pivot_pose  # the one known pose, exactly (its centre is the pivot)
    units = UNITS_METRES
  return Reconstruction(rgb=rgb, xyz=xyz, spread=spread, confidence=confidence,
                        foreground=foreground, depth=depth.astype(np.float32),
                        intrinsics=np.asarray(result.K), cam_to_world=c2w.astype(np.float32),
                        residual=float(np.mean(result.residual)),
                        points=points.astype(np.float32), units=units)


@dataclasses.dataclass
class KnownPoses:
  """Solved cameras brought onto the known ones: known (N,) bool; sim (anchoring.Similarity)
  from the solved world to the poses' world; fill (N, 4, 4): the known poses, the others mapped
  by sim (where the solve with the known poses fixed starts); units: UNITS_POSES when two known
  centres differ (they set the scale), else UNITS_NORMALIZED with pivot (3,) / pivot_pose the
  one known camera (a known distance then scales about it)."""
  known: np.ndarray
  sim: anchoring.Similarity
  fill: np.ndarray
  units: str
  pivot: np.ndarray | None
  pivot_pose: np.ndarray | None

  @classmethod
  def fit(cls, cam_to_world, solved) -> 'KnownPoses | None':
    """cam_to_world (N, 4, 4) known poses, all-NaN matrices for unknown views; solved (N, 4, 4)
    the cameras solved without them. None when no pose is known."""
    solved = np.asarray(solved, np.float64)
    poses = known_cameras.check_poses(cam_to_world)
    if poses.shape[0] != len(solved):
      raise UserError(f'cam_to_world has {poses.shape[0]} poses for {len(solved)} views')
    known = ~np.all(np.isnan(poses), axis=(1, 2))
    if not known.any():
      return None
    sim = anchoring.similarity_from_cameras(solved[known], poses[known])
    fill = np.where(known[:, None, None], poses, sim.poses(solved))
    centres = poses[known, :3, 3]
    if np.ptp(centres, axis=0).max(initial=0) > 0:
      return cls(known, sim, fill, UNITS_POSES, None, None)
    return cls(known, sim, fill, UNITS_NORMALIZED, centres[0], poses[known])


def measured_distance(distance, c2w, points, foreground) -> float:
  """The reconstruction's length of the known distance (camera centres or pixel points)."""
  n, h, w = foreground.shape
  if distance.cameras is not None:
    i, j = distance.cameras
    if not (0 <= i < n and 0 <= j < n):
      raise UserError(f'known distance between cameras {distance.cameras}: there are views '
                      f'0..{n - 1} only')
    return float(np.linalg.norm(c2w[i, :3, 3] - c2w[j, :3, 3]))
  ends = []
  for view, col, row in distance.pixels:
    if not (0 <= view < n and 0 <= col < w and 0 <= row < h):
      raise UserError(f'known distance pixel (view {view}, col {col}, row {row}) is outside '
                      f'the {n} views of {w}x{h}')
    if not foreground[view, row, col]:
      raise UserError(f'known distance pixel (view {view}, col {col}, row {row}) shows no '
                      'surface (background): pick a pixel on an object')
    ends.append(points[view, row, col])
  return float(np.linalg.norm(ends[0] - ends[1]))


def _first_frame_inputs(image: np.ndarray, num_samples: int, num_frames: int):
  h, w, _ = image.shape
  rgb = np.zeros((num_samples, num_frames, h, w, 3), np.float32)
  rgb[:, 0] = image
  rgb_mask = np.zeros((num_samples, num_frames, h, w), bool)
  rgb_mask[:, 0] = True
  cond = np.zeros((num_samples, num_frames, 2), np.float32)
  cond[:, 0, 0] = 1.0
  return rgb, rgb_mask, np.zeros_like(rgb), np.zeros_like(rgb_mask), cond


def videos_from_first_frame(generator: Generator, image: np.ndarray, *, num_frames: int,
                            num_samples: int, rng: jax.Array) -> tuple[np.ndarray, np.ndarray]:
  """num_samples RGB and XYZ videos (S, N, H, W, 3) whose frame 0 is the image (H, W, 3)."""
  rgb, xyz = generator(*_first_frame_inputs(image, num_samples, num_frames), rng)
  return np.asarray(rgb, np.float32), np.asarray(xyz, np.float32)


def single_image_to_3d(generator: Generator, image: np.ndarray, *, num_frames: int,
                       num_samples: int, rng: jax.Array, intrinsics=None, cam_to_world=None,
                       metric_distance=None) -> Reconstruction:
  """RGB + XYZ videos (num_samples of them) from one image (H, W, 3) in [-1, 1], and cameras.

  intrinsics: K (3, 3) of the image (model pixels), shared by the generated frames;
  cam_to_world: (4, 4) the image's pose; metric_distance: see `reconstruct`."""
  poses = None
  if cam_to_world is not None:
    poses = np.full((num_frames, 4, 4), np.nan)
    poses[0] = known_cameras.check_poses(np.asarray(cam_to_world, np.float64)[None])[0]
  return reconstruct(*videos_from_first_frame(generator, image, num_frames=num_frames,
                                              num_samples=num_samples, rng=rng),
                     intrinsics=intrinsics, cam_to_world=poses, metric_distance=metric_distance)


def monocular_depth(generator: Generator, image: np.ndarray, **kwargs) -> Reconstruction:
  """Depth of the image (frame 0 of the reconstruction): reconstruction.depth[0]. Keyword
  arguments as `single_image_to_3d`."""
  return single_image_to_3d(generator, image, **kwargs)


def multiview(generator: Generator, images: np.ndarray, *, num_samples: int,
              rng: jax.Array, **known) -> Reconstruction:
  """Depth and camera of every image of an unposed set (N, H, W, 3): XYZ inpainted given RGB.
  `known`: intrinsics, cam_to_world (N, 4, 4; NaN for unknown views), metric_distance (see
  `reconstruct`)."""
  images = np.asarray(images, np.float32)
  if images.ndim != 4 or len(images) < 2:
    raise UserError(f'multi-view needs >= 2 images (N, H, W, 3), got {images.shape}: give '
                           'a directory of two or more views')
  n, h, w, _ = images.shape
  rgb = np.broadcast_to(images, (num_samples,) + images.shape)
  rgb_mask = np.ones((num_samples, n, h, w), bool)
  cond = np.zeros((num_samples, n, 2), np.float32)
  cond[..., 0] = 1.0  # All RGB known: the multi-view pattern of training.
  _, xyz = generator(rgb, rgb_mask, np.zeros_like(rgb), np.zeros_like(rgb_mask), cond, rng)
  return reconstruct(rgb, xyz, **known)


@dataclasses.dataclass
class CameraControlResult:
  """frames (T, H, W, 3) RGB in [-1, 1] along the path (frame 0 = the input image); their XYZ
  (T, H, W, 3) and foreground (T, H, W) (XYZ is 0 where False); the re-projected partial XYZ and
  masks each target was conditioned on; intrinsics (T, 3, 3) and cam_to_world (T, 4, 4): the
  path as the user gave it. Every point and camera is in the user's frame (the input camera is
  the identity, translations in median depths of the input image); user_to_model maps it into
  the model world of the first reconstruction. memory_points: the final point memory's size."""
  frames: np.ndarray
  xyz: np.ndarray
  foreground: np.ndarray
  reprojected_xyz: np.ndarray
  reprojected_mask: np.ndarray
  intrinsics: np.ndarray
  cam_to_world: np.ndarray
  memory_points: int
  user_to_model: anchoring.Similarity


def path_to_world(relative: np.ndarray, first_cam_to_world: np.ndarray,
                  median_depth: float) -> np.ndarray:
  """Relative poses (T, 4, 4) (input camera = identity, translations in median depths) -> world."""
  scaled = np.array(relative, np.float64)
  scaled[:, :3, 3] *= median_depth
  return np.einsum('ij,tjk->tik', first_cam_to_world, scaled).astype(np.float32)


def camera_control(generator: Generator, image: np.ndarray, relative_path: np.ndarray, *,
                   num_frames: int, rng: jax.Array, intrinsics: np.ndarray | None = None,
                   voxel_size: float = 2.0 / 256, box_fill: float = 1.0,
                   first: Reconstruction | None = None) -> CameraControlResult:
  """A video along a camera path from one image (paper Sec. 4.3, Fig. 3).

  1. Single image to 3D: sample XYZ (and RGB) of ``num_frames`` frames; post-optimize to get the
     input camera in the model's world. 2. Re-project the point memory (the union of all frames
     generated so far, de-duplicated per voxel, kept in that first world, where it may grow
     beyond the first box) into the next num_frames - 1 target cameras.
  3. Condition the chunk exactly as training clips look: its known XYZ (the previous frame's and
     the re-projected points) re-expressed in the chunk's frame-0 camera (the previous frame's)
     and normalized by the training rule (geometry.normalization: robust box to [-box_fill,
     box_fill] (config.data.xyz_box_fill of the model), points clipped to [-1, 1], background
     at the corner). Inpaint RGB and the missing XYZ of the targets,
     conditioned on the previous frame (RGB as clean condition, XYZ by replacement) and the
     re-projected XYZ (replacement). 4. Map the new XYZ back to the memory's world, add it, and
     continue: long paths are generated in chunks.
  The generator's `cameras` are (K, cam_to_world in the chunk's normalized frame, the
  anchoring.Similarity from that frame to the memory's world): models ignore them, test
  oracles render from them. ``first``: step 1's result when the caller has it already (a
  single_image_to_3d of this image with ``num_frames`` frames; sample 0 is used).
  """
  relative_path = np.asarray(relative_path, np.float64)
  if relative_path.ndim != 3 or relative_path.shape[1:] != (4, 4) or len(relative_path) < 2:
    raise UserError(f'camera path must be (T >= 2, 4, 4), got {relative_path.shape}')
  h, w, _ = image.shape
  rng, first_rng = jax.random.split(rng)
  if first is None:
    first = single_image_to_3d(generator, image, num_frames=num_frames, num_samples=1,
                               rng=first_rng)
  K = first.intrinsics[0] if intrinsics is None else np.asarray(intrinsics, np.float32)
  median_depth = float(np.median(first.depth[0][first.depth[0] > 0]))
  world_path = path_to_world(relative_path, first.cam_to_world[0], median_depth)
  memory = reprojection.memory_from_frames(first.xyz[0], first.rgb[0], first.foreground,
                                           capacity=h * w * (len(relative_path) + num_frames),
                                           voxel_size=voxel_size)
  frames, xyzs, fgs = [np.asarray(image)], [first.xyz[0, 0]], [first.foreground[0]]
  reproj_xyz, reproj_mask = [first.xyz[0, 0]], [first.foreground[0]]
  chunk = num_frames - 1
  for start in range(1, len(world_path), chunk):
    targets = world_path[start:start + chunk]
    t = len(targets)
    raster = reprojection.render_targets(memory, np.broadcast_to(K, (t, 3, 3)), targets, h, w)
    chunk_cams = np.concatenate([world_path[start - 1:start], targets]).astype(np.float64)
    known = np.concatenate([xyzs[-1][None], np.asarray(raster.xyz, np.float64)])
    known_mask = np.concatenate([fgs[-1][None], np.asarray(raster.mask)])
    to_chunk = cameras.invert_pose(chunk_cams[0])
    known = cameras.transform_points(to_chunk, known)
    norm = normalization.fit_normalization(known, known_mask, fill=box_fill)
    known = np.clip(normalization.normalize_points(known, norm), -1.0, 1.0)
    rgb = np.zeros((1, t + 1, h, w, 3), np.float32)
    rgb_mask = np.zeros((1, t + 1, h, w), bool)
    rgb[0, 0], rgb_mask[0, 0] = frames[-1], True
    xyz = normalization.fill_background(known, known_mask)[None].astype(np.float32)
    xyz_mask = np.concatenate([np.ones((1, h, w), bool), known_mask[1:]])[None]
    cond = np.zeros((1, t + 1, 2), np.float32)
    cond[0, 0, 0] = 1.0
    chunk_to_world = anchoring.Similarity(
        float(norm.scale), chunk_cams[0, :3, :3],
        cameras.transform_points(chunk_cams[0], np.asarray(norm.center, np.float64)))
    cams = (np.broadcast_to(K, (1, t + 1, 3, 3)),
            normalization.normalize_cam_to_world(cameras.compose_poses(to_chunk, chunk_cams),
                                                 norm)[None], chunk_to_world)
    rng, chunk_rng = jax.random.split(rng)
    out_rgb, out_xyz = generator(rgb, rgb_mask, xyz, xyz_mask, cond, chunk_rng, cameras=cams)
    out_rgb, out_xyz = np.asarray(out_rgb)[0, 1:], np.asarray(out_xyz)[0, 1:]
    fg = ~np.asarray(normalization.background_mask(out_xyz))
    out_world = np.where(fg[..., None], chunk_to_world.points(out_xyz), 0.0).astype(np.float32)
    memory = reprojection.add_frames(memory, out_world, out_rgb, fg, voxel_size=voxel_size)
    frames.extend(out_rgb)
    xyzs.extend(out_world)
    fgs.extend(fg)
    reproj_xyz.extend(np.asarray(raster.xyz))
    reproj_mask.extend(np.asarray(raster.mask))
  c2w0 = np.asarray(first.cam_to_world[0], np.float64)
  user_to_model = anchoring.Similarity(median_depth, c2w0[:3, :3], c2w0[:3, 3])
  to_user = user_to_model.inverse()
  in_user = lambda pts, mask: np.where(mask[..., None], to_user.points(np.stack(pts)),
                                       0.0).astype(np.float32)
  fgs, reproj_mask = np.stack(fgs), np.stack(reproj_mask)
  return CameraControlResult(
      frames=np.stack(frames), xyz=in_user(xyzs, fgs), foreground=fgs,
      reprojected_xyz=in_user(reproj_xyz, reproj_mask), reprojected_mask=reproj_mask,
      intrinsics=np.broadcast_to(K, world_path.shape[:1] + (3, 3)).copy(),
      cam_to_world=relative_path.astype(np.float32), memory_points=int(np.sum(memory.valid)),
      user_to_model=user_to_model)
