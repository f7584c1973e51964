"""grain input pipeline: clips -> frame-0-canonical, normalized RGB+XYZ batches.

Every clip's XYZ and cameras are expressed in its first frame's camera coordinates (OpenCV), as
DUSt3R's point maps are: a scene's own world frame is arbitrary, while frame 0's camera frame is
what the model can infer from the conditioning image. XYZ is then normalized into [-1, 1] per clip
(geometry's N) and RGB mapped to [-1, 1].

A batch is a dict of numpy arrays (B = per-process batch, N frames, H = W = image size):
  rgb (B, N, H, W, 3) float32 in [-1, 1];   xyz (B, N, H, W, 3) float32 in [-1, 1] (0 where invalid);
  mask (B, N, H, W) bool;   intrinsics (B, N, 3, 3);   cam_to_world (B, N, 4, 4) frame-0 camera
  frame, normalized translation;   norm_center (B, 3), norm_scale (B,) undo the normalization.
"""
from __future__ import annotations

import dataclasses
import os

import grain
import numpy as np

from wvd_jax.data import storage
from wvd_jax.geometry import cameras, normalization


def canonicalize_clip(clip: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Normalizes one clip (arrays without a batch axis) into the model's frame and range."""
  world_to_frame0 = np.asarray(cameras.invert_pose(clip['cam_to_world'][0]))
  xyz = np.asarray(cameras.transform_points(world_to_frame0, clip['xyz']))
  cam_to_world = world_to_frame0 @ clip['cam_to_world']
  mask = clip['mask']
  norm = normalization.fit_normalization(xyz, mask)
  xyz = np.clip(np.asarray(normalization.normalize_points(xyz, norm)), -1.0, 1.0)
  cam_to_world = np.asarray(normalization.normalize_cam_to_world(cam_to_world, norm))
  return dict(
      rgb=clip['rgb'].astype(np.float32) / 127.5 - 1.0,
      xyz=np.where(mask[..., None], xyz, 0.0).astype(np.float32),
      mask=mask,
      intrinsics=clip['intrinsics'].astype(np.float32),
      cam_to_world=cam_to_world.astype(np.float32),
      norm_center=np.asarray(norm.center, np.float32),
      norm_scale=np.asarray(norm.scale, np.float32),
  )


@dataclasses.dataclass(frozen=True)
class SplitSource:
  """Random-access source over a rendered split: element i is clip i (dict of arrays)."""
  arrays: dict

  def __len__(self):
    return len(self.arrays['rgb'])

  def __getitem__(self, index):
    return {k: v[index] for k, v in self.arrays.items()}


def load_split(config, split: str, workdir: str) -> SplitSource:
  d = config.data
  data_dir = d.data_dir or os.path.join(workdir, 'data')
  num = {'train': d.num_train_scenes, 'validation': d.num_validation_scenes,
         'test': d.num_test_scenes}[split]
  arrays = storage.build_split(data_dir, split, num, d.num_frames, d.render_size, config.seed)
  return SplitSource(arrays)


def make_dataset(config, split: str, workdir: str, *, process_index: int = 0,
                 process_count: int = 1, shuffle: bool = True, repeat: bool = True):
  """A grain IterDataset of per-process batches; its iterator state is checkpointable."""
  global_batch = config.data.batch_size
  if global_batch % process_count:
    raise ValueError(f'data.batch_size={global_batch} is not divisible by the '
                     f'{process_count} JAX processes')
  source = load_split(config, split, workdir)
  # Each process reads a disjoint share; shuffling before repeating reshuffles every epoch.
  ds = grain.MapDataset.source(source)[process_index::process_count]
  if shuffle:
    ds = ds.shuffle(seed=config.seed)
  if repeat:
    ds = ds.repeat()
  ds = ds.map(canonicalize_clip)
  ds = ds.batch(global_batch // process_count, drop_remainder=True)
  ds = ds.to_iter_dataset()
  if config.data.worker_count > 0:
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=config.data.worker_count))
  return ds
