"""The synthetic world as a TFDS dataset of ArrayRecord shards, built on first use.

``SyntheticWorld`` is a ``tfds.core.GeneratorBasedBuilder`` (file_format="array_record",
``tfds.features.Tensor`` features stored as raw bytes). TFDS 4.9.10 builds and reads it without
TensorFlow installed. Layout (standard TFDS):

  <data_dir>/synthetic_world/<config name>/<version>/
      synthetic_world-<split>.array_record-0000i-of-0000n   the shards
      dataset_info.json, features.json, metadata.json        TFDS metadata
      shard_sizes.json                                       byte sizes, checked on open

The builder config's name carries every parameter that changes the data (render size, frames,
scene counts per split, seed, object fraction) and its version is the generator version, so
configs never silently share data. Each split holds its own scenes (scene seeds come from a
per-split stream). Every example is a clip's stored fields (clips.STORED_FIELDS) plus
``scene_index`` (the clip's index in its split, which seeds it) and ``scene_kind``. Examples
are stored in TFDS's key-hash order (a fixed permutation of the scene indices): TFDS's
order-preserving mode would sort every example of a split in memory at once.

Building: clips render in a pool of spawned CPU worker processes (pinned one to a core) when
the job is large, else in this process; a file lock makes concurrent builders (several JAX
processes on one host) wait for the first instead of racing. TFDS buffers the serialized
examples (in memory up to 1 GB, then in 1000 temporary bucket files) before writing the
compressed shards (array_record's default compression), so a large build needs the uncompressed size (7 bytes a pixel a frame)
of free disk on top of the shards (about half that) while it runs.

Reading: ``open_split`` returns a random-access ``ClipSource`` (picklable, for grain workers).
A truncated or corrupted shard raises ``CorruptShardError`` naming the file.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import errno
import fcntl
import json
import logging
import multiprocessing
import os
import threading
from concurrent import futures

import numpy as np

from wvd_jax import config_lib, files
from wvd_jax.data import clips, synthetic_world

_SHARD_SIZES = 'shard_sizes.json'
# Seconds of single-core rendering (estimated) above which the build uses a worker pool.
_POOL_THRESHOLD_S = 20.0
_SECONDS_PER_PIXEL = 5e-7  # ~4e-7 CPU s per rendered pixel measured (benchmarks/data_bench.py).


class CorruptShardError(ValueError):
  """A dataset shard that is missing, truncated or corrupted (the message names the file)."""


@dataclasses.dataclass(frozen=True)
class WorldParams:
  """Everything that determines the synthetic dataset's content."""
  seed: int = 0
  size: int = 32
  frames: int = 4
  num_train: int = 64
  num_validation: int = 8
  num_test: int = 8
  object_fraction: float = 0.5

  def __post_init__(self):
    if self.seed < 0:
      raise ValueError(f'the dataset seed must be >= 0, got {self.seed}')
    if self.size <= 0 or self.frames <= 0:
      raise ValueError(f'render size and frames must be positive, got {self.size}, {self.frames}')
    if not 0.0 <= self.object_fraction <= 1.0:
      raise ValueError(f'object_fraction must be in [0, 1], got {self.object_fraction}')

  @classmethod
  def from_config(cls, config) -> 'WorldParams':
    d = config.data
    return cls(seed=int(config.seed), size=int(d.render_size), frames=config_lib.render_frames(config),
               num_train=int(d.num_train_scenes), num_validation=int(d.num_validation_scenes),
               num_test=int(d.num_test_scenes), object_fraction=float(d.object_fraction))

  def count(self, split: str) -> int:
    if split not in synthetic_world.SPLITS:
      raise ValueError(f'unknown split {split!r}; expected one of {synthetic_world.SPLITS}')
    return {'train': self.num_train, 'validation': self.num_validation,
            'test': self.num_test}[split]

  @property
  def config_name(self) -> str:
    fraction = f'{self.object_fraction:.4f}'.replace('.', 'p')
    return (f'r{self.size}_f{self.frames}_n{self.num_train}-{self.num_validation}-'
            f'{self.num_test}_seed{self.seed}_obj{fraction}')


class _QuietCustomConfig(logging.Filter):
  """Drops TFDS's INFO chatter (every builder construction logs where it loads its info from)
  and its warning that our (generated) builder config is a custom one."""

  def filter(self, record):
    if 'tensorflow_datasets' in record.pathname and record.levelno < logging.WARNING:
      return False
    return 'Using custom data configuration' not in record.getMessage()


class _LocalFiles:
  """The few ``tf.io.gfile`` / ``tf.errors`` names TFDS's example shuffler uses, on local files.

  Past 1 GB of serialized examples per split TFDS spills them to temporary bucket files through
  TensorFlow's file API, so without TensorFlow a large build fails with ModuleNotFoundError. The
  shuffler only writes, reads, tests and deletes local bucket files: Python's own files do that."""

  class errors:  # pylint: disable=invalid-name
    class ResourceExhaustedError(OSError):
      message = ''

  class io:  # pylint: disable=invalid-name
    class gfile:  # pylint: disable=invalid-name
      exists = staticmethod(os.path.exists)
      remove = staticmethod(os.remove)

      @staticmethod
      def GFile(path, mode='rb'):  # pylint: disable=invalid-name
        try:
          return open(os.fspath(path), mode)  # pylint: disable=unspecified-encoding
        except OSError as e:
          if e.errno != errno.EMFILE:
            raise
          # TFDS's own remedy, which it applies only to TensorFlow's lazily opened files.
          from tensorflow_datasets.core import shuffle  # pylint: disable=g-import-not-at-top
          shuffle._increase_open_files_limit()  # pylint: disable=protected-access
          return open(os.fspath(path), mode)  # pylint: disable=unspecified-encoding


def _tfds():
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  absl_logger = logging.getLogger('absl')
  if not any(isinstance(f, _QuietCustomConfig) for f in absl_logger.filters):
    absl_logger.addFilter(_QuietCustomConfig())
  from tensorflow_datasets.core import shuffle  # pylint: disable=g-import-not-at-top
  shuffle.tf = _LocalFiles  # Workaround 4 (WORKSPACE.md): large builds without TensorFlow.
  return tfds


def _builder_class():
  """The builder class, defined on first use (TFDS is imported lazily: it is slow to import)."""
  with _LOCK:  # grain reads from several threads; TFDS allows one class per name.
    if _BUILDER_CLASS is None:
      _define_builder_class()
  return _BUILDER_CLASS


def _define_builder_class():
  global _BUILDER_CLASS
  tfds = _tfds()

  class SyntheticWorld(tfds.core.GeneratorBasedBuilder):
    """Clips of the seeded synthetic 3D world (RGB, z-depth, intrinsics, cam_to_world)."""

    VERSION = tfds.core.Version(f'{synthetic_world.GENERATOR_VERSION}.0.0')

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
      # TFDS's default lookup needs the `importlib_resources` package for builders that live in
      # a package; this file is the answer it would find.
      return tfds.core.Path(__file__)

    def __init__(self, *, params: WorldParams, data_dir: str, render_workers: int = 0,
                 **kwargs):
      self.params = params
      self.render_workers = render_workers
      self.renderer = None  # A _Renderer while storage.prepare builds the dataset.
      config = tfds.core.BuilderConfig(name=params.config_name, version=self.VERSION,
                                       description=json.dumps(dataclasses.asdict(params)))
      super().__init__(data_dir=data_dir, config=config, file_format='array_record', **kwargs)

    def _info(self):
      p = self.params
      f, s = p.frames, p.size
      tensor = tfds.features.Tensor
      raw = tfds.features.Encoding.BYTES
      features = tfds.features.FeaturesDict({
          'rgb': tensor(shape=(f, s, s, 3), dtype=np.uint8, encoding=raw),
          'depth': tensor(shape=(f, s, s), dtype=np.float32, encoding=raw),
          'intrinsics': tensor(shape=(f, 3, 3), dtype=np.float32, encoding=raw),
          'cam_to_world': tensor(shape=(f, 4, 4), dtype=np.float32, encoding=raw),
          'scene_index': tensor(shape=(), dtype=np.int64),
          'scene_kind': tensor(shape=(), dtype=np.int64),
      })
      metadata = tfds.core.MetadataDict(
          generator_version=synthetic_world.GENERATOR_VERSION, resolution=s, frames=f,
          seed=p.seed, object_fraction=p.object_fraction,
          scenes={split: p.count(split) for split in synthetic_world.SPLITS},
          conventions='OpenCV cameras, cam_to_world 4x4, K in pixels with pixel centres at '
                      '(col + 0.5, row + 0.5), z-depth in metres (0 = no surface), world y up')
      return tfds.core.DatasetInfo(
          builder=self, description=__doc__.split('\n')[0], features=features,
          metadata=metadata)

    def _split_generators(self, dl_manager):
      del dl_manager
      return {split: self._generate_examples(split) for split in synthetic_world.SPLITS}

    def _generate_examples(self, split: str = 'train'):
      p = self.params
      jobs = [(p.seed, split, i, p.frames, p.size, p.object_fraction)
              for i in range(p.count(split))]
      if self.renderer is None:
        raise RuntimeError('build the dataset with storage.prepare()')
      for i, clip in enumerate(self.renderer.map(jobs)):
        yield i, clip

  _BUILDER_CLASS = SyntheticWorld


_BUILDER_CLASS = None
_LOCK = threading.RLock()


def _render_stored(job) -> dict[str, np.ndarray]:
  """Renders one clip (job = render_clip's positional arguments) -> its stored example."""
  seed, split, index, frames, size, object_fraction = job
  clip = synthetic_world.render_clip(seed, split, index, frames, size, object_fraction,
                                     complete=False)
  out = {k: clip[k] for k in clips.STORED_FIELDS}
  out['scene_index'] = np.int64(index)
  out['scene_kind'] = np.int64(clip['scene_kind'])
  return out


def _pool_worker_init(counter=None, cores=None):
  """Render workers: CPU only, and pinned to one core each when ``cores`` is given (XLA:CPU
  splits every fused loop over all visible cores; N unpinned workers on N cores then fight over
  them: measured 1.5x the CPU time per clip)."""
  if counter is not None and cores:
    with counter.get_lock():
      index = counter.value
      counter.value += 1
    try:
      os.sched_setaffinity(0, {cores[index % len(cores)]})
    except (AttributeError, OSError):  # Not Linux, or not allowed: run unpinned.
      pass
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_platforms', 'cpu')


def render_pool(workers: int) -> futures.ProcessPoolExecutor:
  """A pool of ``workers`` spawned render processes (pinned one a core while there are enough
  cores for all of them)."""
  context = multiprocessing.get_context('spawn')
  try:
    cores = sorted(os.sched_getaffinity(0))
  except AttributeError:
    cores = []
  pin = cores if len(cores) >= workers else None
  return futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_pool_worker_init,
                                     initargs=(context.Value('i', 0), pin))


class _Renderer:
  """Renders jobs in order, for the whole build: in a pool of spawned CPU processes (started on
  first use, kept for every split: each start costs the workers' imports and XLA compile) when
  the build is large, else in this process. The pool keeps a bounded window of clips in flight,
  so memory stays small whatever the dataset's size."""

  def __init__(self, params: WorldParams, workers: int):
    self.workers = workers or os.cpu_count() or 1
    pixels = (params.num_train + params.num_validation + params.num_test) * (
        params.frames * params.size * params.size)
    self.use_pool = self.workers > 1 and pixels * _SECONDS_PER_PIXEL >= _POOL_THRESHOLD_S
    self._pool = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    if self._pool is not None:
      self._pool.shutdown(cancel_futures=True)
      self._pool = None

  def map(self, jobs):
    if not self.use_pool:
      for job in jobs:
        yield _render_stored(job)
      return
    if self._pool is None:
      self._pool = render_pool(self.workers)
    window = collections.deque()
    pending = iter(jobs)
    for job in pending:
      window.append(self._pool.submit(_render_stored, job))
      if len(window) >= 4 * self.workers:
        break
    while window:
      result = window.popleft().result()
      for job in pending:
        window.append(self._pool.submit(_render_stored, job))
        break
      yield result


def dataset_dir(params: WorldParams, data_dir: str) -> str:
  return os.path.join(data_dir, 'synthetic_world', params.config_name,
                      f'{synthetic_world.GENERATOR_VERSION}.0.0')


@contextlib.contextmanager
def _lock(path: str):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'a+') as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def prepare(params: WorldParams, data_dir: str, render_workers: int = 0):
  """Returns the builder of ``params``' dataset in ``data_dir``, rendering it first if needed."""
  builder = _builder_class()(params=params, data_dir=data_dir, render_workers=render_workers)
  directory = dataset_dir(params, data_dir)
  sizes = os.path.join(directory, _SHARD_SIZES)
  if os.path.exists(sizes):
    return builder
  with _lock(os.path.join(data_dir, 'synthetic_world', f'.{params.config_name}.lock')):
    builder = _builder_class()(params=params, data_dir=data_dir, render_workers=render_workers)
    if not os.path.exists(sizes):
      logging.info('rendering the synthetic world %s into %s', params.config_name, directory)
      with _Renderer(params, render_workers) as builder.renderer:
        builder.download_and_prepare(
            download_config=_tfds().download.DownloadConfig(try_download_gcs=False))
      shard_sizes = {name: os.path.getsize(os.path.join(directory, name))
                     for split in synthetic_world.SPLITS
                     for name in builder.info.splits[split].filenames}
      with files.atomic_write(sizes, 'w') as f:
        json.dump(shard_sizes, f, indent=1, sort_keys=True)
  return builder


class _ShardedClips:
  """Shared by the sources below: clip i of a split read from its ArrayRecord shards.

  Subclasses set split and complete, call _index_shards, and give _open() (the TFDS data
  source) and _fields(example) (the stored fields to return)."""

  def _index_shards(self, directory: str, split_info) -> None:
    """Sets _files (the split's shard paths) and _ends (cumulative clip counts); every shard
    must exist."""
    self._files = [os.path.join(directory, name) for name in split_info.filenames]
    self._ends = np.cumsum(split_info.shard_lengths)
    for path in self._files:
      if not os.path.exists(path):
        raise CorruptShardError(f'dataset shard {path} is missing')

  def __len__(self) -> int:
    return int(self._ends[-1]) if len(self._ends) else 0

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    index = int(index)
    if not 0 <= index < len(self):
      raise IndexError(f'clip {index} out of range for the {len(self)} clips of {self.split}')
    try:
      example = self._open()[index]
    except Exception as e:  # pylint: disable=broad-except
      shard = int(np.searchsorted(self._ends, index, side='right'))
      first = int(self._ends[shard - 1]) if shard else 0
      raise CorruptShardError(
          f'cannot read record {index - first} of dataset shard {self._files[shard]} '
          f'(clip {index} of {self.split}): {type(e).__name__}: {e}') from e
    clip = self._fields(example)
    return clips.complete_clip(clip) if self.complete else clip


class ClipSource(_ShardedClips):
  """Random-access source over one split: element i is clip i (dict of numpy arrays).

  With ``complete`` (default) elements are raw clips (clips.complete_clip: + mask, world xyz);
  without, only the stored fields. Opening checks every shard's byte size; a read that fails
  raises CorruptShardError naming the shard file and the record. Picklable: the TFDS reader is
  reopened lazily in each process (grain workers)."""

  def __init__(self, params: WorldParams, data_dir: str, split: str, complete: bool = True):
    self.params, self.data_dir, self.split, self.complete = params, data_dir, split, complete
    directory = dataset_dir(params, data_dir)
    self._check_shards(directory)
    self._source = None

  def _check_shards(self, directory):
    with open(os.path.join(directory, _SHARD_SIZES)) as f:
      expected = json.load(f)
    builder = _builder_class()(params=self.params, data_dir=self.data_dir)
    self._index_shards(directory, builder.info.splits[self.split])
    for path in self._files:
      name = os.path.basename(path)
      size = os.path.getsize(path)
      if name in expected and size != expected[name]:
        raise CorruptShardError(f'dataset shard {path} has {size} bytes, expected '
                                f'{expected[name]} (truncated or overwritten): delete '
                                f'{directory} to rebuild it')

  def _open(self):
    with _LOCK:
      if self._source is None:
        builder = _builder_class()(params=self.params, data_dir=self.data_dir)
        self._source = builder.as_data_source(split=self.split)
    return self._source

  def _fields(self, example) -> dict[str, np.ndarray]:
    clip = {k: np.asarray(example[k]) for k in clips.STORED_FIELDS}
    clip['scene_index'] = np.int64(example['scene_index'])
    clip['scene_kind'] = np.int64(example['scene_kind'])
    return clip

  def __getstate__(self):
    state = dict(self.__dict__)
    state['_source'] = None
    return state

  def __repr__(self):
    return (f'ClipSource({self.params.config_name}, split={self.split!r}, '
            f'clips={len(self)}, data_dir={self.data_dir!r})')


def open_split(params: WorldParams, data_dir: str, split: str, *, complete: bool = True,
               render_workers: int = 0) -> ClipSource:
  """The split's ClipSource, building the dataset first if it is not in ``data_dir``."""
  if split not in synthetic_world.SPLITS:
    raise ValueError(f'unknown split {split!r}; expected one of {synthetic_world.SPLITS}')
  prepare(params, data_dir, render_workers)
  return ClipSource(params, data_dir, split, complete)


class DirectoryClipSource(_ShardedClips):
  """Random-access clips of any dataset in the project's shard format, opened by directory.

  ``directory`` is a TFDS dataset version directory (dataset_info.json, features.json and
  ArrayRecord shards) whose examples hold at least clips.STORED_FIELDS with the shapes of a raw
  clip: e.g. a copy of a synthetic world build, or clips of a real dataset written with the same
  features, and optionally ``valid`` (N, H, W) bool (clips.py: False where depth is unknown),
  returned when stored. Items are raw clips as ClipSource's (complete: + mask and world XYZ)."""

  def __init__(self, directory: str, split: str, complete: bool = True):
    if not os.path.isfile(os.path.join(directory, 'dataset_info.json')):
      raise FileNotFoundError(f'{directory} is not a dataset directory in the project\'s shard '
                              'format (no dataset_info.json; expected a TFDS ArrayRecord build)')
    self.directory, self.split, self.complete = directory, split, complete
    builder = _tfds().builder_from_directory(directory)
    if split not in builder.info.splits:
      raise ValueError(f'{directory} has no split {split!r}; it has '
                       f'{sorted(builder.info.splits.keys())}')
    missing = [k for k in clips.STORED_FIELDS if k not in builder.info.features]
    if missing:
      raise ValueError(f'{directory}: examples lack the fields {missing} (a clip needs '
                       f'{list(clips.STORED_FIELDS)})')
    self._index_shards(directory, builder.info.splits[split])
    self._has_valid = clips.VALID in builder.info.features
    self._source = builder.as_data_source(split=split)

  def _open(self):
    return self._source

  def _fields(self, example) -> dict[str, np.ndarray]:
    fields = clips.STORED_FIELDS + ((clips.VALID,) if self._has_valid else ())
    return {k: np.asarray(example[k]) for k in fields}

  def __repr__(self):
    return f'DirectoryClipSource({self.directory!r}, split={self.split!r}, clips={len(self)})'
