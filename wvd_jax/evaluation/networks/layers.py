"""Layers shared by the metric networks, over PyTorch-named parameters converted by weights.py."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import lax

from wvd_jax.evaluation.networks import weights

# Full float32 matmuls and convs on every backend (GPUs may otherwise use TF32): the parity
# with the PyTorch references is checked at float32 tolerance.
PRECISION = lax.Precision.HIGHEST


def fold_batch_norm(tensors, conv: str, norm: str | None, eps: float
                    ) -> tuple[np.ndarray, np.ndarray]:
  """A PyTorch conv ``{conv}.weight`` (no bias) followed by BatchNorm ``norm`` (running
  statistics; None: no norm) -> (HWIO kernel, bias) in float64: kernel * s and beta - mean * s
  with s = gamma / sqrt(var + eps)."""
  kernel = weights.conv_kernel(np.asarray(tensors[f'{conv}.weight'], np.float64))
  if norm is None:
    return kernel, np.zeros(kernel.shape[-1])
  get = lambda leaf: np.asarray(tensors[f'{norm}.{leaf}'], np.float64)
  scale = get('weight') / np.sqrt(get('running_var') + eps)
  return kernel * scale, get('bias') - get('running_mean') * scale


def conv(x, kernel, bias, stride: int, padding: tuple[int, int]):
  """NHWC conv with an HWIO kernel, symmetric (rows, cols) zero padding, plus bias."""
  (ph, pw) = padding
  y = lax.conv_general_dilated(x, kernel, (stride, stride), ((ph, ph), (pw, pw)),
                               dimension_numbers=('NHWC', 'HWIO', 'NHWC'), precision=PRECISION)
  return y + bias


def layer_norm(params, name: str, x, eps: float):
  """LayerNorm over the last axis with ``{name}.weight`` / ``{name}.bias``."""
  mean = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
  return (x - mean) * lax.rsqrt(var + eps) * params[f'{name}.weight'] + params[f'{name}.bias']
