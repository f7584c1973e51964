"""The WVD diffusion transformer over 6D videos (RGB + XYZ latents concatenated on channels).

Input x (B, N, h, w, 2C): N frames of latents, RGB channels first then XYZ (paper eq. 2).
Each frame is cut into p x p patches; all frames form one token sequence of length
T = N * (h/p) * (w/p), ordered (frame, row, col), with a 3D rotary position embedding. Blocks are
pre-norm (RMSNorm) with adaLN-zero modulation from the diffusion time, QK-normed attention and a
GELU MLP. A learned embedding marks which frames and modalities are clean conditions
(cond_mask (B, N, 2): [:, :, 0] RGB known, [:, :, 1] XYZ known), so one network trains on
conditional and unconditional clips. The head un-patchifies back to (B, N, h, w, 2C).
Parameters are float32; compute runs in ``compute_dtype``.
"""
from __future__ import annotations

import dataclasses

import einops
import jax
import jax.numpy as jnp
from flax import nnx

from wvd_jax.models import layers

_REMAT_POLICIES = {
    'full': jax.checkpoint_policies.nothing_saveable,
    'dots_saveable': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
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
  attention: str = 'auto'
  remat: str = 'none'

  @classmethod
  def from_config(cls, config) -> 'DiTConfig':
    m = config.model
    return cls(in_channels=2 * config.autoencoder.latent_channels, patch_size=m.patch_size,
               width=m.width, depth=m.depth, num_heads=m.num_heads, mlp_ratio=m.mlp_ratio,
               compute_dtype=m.compute_dtype, attention=m.attention, remat=m.remat)


def _modulate(x, shift, scale):
  return x * (1.0 + scale[:, None, :]) + shift[:, None, :]


class Block(nnx.Module):
  """Pre-norm transformer block with adaLN-zero: the residual branches start switched off."""

  def __init__(self, cfg: DiTConfig, *, rngs: nnx.Rngs):
    dtype = jnp.dtype(cfg.compute_dtype)
    impl = layers.resolve_attention_implementation(cfg.attention, dtype)
    self.norm1 = nnx.RMSNorm(cfg.width, epsilon=1e-6, use_scale=False, dtype=dtype, rngs=rngs)
    self.attn = layers.Attention(cfg.width, cfg.num_heads, implementation=impl, dtype=dtype,
                                 rngs=rngs)
    self.norm2 = nnx.RMSNorm(cfg.width, epsilon=1e-6, use_scale=False, dtype=dtype, rngs=rngs)
    self.mlp = layers.Mlp(cfg.width, int(cfg.width * cfg.mlp_ratio), dtype=dtype, rngs=rngs)
    self.modulation = nnx.Linear(cfg.width, 6 * cfg.width, dtype=dtype,
                                 kernel_init=layers.zeros_init(('embed', 'mlp')),
                                 bias_init=layers.zeros_init(('mlp',)), rngs=rngs)

  def __call__(self, x, c, rope_angles):
    mod = self.modulation(jax.nn.silu(c))
    shift1, scale1, gate1, shift2, scale2, gate2 = jnp.split(mod, 6, axis=-1)
    x = x + gate1[:, None, :] * self.attn(_modulate(self.norm1(x), shift1, scale1), rope_angles)
    x = x + gate2[:, None, :] * self.mlp(_modulate(self.norm2(x), shift2, scale2))
    return x


class DiT(nnx.Module):
  """WVD DiT: (B, N, h, w, 2C) noisy latents, times (B,), cond_mask (B, N, 2) -> (B, N, h, w, 2C)."""

  def __init__(self, cfg: DiTConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    dtype = jnp.dtype(cfg.compute_dtype)
    p, w = cfg.patch_size, cfg.width
    patch_dim = p * p * cfg.in_channels
    self.patch_embed = nnx.Linear(patch_dim, w, dtype=dtype,
                                  kernel_init=layers.dense_init(('patch', 'embed')),
                                  bias_init=layers.zeros_init(('embed',)), rngs=rngs)
    self.time_mlp1 = nnx.Linear(256, w, dtype=dtype,
                                kernel_init=layers.dense_init(('freq', 'embed')), rngs=rngs)
    self.time_mlp2 = nnx.Linear(w, w, dtype=dtype,
                                kernel_init=layers.dense_init(('embed', 'mlp')), rngs=rngs)
    # Row 0: "this frame's RGB is a clean condition", row 1: the same for XYZ.
    self.cond_embed = nnx.Param(
        nnx.with_partitioning(nnx.initializers.normal(0.02), (None, 'embed'))(rngs.params(), (2, w)))
    self.blocks = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.depth)])
    self.final_norm = nnx.RMSNorm(w, epsilon=1e-6, use_scale=False, dtype=dtype, rngs=rngs)
    self.final_modulation = nnx.Linear(w, 2 * w, dtype=dtype,
                                       kernel_init=layers.zeros_init(('embed', 'mlp')),
                                       bias_init=layers.zeros_init(('mlp',)), rngs=rngs)
    self.head = nnx.Linear(w, patch_dim, dtype=dtype,
                           kernel_init=layers.zeros_init(('embed', 'patch')),
                           bias_init=layers.zeros_init(('patch',)), rngs=rngs)

  def __call__(self, x: jax.Array, t: jax.Array, cond_mask: jax.Array) -> jax.Array:
    cfg = self.cfg
    b, n, h, w, c = x.shape
    p = cfg.patch_size
    if c != cfg.in_channels or h % p or w % p:
      raise ValueError(f'DiT expects (B, N, h, w, {cfg.in_channels}) with h, w divisible by '
                       f'{p}; got {x.shape}')
    if t.shape != (b,) or cond_mask.shape != (b, n, 2):
      raise ValueError(f'times must be ({b},) and cond_mask ({b}, {n}, 2); got {t.shape}, '
                       f'{cond_mask.shape}')
    dtype = jnp.dtype(cfg.compute_dtype)
    tokens = einops.rearrange(x, 'b n (h p) (w q) c -> b (n h w) (p q c)', p=p, q=p)
    tokens = self.patch_embed(tokens.astype(dtype))
    cond = cond_mask.astype(jnp.float32) @ self.cond_embed[...]  # (B, N, width)
    tokens = tokens + jnp.repeat(cond, (h // p) * (w // p), axis=1).astype(dtype)
    temb = self.time_mlp2(jax.nn.silu(self.time_mlp1(layers.timestep_features(t).astype(dtype))))
    angles = layers.rope_3d_angles(n, h // p, w // p, cfg.width // cfg.num_heads)
    block_fn = Block.__call__
    if cfg.remat != 'none':
      block_fn = nnx.remat(block_fn, policy=_REMAT_POLICIES[cfg.remat])
    for block in self.blocks:
      tokens = block_fn(block, tokens, temb, angles)
    shift, scale = jnp.split(self.final_modulation(jax.nn.silu(temb)), 2, axis=-1)
    out = self.head(_modulate(self.final_norm(tokens), shift, scale))
    out = einops.rearrange(out, 'b (n h w) (p q c) -> b n (h p) (w q) c', n=n, h=h // p,
                           w=w // p, p=p, q=p)
    return out.astype(jnp.float32)
