"""grain input pipeline: stored clips -> frame-0-canonical, normalized RGB + XYZ batches.

  source (TFDS ArrayRecord, random access; storage.ClipSource)
    -> this process's share: elements process_index, process_index + P, ...  (disjoint)
    -> shuffle (seeded, reshuffled every epoch) -> repeat
    -> random_map (per-element RNG from the seed and the element's index, so a resumed iterator
       draws the same randomness): N frames with a random stride in [1, data.max_frame_stride]
       and a random start; centre crop + resize to data.image_size (K exact, XYZ = unproject of
       the resized depth); canonicalize to frame 0's camera (OpenCV), normalize XYZ to [-1, 1]
       (geometry's N; the transform travels as norm_center / norm_scale); RGB to [-1, 1]
    -> batch (per-process batch = data.batch_size / process_count)
    -> to_iter_dataset, reading 2 batches ahead in this process (1 per worker process with
       workers); its iterator is a grain DatasetIterator, checkpointable with grain.checkpoint
    -> mp_prefetch over data.worker_count worker processes (0: in this process)

Every XYZ and camera is expressed in its clip's first frame's camera coordinates, as DUSt3R's
point maps are: a scene's world frame is arbitrary, frame 0's camera is what the model can infer
from the conditioning image.

A batch is a dict of numpy arrays (B = per-process batch, N frames, H = W = data.image_size):
  rgb (B, N, H, W, 3) float32 in [-1, 1];   xyz (B, N, H, W, 3) float32 in [-1, 1] (0 where invalid);
  mask (B, N, H, W) bool;   intrinsics (B, N, 3, 3);   cam_to_world (B, N, 4, 4) frame-0 camera
  frame, normalized translation;   norm_center (B, 3), norm_scale (B,) undo the normalization.
"""
from __future__ import annotations

import dataclasses
import os

import grain
import numpy as np

from wvd_jax import errors
from wvd_jax.data import clips, storage, transforms



def data_dir(config, workdir: str) -> str:
  """config.data.data_dir, or <workdir>/data."""
  return config.data.data_dir or os.path.join(workdir, 'data')


def _check_dataset(config):
  if config.data.dataset != 'synthetic_world':
    raise errors.UserError(f'config.data.dataset={config.data.dataset!r}: only the embedded '
                           "'synthetic_world' is available")


def load_split(config, split: str, workdir: str, *, complete: bool = True
               ) -> storage.ClipSource:
  """Random-access source of the split's raw clips (building the dataset on first use).

  Items: rgb (N, H, W, 3) uint8, depth (N, H, W) float32, intrinsics (N, 3, 3), cam_to_world
  (N, 4, 4), with N = the rendered frames (config_lib.render_frames(config)) at
  data.render_size; scene_index and scene_kind; with ``complete``, also xyz (N, H, W, 3)
  float32 world points (the unprojection of depth; 0 where invalid) and mask (N, H, W) bool.
  Without it a clip skips that unprojection: for callers that select and resize frames first
  (model_clip, evaluation.protocol.prepare_clip), which derive XYZ again anyway."""
  _check_dataset(config)
  return storage.open_split(storage.WorldParams.from_config(config), data_dir(config, workdir),
                            split, complete=complete, render_workers=config.data.render_workers)


def canonicalize_clip(clip: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """One raw clip (arrays without a batch axis) -> model-ready arrays (a batch's keys, no B).

  XYZ is recomputed from depth in frame 0's camera (transforms.canonicalize), exactly as the
  pipeline does; a clip without depth is refused."""
  if 'depth' not in clip:
    raise ValueError('canonicalize_clip needs the clip\'s depth (XYZ is derived from it)')
  return transforms.canonicalize(clip)


def model_clip(config, clip: dict[str, np.ndarray], *, start: int = 0,
               stride: int = 1) -> dict[str, np.ndarray]:
  """A raw clip (``load_split`` item) as the model sees it in training: data.num_frames frames
  ``start, start + stride, ...``, centre-cropped and resized to data.image_size, canonicalized.

  ``canonicalize_clip`` keeps every rendered frame at the rendered size; use this when a config
  renders more frames (data.max_frame_stride > 1) or a larger size than the model's."""
  return transforms.canonicalize(resized_frames(clip, num_frames=config.data.num_frames,
                                                image_size=config.data.image_size,
                                                start=start, stride=stride))


def resized_frames(clip: dict[str, np.ndarray], *, num_frames: int, image_size: int,
                   start: int = 0, stride: int = 1) -> dict[str, np.ndarray]:
  """The stored fields of frames ``start, start + stride, ...`` (num_frames of them),
  centre-cropped and resized to image_size as training does, not yet canonicalized (metric
  depth and the dataset's cameras)."""
  available = clip['depth'].shape[0]
  indices = start + stride * np.arange(num_frames)
  if start < 0 or stride < 1 or indices[-1] >= available:
    raise ValueError(f'frames {indices.tolist()} are not all in the clip\'s {available} frames '
                     f'({num_frames} frames at stride {stride} from frame {start}: the clip needs '
                     f'{indices[-1] + 1})')
  clip = transforms.select_frames({k: clip[k] for k in clips.STORED_FIELDS}, indices)
  return transforms.crop_and_resize(clip, image_size)


@dataclasses.dataclass(frozen=True)
class ClipTransform(grain.transforms.RandomMap):
  """Stored clip -> model-ready clip: frames, crop / resize, canonicalize (see module doc)."""
  num_frames: int
  max_stride: int
  image_size: int

  def random_map(self, clip, rng: np.random.Generator):
    indices = transforms.frame_indices(clip['depth'].shape[0], self.num_frames, self.max_stride,
                                       rng)
    clip = transforms.select_frames({k: clip[k] for k in clips.STORED_FIELDS}, indices)
    clip = transforms.crop_and_resize(clip, self.image_size)
    return transforms.canonicalize(clip)


def make_dataset(config, split: str, workdir: str, *, process_index: int = 0,
                 process_count: int = 1, shuffle: bool = True, repeat: bool = True):
  """A grain IterDataset of per-process batches (see the module docstring).

  ``config.data.batch_size`` is the global batch; each of ``process_count`` processes gets
  batch_size / process_count clips per batch from its own disjoint share of the split. Without
  ``repeat`` the share is read once and a last incomplete batch is dropped."""
  _check_dataset(config)
  d = config.data
  if d.batch_size % process_count:
    raise errors.UserError(f'data.batch_size={d.batch_size} is not divisible by the '
                           f'{process_count} JAX processes')
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index={process_index} not in [0, {process_count})')
  source = storage.open_split(storage.WorldParams.from_config(config),
                              data_dir(config, workdir), split, complete=False,
                              render_workers=d.render_workers)
  if len(source) < process_count:
    raise errors.UserError(f'the {split} split has {len(source)} clips, fewer than the '
                           f'{process_count} JAX processes')
  ds = grain.MapDataset.source(source)[process_index::process_count]
  if shuffle:
    ds = ds.shuffle(seed=config.seed)
  if repeat:
    ds = ds.repeat()
  # One seed per process: element k of two processes' shares draws different frames.
  ds = ds.random_map(ClipTransform(d.num_frames, d.max_frame_stride, d.image_size),
                     seed=(config.seed * 1_000_003 + process_index) % 2 ** 32)
  ds = ds.batch(d.batch_size // process_count, drop_remainder=True)
  # Read ahead a couple of batches only (grain's default, 500 elements, would prepare hundreds of
  # batches per iterator: gigabytes at 256 x 256 and wasted work for short-lived iterators);
  # with worker processes each prepares one batch at a time (the workers are the parallelism).
  ahead = 2 if d.worker_count == 0 else 1
  ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=ahead, prefetch_buffer_size=ahead))
  if d.worker_count > 0:
    from absl import flags  # pylint: disable=g-import-not-at-top
    if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; a script may not parse.
      flags.FLAGS.mark_as_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=d.worker_count))
  return ds
