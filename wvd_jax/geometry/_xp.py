"""Array-module dispatch so small geometry functions run on numpy *or* jax arrays.

The data pipeline calls the camera / normalization helpers on numpy arrays in worker processes;
there they should stay numpy (no device transfers, no jax in forked workers). Any jax array or
tracer among the inputs selects jax.numpy, so the same functions are jittable.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def array_module(*xs):
  """Returns jax.numpy if any argument is a jax array (or tracer), else numpy."""
  return jnp if any(isinstance(x, jax.Array) for x in xs) else np


def as_float(xp, x):
  """x as a floating array of module xp (integers become float32; float dtypes are kept)."""
  x = xp.asarray(x)
  if not xp.issubdtype(x.dtype, xp.floating):
    x = x.astype(xp.float32)
  return x


def matvec(a, v):
  """(..., m, n) x (..., n) -> (..., m), broadcasting; elementwise (exact f32 on every backend,
  where a matmul could silently drop to TF32/bf16 passes on accelerators)."""
  return (a * v[..., None, :]).sum(-1)


def matmul(a, b):
  """(..., m, k) x (..., k, n) -> (..., m, n), broadcasting; elementwise like `matvec`."""
  return (a[..., :, :, None] * b[..., None, :, :]).sum(-2)
