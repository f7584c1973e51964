"""Converted datasets: a scene's frames -> clips -> the project's shard format, and back.

Stage 1 (per scene, in worker processes): ``prepare_scene`` loads every frame a format gives,
takes the centre square and resizes it to ``image_size`` (K exact; depth by
transforms.crop_and_resize's validity-aware rule: never blended across holes or edges), and
picks clip windows: ``frames`` frames ``stride`` apart, a window every ``step`` frames (plus one
ending at the last frame), kept when the camera moves between the window's first and last
frame by at most ``max_rotation_deg`` and by a distance between ``min_translation`` and
``max_translation`` times the first frame's median depth (a window whose first frame has no
depth is judged by rotation only). The result is one ``.npz`` a scene (``write_scene``).

Stage 2: ``build`` writes those scenes as a TFDS ArrayRecord dataset (the synthetic world's
layout, so ``storage.DirectoryClipSource(dir, split)`` reads it). One example a clip:

  rgb (N, S, S, 3) uint8;  depth (N, S, S) float32, the source's units, 0 = unknown;
  intrinsics (N, 3, 3) float32 pixels;  cam_to_world (N, 4, 4) float32 OpenCV;
  valid (N, S, S) bool (= depth > 0);  scene (text);  frame_names (N,) text;
  frame_indices (N,) int64 (the frames' positions in the source's order).
Next to the shards: dataset_info.json, features.json, shard_sizes.json (byte sizes, for
truncation checks) and scenes.json (per scene: split, record indices, frames; the skipped
scenes with their reasons), which ``read_scene`` uses.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import threading

import numpy as np

from wvd_jax import files
from wvd_jax.data import storage, transforms
from wvd_jax.data.formats import common
from wvd_jax.errors import UserError

VERSION = '1.0.0'
SCENES_INDEX = 'scenes.json'
SHARD_SIZES = 'shard_sizes.json'
SPLITS = ('train', 'validation', 'test')


@dataclasses.dataclass(frozen=True)
class ClipParams:
  """How clips are cut from a scene (module docstring)."""
  image_size: int = 256
  frames: int = 16
  stride: int = 1
  step: int = 0  # 0: (frames - 1) * stride, consecutive windows share one frame.
  max_rotation_deg: float = 60.0
  max_translation: float = 1.0
  min_translation: float = 0.0

  def __post_init__(self):
    if self.image_size <= 0 or self.frames <= 0 or self.stride <= 0 or self.step < 0:
      raise UserError(f'--image_size, --frames and --stride must be positive and --step >= 0, '
                      f'got {self.image_size}, {self.frames}, {self.stride}, {self.step}')
    if not 0 <= self.min_translation <= self.max_translation or self.max_rotation_deg < 0:
      raise UserError('motion bounds need 0 <= --min_translation <= --max_translation and '
                      f'--max_rotation_deg >= 0, got {self.min_translation}, '
                      f'{self.max_translation}, {self.max_rotation_deg}')

  @property
  def window_step(self) -> int:
    return self.step or max((self.frames - 1) * self.stride, 1)


def split_of(scene: str, validation_fraction: float, test_fraction: float) -> str:
  """The split of a scene: a hash of its name, uniform in [0, 1), against the fractions."""
  u = int(hashlib.sha256(scene.encode('utf-8')).hexdigest()[:12], 16) / 16 ** 12
  if u < test_fraction:
    return 'test'
  return 'validation' if u < test_fraction + validation_fraction else 'train'


def clip_windows(num_frames: int, params: ClipParams) -> list[np.ndarray]:
  """Frame index windows start + stride * arange(frames); the last one ends at the last frame."""
  span = (params.frames - 1) * params.stride
  if num_frames <= span:
    return []
  starts = list(range(0, num_frames - span, params.window_step))
  if starts[-1] != num_frames - 1 - span:
    starts.append(num_frames - 1 - span)
  return [s + params.stride * np.arange(params.frames) for s in starts]


def camera_motion(first: np.ndarray, last: np.ndarray, first_depth: np.ndarray):
  """(rotation angle in degrees, distance / median valid depth of the first frame or None)
  between two cam_to_world (4, 4)."""
  cos = (np.trace(first[:3, :3].T @ last[:3, :3]) - 1) / 2
  angle = float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))
  valid = first_depth[first_depth > 0]
  if valid.size == 0:
    return angle, None
  return angle, float(np.linalg.norm(last[:3, 3] - first[:3, 3]) / np.median(valid))


def motion_ok(params: ClipParams, angle: float, relative) -> bool:
  if angle > params.max_rotation_deg:
    return False
  return relative is None or params.min_translation <= relative <= params.max_translation


def prepare_scene(name: str, frames: list[common.Frame], params: ClipParams) -> dict:
  """The scene's stored frames and clips (arrays; see write_scene). UserError for bad frames;
  a scene without any clip in the motion bounds raises UserError too (it is skipped)."""
  if not frames:
    raise UserError(f'scene {name}: no frames (empty sequence)')
  windows = clip_windows(len(frames), params)
  if not windows:
    raise UserError(f'scene {name}: {len(frames)} frames, fewer than a clip of {params.frames} '
                    f'frames at stride {params.stride} needs')
  depth_of_first = {}
  rgb, depth, K = {}, {}, {}
  poses = np.stack([f.cam_to_world for f in frames])

  def load(i):
    if i not in rgb:
      frame = frames[i]
      image, frame_depth = frame.load()
      if frame_depth is None:
        frame_depth = np.zeros(image.shape[:2], np.float32)
      if frame_depth.shape != image.shape[:2]:
        raise UserError(f'{frame.pose_source}: the depth map is {frame_depth.shape[1]}x'
                        f'{frame_depth.shape[0]} but the image {image.shape[1]}x{image.shape[0]}')
      clip = transforms.crop_and_resize(
          {'rgb': image[None], 'depth': np.asarray(frame_depth, np.float32)[None],
           'intrinsics': np.asarray(frame.intrinsics, np.float32)[None]}, params.image_size)
      rgb[i], depth[i], K[i] = clip['rgb'][0], clip['depth'][0], clip['intrinsics'][0]
    return depth[i]

  kept = []
  for window in windows:
    first = int(window[0])
    if first not in depth_of_first:
      depth_of_first[first] = load(first)
    angle, relative = camera_motion(poses[first], poses[window[-1]], depth_of_first[first])
    if motion_ok(params, angle, relative):
      kept.append(window)
  if not kept:
    raise UserError(f'scene {name}: no clip within the motion bounds (--max_rotation_deg='
                    f'{params.max_rotation_deg}, --min_translation={params.min_translation}, '
                    f'--max_translation={params.max_translation})')
  stored = np.unique(np.concatenate(kept))
  for i in stored:
    load(int(i))
  position = {int(i): p for p, i in enumerate(stored)}
  return dict(
      scene=np.array(name),
      rgb=np.stack([rgb[int(i)] for i in stored]),
      depth=np.stack([depth[int(i)] for i in stored]),
      intrinsics=np.stack([K[int(i)] for i in stored]).astype(np.float32),
      cam_to_world=poses[stored].astype(np.float32),
      names=np.array([frames[int(i)].name for i in stored]),
      indices=stored.astype(np.int64),
      clips=np.array([[position[int(i)] for i in w] for w in kept], np.int32),
  )


def scene_file(directory: str, name: str) -> str:
  """Where a scene's stage-1 result lives (a file-system-safe name, unique per scene)."""
  safe = ''.join(c if c.isalnum() or c in '-_.' else '_' for c in name)[:80]
  digest = hashlib.sha256(name.encode('utf-8')).hexdigest()[:8]
  return os.path.join(directory, f'{safe}-{digest}.npz')


def write_scene(path: str, scene: dict) -> None:
  with files.atomic_write(path) as f:
    np.savez(f, **scene)


def read_scene_file(path: str) -> dict:
  with np.load(path, allow_pickle=False) as data:
    return {k: data[k] for k in data.files}


def scene_counts(path: str) -> tuple[int, int]:
  """(stored frames, clips) of a stage-1 file, reading only its index arrays."""
  with np.load(path, allow_pickle=False) as data:
    return int(data['indices'].shape[0]), int(data['clips'].shape[0])


def _clip_example(scene: dict, clip: np.ndarray) -> dict:
  depth = scene['depth'][clip]
  return dict(rgb=scene['rgb'][clip], depth=depth, intrinsics=scene['intrinsics'][clip],
              cam_to_world=scene['cam_to_world'][clip], valid=depth > 0,
              scene=str(scene['scene']), frame_names=scene['names'][clip].astype(object),
              frame_indices=scene['indices'][clip])


_BUILDER_CLASS = None
_LOCK = threading.Lock()


def _builder_class():
  global _BUILDER_CLASS
  with _LOCK:
    if _BUILDER_CLASS is None:
      _BUILDER_CLASS = _define_builder_class()
  return _BUILDER_CLASS


def _define_builder_class():
  tfds = storage.load_tfds()

  class ConvertedClips(tfds.core.GeneratorBasedBuilder):
    """Clips of a converted real dataset (RGB, depth, K, cam_to_world, valid, names)."""

    VERSION = tfds.core.Version(VERSION)

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
      return tfds.core.Path(__file__)

    def __init__(self, *, frames: int, size: int, metadata: dict, scene_files: dict,
                 data_dir: str, progress=None):
      self.frames, self.size, self.metadata = frames, size, metadata
      self.scene_files, self.progress = scene_files, progress
      super().__init__(data_dir=data_dir, file_format='array_record')

    def _info(self):
      n, s = self.frames, self.size
      raw = tfds.features.Encoding.BYTES
      tensor = tfds.features.Tensor
      features = tfds.features.FeaturesDict({
          'rgb': tensor(shape=(n, s, s, 3), dtype=np.uint8, encoding=raw),
          'depth': tensor(shape=(n, s, s), dtype=np.float32, encoding=raw),
          'intrinsics': tensor(shape=(n, 3, 3), dtype=np.float32, encoding=raw),
          'cam_to_world': tensor(shape=(n, 4, 4), dtype=np.float32, encoding=raw),
          'valid': tensor(shape=(n, s, s), dtype=np.bool_, encoding=raw),
          'scene': tfds.features.Text(),
          'frame_names': tensor(shape=(n,), dtype=np.str_),
          'frame_indices': tensor(shape=(n,), dtype=np.int64),
      })
      return tfds.core.DatasetInfo(builder=self, description=__doc__.split('\n')[0],
                                   features=features,
                                   metadata=tfds.core.MetadataDict(self.metadata))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {split: self._generate_examples(split) for split in SPLITS
              if self.scene_files.get(split)}

    def _generate_examples(self, split: str = 'train'):
      for path in self.scene_files[split]:
        scene = read_scene_file(path)
        for c, clip in enumerate(scene['clips']):
          yield f'{scene["scene"]}#{c}', _clip_example(scene, clip)
          if self.progress is not None:
            self.progress.update(1)

  return ConvertedClips


def build(work_dir: str, scene_files: dict, *, frames: int, size: int, metadata: dict,
          skipped: list, progress=None) -> str:
  """Writes the dataset of ``scene_files`` ({split: [stage-1 .npz]}) under ``work_dir``;
  returns its version directory (complete: shards, TFDS metadata, shard_sizes.json,
  scenes.json)."""
  tfds = storage.load_tfds()
  tfds.disable_progress_bar()
  builder = _builder_class()(frames=frames, size=size, metadata=metadata,
                             scene_files=scene_files, data_dir=work_dir, progress=progress)
  with contextlib.redirect_stdout(io.StringIO()):  # TFDS prints "Downloading and preparing".
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  directory = builder.data_dir
  index = {}
  shard_sizes = {}
  for split, info in builder.info.splits.items():
    for name in info.filenames:
      shard_sizes[name] = os.path.getsize(os.path.join(directory, name))
    source = builder.as_data_source(split=split)
    for record in range(len(source)):
      example = source[record]
      entry = index.setdefault(example['scene'].decode('utf-8'), {'split': split, 'records': []})
      entry['records'].append(record)
  for paths in scene_files.values():
    for path in paths:
      with np.load(path, allow_pickle=False) as data:
        entry = index[str(data['scene'])]
        entry['frames'] = int(data['indices'].shape[0])
        entry['clips'] = int(data['clips'].shape[0])
  with files.atomic_write(os.path.join(directory, SHARD_SIZES), 'w') as f:
    json.dump(shard_sizes, f, indent=1, sort_keys=True)
  with files.atomic_write(os.path.join(directory, SCENES_INDEX), 'w') as f:
    json.dump({'scenes': index, 'skipped': dict(skipped)}, f, indent=1, sort_keys=True)
  return directory


def check_shards(directory: str) -> None:
  """UserError naming the shard when a shard's byte size differs from shard_sizes.json."""
  with open(os.path.join(directory, SHARD_SIZES), encoding='utf-8') as f:
    expected = json.load(f)
  for name, size in expected.items():
    path = os.path.join(directory, name)
    actual = os.path.getsize(path) if os.path.exists(path) else None
    if actual != size:
      raise UserError(f'{path}: dataset shard has {actual} bytes, expected {size} (missing or '
                      'truncated): convert the dataset again')


def read_scene(directory: str, scene: str) -> dict[str, np.ndarray]:
  """One scene of a converted dataset as numpy arrays, frames in the source's order.

  Returns rgb (N, H, W, 3) uint8, depth (N, H, W) float32 in the source's units (0 = unknown),
  intrinsics (N, 3, 3) float32 pixels, cam_to_world (N, 4, 4) float32 OpenCV, names (the N
  source frame names), indices (N,) int64 (positions in the source's frame order). Frames that
  several clips share appear once. Scene names: COLMAP the input folder's name (or its
  sub-folder's), CO3D '<category>/<sequence>', RealEstate10K the camera file's name, ScanNet the
  scene folder's name. Exposed as ``wvd_jax.data.convert.read_scene``."""
  index_path = os.path.join(directory, SCENES_INDEX)
  if not os.path.isfile(index_path):
    raise UserError(f'{directory}: not a converted dataset (no {SCENES_INDEX}): write it with '
                    'python -m wvd_jax.data.convert')
  with open(index_path, encoding='utf-8') as f:
    index = json.load(f)
  if scene not in index['scenes']:
    known = sorted(index['scenes'])
    skipped = index.get('skipped', {}).get(scene)
    raise UserError(f'{directory}: no scene {scene!r}'
                    + (f' (it was skipped: {skipped})' if skipped else '')
                    + f'; it has {len(known)} scenes, e.g. {known[:5]}')
  check_shards(directory)
  entry = index['scenes'][scene]
  source = storage.load_tfds().builder_from_directory(directory).as_data_source(
      split=entry['split'])
  frames = {}
  for record in entry['records']:
    example = source[record]
    for j, position in enumerate(np.asarray(example['frame_indices'])):
      if int(position) not in frames:
        frames[int(position)] = {k: np.asarray(example[k][j]) for k in
                                 ('rgb', 'depth', 'intrinsics', 'cam_to_world')}
        frames[int(position)]['name'] = example['frame_names'][j].decode('utf-8')
  order = sorted(frames)
  out = {k: np.stack([frames[i][k] for i in order])
         for k in ('rgb', 'depth', 'intrinsics', 'cam_to_world')}
  out['names'] = [frames[i]['name'] for i in order]
  out['indices'] = np.array(order, np.int64)
  return out
