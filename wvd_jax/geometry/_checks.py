"""Input validation shared by the geometry modules.

Shape problems are raised at trace time. Value problems (non-positive focal, NaNs) can only be
checked on concrete arrays: these helpers check numpy / concrete jax inputs and skip tracers,
where the jitted code masks the problem instead (and reports it through a flag)."""
from __future__ import annotations

import jax
import numpy as np


def is_concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


def check_last_dims(name: str, x, dims: tuple[int, ...]) -> None:
  shape = np.shape(x)
  if len(shape) < len(dims) or tuple(shape[len(shape) - len(dims):]) != tuple(dims):
    raise ValueError(f'{name} must have trailing shape {dims}, got {shape}')


def check_intrinsics(K, name: str = 'K') -> None:
  """Trailing (3, 3) shape always; positive finite focal lengths when K is concrete."""
  check_last_dims(name, K, (3, 3))
  if is_concrete(K):
    k = np.asarray(K)
    f = np.stack([k[..., 0, 0], k[..., 1, 1]], -1)
    if not np.all(np.isfinite(k)):
      raise ValueError(f'{name} contains NaN or inf')
    if np.any(f <= 0):
      raise ValueError(f'{name} has a non-positive focal length (min {f.min()})')


def check_pose(T, name: str = 'cam_to_world') -> None:
  check_last_dims(name, T, (4, 4))
  if is_concrete(T) and not np.all(np.isfinite(np.asarray(T))):
    raise ValueError(f'{name} contains NaN or inf')
