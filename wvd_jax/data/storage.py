"""Renders a dataset split once into a cache file and loads it back (no pickle).

Scenes are held out by seed: each split draws its scene seeds from its own range, so no scene
appears in two splits. Files are written to a temporary name and renamed, so an interrupted
build never leaves a half-written file that a later run would trust.
"""
from __future__ import annotations

import hashlib
import json
import os
import zipfile

import numpy as np
import tqdm

from wvd_jax import files
from wvd_jax.data import minimal_world

GENERATOR_VERSION = 1
SPLIT_SEED_OFFSETS = {'train': 0, 'validation': 10_000_000, 'test': 20_000_000}
FIELDS = ('rgb', 'depth', 'xyz', 'mask', 'intrinsics', 'cam_to_world')


def split_path(data_dir: str, split: str, num_scenes: int, num_frames: int, size: int,
               seed: int) -> str:
  key = json.dumps(dict(v=GENERATOR_VERSION, split=split, n=num_scenes, f=num_frames, s=size,
                        seed=seed), sort_keys=True)
  digest = hashlib.sha1(key.encode()).hexdigest()[:10]
  return os.path.join(data_dir, f'minimal_world_{split}_{num_scenes}x{num_frames}x{size}_{digest}.npz')


def build_split(data_dir: str, split: str, num_scenes: int, num_frames: int, size: int,
                seed: int) -> dict[str, np.ndarray]:
  """Loads the split from ``data_dir``, rendering it first (with a progress bar) if missing.

  Returns arrays with a leading scene axis: rgb (S, N, H, W, 3) uint8, depth (S, N, H, W),
  xyz (S, N, H, W, 3), mask (S, N, H, W) bool, intrinsics (S, N, 3, 3), cam_to_world (S, N, 4, 4).
  """
  if split not in SPLIT_SEED_OFFSETS:
    raise ValueError(f'unknown split {split!r}; expected one of {sorted(SPLIT_SEED_OFFSETS)}')
  path = split_path(data_dir, split, num_scenes, num_frames, size, seed)
  if os.path.exists(path):
    return load_split(path)
  os.makedirs(data_dir, exist_ok=True)
  base = SPLIT_SEED_OFFSETS[split] + seed * 100_003
  clips = [minimal_world.render_clip(base + i, num_frames, size)
           for i in tqdm.trange(num_scenes, desc=f'render {split}', leave=False)]
  arrays = {k: np.stack([c[k] for c in clips]) for k in FIELDS}
  with files.atomic_write(path) as f:
    np.savez(f, **arrays)
  return arrays


def load_split(path: str) -> dict[str, np.ndarray]:
  """Loads a cached split; a truncated or foreign file gives an error naming it."""
  try:
    with np.load(path, allow_pickle=False) as f:
      arrays = {k: f[k] for k in FIELDS}
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
    raise ValueError(f'corrupt or incomplete dataset file {path}: {e}') from e
  return arrays
