"""Seeded random weights in PyTorch layout, the same on any machine and Python version.

Shared (numpy only) by the parity tests and by ``make_reference_outputs.py``, which runs the
reference implementations (pytorch-fid, transformers, kornia) on these weights in an environment
with torch and stores their outputs in tests/data/. Each tensor is drawn from its own stream
(seed, crc32 of its name), so the values do not depend on the order or the set of names.
Scales keep activations O(1) through deep networks: He-scaled kernels, norm scales and running
variances in [0.5, 1.5], small biases and means.
"""
import zlib

import numpy as np

_NORM_MARKERS = ('.bn.', 'norm', 'layrnorm', 'ln_', 'ln_pre', 'ln_post')


def tensor(name: str, shape, seed: int = 0, gain: float = 2.0) -> np.ndarray:
  """One float32 tensor for ``name`` with PyTorch ``shape``."""
  rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
  shape = tuple(int(s) for s in shape)
  leaf = name.rsplit('.', 1)[-1]
  is_norm = any(m in name for m in _NORM_MARKERS)
  if leaf == 'running_var' or (len(shape) == 1 and leaf == 'weight' and is_norm):
    value = rng.uniform(0.5, 1.5, shape)
  elif len(shape) <= 1:
    value = rng.normal(0.0, 0.1, shape)
  else:
    fan_in = int(np.prod(shape[1:]))
    value = rng.normal(0.0, np.sqrt(gain / fan_in), shape)
  return value.astype(np.float32)


def state_dict(shapes: dict, seed: int = 0, gain: float = 2.0) -> dict[str, np.ndarray]:
  """name -> tensor for every (name, shape) of ``shapes``."""
  return {name: tensor(name, shape, seed, gain) for name, shape in shapes.items()}


def images(shape, seed: int = 0) -> np.ndarray:
  """Smooth-ish random images in [0, 1], float32 (B, H, W, 3): a coarse pattern plus noise."""
  rng = np.random.default_rng(seed)
  b, h, w, c = shape
  coarse = rng.uniform(0, 1, (b, 4, 4, c))
  rows = np.minimum((np.arange(h) * 4) // h, 3)
  cols = np.minimum((np.arange(w) * 4) // w, 3)
  base = coarse[:, rows][:, :, cols]
  return np.clip(0.8 * base + 0.2 * rng.uniform(0, 1, (b, h, w, c)), 0, 1).astype(np.float32)


def loftr_matching_state_dict(shapes: dict, seed: int = 0) -> dict[str, np.ndarray]:
  """LoFTR random weights under which mutual matches exist: the backbone's biases and running
  means zeroed and the coarse layers' norm2 scaled by 0.05, so the position encoding dominates
  the coarse features (plain random weights give near-uniform confidences and no match)."""
  out = state_dict(shapes, seed)
  for name in out:
    if name.startswith('backbone.') and name.endswith(('running_mean', '.bias')):
      out[name] = np.zeros_like(out[name])
    elif name.startswith('loftr_coarse.') and '.norm2.' in name:
      out[name] = out[name] * np.float32(0.05)
  return out
