"""Cached VAE latents: the shard format `--mode=encode_latents` writes and the trainer reads.

Layout of ``config.data.latents_dir``:

  manifest.json                    {"settings", "fields", "shard_size", "clips"} (below)
  <split>/source-<s>/shard-<k>-of-<n>.array_record
      clips [k * shard_size, (k + 1) * shard_size) of source s (config.data.sources' order) of
      the split, one ArrayRecord record a clip, in the source's stored clip order

A record is the raw bytes of the manifest's ``fields`` concatenated in order (C order,
little-endian; no pickle): field (name, dtype, shape) of one clip (N = data.num_frames,
h = w = data.image_size / autoencoder.downsample, C = autoencoder.latent_channels):

  latent_mean   float32 (N, h, w, 2C)  posterior mean, scaled (the autoencoder's encode_posterior),
                                       RGB channels then XYZ (paper eq. 2)
  latent_std    float32 (N, h, w, 2C)  posterior std, scaled: a training latent is mean + std * eps
  latent_valid  bool (N, h, w)         XYZ in the loss (train.model_inputs: a latent is valid if
                                       every pixel of its cell is in objective.xyz_supervision's)
  intrinsics    float32 (N, 3, 3)      K of the resized frames, pixels (+0.5 centres)
  cam_to_world  float32 (N, 4, 4)      OpenCV, frame-0 camera frame, normalized translation
  norm_center   float32 (3,), norm_scale float32 ()   undo the per-clip XYZ normalization
  clip          int32 ()               the clip's index in its source's split
  frame_indices int32 (N,)             the encoded window's frames in the stored clip

``settings`` are every config value that fixes the content (sources, seed, world, frames, size,
stride, autoencoder and its weights' sha256, XYZ background handling): a directory is read and
resumed only by a config with equal settings. Each shard is written atomically
(files.atomic_path), so an existing shard is complete; a directory is complete when every shard
of ``clips`` exists. Shards are read by array_record's file reader: a local path (or a mounted
bucket); writing also takes a remote URI (a local temp file, then copied).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import threading

import numpy as np

from wvd_jax import config_lib, errors, files
from wvd_jax.data import storage

FORMAT = 'wvd_jax.latents'
VERSION = 1
MANIFEST = 'manifest.json'
SPLITS = ('train',)  # What encode_latents encodes; validation and test stay pixel clips.
LATENT_MEAN, LATENT_STD, LATENT_VALID = 'latent_mean', 'latent_std', 'latent_valid'
_WRITER_OPTIONS = 'group_size:1'  # One record a chunk: random access reads one clip.
_LOCK = threading.Lock()


def fields(config) -> list[tuple[str, str, tuple[int, ...]]]:
  """The record layout of a config: (name, dtype, shape) per field (module docstring)."""
  n, c2 = config.data.num_frames, 2 * config.autoencoder.latent_channels
  h = config.data.image_size // config.autoencoder.downsample
  return [(LATENT_MEAN, 'float32', (n, h, h, c2)), (LATENT_STD, 'float32', (n, h, h, c2)),
          (LATENT_VALID, 'bool', (n, h, h)), ('intrinsics', 'float32', (n, 3, 3)),
          ('cam_to_world', 'float32', (n, 4, 4)), ('norm_center', 'float32', (3,)),
          ('norm_scale', 'float32', ()), ('clip', 'int32', ()), ('frame_indices', 'int32', (n,))]


def weights_digest(path: str) -> str:
  """sha256 over a weights file, or over a directory's files (names and bytes, sorted); cached
  per process for unchanged files (names, sizes, modification times)."""
  root = files.as_path(path)
  if not root.exists():
    raise errors.UserError(f'config.autoencoder.weights={path} does not exist')
  paths = [root] if root.is_file() else sorted(
      p for p in root.iterdir() if p.is_file() and not p.name.startswith('.'))
  return _digest(tuple((os.fspath(p), p.stat().length, p.stat().mtime) for p in paths))


@functools.lru_cache(maxsize=8)
def _digest(listing: tuple) -> str:
  digest = hashlib.sha256()
  for path, _, _ in listing:
    path = files.as_path(path)
    digest.update(path.name.encode() + b'\0')
    with path.open('rb') as f:
      while chunk := f.read(1 << 24):
        digest.update(chunk)
  return digest.hexdigest()


def settings(config) -> dict:
  """Every config value that fixes the latents' content (compared on resume and in training)."""
  d, ae = config.data, config.autoencoder
  names = [name for name, _ in config_lib.data_sources(config)]
  out = dict(
      format=FORMAT, version=VERSION, sources=names, seed=int(config.seed),
      image_size=int(d.image_size), num_frames=int(d.num_frames),
      max_frame_stride=int(d.max_frame_stride),
      autoencoder=dict(kind=ae.kind, latent_channels=int(ae.latent_channels),
                       downsample=int(ae.downsample), compute_dtype=config.model.compute_dtype,
                       weights_sha256=weights_digest(ae.weights) if ae.kind != 'pixel' else ''),
      xyz=dict(background=config.diffusion.background, modalities=config.diffusion.modalities,
               box_fill=float(d.xyz_box_fill)))
  if config_lib.SYNTHETIC_WORLD in names:
    out['synthetic_world'] = storage.WorldParams.from_config(config).config_name
  return out


def manifest(config, shard_size: int, clips: dict[str, list[int]]) -> dict:
  """The manifest of a latents directory: ``clips`` = {split: clips per source}."""
  if shard_size < 1:
    raise ValueError(f'shard_size must be positive, got {shard_size}')
  return dict(settings=settings(config),
              fields=[[name, dtype, list(shape)] for name, dtype, shape in fields(config)],
              shard_size=int(shard_size), clips={k: [int(c) for c in v] for k, v in clips.items()})


def read_manifest(directory: str) -> dict | None:
  path = files.as_path(directory) / MANIFEST
  if not path.exists():
    return None
  try:
    return json.loads(path.read_text())
  except (ValueError, UnicodeDecodeError) as e:
    raise errors.UserError(f'{path} is not a latents manifest ({e}): delete {directory} and '
                           'encode again') from e


def _difference(stored, wanted, prefix='') -> str | None:
  """The first key whose value differs, as 'key: stored X, config Y'."""
  if isinstance(stored, dict) and isinstance(wanted, dict):
    for key in sorted(set(stored) | set(wanted)):
      found = _difference(stored.get(key), wanted.get(key), f'{prefix}{key}.')
      if found:
        return found
    return None
  return None if stored == wanted else f'{prefix[:-1]}: stored {stored!r}, config {wanted!r}'


def check_manifest(directory: str, wanted: dict) -> None:
  """Refuses (one line) a directory whose manifest differs from ``wanted``."""
  stored = read_manifest(directory)
  problem = stored is not None and _difference(stored, json.loads(json.dumps(wanted)))
  if problem:
    raise errors.UserError(f'latents directory {directory} was encoded with other settings '
                           f'({problem}): use another config.data.latents_dir or delete it')


def claim(directory: str, wanted: dict) -> None:
  """Writes ``wanted`` as the directory's manifest, or checks the one there equals it."""
  check_manifest(directory, wanted)
  if read_manifest(directory) is None:
    with files.atomic_write(files.as_path(directory) / MANIFEST, 'w') as f:
      json.dump(wanted, f, indent=1, sort_keys=True)


def remove_partial_shards(directory: str) -> list[str]:
  """Deletes the temporary files of shards a killed encode left half-written (files.atomic_path
  names them .<shard name>...tmp beside the shards); returns their paths. Call it only while no
  encode writes into ``directory``."""
  removed = []
  root = files.as_path(directory)
  for split in SPLITS:
    for path in (root / split).glob('source-*/.shard-*.tmp') if (root / split).exists() else ():
      path.unlink()
      removed.append(os.fspath(path))
  return removed


def shard_path(directory: str, split: str, source: int, shard: int, num_shards: int) -> str:
  return os.fspath(files.as_path(directory) / split / f'source-{source}'
                   / f'shard-{shard:05d}-of-{num_shards:05d}.array_record')


def num_shards(num_clips: int, shard_size: int) -> int:
  return -(-num_clips // shard_size)


def encode_record(clip: dict[str, np.ndarray], layout) -> bytes:
  """One clip's fields (arrays without a batch axis) as a record's bytes."""
  parts = []
  for name, dtype, shape in layout:
    value = np.asarray(clip[name], dtype=_little_endian(dtype), order='C')  # Keeps 0-d 0-d.
    if value.shape != tuple(shape):
      raise ValueError(f'field {name}: shape {value.shape}, the layout says {tuple(shape)}')
    parts.append(value.tobytes())
  return b''.join(parts)


def _little_endian(dtype: str) -> np.dtype:
  return np.dtype(dtype).newbyteorder('<')


def decode_record(record: bytes, layout) -> dict[str, np.ndarray]:
  """A record's bytes as the clip's fields (read-only views of the bytes); ValueError when its
  length does not fit the layout."""
  sizes = [int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
           for _, dtype, shape in layout]
  if len(record) != sum(sizes):
    raise ValueError(f'record of {len(record)} bytes, the layout needs {sum(sizes)}')
  out, offset = {}, 0
  for (name, dtype, shape), size in zip(layout, sizes):
    out[name] = np.frombuffer(record, _little_endian(dtype),
                              count=size // np.dtype(dtype).itemsize, offset=offset).reshape(shape)
    offset += size
  return out


def write_shard(path: str, clips: list[dict[str, np.ndarray]], layout) -> None:
  """Writes one shard's clips (atomically: the file exists only when complete)."""
  from array_record.python import array_record_module  # pylint: disable=import-outside-toplevel
  with files.atomic_path(path) as tmp:
    writer = array_record_module.ArrayRecordWriter(tmp, _WRITER_OPTIONS)
    for clip in clips:
      writer.write(encode_record(clip, layout))
    writer.close()


class LatentSource:
  """Random access to one source's encoded clips of a split: item i is clip i's fields (module
  docstring). Picklable for grain workers (the reader reopens lazily)."""

  def __init__(self, directory: str, split: str, source: int, stored: dict):
    self.directory, self.split, self.source = directory, split, source
    self._layout = [(n, d, tuple(s)) for n, d, s in stored['fields']]
    self._len = int(stored['clips'][split][source])
    shards = num_shards(self._len, stored['shard_size'])
    self._paths = [shard_path(directory, split, source, k, shards) for k in range(shards)]
    done = sum(files.as_path(p).exists() for p in self._paths)
    if done < shards:
      raise errors.UserError(
          f'latents in {directory} are incomplete ({split}, source {source}: {done} of {shards} '
          'shards): finish them with --mode=encode_latents and the same config')
    self._shard_size = int(stored['shard_size'])
    self._reader = None

  def __len__(self) -> int:
    return self._len

  def _open(self):
    with _LOCK:
      if self._reader is None:
        from array_record.python import (  # pylint: disable=import-outside-toplevel
            array_record_data_source)
        self._reader = array_record_data_source.ArrayRecordDataSource(self._paths)
    return self._reader

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    index = int(index)
    if not 0 <= index < self._len:
      raise IndexError(f'clip {index} out of range for the {self._len} encoded clips')
    try:
      return decode_record(self._open()[index], self._layout)
    except Exception as e:  # pylint: disable=broad-except
      raise storage.CorruptShardError(
          f'cannot read record {index % self._shard_size} of latent shard '
          f'{self._paths[index // self._shard_size]}: {type(e).__name__}: {e}') from e

  def __getstate__(self):
    state = dict(self.__dict__)
    state['_reader'] = None
    return state

  def __repr__(self):
    return (f'LatentSource({self.directory!r}, split={self.split!r}, source={self.source}, '
            f'clips={self._len})')


def check_settings(config) -> dict | None:
  """The manifest of config.data.latents_dir (None if there is none yet), after refusing (one
  line) one encoded with other settings than this config's."""
  directory = config.data.latents_dir
  stored = read_manifest(directory)
  problem = stored is not None and _difference(stored.get('settings'),
                                               json.loads(json.dumps(settings(config))))
  if problem:
    raise errors.UserError(f'config.data.latents_dir={directory} was encoded with other settings '
                           f'({problem}): use another directory, or the config it was encoded with')
  return stored


def open_sources(config, split: str) -> tuple[LatentSource, ...]:
  """The split's encoded clips of every source of config.data.sources, from
  config.data.latents_dir, after checking that it was encoded with this config's settings."""
  directory = config.data.latents_dir
  stored = check_settings(config)
  if stored is None:
    raise errors.UserError(f'config.data.latents_dir={directory} holds no encoded latents (no '
                           f'{MANIFEST}): run --mode=encode_latents with this config first')
  if split not in stored['clips']:
    raise errors.UserError(f'config.data.latents_dir={directory} has no {split} split (encoded: '
                           f'{sorted(stored["clips"])}); {split} batches come from pixels')
  return tuple(LatentSource(directory, split, s, stored)
               for s in range(len(stored['clips'][split])))
