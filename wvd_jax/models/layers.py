"""Transformer pieces of the WVD DiT: 3D rotary embedding, attention, timestep embedding.

Logical axis names (mapped onto the device mesh by ``training.sharding`` rules):
  'embed' model width, 'mlp' MLP hidden, 'heads' attention heads x head dim (fused), 'patch' the
  flattened patch features, 'freq' timestep features.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx


def dense_init(axes: tuple[str | None, ...], init=nnx.initializers.xavier_uniform()):
  """A kernel initializer carrying logical axis names for sharding."""
  return nnx.with_partitioning(init, axes)


def zeros_init(axes: tuple[str | None, ...]):
  return nnx.with_partitioning(nnx.initializers.zeros_init(), axes)


def rope_3d_angles(num_frames: int, rows: int, cols: int, head_dim: int,
                   base: float = 10_000.0) -> jax.Array:
  """Rotation angles (T, head_dim // 2) for tokens ordered (frame, row, col), T = N*rows*cols.

  The head dimension is split into three even parts, rotated by the frame, row and column index
  respectively; the row and column parts get 2*(head_dim//6) features each, the frame the rest.
  """
  if head_dim % 2 or head_dim < 6:
    raise ValueError(f'3D RoPE needs an even head_dim >= 6, got {head_dim}')
  spatial = 2 * (head_dim // 6)
  dims = (head_dim - 2 * spatial, spatial, spatial)
  grids = jnp.meshgrid(jnp.arange(num_frames), jnp.arange(rows), jnp.arange(cols), indexing='ij')
  angles = []
  for dim, grid in zip(dims, grids):
    inv_freq = 1.0 / base ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim)
    angles.append(grid.reshape(-1, 1).astype(jnp.float32) * inv_freq)
  return jnp.concatenate(angles, axis=-1)


def apply_rope(x: jax.Array, angles: jax.Array) -> jax.Array:
  """Rotates feature pairs (i, i + D/2) of x (B, T, H, D) by angles (T, D/2)."""
  half = x.shape[-1] // 2
  x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
  cos, sin = jnp.cos(angles)[:, None, :], jnp.sin(angles)[:, None, :]
  out = jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)
  return out.astype(x.dtype)


def resolve_attention_implementation(name: str, dtype) -> str | None:
  """'auto' picks cuDNN flash attention on GPU with 16-bit inputs, XLA otherwise."""
  if name == 'auto':
    half = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
    return 'cudnn' if jax.default_backend() == 'gpu' and half else 'xla'
  return name


def timestep_features(t: jax.Array, dim: int = 256, max_period: float = 10_000.0) -> jax.Array:
  """Sinusoidal features (B, dim) of diffusion times t (B,) in [0, 1]."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = 1000.0 * t[:, None].astype(jnp.float32) * freqs
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


class Attention(nnx.Module):
  """Multi-head self-attention with QK RMSNorm and 3D RoPE over (B, T, width) tokens."""

  def __init__(self, width: int, num_heads: int, *, implementation: str, dtype, rngs: nnx.Rngs):
    self.num_heads = num_heads
    self.head_dim = width // num_heads
    self.implementation = implementation
    self.qkv = nnx.Linear(width, 3 * width, use_bias=False, dtype=dtype,
                          kernel_init=dense_init(('embed', 'heads')), rngs=rngs)
    self.q_norm = nnx.RMSNorm(self.head_dim, epsilon=1e-6, dtype=dtype, rngs=rngs)
    self.k_norm = nnx.RMSNorm(self.head_dim, epsilon=1e-6, dtype=dtype, rngs=rngs)
    self.out = nnx.Linear(width, width, use_bias=False, dtype=dtype,
                          kernel_init=dense_init(('heads', 'embed')), rngs=rngs)

  def __call__(self, x: jax.Array, rope_angles: jax.Array) -> jax.Array:
    b, t, _ = x.shape
    qkv = self.qkv(x).reshape(b, t, 3, self.num_heads, self.head_dim)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    q = apply_rope(self.q_norm(q), rope_angles)
    k = apply_rope(self.k_norm(k), rope_angles)
    y = jax.nn.dot_product_attention(q, k, v, implementation=self.implementation)
    return self.out(y.reshape(b, t, -1))


class Mlp(nnx.Module):
  def __init__(self, width: int, hidden: int, *, dtype, rngs: nnx.Rngs):
    self.fc1 = nnx.Linear(width, hidden, dtype=dtype, kernel_init=dense_init(('embed', 'mlp')),
                          bias_init=zeros_init(('mlp',)), rngs=rngs)
    self.fc2 = nnx.Linear(hidden, width, dtype=dtype, kernel_init=dense_init(('mlp', 'embed')),
                          bias_init=zeros_init(('embed',)), rngs=rngs)

  def __call__(self, x):
    return self.fc2(jax.nn.gelu(self.fc1(x), approximate=True))
