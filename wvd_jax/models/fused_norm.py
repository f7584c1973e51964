"""RMSNorm + adaLN modulation in one Pallas (Triton) kernel, forward and backward.

    y = x / sqrt(mean(x^2, axis=-1) + eps) * (1 + scale) + shift

for the DiT's residual stream x (B, T, W) (float32 or bfloat16) with per-sample shift and scale
(B, W), y in ``out_dtype`` (the compute dtype). XLA runs the forward as a row reduction plus
an elementwise pass, and the backward as separate fusions: the row reduction of dx and the
reductions over tokens that give d(shift) and d(scale). Here one kernel instance takes a tile of
``block_rows`` tokens of one sample with its whole (power-of-two padded, masked) width, and the
backward writes dx and that tile's partial d(shift), d(scale) in the same pass, so x and dy are
read once; the partials (B, tiles, W) are summed by XLA (tiny).

Implementations: 'xla' (the plain jax.numpy formula, also the reference of the tests), 'pallas'
(Triton, GPU only), 'pallas_interpret' (the same kernels interpreted: CPU tests). Under a device
mesh the kernel runs per shard through shard_map when only the batch dimension is sharded; any
other layout (tokens or width sharded) uses the XLA formula, which the SPMD partitioner handles.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax.core import spmd as flax_spmd
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu
from jax.sharding import PartitionSpec as P

from wvd_jax.models.layers import TOKENS, logical_to_mesh_spec

IMPLEMENTATIONS = ('xla', 'pallas', 'pallas_interpret')


def norm_modulate_reference(x, shift, scale, *, eps: float = 1e-6, out_dtype=None):
  """The plain formula: x (B, T, W), shift / scale (B, W) -> (B, T, W) in out_dtype.

  The statistics are taken in float32 whatever x's dtype, as nnx.RMSNorm does.
  """
  out_dtype = out_dtype or x.dtype
  xf = x.astype(jnp.float32)
  rstd = jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
  normed = (xf * rstd).astype(out_dtype)
  return normed * (1.0 + scale[:, None, :]) + shift[:, None, :]


def _tiles(t: int, w: int) -> tuple[int, int]:
  """(block_rows, padded width): Triton blocks are powers of two; ~16K values a tile."""
  wp = pl.next_power_of_2(w)
  rows = max(1, min(pl.next_power_of_2(t), 16384 // wp))
  return rows, wp


def _row_col(b, i, t, w, block_rows, wp):
  rows = i * block_rows + jnp.arange(block_rows)
  cols = jnp.arange(wp)
  row_ok, col_ok = rows < t, cols < w
  return b * t + rows, cols, row_ok, col_ok, row_ok[:, None] & col_ok[None, :]


def _forward_kernel(x_ref, shift_ref, scale_ref, y_ref, rstd_ref, *, t, w, eps, block_rows, wp):
  """One (sample b, token tile i): x_ref (B*T, W); shift/scale (B*W,); y (B*T, W); rstd (B*T,)."""
  b, i = pl.program_id(0), pl.program_id(1)
  rows, cols, row_ok, col_ok, mask = _row_col(b, i, t, w, block_rows, wp)
  x = plgpu.load(x_ref.at[rows[:, None], cols[None, :]], mask=mask, other=0.0)
  x = x.astype(jnp.float32)
  rstd = jax.lax.rsqrt(jnp.sum(x * x, axis=1) / w + eps)  # Padding columns hold zeros.
  shift = plgpu.load(shift_ref.at[b * w + cols], mask=col_ok, other=0.0).astype(jnp.float32)
  scale = plgpu.load(scale_ref.at[b * w + cols], mask=col_ok, other=0.0).astype(jnp.float32)
  # Rounded to the output dtype before the modulation, as the reference's RMSNorm output is.
  normed = (x * rstd[:, None]).astype(y_ref.dtype).astype(jnp.float32)
  y = normed * (1.0 + scale[None, :]) + shift[None, :]
  plgpu.store(y_ref.at[rows[:, None], cols[None, :]], y.astype(y_ref.dtype), mask=mask)
  plgpu.store(rstd_ref.at[rows], rstd, mask=row_ok)


def _backward_kernel(x_ref, scale_ref, rstd_ref, dy_ref, dx_ref, dshift_ref, dscale_ref, *,
                     t, w, block_rows, wp, num_tiles):
  """dx for the tile, and its partial sums over tokens of dy (-> d shift) and dy * x_hat."""
  b, i = pl.program_id(0), pl.program_id(1)
  rows, cols, row_ok, col_ok, mask = _row_col(b, i, t, w, block_rows, wp)
  x = plgpu.load(x_ref.at[rows[:, None], cols[None, :]], mask=mask, other=0.0)
  dy = plgpu.load(dy_ref.at[rows[:, None], cols[None, :]], mask=mask, other=0.0)
  x, dy = x.astype(jnp.float32), dy.astype(jnp.float32)
  rstd = plgpu.load(rstd_ref.at[rows], mask=row_ok, other=0.0)
  scale = plgpu.load(scale_ref.at[b * w + cols], mask=col_ok, other=0.0).astype(jnp.float32)
  x_hat = x * rstd[:, None]
  g = dy * (1.0 + scale[None, :])  # Gradient reaching the normalized x.
  # d/dx of x * rstd(x): rstd * (g - x_hat * mean(g * x_hat)).
  dx = rstd[:, None] * (g - x_hat * (jnp.sum(g * x_hat, axis=1) / w)[:, None])
  plgpu.store(dx_ref.at[rows[:, None], cols[None, :]], dx.astype(dx_ref.dtype), mask=mask)
  partial = (b * num_tiles + i) * w + cols
  plgpu.store(dshift_ref.at[partial], jnp.sum(dy, axis=0), mask=col_ok)
  plgpu.store(dscale_ref.at[partial], jnp.sum(dy * x_hat, axis=0), mask=col_ok)


def _num_warps(block_rows: int, wp: int) -> int:
  return min(8, max(1, block_rows * wp // 2048))


def _pallas_forward(x, shift, scale, eps, out_dtype, interpret):
  bsz, t, w = x.shape  # Per device under shard_map.
  if x.size >= 2**31:
    raise ValueError(f'norm_modulate kernel indexes with int32: x {x.shape} has {x.size} '
                     'elements (>= 2^31) on one device; shard the batch or use the xla '
                     'implementation')
  block_rows, wp = _tiles(t, w)
  grid = (bsz, pl.cdiv(t, block_rows))
  kernel = functools.partial(_forward_kernel, t=t, w=w, eps=eps, block_rows=block_rows, wp=wp)
  y, rstd = pl.pallas_call(
      kernel, grid=grid, interpret=interpret, name='norm_modulate_fwd',
      out_shape=(jax.ShapeDtypeStruct((bsz * t, w), out_dtype),
                 jax.ShapeDtypeStruct((bsz * t,), jnp.float32)),
      compiler_params=plgpu.CompilerParams(num_warps=_num_warps(block_rows, wp)),
  )(x.reshape(bsz * t, w), shift.reshape(-1), scale.reshape(-1))
  return y.reshape(bsz, t, w), rstd


def _pallas_backward(x, scale, rstd, dy, interpret):
  bsz, t, w = x.shape
  block_rows, wp = _tiles(t, w)
  num_tiles = pl.cdiv(t, block_rows)
  kernel = functools.partial(_backward_kernel, t=t, w=w, block_rows=block_rows, wp=wp,
                             num_tiles=num_tiles)
  partial_shape = jax.ShapeDtypeStruct((bsz * num_tiles * w,), jnp.float32)
  dx, dshift, dscale = pl.pallas_call(
      kernel, grid=(bsz, num_tiles), interpret=interpret, name='norm_modulate_bwd',
      out_shape=(jax.ShapeDtypeStruct((bsz * t, w), x.dtype), partial_shape, partial_shape),
      compiler_params=plgpu.CompilerParams(num_warps=_num_warps(block_rows, wp)),
  )(x.reshape(bsz * t, w), scale.reshape(-1), rstd, dy.reshape(bsz * t, w))
  dshift = dshift.reshape(bsz, num_tiles, w).sum(axis=1)
  dscale = dscale.reshape(bsz, num_tiles, w).sum(axis=1)
  return dx.reshape(bsz, t, w), dshift, dscale


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _norm_modulate_pallas(x, shift, scale, eps, out_dtype, interpret):
  return _pallas_forward(x, shift, scale, eps, out_dtype, interpret)[0]


def _vjp_forward(x, shift, scale, eps, out_dtype, interpret):
  y, rstd = _pallas_forward(x, shift, scale, eps, out_dtype, interpret)
  return y, (x, shift, scale, rstd)


def _vjp_backward(eps, out_dtype, interpret, residuals, dy):
  del eps, out_dtype
  x, shift, scale, rstd = residuals
  dx, dshift, dscale = _pallas_backward(x, scale, rstd, dy, interpret)
  return dx, dshift.astype(shift.dtype), dscale.astype(scale.dtype)


_norm_modulate_pallas.defvjp(_vjp_forward, _vjp_backward)


def _batch_only_specs(x_shape):
  """(x spec, (B, W) spec) when the context mesh shards x's batch dim alone, else None."""
  mesh = jax.sharding.get_abstract_mesh()
  rules = flax_spmd.get_logical_axis_rules()
  if mesh.empty or not rules or mesh.size == 1:
    return 'local', None
  spec = logical_to_mesh_spec(tuple(x_shape), TOKENS, rules, dict(mesh.shape))
  if spec[1] is not None or spec[2] is not None:
    return None, None
  return P(spec[0], None, None), P(spec[0], None)


def norm_modulate(x: jax.Array, shift: jax.Array, scale: jax.Array, *, eps: float = 1e-6,
                  out_dtype=None, implementation: str = 'xla') -> jax.Array:
  """RMSNorm of x (B, T, W) over W, modulated per sample: shift, scale (B, W).

  Returns (B, T, W) in ``out_dtype`` (default x's dtype). Gradients flow to x, shift and scale.
  """
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f'norm_modulate implementation must be one of {IMPLEMENTATIONS}, '
                     f'got {implementation!r}')
  if x.ndim != 3 or shift.shape != (x.shape[0], x.shape[2]) or scale.shape != shift.shape:
    raise ValueError(f'norm_modulate expects x (B, T, W) and shift, scale (B, W); got '
                     f'{x.shape}, {shift.shape}, {scale.shape}')
  out_dtype = jnp.dtype(out_dtype or x.dtype)
  if implementation == 'xla':
    return norm_modulate_reference(x, shift, scale, eps=eps, out_dtype=out_dtype)
  interpret = implementation == 'pallas_interpret'
  fn = functools.partial(_norm_modulate_pallas, eps=float(eps), out_dtype=out_dtype,
                         interpret=interpret)
  x_spec, bw_spec = _batch_only_specs(x.shape)
  if x_spec == 'local':
    return fn(x, shift, scale)
  if x_spec is None:  # Tokens or width sharded: leave it to the SPMD partitioner.
    return norm_modulate_reference(x, shift, scale, eps=eps, out_dtype=out_dtype)
  # Pinned first: shard_map takes the shards as they are, so the layout must be the spec's.
  x = jax.lax.with_sharding_constraint(x, x_spec)
  shift, scale = (jax.lax.with_sharding_constraint(a, bw_spec) for a in (shift, scale))
  return jax.shard_map(fn, in_specs=(x_spec, bw_spec, bw_spec), out_specs=x_spec,
                       check_vma=False)(x, shift, scale)
