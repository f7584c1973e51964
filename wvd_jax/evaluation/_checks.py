"""Input validation shared by the metric modules: every problem is a ValueError naming it."""
from __future__ import annotations

import numpy as np


def as_float64(name: str, x) -> np.ndarray:
  """x as a float64 numpy array (bool / integer / float inputs); anything else is an error."""
  array = np.asarray(x)
  if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
    raise ValueError(f'{name} must be numeric, got dtype {array.dtype}')
  return array.astype(np.float64)


def as_mask(name: str, x, shape: tuple[int, ...]) -> np.ndarray:
  """A bool mask of exactly `shape` (None -> all True)."""
  if x is None:
    return np.ones(shape, bool)
  mask = np.asarray(x)
  if mask.shape != tuple(shape):
    raise ValueError(f'{name} has shape {mask.shape}, expected {tuple(shape)}')
  if mask.dtype != np.bool_:
    if not np.issubdtype(mask.dtype, np.number) or not np.all(np.isin(mask, (0, 1))):
      raise ValueError(f'{name} must be a bool mask (or 0/1), got dtype {mask.dtype}')
    mask = mask.astype(bool)
  return mask


def same_shape(**arrays) -> None:
  """Raises unless all named arrays have one shape."""
  shapes = {name: np.shape(a) for name, a in arrays.items()}
  if len(set(shapes.values())) > 1:
    listed = ', '.join(f'{name} {shape}' for name, shape in shapes.items())
    raise ValueError(f'shape mismatch: {listed}')


def all_finite(name: str, x: np.ndarray) -> None:
  """Raises if x holds NaN or inf."""
  if not np.all(np.isfinite(x)):
    bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
    raise ValueError(f'{name} contains {bad} NaN or inf value(s)')


def trailing_shape(name: str, x: np.ndarray, expected: str, dims: tuple[int, ...], ndim: int):
  """Raises unless x has `ndim` axes ending with `dims`; `expected` names the shape, e.g.
  '(N, 4, 4)'."""
  shape = np.shape(x)
  if len(shape) != ndim or tuple(shape[ndim - len(dims):]) != tuple(dims):
    raise ValueError(f'{name} must have shape {expected}, got {shape}')
