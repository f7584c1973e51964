"""The WVD diffusion transformer over 6D videos (RGB + XYZ latents concatenated on channels).

Input x (B, N, h, w, 2C): N frames of latents, RGB channels first then XYZ (paper eq. 2).
Each frame is cut into p x p patches; all frames form one token sequence of length
T = N * (h/p) * (w/p), ordered (frame, row, col), with a 3D rotary position embedding. Blocks are
pre-norm (RMSNorm) with adaLN-zero modulation from the diffusion time, QK-normed attention and a
GELU MLP (QK norm and the MLP biases can be switched off: ``qk_norm``, ``mlp_bias``). A learned
embedding marks which frames and modalities are clean conditions (cond_mask (B, N, 2):
[:, :, 0] RGB known, [:, :, 1] XYZ known), so one network trains on conditional and
unconditional clips. The head un-patchifies back to (B, N, h, w, 2C).

Precision: parameters are float32; matmuls, attention and the block internals run in
``compute_dtype`` (bfloat16 on accelerators); the residual stream between blocks is kept in
``residual_dtype`` (float32 by default, as PyTorch autocast does) so that the small gated
updates of adaLN-zero blocks are not rounded away; the final norm, modulation and head run in
float32 (they are tiny) and the output is float32.

Blocks are stored stacked: every block parameter has a leading 'layers' axis of size depth (built
with nnx.vmap). ``scan_layers`` only changes how the forward walks that stack (lax.scan, or an
unrolled Python loop over the layers, which is ~20% faster on GPU: DESIGN.md), so checkpoints are
the same for both. The unrolled loop takes the layers apart with ``split_layers``; a caller that
runs the network many times on the same weights (a sampler) splits them once and passes
``layer_params`` (see builder.split_for_loop). The diffusion time enters only through the adaLN
modulation rows (``time_modulation``); a sampler whose time levels are known before its loop
computes every level's rows in one pass and passes them as ``modulation`` (builder.LoopModel),
instead of reading each block's modulation weights for one row at every evaluation. ``remat``
picks a rematerialization policy per block (see REMAT_POLICIES).
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import einops
import jax
import jax.numpy as jnp
from flax import nnx

from wvd_jax.models import fused_norm
from wvd_jax.models import layers


def _is_cudnn_attention_forward(prim) -> bool:
  return prim.name.startswith('dot_product_attention_fwd')


def _minimal_policy(prim, *avals, **params) -> bool:
  """Saves every projection matmul output and cuDNN attention's forward outputs (output and
  softmax statistics), recomputes only the elementwise work (norms, modulation, RoPE, GELU)."""
  return (jax.checkpoint_policies.dots_with_no_batch_dims_saveable(prim, *avals, **params)
          or _is_cudnn_attention_forward(prim))


# name -> jax.checkpoint policy applied per block (None: no remat).
#   none           keep every intermediate (fastest, most memory).
#   full           keep only each block's input; recompute the whole block in the backward.
#   dots_saveable  keep matmul outputs without batch dims (MaxText's 'minimal'); attention
#                  (batched dots, or the cuDNN kernel) is recomputed.
#   minimal        dots_saveable + keep cuDNN flash attention's outputs, so the backward
#                  recomputes only elementwise work (on the XLA attention path it equals
#                  dots_saveable).
REMAT_POLICIES = {
    'none': None,
    'full': jax.checkpoint_policies.nothing_saveable,
    'dots_saveable': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    'minimal': _minimal_policy,
}


@dataclasses.dataclass(frozen=True)
class DiTConfig:
  in_channels: int  # 2C: RGB and XYZ latent channels together.
  patch_size: int
  width: int
  depth: int
  num_heads: int
  mlp_ratio: float = 4.0
  compute_dtype: str = 'float32'
  attention: str = 'auto'  # config_lib.ATTENTION_IMPLEMENTATIONS; see layers.resolve_attention_implementation.
  remat: str = 'none'  # A key of REMAT_POLICIES.
  scan_layers: bool = False  # lax.scan over the stacked blocks instead of an unrolled loop.
  residual_dtype: str = 'float32'  # dtype of the residual stream between blocks.
  fp8: bool = False  # Attention and MLP projections as FP8 matmuls (layers.Fp8DotGeneral).
  # The norms with what surrounds them (RMSNorm + adaLN modulation before attention and MLP, QK
  # RMSNorm + RoPE): 'xla' (plain jax.numpy), 'pallas' (Triton kernels with their own backward,
  # GPU; models/fused_norm.py) or 'pallas_interpret' (the same kernels interpreted, CPU).
  norm_kernel: str = 'xla'
  # Architecture switches that remove memory-bound work around the matmuls (each shapes the
  # parameters): biases on the MLP's two projections, and RMSNorm of queries and keys.
  mlp_bias: bool = True
  qk_norm: bool = True
  # q, k and v as one matmul and a split ('fused') or three matmuls ('separate'): the same
  # parameters and function (layers.Attention), a runtime choice.
  qkv_matmuls: str = 'fused'

  def __post_init__(self):
    if self.width % self.num_heads:
      raise ValueError(f'width {self.width} is not divisible by num_heads {self.num_heads}')
    if self.remat not in REMAT_POLICIES:
      raise ValueError(f'remat must be one of {tuple(REMAT_POLICIES)}, got {self.remat!r}')
    for name in ('compute_dtype', 'residual_dtype'):
      if getattr(self, name) not in ('float32', 'bfloat16', 'float16'):
        raise ValueError(f'{name} must be float32, bfloat16 or float16, got '
                         f'{getattr(self, name)!r}')
    if self.norm_kernel not in fused_norm.IMPLEMENTATIONS:
      raise ValueError(f'norm_kernel must be one of {fused_norm.IMPLEMENTATIONS}, got '
                       f'{self.norm_kernel!r}')
    if self.qkv_matmuls not in layers.QKV_MATMULS:
      raise ValueError(f'qkv_matmuls must be one of {layers.QKV_MATMULS}, got '
                       f'{self.qkv_matmuls!r}')
    if self.depth < 1 or self.patch_size < 1:
      raise ValueError(f'depth and patch_size must be positive, got {self.depth}, '
                       f'{self.patch_size}')

  @property
  def head_dim(self) -> int:
    return self.width // self.num_heads

  @property
  def mlp_hidden(self) -> int:
    return int(self.width * self.mlp_ratio)

  @classmethod
  def from_config(cls, config) -> 'DiTConfig':
    m = config.model
    return cls(in_channels=2 * config.autoencoder.latent_channels, patch_size=m.patch_size,
               width=m.width, depth=m.depth, num_heads=m.num_heads, mlp_ratio=m.mlp_ratio,
               compute_dtype=m.compute_dtype,
               # Exported configs from before the key existed ran float32 residuals.
               residual_dtype=m.get('residual_dtype', 'float32'), attention=m.attention,
               remat=m.remat, scan_layers=bool(m.scan_layers), fp8=bool(m.get('fp8', False)),
               norm_kernel=resolve_norm_kernel(m.get('norm_kernel', 'xla')),
               # Exported configs from before the keys existed had both.
               mlp_bias=bool(m.get('mlp_bias', True)), qk_norm=bool(m.get('qk_norm', True)),
               qkv_matmuls=m.get('qkv_matmuls', 'fused'))


def resolve_norm_kernel(name: str) -> str:
  """config.model.norm_kernel -> an implementation: 'auto' is the Triton kernels on a GPU (where
  they were measured faster: benchmarks/RESULTS.md) and the XLA formula elsewhere."""
  if name == 'auto':
    return 'pallas' if jax.default_backend() == 'gpu' else 'xla'
  return name


def _modulate(x, shift, scale):
  return x * (1.0 + scale[:, None, :]) + shift[:, None, :]


class Block(nnx.Module):
  """Pre-norm transformer block with adaLN-zero: the residual branches start switched off."""

  def __init__(self, cfg: DiTConfig, *, rngs: nnx.Rngs):
    dtype = jnp.dtype(cfg.compute_dtype)
    impl = layers.resolve_attention_implementation(cfg.attention, dtype)
    if cfg.norm_kernel == 'pallas' and jax.default_backend() != 'gpu':
      raise ValueError("model.norm_kernel='pallas' is a Triton kernel and needs a GPU (backend "
                       f"here: {jax.default_backend()}); use 'xla' or 'pallas_interpret'")
    self.norm_kernel = cfg.norm_kernel
    self.norm1 = nnx.RMSNorm(cfg.width, epsilon=1e-6, use_scale=False, dtype=dtype, rngs=rngs)
    self.attn = layers.Attention(cfg.width, cfg.num_heads, implementation=impl, dtype=dtype,
                                 fp8=cfg.fp8, norm_kernel=cfg.norm_kernel, qk_norm=cfg.qk_norm,
                                 qkv_matmuls=cfg.qkv_matmuls, rngs=rngs)
    self.norm2 = nnx.RMSNorm(cfg.width, epsilon=1e-6, use_scale=False, dtype=dtype, rngs=rngs)
    self.mlp = layers.Mlp(cfg.width, cfg.mlp_hidden, dtype=dtype, fp8=cfg.fp8,
                          use_bias=cfg.mlp_bias, rngs=rngs)
    self.modulation = nnx.Linear(cfg.width, 6 * cfg.width, dtype=dtype,
                                 kernel_init=layers.zeros_init(('embed', 'mlp')),
                                 bias_init=layers.zeros_init(('mlp',)), rngs=rngs)

  def __call__(self, x, c, rope, mod=None):
    """x (B, T, width) residual stream, c (B, width) conditioning, rope (cos, sin) tables;
    ``mod`` (B, 6 width): this block's modulation rows if computed ahead (``modulation_rows``),
    then c is not read."""
    if mod is None:
      mod = self.modulation_rows(c)
    shift1, scale1, gate1, shift2, scale2, gate2 = jnp.split(mod, 6, axis=-1)
    h = self._norm_modulate(self.norm1, x, shift1, scale1)
    x = x + gate1[:, None, :] * self.attn(h, rope)
    x = layers.constrain(x, layers.TOKENS)
    x = x + gate2[:, None, :] * self.mlp(self._norm_modulate(self.norm2, x, shift2, scale2))
    return layers.constrain(x, layers.TOKENS)

  def modulation_rows(self, c):
    """c (L, width) -> (L, 6 width): shift, scale, gate before attention, then before the MLP."""
    return self.modulation(jax.nn.silu(c))

  def _norm_modulate(self, norm, x, shift, scale):
    if self.norm_kernel == 'xla':
      return _modulate(norm(x), shift, scale)
    return fused_norm.norm_modulate(x, shift, scale, eps=norm.epsilon, out_dtype=norm.dtype,
                                    implementation=self.norm_kernel)


def split_layers(stacked) -> tuple:
  """The stacked blocks' state as ``depth`` per-layer states (each leaf without its 'layers' axis).

  One ``jnp.unstack`` a leaf, not ``leaf[i]`` per layer: the gradient of an unstack is one
  concatenate, while each ``leaf[i]``'s is a zero-padded copy of the whole stack, and XLA adds the
  depth pads in one fusion (on an H200 that fusion with the gradient norm reading it took 20.3 ms
  of the wvd_2b step; the step went from 161.7 to 148.0 ms: benchmarks/RESULTS.md). Taken apart
  once outside a loop, the layers are also read in place where slicing inside the loop copied
  every weight on every iteration.
  """
  leaves, treedef = jax.tree.flatten(stacked)
  if not leaves:
    raise ValueError('split_layers: the blocks have no parameters')
  depth = leaves[0].shape[0]
  if any(leaf.ndim == 0 or leaf.shape[0] != depth for leaf in leaves):
    raise ValueError('split_layers: every leaf needs the same leading layers axis; got shapes '
                     f'{sorted({tuple(leaf.shape) for leaf in leaves})}')
  per_leaf = [jnp.unstack(leaf, axis=0) for leaf in leaves]
  return tuple(treedef.unflatten([parts[i] for parts in per_leaf]) for i in range(depth))


class TimeModulation(NamedTuple):
  """Everything the diffusion time sets in the DiT, for L times (the adaLN-zero rows).

  ``blocks``: depth arrays (L, 6 width) in compute_dtype, each block's shift, scale and gate
  before attention and before the MLP; ``final``: (L, 2 width) float32, the output layer's shift
  and scale. Row l belongs to the l-th time given to ``DiT.time_modulation``.
  """
  blocks: tuple
  final: jax.Array


def _stacked_blocks(cfg: DiTConfig, rngs: nnx.Rngs) -> Block:
  """``depth`` blocks as one Block whose parameters have a leading 'layers' axis."""

  @nnx.split_rngs(splits=cfg.depth)
  @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: 'layers'})
  def make(block_rngs):
    return Block(cfg, rngs=block_rngs)

  return make(rngs)


class DiT(nnx.Module):
  """WVD DiT: noisy latents (B, N, h, w, 2C), times (B,) in [0, 1], cond_mask (B, N, 2).

  Returns the prediction (B, N, h, w, 2C), float32.
  """

  def __init__(self, cfg: DiTConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    dtype = jnp.dtype(cfg.compute_dtype)
    p, w = cfg.patch_size, cfg.width
    patch_dim = p * p * cfg.in_channels
    layers.rope_3d_angles(1, 1, 1, cfg.head_dim)  # Validates head_dim early.
    self.patch_embed = nnx.Linear(patch_dim, w, dtype=dtype,
                                  kernel_init=layers.dense_init(('patch', 'embed')),
                                  bias_init=layers.zeros_init(('embed',)), rngs=rngs)
    self.time_mlp1 = nnx.Linear(256, w, dtype=dtype,
                                kernel_init=layers.dense_init(('freq', 'embed')),
                                bias_init=layers.zeros_init(('embed',)), rngs=rngs)
    self.time_mlp2 = nnx.Linear(w, w, dtype=dtype,
                                kernel_init=layers.dense_init(('embed', 'mlp')),
                                bias_init=layers.zeros_init(('mlp',)), rngs=rngs)
    # Row 0: "this frame's RGB is a clean condition", row 1: the same for XYZ. Tiny, so it stays
    # replicated (sharding its width would fight the batch sharding of the tokens it is added to).
    self.cond_embed = nnx.Param(
        nnx.with_partitioning(nnx.initializers.normal(0.02), ('cond', None))(
            rngs.params(), (2, w)))
    self.blocks = _stacked_blocks(cfg, rngs)
    # The output layer runs in float32: it is tiny and sets the precision of the prediction.
    self.final_norm = nnx.RMSNorm(w, epsilon=1e-6, use_scale=False, dtype=jnp.float32,
                                  rngs=rngs)
    self.final_modulation = nnx.Linear(w, 2 * w, dtype=jnp.float32,
                                       kernel_init=layers.zeros_init(('embed', 'mlp')),
                                       bias_init=layers.zeros_init(('mlp',)), rngs=rngs)
    self.head = nnx.Linear(w, patch_dim, dtype=jnp.float32,
                           kernel_init=layers.zeros_init(('embed', 'patch')),
                           bias_init=layers.zeros_init(('patch',)), rngs=rngs)

  def __call__(self, x: jax.Array, t: jax.Array, cond_mask: jax.Array,
               layer_params: tuple | None = None,
               modulation: TimeModulation | None = None) -> jax.Array:
    """``layer_params``: optionally the blocks' weights already taken apart by ``split_layers``
    (then used instead of the stored stack, which is not read). ``modulation``: optionally the
    rows of ``time_modulation(t)`` computed ahead, one row per sample (leading axis B); then the
    time embedding and the modulation weights are not read (t is only shape-checked)."""
    cfg = self.cfg
    b, n, h, w, c = x.shape
    p = cfg.patch_size
    if c != cfg.in_channels or h % p or w % p:
      raise ValueError(f'DiT expects (B, N, h, w, {cfg.in_channels}) with h, w divisible by '
                       f'{p}; got {x.shape}')
    if t.shape != (b,) or cond_mask.shape != (b, n, 2):
      raise ValueError(f'times must be ({b},) and cond_mask ({b}, {n}, 2); got {t.shape}, '
                       f'{cond_mask.shape}')
    dtype, residual_dtype = jnp.dtype(cfg.compute_dtype), jnp.dtype(cfg.residual_dtype)
    tokens = einops.rearrange(x, 'b n (h p) (w q) c -> b (n h w) (p q c)', p=p, q=p)
    tokens = self.patch_embed(tokens.astype(dtype)).astype(residual_dtype)
    cond = cond_mask.astype(jnp.float32) @ self.cond_embed[...]  # (B, N, width)
    tokens = tokens + jnp.repeat(cond, (h // p) * (w // p), axis=1).astype(residual_dtype)
    tokens = layers.constrain(tokens, layers.TOKENS)
    rope = layers.rope_3d(n, h // p, w // p, cfg.head_dim)
    if modulation is None:
      temb = self._time_embedding(t)
      tokens = self._run_blocks(tokens, temb, rope, layer_params)
      final = self._final_modulation_rows(temb)
    else:
      _check_modulation(modulation, cfg, b)
      tokens = self._run_blocks(tokens, None, rope, layer_params, modulation.blocks)
      final = modulation.final
    shift, scale = jnp.split(final, 2, axis=-1)
    out = self.head(_modulate(self.final_norm(tokens.astype(jnp.float32)), shift, scale))
    out = einops.rearrange(out, 'b (n h w) (p q c) -> b n (h p) (w q) c', n=n, h=h // p,
                           w=w // p, p=p, q=p)
    return layers.constrain(out.astype(jnp.float32), ('activation_batch',) + (None,) * 4)

  def time_modulation(self, t: jax.Array, layer_params: tuple | None = None) -> TimeModulation:
    """t (L,) times in [0, 1] -> their TimeModulation (L rows), in one pass over the weights.

    What ``__call__`` computes from t inside every evaluation; a sampler computes its whole
    time grid once before its loop (on an H200 the per-evaluation rows read the 2B model's 1.4
    GB of modulation weights for one row each: 22.7 ms of a 0.74 s sampling call).
    """
    if t.ndim != 1:
      raise ValueError(f'time_modulation takes times of shape (L,); got {t.shape}')
    temb = self._time_embedding(t)
    graphdef, stacked = nnx.split(self.blocks)
    rows = tuple(nnx.merge(graphdef, layer_state).modulation_rows(temb)
                 for layer_state in layer_params or split_layers(stacked))
    return TimeModulation(rows, self._final_modulation_rows(temb))

  def _time_embedding(self, t):
    dtype = jnp.dtype(self.cfg.compute_dtype)
    return self.time_mlp2(jax.nn.silu(self.time_mlp1(layers.timestep_features(t).astype(dtype))))

  def _final_modulation_rows(self, temb):
    return self.final_modulation(jax.nn.silu(temb.astype(jnp.float32)))

  def _run_blocks(self, tokens, temb, rope, layer_params, block_rows=None):
    """``block_rows``: per-layer modulation rows computed ahead (then temb is not read)."""
    cfg = self.cfg
    graphdef, stacked = nnx.split(self.blocks)
    if layer_params is not None and len(layer_params) != cfg.depth:
      raise ValueError(f'layer_params has {len(layer_params)} layers; the model has {cfg.depth}')

    def block_fn(layer_state, x, mod=None):
      return nnx.merge(graphdef, layer_state)(x, temb, rope, mod)

    if cfg.remat != 'none':
      # Inside a scan, CSE cannot merge the recomputation into the forward, so no barrier.
      block_fn = jax.checkpoint(block_fn, policy=REMAT_POLICIES[cfg.remat],
                                prevent_cse=not cfg.scan_layers)
    if cfg.scan_layers and layer_params is None and block_rows is None:
      tokens, _ = jax.lax.scan(lambda x, s: (block_fn(s, x), None), tokens, stacked)
      return tokens
    for layer_state, mod in zip(layer_params or split_layers(stacked),
                                block_rows or (None,) * cfg.depth):
      tokens = block_fn(layer_state, tokens, mod)
    return tokens


def _check_modulation(modulation: TimeModulation, cfg: DiTConfig, batch: int):
  want_blocks, want_final = (batch, 6 * cfg.width), (batch, 2 * cfg.width)
  shapes = [tuple(m.shape) for m in modulation.blocks]
  if len(shapes) != cfg.depth or any(s != want_blocks for s in shapes) or (
      tuple(modulation.final.shape) != want_final):
    raise ValueError(f'modulation must hold {cfg.depth} block rows of shape {want_blocks} and '
                     f'final rows {want_final}; got {shapes} and {modulation.final.shape}')
