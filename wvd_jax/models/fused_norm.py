"""RMSNorm + adaLN modulation, and QK RMSNorm + RoPE, as Pallas (Triton) kernels with backward.

    y = x / sqrt(mean(x^2, axis=-1) + eps) * (1 + scale) + shift

for the DiT's residual stream x (B, T, W) (float32 or bfloat16) with per-sample shift and scale
(B, W), y in ``out_dtype`` (the compute dtype). XLA runs the forward as a row reduction plus
an elementwise pass, and the backward as separate fusions: the row reduction of dx and the
reductions over tokens that give d(shift) and d(scale). Here one kernel instance takes a tile of
``block_rows`` tokens of one sample with its whole (power-of-two padded, masked) width, and the
backward writes dx and that tile's partial d(shift), d(scale) in the same pass, so x and dy are
read once; the partials (B, tiles, W) are summed by XLA (tiny).

The second pair of kernels, :func:`qk_norm_rope`, normalizes each head's query or key (B, T, H, D)
with the norm's scale and rotates its feature pairs by the 3D RoPE tables in the same pass (XLA:
a row reduction, the float32 rotation, and in the backward a reduction over every row for the
scale's gradient); its backward writes dx and per-tile partial d(scale).

Implementations: 'xla' (the plain jax.numpy formula, also the reference of the tests), 'pallas'
(Triton, GPU only), 'pallas_interpret' (the same kernels interpreted: CPU tests). Under a device
mesh the kernels run per shard through shard_map when only the batch dimension (and, for the QK
kernel, the heads) is sharded; any other layout (tokens, width or head dim sharded) uses the XLA
formula, which the SPMD partitioner handles.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu
from jax.sharding import PartitionSpec as P

from wvd_jax.models.logical_axes import HEADS, TOKENS, per_shard_spec

IMPLEMENTATIONS = ('xla', 'pallas', 'pallas_interpret')
# Values a kernel instance holds per operand (rows x padded width): a tile's size.
NORM_TILE_VALUES, QK_TILE_VALUES = 16384, 8192


def norm_modulate_reference(x, shift, scale, *, eps: float = 1e-6, out_dtype=None):
  """The plain formula: x (B, T, W), shift / scale (B, W) -> (B, T, W) in out_dtype.

  The statistics are taken in float32 whatever x's dtype, as nnx.RMSNorm does.
  """
  out_dtype = out_dtype or x.dtype
  xf = x.astype(jnp.float32)
  rstd = jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
  normed = (xf * rstd).astype(out_dtype)
  return normed * (1.0 + scale[:, None, :]) + shift[:, None, :]


def _tiles(rows: int, width: int, values: int) -> tuple[int, int]:
  """(block_rows, padded width) of a tile of about ``values`` values: Triton blocks are powers
  of two, the width padded (and masked) whole, as many rows as fit (at most ``rows``)."""
  padded = pl.next_power_of_2(width)
  return max(1, min(pl.next_power_of_2(rows), values // padded)), padded


def _check_int32_indexing(kernel: str, x: jax.Array):
  if x.size >= 2**31:
    raise ValueError(f'{kernel} kernel indexes with int32: x {x.shape} has {x.size} elements '
                     '(>= 2^31) on one device; shard the batch or use the xla implementation')


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
  _check_int32_indexing('norm_modulate', x)
  block_rows, wp = _tiles(t, w, NORM_TILE_VALUES)
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
  block_rows, wp = _tiles(t, w, NORM_TILE_VALUES)
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
  """(x spec, (B, W) spec) when the context mesh shards x's batch dim alone; ('local', None)
  without a mesh; (None, None) for any other layout."""
  spec = per_shard_spec(x_shape, TOKENS)
  if spec is None:
    return 'local', None
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


# ---------------------------------------------------------------------------------------------
# QK RMSNorm + 3D RoPE: the per-head normalization of queries / keys and their rotation.


def qk_norm_rope_reference(x, weight, cos, sin, *, eps: float = 1e-6):
  """The plain path (nnx.RMSNorm with scale, then layers.apply_rope), in x's dtype.

  x (B, T, H, D); weight (D,) the norm's scale; cos, sin (T, D/2) float32 rotation tables of
  feature pairs (i, i + D/2).
  """
  xf = x.astype(jnp.float32)
  rstd = jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
  normed = (xf * rstd * weight.astype(jnp.float32)).astype(x.dtype).astype(jnp.float32)
  half = x.shape[-1] // 2
  c, s = cos[:, None, :], sin[:, None, :]
  x1, x2 = normed[..., :half], normed[..., half:]
  return jnp.concatenate([x1 * c - x2 * s, x1 * s + x2 * c], axis=-1).astype(x.dtype)


def _rope_tables(t_index, cols, d, cos_ref, sin_ref, row_ok, col_ok):
  """cos / sin of each (row, column), the partner column and the rotation sign."""
  half = d // 2
  pair = jnp.where(cols < half, cols, cols - half)
  partner = jnp.where(cols < half, cols + half, cols - half)
  sign = jnp.where(cols < half, -1.0, 1.0)
  index = t_index[:, None] * half + pair[None, :]
  mask = row_ok[:, None] & col_ok[None, :]
  c = plgpu.load(cos_ref.at[index], mask=mask, other=0.0)
  s = plgpu.load(sin_ref.at[index], mask=mask, other=0.0)
  return c, s, partner, sign


def _qk_rows(i, block_rows, num_rows, heads, t, dp, d):
  rows = i * block_rows + jnp.arange(block_rows)
  cols = jnp.arange(dp)
  row_ok, col_ok = rows < num_rows, cols < d
  return rows, cols, row_ok, col_ok, (rows // heads) % t  # Token index of each (b, t, h) row.


def _qk_forward_kernel(x_ref, w_ref, cos_ref, sin_ref, y_ref, rstd_ref, *, num_rows, heads, t,
                       d, eps, block_rows, dp):
  """Rows of x_ref (B*T*H, D): normalize, scale, rotate pairs, round once to y's dtype."""
  rows, cols, row_ok, col_ok, t_index = _qk_rows(pl.program_id(0), block_rows, num_rows, heads,
                                                 t, dp, d)
  mask = row_ok[:, None] & col_ok[None, :]
  c, s, partner, sign = _rope_tables(t_index, cols, d, cos_ref, sin_ref, row_ok, col_ok)
  x = plgpu.load(x_ref.at[rows[:, None], cols[None, :]], mask=mask, other=0.0)
  xp = plgpu.load(x_ref.at[rows[:, None], partner[None, :]], mask=mask, other=0.0)
  x, xp = x.astype(jnp.float32), xp.astype(jnp.float32)
  w = plgpu.load(w_ref.at[cols], mask=col_ok, other=0.0).astype(jnp.float32)
  wp = plgpu.load(w_ref.at[partner], mask=col_ok, other=0.0).astype(jnp.float32)
  rstd = jax.lax.rsqrt(jnp.sum(x * x, axis=1) / d + eps)
  # Normalized and rotated in float32, rounded once to x's dtype: the plain formula rounds the
  # normalized value first, which XLA:GPU skips too (excess precision); rounding it here was
  # measured twice as far from float32 as XLA on an H200.
  n = x * rstd[:, None] * w[None, :]
  n_partner = xp * rstd[:, None] * wp[None, :]
  y = n * c + sign[None, :] * n_partner * s
  plgpu.store(y_ref.at[rows[:, None], cols[None, :]], y.astype(y_ref.dtype), mask=mask)
  plgpu.store(rstd_ref.at[rows], rstd, mask=row_ok)


def _qk_backward_kernel(x_ref, w_ref, cos_ref, sin_ref, rstd_ref, dy_ref, dx_ref, dw_ref, *,
                        num_rows, heads, t, d, block_rows, dp):
  """dx of the tile's rows and the tile's partial d(weight) (sum over its rows)."""
  i = pl.program_id(0)
  rows, cols, row_ok, col_ok, t_index = _qk_rows(i, block_rows, num_rows, heads, t, dp, d)
  mask = row_ok[:, None] & col_ok[None, :]
  c, s, partner, sign = _rope_tables(t_index, cols, d, cos_ref, sin_ref, row_ok, col_ok)
  dy = plgpu.load(dy_ref.at[rows[:, None], cols[None, :]], mask=mask, other=0.0)
  dy_partner = plgpu.load(dy_ref.at[rows[:, None], partner[None, :]], mask=mask, other=0.0)
  # y_k = n_k c_k + sign_k n_p(k) s_k, and p(k) has the opposite sign and the same c, s:
  # dn_k = dy_k c_k - sign_k dy_p(k) s_k.
  dn = dy.astype(jnp.float32) * c - sign[None, :] * dy_partner.astype(jnp.float32) * s
  x = plgpu.load(x_ref.at[rows[:, None], cols[None, :]], mask=mask, other=0.0)
  rstd = plgpu.load(rstd_ref.at[rows], mask=row_ok, other=0.0)
  w = plgpu.load(w_ref.at[cols], mask=col_ok, other=0.0).astype(jnp.float32)
  x_hat = x.astype(jnp.float32) * rstd[:, None]
  plgpu.store(dw_ref.at[i * d + cols], jnp.sum(dn * x_hat, axis=0), mask=col_ok)
  g = dn * w[None, :]
  dx = rstd[:, None] * (g - x_hat * (jnp.sum(g * x_hat, axis=1) / d)[:, None])
  plgpu.store(dx_ref.at[rows[:, None], cols[None, :]], dx.astype(dx_ref.dtype), mask=mask)


def _qk_forward_local(x, weight, cos, sin, eps, interpret):
  bsz, t, heads, d = x.shape  # Per device under shard_map.
  _check_int32_indexing('qk_norm_rope', x)
  num_rows = bsz * t * heads
  block_rows, dp = _tiles(num_rows, d, QK_TILE_VALUES)
  kernel = functools.partial(_qk_forward_kernel, num_rows=num_rows, heads=heads, t=t, d=d,
                             eps=eps, block_rows=block_rows, dp=dp)
  y, rstd = pl.pallas_call(
      kernel, grid=(pl.cdiv(num_rows, block_rows),), interpret=interpret,
      name='qk_norm_rope_fwd',
      out_shape=(jax.ShapeDtypeStruct((num_rows, d), x.dtype),
                 jax.ShapeDtypeStruct((num_rows,), jnp.float32)),
      compiler_params=plgpu.CompilerParams(num_warps=_num_warps(block_rows, dp)),
  )(x.reshape(num_rows, d), weight, cos.reshape(-1), sin.reshape(-1))
  return y.reshape(x.shape), rstd


def _qk_backward_local(x, weight, cos, sin, rstd, dy, interpret):
  bsz, t, heads, d = x.shape
  num_rows = bsz * t * heads
  block_rows, dp = _tiles(num_rows, d, QK_TILE_VALUES)
  num_tiles = pl.cdiv(num_rows, block_rows)
  kernel = functools.partial(_qk_backward_kernel, num_rows=num_rows, heads=heads, t=t, d=d,
                             block_rows=block_rows, dp=dp)
  dx, dw = pl.pallas_call(
      kernel, grid=(num_tiles,), interpret=interpret, name='qk_norm_rope_bwd',
      out_shape=(jax.ShapeDtypeStruct((num_rows, d), x.dtype),
                 jax.ShapeDtypeStruct((num_tiles * d,), jnp.float32)),
      compiler_params=plgpu.CompilerParams(num_warps=_num_warps(block_rows, dp)),
  )(x.reshape(num_rows, d), weight, cos.reshape(-1), sin.reshape(-1), rstd,
    dy.reshape(num_rows, d))
  return dx.reshape(x.shape), dw.reshape(num_tiles, d)  # d(weight) partials, one row a tile.


def _qk_specs(x_shape):
  """(x spec, rows spec) under a mesh sharding only batch and heads; 'local' without a mesh;
  (None, None) for any other layout."""
  spec = per_shard_spec(x_shape, HEADS)
  if spec is None:
    return 'local', None
  if spec[1] is not None or spec[3] is not None:
    return None, None
  mapped = tuple(a for part in (spec[0], spec[2]) if part is not None
                 for a in ((part,) if isinstance(part, str) else part))
  return spec, P(mapped or None)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _qk_norm_rope_pallas(x, weight, cos, sin, eps, interpret):
  return _qk_forward(x, weight, cos, sin, eps, interpret)[0]


def _qk_forward(x, weight, cos, sin, eps, interpret):
  x_spec, rows_spec = _qk_specs(x.shape)
  fn = functools.partial(_qk_forward_local, eps=eps, interpret=interpret)
  if x_spec == 'local':
    return fn(x, weight, cos, sin)
  x = jax.lax.with_sharding_constraint(x, x_spec)
  # rstd (rows of each shard): its global layout only has to round-trip to the backward.
  return jax.shard_map(fn, in_specs=(x_spec, P(), P(), P()), out_specs=(x_spec, rows_spec),
                       check_vma=False)(x, weight, cos, sin)


def _qk_vjp_forward(x, weight, cos, sin, eps, interpret):
  y, rstd = _qk_forward(x, weight, cos, sin, eps, interpret)
  return y, (x, weight, cos, sin, rstd)


def _qk_vjp_backward(eps, interpret, residuals, dy):
  del eps
  x, weight, cos, sin, rstd = residuals
  x_spec, rows_spec = _qk_specs(x.shape)
  fn = functools.partial(_qk_backward_local, interpret=interpret)
  if x_spec == 'local':
    dx, dw_partials = fn(x, weight, cos, sin, rstd, dy)
  else:
    dx, dw_partials = jax.shard_map(
        fn, in_specs=(x_spec, P(), P(), P(), rows_spec, x_spec),
        out_specs=(x_spec, rows_spec), check_vma=False)(x, weight, cos, sin, rstd, dy)
  # Summed outside shard_map: over tiles and, through XLA's all-reduce, over shards.
  dw = jnp.sum(dw_partials, axis=0).astype(weight.dtype)
  return dx, dw, jnp.zeros_like(cos), jnp.zeros_like(sin)


_qk_norm_rope_pallas.defvjp(_qk_vjp_forward, _qk_vjp_backward)


def qk_norm_rope(x: jax.Array, weight: jax.Array, cos: jax.Array, sin: jax.Array, *,
                 eps: float = 1e-6, implementation: str = 'xla') -> jax.Array:
  """RMSNorm over the head dim with scale ``weight``, then 3D RoPE; x (B, T, H, D) -> same.

  cos, sin: (T, D/2) float32 (layers.rope_3d); they are constants of the model (no gradient
  flows to them through the kernel). Gradients flow to x and weight.
  """
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f'qk_norm_rope implementation must be one of {IMPLEMENTATIONS}, '
                     f'got {implementation!r}')
  if x.ndim != 4 or x.shape[-1] % 2 or weight.shape != (x.shape[-1],) or \
      cos.shape != (x.shape[1], x.shape[-1] // 2) or sin.shape != cos.shape:
    raise ValueError(f'qk_norm_rope expects x (B, T, H, D) with even D, weight (D,) and cos, '
                     f'sin (T, D/2); got {x.shape}, {weight.shape}, {cos.shape}, {sin.shape}')
  if implementation == 'xla':
    return qk_norm_rope_reference(x, weight, cos, sin, eps=eps)
  x_spec, _ = _qk_specs(x.shape)
  if x_spec is None:  # Tokens or head dim sharded: leave it to the SPMD partitioner.
    return qk_norm_rope_reference(x, weight, cos, sin, eps=eps)
  return _qk_norm_rope_pallas(x, weight, cos.astype(jnp.float32), sin.astype(jnp.float32),
                              float(eps), implementation == 'pallas_interpret')
