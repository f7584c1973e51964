"""The four WVD tasks as functions of a video generator (the model, or an oracle in tests).

A generator maps known RGB/XYZ videos to complete ones:
  generator(rgb, rgb_mask, xyz, xyz_mask, cond_mask, rng, cameras=None) -> (rgb, xyz)
with rgb, xyz (B, N, H, W, 3) in [-1, 1], masks (B, N, H, W) bool, cond_mask (B, N, 2) (frames
whose RGB / XYZ are clean conditions, as in training) and, where the task knows them, the frames'
cameras (K (B, N, 3, 3), cam_to_world (B, N, 4, 4)) in the model's world (a model ignores them;
a test oracle renders them). The model's world is frame 0's camera frame, shifted and scaled
into [-1, 1] (unknown shift and scale at inference), so cameras and depths recovered here are in
those normalized units: depth is defined up to scale, as from any single-image method.

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

from wvd_jax import errors
from wvd_jax.geometry import normalization, post_optimization, reprojection

Generator = Callable[..., tuple]


@dataclasses.dataclass
class Reconstruction:
  """Samples of a 6D video and the geometry recovered from them.

  rgb, xyz: (S, N, H, W, 3) samples in [-1, 1]; spread, confidence: (N, H, W);
  depth: (N, H, W) of the mean XYZ after post-optimization, 0 at background; foreground:
  (N, H, W) bool, pixels the samples give a surface (not the background corner, see
  geometry.normalization.background_mask); intrinsics (N, 3, 3); cam_to_world (N, 4, 4) in the
  model's world; residual: the post-optimization residual.
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


def sample_spread(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(S, N, H, W, 3) samples -> spread and confidence (N, H, W) (see the module docstring)."""
  mean = xyz.mean(axis=0)
  spread = np.sqrt(np.mean(np.sum((xyz - mean) ** 2, axis=-1), axis=0))
  scale = max(float(np.median(spread)), 1e-6)
  return spread.astype(np.float32), np.exp(-spread / scale).astype(np.float32)


def reconstruct(rgb: np.ndarray, xyz: np.ndarray, focal: float | None = None) -> Reconstruction:
  """Post-optimizes (paper eq. 3) the mean of the samples, weighted by their confidence;
  background pixels (the mean XYZ at the background corner) get no weight and depth 0."""
  rgb, xyz = np.asarray(rgb, np.float32), np.asarray(xyz, np.float32)
  spread, confidence = sample_spread(xyz)
  mean = xyz.mean(axis=0)
  foreground = ~np.asarray(normalization.background_mask(mean))
  # A tiny weight rather than post_optimize's mask: a frame drawn (nearly) all background still
  # gets a camera instead of failing the minimum-points check.
  weights = np.where(foreground, confidence + 1e-3, 1e-6).astype(np.float32)
  result = post_optimization.post_optimize(mean, weights=weights, focal=focal, shared_focal=True)
  depth = np.where(foreground, np.asarray(result.depth), 0.0).astype(np.float32)
  return Reconstruction(rgb=rgb, xyz=xyz, spread=spread, confidence=confidence,
                        foreground=foreground, depth=depth, intrinsics=np.asarray(result.K),
                        cam_to_world=np.asarray(result.cam_to_world),
                        residual=float(np.mean(result.residual)))


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
                       num_samples: int, rng: jax.Array) -> Reconstruction:
  """RGB + XYZ videos (num_samples of them) from one image (H, W, 3) in [-1, 1], and cameras."""
  return reconstruct(*videos_from_first_frame(generator, image, num_frames=num_frames,
                                              num_samples=num_samples, rng=rng))


def monocular_depth(generator: Generator, image: np.ndarray, *, num_frames: int,
                    num_samples: int, rng: jax.Array) -> Reconstruction:
  """Depth of the image (frame 0 of the reconstruction): reconstruction.depth[0]."""
  return single_image_to_3d(generator, image, num_frames=num_frames, num_samples=num_samples,
                            rng=rng)


def multiview(generator: Generator, images: np.ndarray, *, num_samples: int,
              rng: jax.Array) -> Reconstruction:
  """Depth and camera of every image of an unposed set (N, H, W, 3): XYZ inpainted given RGB."""
  images = np.asarray(images, np.float32)
  if images.ndim != 4 or len(images) < 2:
    raise errors.UserError(f'multi-view needs >= 2 images (N, H, W, 3), got {images.shape}: give '
                           'a directory of two or more views')
  n, h, w, _ = images.shape
  rgb = np.broadcast_to(images, (num_samples,) + images.shape)
  rgb_mask = np.ones((num_samples, n, h, w), bool)
  cond = np.zeros((num_samples, n, 2), np.float32)
  cond[..., 0] = 1.0  # All RGB known: the multi-view pattern of training.
  _, xyz = generator(rgb, rgb_mask, np.zeros_like(rgb), np.zeros_like(rgb_mask), cond, rng)
  return reconstruct(rgb, xyz)


@dataclasses.dataclass
class CameraControlResult:
  """frames (T, H, W, 3) RGB in [-1, 1] along the path (frame 0 = the input image), their XYZ,
  the re-projected partial XYZ and masks each target was conditioned on, the cameras used
  (model world), and the final point memory's size."""
  frames: np.ndarray
  xyz: np.ndarray
  reprojected_xyz: np.ndarray
  reprojected_mask: np.ndarray
  intrinsics: np.ndarray
  cam_to_world: np.ndarray
  memory_points: int


def path_to_world(relative: np.ndarray, first_cam_to_world: np.ndarray,
                  median_depth: float) -> np.ndarray:
  """Relative poses (T, 4, 4) (input camera = identity, translations in median depths) -> world."""
  scaled = np.array(relative, np.float64)
  scaled[:, :3, 3] *= median_depth
  return np.einsum('ij,tjk->tik', first_cam_to_world, scaled).astype(np.float32)


def camera_control(generator: Generator, image: np.ndarray, relative_path: np.ndarray, *,
                   num_frames: int, rng: jax.Array, intrinsics: np.ndarray | None = None,
                   voxel_size: float = 2.0 / 256) -> CameraControlResult:
  """A video along a camera path from one image (paper Sec. 4.3, Fig. 3).

  1. Single image to 3D: sample XYZ (and RGB) of ``num_frames`` frames; post-optimize to get the
     input camera in the model's world. 2. Re-project the point memory (the union of all frames
     generated so far, de-duplicated per voxel) into the next num_frames - 1 target cameras.
  3. Inpaint RGB and the missing XYZ of those targets, conditioned on the previous frame (RGB as
     clean condition, XYZ by replacement) and the re-projected XYZ (replacement). 4. Add them to
     the memory and continue: long paths are generated in chunks.
  """
  relative_path = np.asarray(relative_path, np.float64)
  if relative_path.ndim != 3 or relative_path.shape[1:] != (4, 4) or len(relative_path) < 2:
    raise errors.UserError(f'camera path must be (T >= 2, 4, 4), got {relative_path.shape}')
  h, w, _ = image.shape
  rng, first_rng = jax.random.split(rng)
  first = single_image_to_3d(generator, image, num_frames=num_frames, num_samples=1,
                             rng=first_rng)
  K = first.intrinsics[0] if intrinsics is None else np.asarray(intrinsics, np.float32)
  median_depth = float(np.median(first.depth[0][first.depth[0] > 0]))
  world_path = path_to_world(relative_path, first.cam_to_world[0], median_depth)
  memory = reprojection.memory_from_frames(first.xyz[0], first.rgb[0], first.foreground,
                                           capacity=h * w * (len(relative_path) + num_frames),
                                           voxel_size=voxel_size)
  frames, xyzs = [np.asarray(image)], [first.xyz[0, 0]]
  reproj_xyz, reproj_mask = [first.xyz[0, 0]], [np.ones((h, w), bool)]
  chunk = num_frames - 1
  for start in range(1, len(world_path), chunk):
    targets = world_path[start:start + chunk]
    t = len(targets)
    raster = reprojection.render_targets(memory, np.broadcast_to(K, (t, 3, 3)), targets, h, w)
    rgb = np.zeros((1, t + 1, h, w, 3), np.float32)
    xyz = np.zeros_like(rgb)
    rgb_mask = np.zeros((1, t + 1, h, w), bool)
    xyz_mask = np.zeros_like(rgb_mask)
    rgb[0, 0], xyz[0, 0] = frames[-1], xyzs[-1]
    rgb_mask[0, 0] = xyz_mask[0, 0] = True
    xyz[0, 1:], xyz_mask[0, 1:] = np.asarray(raster.xyz), np.asarray(raster.mask)
    cond = np.zeros((1, t + 1, 2), np.float32)
    cond[0, 0, 0] = 1.0
    chunk_cams = np.concatenate([world_path[start - 1:start], targets])
    cams = (np.broadcast_to(K, (1, t + 1, 3, 3)), chunk_cams[None])
    rng, chunk_rng = jax.random.split(rng)
    out_rgb, out_xyz = generator(rgb, rgb_mask, xyz, xyz_mask, cond, chunk_rng, cameras=cams)
    out_rgb, out_xyz = np.asarray(out_rgb)[0, 1:], np.asarray(out_xyz)[0, 1:]
    memory = reprojection.add_frames(memory, out_xyz, out_rgb,
                                     ~np.asarray(normalization.background_mask(out_xyz)),
                                     voxel_size=voxel_size)
    frames.extend(out_rgb)
    xyzs.extend(out_xyz)
    reproj_xyz.extend(np.asarray(raster.xyz))
    reproj_mask.extend(np.asarray(raster.mask))
  return CameraControlResult(
      frames=np.stack(frames), xyz=np.stack(xyzs), reprojected_xyz=np.stack(reproj_xyz),
      reprojected_mask=np.stack(reproj_mask),
      intrinsics=np.broadcast_to(K, world_path.shape[:1] + (3, 3)).copy(),
      cam_to_world=world_path, memory_points=int(np.sum(memory.valid)))

