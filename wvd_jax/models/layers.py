"""Transformer pieces of the WVD DiT: 3D rotary embedding, attention, MLP, timestep embedding.

Logical axis names (mapped onto the (data, fsdp, tensor) device mesh by the rules in
``training.sharding``):
  parameters:  'layers' the stacked-blocks axis, 'embed' model width, 'mlp' MLP hidden and adaLN
               outputs, 'heads' attention heads (x head dim, x q/k/v, fused), 'kv' the head dim,
               'patch' flattened patch features, 'freq' timestep features, 'cond' condition rows.
  activations: 'activation_batch', 'activation_length' (tokens), 'activation_embed',
               'activation_heads', 'activation_kv', 'activation_mlp'.
Activations are pinned with :func:`constrain` (models/logical_axes.py, re-exported here), a no-op
unless a mesh (``jax.set_mesh``) and logical axis rules (``nnx.logical_axis_rules``) are both
active while tracing; the training code enters both with ``training.sharding.use_mesh(mesh)``.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.linen import fp8_ops
from flax.nnx.nn import dtypes as nnx_dtypes

from wvd_jax.models import fused_norm, splash
# Re-exported: the model and the sharding code use them as layers.*.
from wvd_jax.models.logical_axes import HEADS, TOKENS, constrain, logical_to_mesh_spec  # noqa: F401


def dense_init(axes: tuple[str | None, ...], init=nnx.initializers.xavier_uniform()):
  """A kernel initializer carrying logical axis names for sharding."""
  return nnx.with_partitioning(init, axes)


def zeros_init(axes: tuple[str | None, ...]):
  return nnx.with_partitioning(nnx.initializers.zeros_init(), axes)


def ones_init(axes: tuple[str | None, ...]):
  return nnx.with_partitioning(nnx.initializers.ones_init(), axes)


def rope_3d_angles(num_frames: int, rows: int, cols: int, head_dim: int,
                   base: float = 10_000.0) -> np.ndarray:
  """Rotation angles (T, head_dim // 2), float64 numpy, of tokens ordered (frame, row, col).

  T = num_frames * rows * cols; numpy because the shapes are static (the tables become constants).

  The head dimension is split into three even parts, rotated by the frame, row and column index
  respectively; the row and column parts get 2*(head_dim//6) features each, the frame the rest.
  """
  if head_dim % 2 or head_dim < 6:
    raise ValueError(f'3D RoPE needs an even head_dim >= 6, got {head_dim}')
  spatial = 2 * (head_dim // 6)
  dims = (head_dim - 2 * spatial, spatial, spatial)
  grids = np.meshgrid(np.arange(num_frames), np.arange(rows), np.arange(cols), indexing='ij')
  angles = []
  for dim, grid in zip(dims, grids):
    inv_freq = 1.0 / base ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    angles.append(grid.reshape(-1, 1).astype(np.float64) * inv_freq)
  return np.concatenate(angles, axis=-1)


def rope_3d(num_frames: int, rows: int, cols: int, head_dim: int) -> tuple[jax.Array, jax.Array]:
  """(cos, sin) tables, each (T, head_dim // 2) float32, computed once per forward pass."""
  angles = rope_3d_angles(num_frames, rows, cols, head_dim)
  return jnp.asarray(np.cos(angles), jnp.float32), jnp.asarray(np.sin(angles), jnp.float32)


def apply_rope(x: jax.Array, rope: tuple[jax.Array, jax.Array]) -> jax.Array:
  """Rotates feature pairs (i, i + D/2) of x (B, T, H, D) by rope = (cos, sin), each (T, D/2).

  Computed in float32, returned in x's dtype.
  """
  cos, sin = rope[0][:, None, :], rope[1][:, None, :]
  # jnp.split, not two slices: the gradient is then one concatenate, not two zero-padded
  # copies added up.
  x1, x2 = (part.astype(jnp.float32) for part in jnp.split(x, 2, axis=-1))
  out = jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)
  return out.astype(x.dtype)


def resolve_attention_implementation(name: str, dtype) -> str:
  """'auto' picks cuDNN flash attention on GPU with 16-bit compute, the Pallas splash kernel on
  TPU (models/splash.py), the portable XLA path else.

  'cudnn' is only valid with bfloat16/float16 compute (cuDNN's flash attention has no float32
  kernel), so asking for it with float32 is an error here rather than deep inside XLA.
  """
  half = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
  if name == 'auto':
    if jax.default_backend() == 'tpu':
      return 'splash'
    return 'cudnn' if jax.default_backend() == 'gpu' and half else 'xla'
  if name == 'cudnn' and not half:
    raise ValueError(f'cuDNN attention needs bfloat16/float16 compute, got {jnp.dtype(dtype)}')
  if name not in ('xla', 'cudnn', 'splash', 'splash_interpret'):
    raise ValueError("attention implementation must be 'auto', 'xla', 'cudnn', 'splash' or "
                     f"'splash_interpret', got {name!r}")
  return name


def timestep_features(t: jax.Array, dim: int = 256, max_period: float = 10_000.0) -> jax.Array:
  """Sinusoidal features (B, dim) of diffusion times t (B,) in [0, 1]."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = 1000.0 * t[:, None].astype(jnp.float32) * freqs
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


class Fp8Meta(nnx.Variable):
  """Delayed-scaling state of one FP8 matmul operand: its scale (1,) or amax history (L,),
  float32, replicated.

  Lives in the parameter tree but is never trained: the custom VJPs of
  ``flax.linen.fp8_ops.fp8_scaled_dot_general`` return, as this variable's "gradient", its value
  for the next step (the scale from the history's amax, the history with this step's amax
  rolled in). The train step writes those values back instead of applying an optimizer update
  (training/optimizer.py: ``is_fp8_meta``). Each matmul must run once per step, or the
  returned values would be summed.
  """


class Fp8DotGeneral(nnx.Module):
  """A ``dot_general`` with FP8 operands and delayed scaling, for ``nnx.Linear(dot_general=...)``.

  Forward: input and kernel quantized to float8_e4m3fn with scales from their amax histories
  (the last ``history_length`` steps' max |x|); backward: the output gradient in float8_e5m2
  (wider range). On Hopper the quantize/dequantize pattern becomes one cuBLASLt FP8 GEMM at
  twice the bf16 rate; elsewhere XLA emulates it (same numbers, no speed-up).
  """

  def __init__(self, history_length: int = 16):
    for name in ('input', 'kernel', 'output_grad'):
      setattr(self, f'{name}_scale', Fp8Meta(jnp.ones((1,), jnp.float32)))
      setattr(self, f'{name}_amax_history', Fp8Meta(jnp.zeros((history_length,), jnp.float32)))

  def __call__(self, lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None,
               out_sharding=None):
    del precision, out_sharding  # FP8 GEMMs fix their own precision; sharding propagates.
    dtype = lhs.dtype
    if rhs.dtype == FP8_FORWARD:  # The inference form: a kernel quantized once (see below).
      return self._prequantized(lhs, rhs, dimension_numbers, preferred_element_type or dtype)
    return fp8_ops.fp8_scaled_dot_general(
        lhs, rhs.astype(dtype), dimension_numbers,
        preferred_element_type=preferred_element_type or dtype,
        lhs_scale=self.input_scale[...], rhs_scale=self.kernel_scale[...],
        grad_scale=self.output_grad_scale[...],
        lhs_amax_history=self.input_amax_history[...],
        rhs_amax_history=self.kernel_amax_history[...],
        grad_amax_history=self.output_grad_amax_history[...],
        quantize_compute_type=dtype)

  def _prequantized(self, lhs, rhs_fp8, dimension_numbers, out_dtype):
    """The forward of ``fp8_scaled_dot_general`` in the inference form (``inference_form``):
    the same numbers, but the kernel is read once at one byte a weight instead of amax-reduced,
    scaled and converted at every call, and the scales are not recomputed from the histories.
    Inference only: it returns no next scaling state and has no FP8 backward."""
    if dimension_numbers != (((lhs.ndim - 1,), (0,)), ((), ())) or rhs_fp8.ndim != 2:
      raise ValueError('the FP8 inference form takes x @ kernel with a 2-D kernel (a Linear, '
                       f'layers apart); got dimension numbers {dimension_numbers} and a kernel '
                       f'of shape {rhs_fp8.shape}')
    lhs_scale, rhs_scale = self.input_scale[...], self.kernel_scale[...]  # Forward scales.
    q_lhs = fp8_ops.quantize(lhs, FP8_FORWARD, lhs_scale, lhs.dtype)
    # The kernel is stored (out, in): contracting its last axis, both operands are K-major,
    # the layout Hopper's FP8 GEMM takes without a transpose.
    y = jax.lax.dot_general(q_lhs, rhs_fp8, (((lhs.ndim - 1,), (1,)), ((), ())),
                            preferred_element_type=out_dtype)
    return fp8_ops.dequantize(y, out_dtype, lhs_scale * rhs_scale)


def inference_form(linear_params: dict, compute_dtype) -> dict:
  """An FP8 projection's parameters {'kernel' (..., in, out), 'dot_general': scaling state} ->
  its inference form, which ``Fp8DotGeneral`` recognizes by the float8 kernel: the kernel
  quantized as each forward quantizes it (cast to compute_dtype, scaled by the forward scale of
  its state) and stored transposed, (..., out, in): K-major, as cuBLASLt's FP8 GEMM reads it
  (stored (in, out), XLA transposed every kernel at every call: 9.3 ms of a 19.4 ms wvd_2b forward
  on an H200); and ``input_scale`` / ``kernel_scale`` replaced by the forward scales
  (``fp8_forward_scale``), so that a loop of evaluations does neither again. Leading axes (stacked
  layers) broadcast. The amax histories are kept but no longer read."""
  state = dict(linear_params['dot_general'])
  for operand in ('input', 'kernel'):
    state[f'{operand}_scale'] = fp8_forward_scale(state[f'{operand}_scale'],
                                                  state[f'{operand}_amax_history'])
  kernel = fp8_ops.quantize(linear_params['kernel'].astype(compute_dtype), FP8_FORWARD,
                            state['kernel_scale'][..., None], jnp.dtype(compute_dtype))
  return {**linear_params, 'kernel': jnp.swapaxes(kernel, -1, -2), 'dot_general': state}


FP8_FORWARD = jnp.float8_e4m3fn  # Forward operands; gradients use float8_e5m2.
QKV_MATMULS = ('fused', 'separate')  # Attention's q/k/v projection: one matmul, or three.


def fp8_forward_scale(scale: jax.Array, amax_history: jax.Array) -> jax.Array:
  """The scale (..., 1) a forward FP8 matmul quantizes an operand with, from the operand's stored
  delayed-scaling state (scale (..., 1), amax history (..., L)): what flax's
  ``fp8_ops.fp8_scaled_dot_general`` computes before it rolls this call's amax in."""
  fp8_max = fp8_ops.get_fp8_max(FP8_FORWARD, jnp.float32)
  amax = jnp.max(amax_history, axis=-1, keepdims=True)
  return fp8_ops.compute_scale(amax, scale, fp8_max)


def _promote_keeping_fp8_kernel(args, dtype=None):
  """nnx.Linear's dtype promotion, except that a float8 kernel (the inference form of an FP8
  projection) reaches Fp8DotGeneral as it is instead of widened to ``dtype``."""
  inputs, kernel, bias = args
  if kernel is not None and kernel.dtype == FP8_FORWARD:
    inputs, bias = nnx_dtypes.promote_dtype((inputs, bias), dtype=dtype)
    return inputs, kernel, bias
  return nnx_dtypes.promote_dtype(args, dtype=dtype)


def projection(in_features: int, out_features: int, *, axes: tuple[str, str], use_bias: bool,
               dtype, fp8: bool, rngs: nnx.Rngs) -> nnx.Linear:
  """A Linear whose kernel carries logical ``axes``; with ``fp8`` its matmul runs in FP8."""
  extra = {'bias_init': zeros_init((axes[1],))} if use_bias else {}
  if fp8:
    extra['dot_general'] = Fp8DotGeneral()
    extra['promote_dtype'] = _promote_keeping_fp8_kernel
  return nnx.Linear(in_features, out_features, use_bias=use_bias, dtype=dtype,
                    kernel_init=dense_init(axes), rngs=rngs, **extra)


class Attention(nnx.Module):
  """Multi-head self-attention with QK RMSNorm and 3D RoPE over (B, T, width) tokens.

  The fused qkv kernel (width, 3 * width) orders its output columns (head, q/k/v, head_dim), so
  splitting it over the 'tensor' mesh axis hands each device whole heads with their q, k and v.
  """

  def __init__(self, width: int, num_heads: int, *, implementation: str, dtype, rngs: nnx.Rngs,
               fp8: bool = False, norm_kernel: str = 'xla', qk_norm: bool = True,
               qkv_matmuls: str = 'fused'):
    self.num_heads = num_heads
    self.qk_norm = qk_norm
    # QKV_MATMULS (DiTConfig checks the value). 'separate' (not with FP8, whose Linear quantizes
    # the whole kernel): q, k and v as three matmuls with slices of the one kernel. Same
    # parameters and function; no (B, T, H, 3, D) activation to take apart, nor its gradient to
    # stack (a copy of 3 x B x T x width a layer).
    self.qkv_matmuls = 'fused' if fp8 else qkv_matmuls
    self.norm_kernel = norm_kernel  # fused_norm.IMPLEMENTATIONS: QK norm + RoPE as one kernel.
    self.head_dim = width // num_heads
    self.implementation = implementation
    self.qkv = projection(width, 3 * width, axes=('embed', 'heads'), use_bias=False, dtype=dtype,
                          fp8=fp8, rngs=rngs)
    if qk_norm:
      self.q_norm = nnx.RMSNorm(self.head_dim, epsilon=1e-6, dtype=dtype,
                                scale_init=ones_init(('kv',)), rngs=rngs)
      self.k_norm = nnx.RMSNorm(self.head_dim, epsilon=1e-6, dtype=dtype,
                                scale_init=ones_init(('kv',)), rngs=rngs)
    self.out = projection(width, width, axes=('heads', 'embed'), use_bias=False, dtype=dtype,
                          fp8=fp8, rngs=rngs)

  def __call__(self, x: jax.Array, rope: tuple[jax.Array, jax.Array]) -> jax.Array:
    b, t, _ = x.shape
    q, k, v = self._project_qkv(x)
    if self.qk_norm:
      q, k = self._norm_rope(self.q_norm, q, rope), self._norm_rope(self.k_norm, k, rope)
    else:
      q, k = apply_rope(q, rope), apply_rope(k, rope)
    if self.implementation.startswith('splash'):
      y = splash.splash_attention(q, k, v, interpret=self.implementation == 'splash_interpret')
    else:
      y = jax.nn.dot_product_attention(q, k, v, implementation=self.implementation)
    y = constrain(y, HEADS)
    return self.out(y.reshape(b, t, -1))

  def _project_qkv(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(B, T, width) -> q, k, v, each (B, T, heads, head_dim)."""
    b, t, width = x.shape
    if self.qkv_matmuls == 'separate':
      kernel = self.qkv.kernel[...].reshape(width, self.num_heads, 3, self.head_dim)
      x, kernel = nnx_dtypes.promote_dtype((x, kernel), dtype=self.qkv.dtype)
      return tuple(constrain(jnp.einsum('btc,chd->bthd', x, part), HEADS)
                   for part in jnp.unstack(kernel, axis=2))
    qkv = self.qkv(x).reshape(b, t, self.num_heads, 3, self.head_dim)
    # One unstack (its gradient one stack), not three slices (three zero-padded copies added).
    return tuple(constrain(part, HEADS) for part in jnp.unstack(qkv, axis=3))

  def _norm_rope(self, norm, x, rope):
    if self.norm_kernel == 'xla':
      return apply_rope(norm(x), rope)
    return fused_norm.qk_norm_rope(x, norm.scale[...], rope[0], rope[1], eps=norm.epsilon,
                                   implementation=self.norm_kernel)


class Mlp(nnx.Module):
  """width -> hidden (tanh-GELU) -> width; ``use_bias`` on both projections."""

  def __init__(self, width: int, hidden: int, *, dtype, rngs: nnx.Rngs, fp8: bool = False,
               use_bias: bool = True):
    self.fc1 = projection(width, hidden, axes=('embed', 'mlp'), use_bias=use_bias, dtype=dtype,
                          fp8=fp8, rngs=rngs)
    self.fc2 = projection(hidden, width, axes=('mlp', 'embed'), use_bias=use_bias, dtype=dtype,
                          fp8=fp8, rngs=rngs)

  def __call__(self, x):
    h = constrain(self.fc1(x), ('activation_batch', 'activation_length', 'activation_mlp'))
    return self.fc2(jax.nn.gelu(h, approximate=True))
