"""grain input pipeline: stored clips -> frame-0-canonical, normalized RGB + XYZ batches.

The GLOBAL example sequence (global_examples; the same whatever the process count):
  per source of config.data.sources (the synthetic world's storage.ClipSource or a converted
  dataset's storage.DirectoryClipSource; TFDS ArrayRecord, random access): its clip indices
    shuffled (seeded per source, reshuffled every epoch) -> repeated -> keyed (source, index)
  -> mix the sources' keys by weight (grain MapDataset.mix: a deterministic interleave in the
     weights' proportions; one source: itself) (mixed_keys)
  -> read the keyed clip (+ ``source``)
  -> random_map (per-example RNG from the seed and the GLOBAL index g): N frames with a random
     stride in [1, data.max_frame_stride] and a random start (with data.motion_curriculum_steps
     > 0, training split: strides grow from 1 to that range over the first so many global
     batches, g // B giving the batch: transforms.curriculum_frame_indices); centre crop + resize to
     data.image_size (K exact, XYZ = unproject of the resized depth); canonicalize to frame 0's
     camera (OpenCV), normalize XYZ to [-1, 1] (geometry's N, its robust box mapped into
     [-data.xyz_box_fill, data.xyz_box_fill]; the transform travels as
     norm_center / norm_scale); RGB to [-1, 1]
So example g depends only on (config.seed, the sources, split, g).

This process's batches (make_dataset): global batch b = examples [b * B, (b + 1) * B)
(B = data.batch_size); process p of P takes rows [p * B / P, (p + 1) * B / P) of every global
batch from ``start_batch`` on (GlobalBatchShare)
    -> batch (per-process batch = B / P)
    -> to_iter_dataset, reading 2 batches ahead in this process (1 per worker process with
       workers); its iterator is a grain DatasetIterator, checkpointable with grain.checkpoint
    -> mp_prefetch over data.worker_count worker processes (0: in this process)
The data position of a run is the number of global batches consumed: rebuilding with
``start_batch`` = that number continues identically on any process count.

Every XYZ and camera is expressed in its clip's first frame's camera coordinates, as DUSt3R's
point maps are: a scene's world frame is arbitrary, frame 0's camera is what the model can infer
from the conditioning image.

A batch is a dict of numpy arrays (B = per-process batch, N frames, H = W = data.image_size):
  rgb (B, N, H, W, 3) float32 in [-1, 1];   xyz (B, N, H, W, 3) float32 in [-1, 1] (0 where invalid);
  mask (B, N, H, W) bool (a valid surface);   xyz_valid (B, N, H, W) bool (depth known: False
  only in converted datasets' unknown pixels, which are out of the XYZ loss);
  intrinsics (B, N, 3, 3);   cam_to_world (B, N, 4, 4) frame-0 camera frame, normalized translation;   norm_center (B, 3), norm_scale (B,) undo the normalization;
  source (B,) int32: the index of the clip's source in config.data.sources.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import sys

import grain
import numpy as np

from wvd_jax import config_lib, errors
from wvd_jax.data import clips, latents, storage, transforms



def data_dir(config, workdir: str) -> str:
  """config.data.data_dir, or <workdir>/data."""
  return config.data.data_dir or os.path.join(workdir, 'data')


def load_split(config, split: str, workdir: str, *, complete: bool = True
               ) -> storage.ClipSource:
  """Random-access source of the split's raw clips (building the dataset on first use).

  Items: rgb (N, H, W, 3) uint8, depth (N, H, W) float32, intrinsics (N, 3, 3), cam_to_world
  (N, 4, 4), with N = the rendered frames (config_lib.render_frames(config)) at
  data.render_size; scene_index and scene_kind; with ``complete``, also xyz (N, H, W, 3)
  float32 world points (the unprojection of depth; 0 where invalid) and mask (N, H, W) bool.
  Without it a clip skips that unprojection: for callers that select and resize frames first
  (model_clip, evaluation.protocol.prepare_clip), which derive XYZ again anyway."""
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
                                                start=start, stride=stride),
                                 box_fill=config.data.xyz_box_fill)


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
  clip = transforms.select_frames(clips.stored_fields(clip), indices)
  return transforms.crop_and_resize(clip, image_size)


@dataclasses.dataclass(frozen=True)
class ClipTransform(grain.transforms.RandomMap):
  """Stored clip -> model-ready clip: frames, crop / resize, canonicalize (see module doc).

  With ``curriculum_steps`` > 0 (data.motion_curriculum_steps, training split) the clip carries
  its global example index (``_ReadClipAt``) and the frame stride follows the motion curriculum
  at global batch index // batch_size (transforms.curriculum_frame_indices)."""
  num_frames: int
  max_stride: int
  image_size: int
  curriculum_steps: int = 0
  batch_size: int = 1
  box_fill: float = 1.0

  def random_map(self, clip, rng: np.random.Generator):
    available = clip['depth'].shape[0]
    if self.curriculum_steps:
      progress = transforms.curriculum_progress(int(clip['example_index']) // self.batch_size,
                                                self.curriculum_steps)
      indices = transforms.curriculum_frame_indices(available, self.num_frames, self.max_stride,
                                                    progress, rng)
    else:
      indices = transforms.frame_indices(available, self.num_frames, self.max_stride, rng)
    out = _model_ready(clip, indices, self.image_size, self.box_fill)
    out['source'] = clip['source']
    return out


def _model_ready(clip, indices: np.ndarray, image_size: int,
                 box_fill: float) -> dict[str, np.ndarray]:
  out = transforms.select_frames(clips.stored_fields(clip), indices)
  return transforms.canonicalize(transforms.crop_and_resize(out, image_size), box_fill=box_fill)


@dataclasses.dataclass(frozen=True)
class _FixedWindowClip(grain.transforms.Map):
  """Clip index -> that clip of ``source`` model-ready at one window drawn from (seed, source
  index, clip index), with ``clip`` and ``frame_indices`` (int32): what encode_latents encodes."""
  source: object
  source_index: int
  seed: int
  num_frames: int
  max_stride: int
  image_size: int
  box_fill: float

  def map(self, index):
    clip = self.source[index]
    rng = np.random.default_rng([self.seed, self.source_index, int(index)])
    indices = transforms.frame_indices(clip['depth'].shape[0], self.num_frames, self.max_stride,
                                       rng)
    out = _model_ready(clip, indices, self.image_size, self.box_fill)
    out.update(clip=np.int32(index), frame_indices=indices.astype(np.int32),
               source=np.int32(self.source_index))
    return out


def fixed_window_clips(config, split: str, workdir: str, source_index: int) -> grain.MapDataset:
  """Every clip of the split of source ``source_index`` (config.data.sources' order), in stored
  order, each model-ready at ONE window fixed by (config.seed, source index, clip index) (a
  random stride and start as in training): the clips --mode=encode_latents encodes."""
  name = config_lib.data_sources(config)[source_index][0]
  source = open_source(config, name, split, workdir)
  d = config.data
  return grain.MapDataset.range(len(source)).map(_FixedWindowClip(
      source, source_index, int(config.seed), d.num_frames, d.max_frame_stride, d.image_size,
      d.xyz_box_fill))


@dataclasses.dataclass(frozen=True)
class _ReadClip(grain.transforms.Map):
  """(source, clip index) -> that stored clip with ``source`` (int32) added."""
  sources: tuple

  def map(self, key):
    source, index = key
    return dict(self.sources[source][index], source=np.int32(source))


@dataclasses.dataclass(frozen=True)
class _ReadClipAt(grain.transforms.MapWithIndex):
  """(global example index g, (source, clip index)) -> the clip with ``source`` and
  ``example_index`` (int64 g) added: for transforms that depend on the data position."""
  sources: tuple

  def map_with_index(self, index, key):
    source, clip = key
    return dict(self.sources[source][clip], source=np.int32(source),
                example_index=np.int64(index))


class GlobalBatchShare(grain.MapDataset):
  """One process's share of a global, process-count-independent example sequence.

  Element j of this dataset is global example (start_batch + j // b) * B + process_index * b
  + j % b, with B the global batch and b = B / process_count: batching it by b gives the
  process's rows of global batches start_batch, start_batch + 1, ...; the union over processes
  is the global batch whatever the process count."""

  def __init__(self, parent: grain.MapDataset, *, global_batch: int, process_index: int,
               process_count: int, start_batch: int = 0):
    super().__init__(parent)
    self._global_batch = global_batch
    self._local_batch = global_batch // process_count
    self._offset = process_index * self._local_batch
    self._start_batch = start_batch

  def __len__(self) -> int:
    total = len(self._parent)
    if total >= sys.maxsize:  # Repeated: endless.
      return sys.maxsize
    return max(total // self._global_batch - self._start_batch, 0) * self._local_batch

  def global_index(self, index: int) -> int:
    batch, row = divmod(index, self._local_batch)
    return (self._start_batch + batch) * self._global_batch + self._offset + row

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    return self._parent[self.global_index(index)]

  def __str__(self) -> str:
    return (f'GlobalBatchShare[rows {self._offset}..{self._offset + self._local_batch} of '
            f'{self._global_batch}, from batch {self._start_batch}]')


def _shuffle_seed(seed: int, source: int) -> int:
  """Source ``source``'s shuffle seed (grain adds the epoch to it: sources lie far apart).
  Source 0 keeps the seed itself, the transform the earlier stream: a one-source run reads the
  same data as before the global sequence existed."""
  return (int(seed) + source * 2_654_435_761) % 2 ** 32


def _transform_seed(seed: int) -> int:
  return (int(seed) * 1_000_003) % 2 ** 32


def open_source(config, name: str, split: str, workdir: str, *, complete: bool = False):
  """The split of one data source (an entry of config.data.sources): the embedded synthetic
  world (built on first use) or a dataset directory in the project's shard format."""
  if name == config_lib.SYNTHETIC_WORLD:
    return load_split(config, split, workdir, complete=complete)
  return storage.DirectoryClipSource(name, split, complete=complete)


def mixed_keys(config, sources, *, shuffle: bool = True, repeat: bool = True
               ) -> grain.MapDataset:
  """The global order as (source, clip index) pairs: each source's clip indices shuffled (per
  epoch) and repeated, then mixed by weight. ``sources``: the opened sources, in
  config.data.sources' order."""
  weights = [w for _, w in config_lib.data_sources(config)]
  parts = []
  for s, source in enumerate(sources):
    ds = grain.MapDataset.range(len(source))
    if shuffle:
      ds = ds.shuffle(seed=_shuffle_seed(config.seed, s))  # Reshuffled every epoch (grain).
    if repeat:
      ds = ds.repeat()
    parts.append(ds.map(functools.partial(_key, s)))
  # grain's mixture interleaves deterministically in the weights' exact proportions.
  return parts[0] if len(parts) == 1 else grain.MapDataset.mix(parts, weights)


def _key(source: int, index: int) -> tuple[int, int]:
  return source, index


def open_sources(config, split: str, workdir: str) -> tuple:
  """The split of every source of config.data.sources (each must have clips)."""
  sources = []
  for name, _ in config_lib.data_sources(config):
    source = open_source(config, name, split, workdir)
    if not len(source):
      raise errors.UserError(f'data source {name!r} has no clips in its {split} split')
    sources.append(source)
  return tuple(sources)


def global_examples(config, split: str, workdir: str, *, shuffle: bool = True,
                    repeat: bool = True) -> grain.MapDataset:
  """The split's global example sequence of model-ready clips (module docstring). Example g
  depends only on (config.seed, the sources, split, g)."""
  d = config.data
  sources = open_sources(config, split, workdir)
  keys = mixed_keys(config, sources, shuffle=shuffle, repeat=repeat)
  # The motion curriculum follows the training data position only; other splits see the full
  # motion range.
  curriculum = d.motion_curriculum_steps if split == 'train' else 0
  read = keys.map_with_index(_ReadClipAt(sources)) if curriculum else keys.map(_ReadClip(sources))
  # Per-example RNG from the seed and the global index g: the same frames on any process count.
  return read.random_map(
      ClipTransform(d.num_frames, d.max_frame_stride, d.image_size,
                    curriculum_steps=curriculum, batch_size=d.batch_size,
                    box_fill=d.xyz_box_fill),
      seed=_transform_seed(config.seed))


def latent_examples(config, split: str, *, shuffle: bool = True, repeat: bool = True
                    ) -> grain.MapDataset:
  """The split's global example sequence read from cached latents (config.data.latents_dir):
  the same (source, clip index) order as global_examples, each clip at the window it was
  encoded at; items are data/latents.py's fields plus ``source``."""
  sources = latents.open_sources(config, split)
  for (name, _), source in zip(config_lib.data_sources(config), sources):
    if not len(source):
      raise errors.UserError(f'data source {name!r} has no encoded clips in its {split} split')
  return mixed_keys(config, sources, shuffle=shuffle, repeat=repeat).map(_ReadClip(sources))


def make_dataset(config, split: str, workdir: str, *, process_index: int = 0,
                 process_count: int = 1, start_batch: int = 0, shuffle: bool = True,
                 repeat: bool = True, from_latents: bool = False):
  """A grain IterDataset of this process's batches from GLOBAL batch ``start_batch`` on.

  Global batch b holds global examples [b * B, (b + 1) * B) (B = data.batch_size, the global
  batch); process p of P gets rows [p * B / P, (p + 1) * B / P) of it. Example g's content
  depends only on (config.seed, config.data.sources, split, g), not on P, so a run that consumed
  k global batches resumes on any process count with ``start_batch=k``. Without ``repeat`` each
  source is read once and the last incomplete global batch is dropped. ``from_latents``: the
  batches are cached latents (latent_examples; config.data.latents_dir) instead of pixels."""
  d = config.data
  if d.batch_size % process_count:
    raise errors.UserError(f'data.batch_size={d.batch_size} is not divisible by the '
                           f'{process_count} JAX processes')
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index={process_index} not in [0, {process_count})')
  if start_batch < 0:
    raise ValueError(f'start_batch={start_batch} must be >= 0')
  examples = (latent_examples(config, split, shuffle=shuffle, repeat=repeat) if from_latents
              else global_examples(config, split, workdir, shuffle=shuffle, repeat=repeat))
  ds = GlobalBatchShare(examples,
                        global_batch=d.batch_size, process_index=process_index,
                        process_count=process_count, start_batch=start_batch)
  ds = ds.batch(d.batch_size // process_count, drop_remainder=True)
  # Read ahead a couple of batches only (grain's default, 500 elements, would prepare hundreds of
  # batches per iterator: gigabytes at 256 x 256 and wasted work for short-lived iterators);
  # with worker processes each prepares one batch at a time (the workers are the parallelism).
  return read_ahead(ds, d.worker_count)


def resolve_worker_count(worker_count: int) -> int:
  """config.data.worker_count -> worker processes: -1 is one per CPU core this process may run
  on, less one for the process that feeds the devices (on a 16-core GPU host, 15 workers fed
  the small model's 18.3 steps/s, 1,170 clips a second: benchmarks/RESULTS.md)."""
  if worker_count == -1:
    return max(1, len(os.sched_getaffinity(0)) - 1)
  if worker_count < 0:
    raise ValueError(f'data.worker_count must be >= 0 or -1 (one per core), got {worker_count}')
  return worker_count


def read_ahead(ds: grain.MapDataset, worker_count: int) -> grain.IterDataset:
  """``ds`` as an IterDataset preparing its next elements in ``worker_count`` processes (0: two
  threads of this process; -1: see resolve_worker_count), a couple of elements ahead."""
  worker_count = resolve_worker_count(worker_count)
  ahead = 2 if worker_count == 0 else 1
  ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=ahead, prefetch_buffer_size=ahead))
  if worker_count > 0:
    from absl import flags  # pylint: disable=g-import-not-at-top
    if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; a script may not parse.
      flags.FLAGS.mark_as_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  return ds
