"""Stable Diffusion's KL autoencoder (diffusers ``AutoencoderKL``) in Flax NNX.

Architecture (names mirror diffusers' module names one to one, so that the weight converter in
``vae_convert.py`` maps ``encoder.down_blocks.0.resnets.1.conv2.weight`` to the NNX parameter path
``('encoder', 'down_blocks', 0, 'resnets', 1, 'conv2', 'kernel')``):

  encoder: conv_in (3x3) -> down_blocks[i] (``layers_per_block`` ResNet blocks, then a stride-2
           3x3 conv with diffusers' asymmetric zero padding (0, 1, 0, 1) on all but the last block)
           -> mid_block (ResNet, single-head self-attention, ResNet) -> conv_norm_out (GroupNorm)
           -> SiLU -> conv_out (3x3, 2 * latent_channels) ; then quant_conv (1x1).
  decoder: post_quant_conv (1x1) -> conv_in (3x3) -> mid_block -> up_blocks[i] (``layers_per_block
           + 1`` ResNet blocks, then nearest x2 upsampling + 3x3 conv on all but the last block)
           -> conv_norm_out -> SiLU -> conv_out (3x3).
  ResNet block: GroupNorm -> SiLU -> conv3x3 -> GroupNorm -> SiLU -> conv3x3, plus a 1x1
           ``conv_shortcut`` on the residual path where the channel count changes.
  All GroupNorms use ``norm_num_groups`` groups of consecutive channels (as torch) and eps 1e-6.

Layout: channels-last, images (B, H, W, C) with values in [-1, 1]; latents (B, H/f, W/f,
latent_channels) with f = 2 ** (len(block_out_channels) - 1) (8 for SD). H and W must be
multiples of f.

Precision: parameters are ``param_dtype`` (float32 by default); activations run in ``dtype``
(bfloat16 is the GPU choice, float32 for exactness). GroupNorm statistics and the attention
softmax are always computed in float32. ``encode`` returns the posterior's mean and log-variance
in float32; ``decode`` returns float32 images.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from wvd_jax import errors

# Keys of a diffusers config.json that do not change the network's computation here.
_IGNORED_DIFFUSERS_KEYS = frozenset({
    'sample_size', 'force_upcast', 'latents_mean', 'latents_std',
})
SUPPORTED_DOWN_BLOCK = 'DownEncoderBlock2D'
SUPPORTED_UP_BLOCK = 'UpDecoderBlock2D'
SUPPORTED_ACT_FNS = ('silu', 'swish')
# diffusers' DiagonalGaussianDistribution clamps the log-variance to this range.
LOGVAR_MIN = -30.0
LOGVAR_MAX = 20.0
NORM_EPS = 1e-6


@dataclasses.dataclass(frozen=True)
class AutoencoderKLConfig:
  """The architecture of an ``AutoencoderKL``, with diffusers' config.json field names.

  Defaults are Stable Diffusion 1.x/2.x's VAE (downsampling 8, 4 latent channels).
  ``scaling_factor`` and ``shift_factor`` are not used by the network itself; the diffusion model
  sees ``(z - shift_factor) * scaling_factor`` (see ``vae_autoencoder.py``).
  """
  in_channels: int = 3
  out_channels: int = 3
  down_block_types: tuple[str, ...] = (SUPPORTED_DOWN_BLOCK,) * 4
  up_block_types: tuple[str, ...] = (SUPPORTED_UP_BLOCK,) * 4
  block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
  layers_per_block: int = 2
  act_fn: str = 'silu'
  latent_channels: int = 4
  norm_num_groups: int = 32
  scaling_factor: float = 0.18215
  shift_factor: float | None = None
  use_quant_conv: bool = True
  use_post_quant_conv: bool = True
  mid_block_add_attention: bool = True

  def __post_init__(self):
    # Accept lists (as read from JSON) and store tuples so the config stays hashable.
    for name in ('down_block_types', 'up_block_types', 'block_out_channels'):
      object.__setattr__(self, name, tuple(getattr(self, name)))
    self.validate()

  @property
  def downsample_factor(self) -> int:
    """Spatial reduction from image to latent: 2 ** (number of blocks - 1)."""
    return 2 ** (len(self.block_out_channels) - 1)

  def validate(self) -> None:
    """Raises ValueError naming the first unsupported or inconsistent field."""
    n = len(self.block_out_channels)
    if n < 1:
      raise ValueError('block_out_channels must not be empty')
    if len(self.down_block_types) != n:
      raise ValueError(f'down_block_types has {len(self.down_block_types)} entries but '
                       f'block_out_channels has {n}')
    if len(self.up_block_types) != n:
      raise ValueError(f'up_block_types has {len(self.up_block_types)} entries but '
                       f'block_out_channels has {n}')
    for t in self.down_block_types:
      if t != SUPPORTED_DOWN_BLOCK:
        raise ValueError(f'down_block_types: {t!r} is not supported (only {SUPPORTED_DOWN_BLOCK})')
    for t in self.up_block_types:
      if t != SUPPORTED_UP_BLOCK:
        raise ValueError(f'up_block_types: {t!r} is not supported (only {SUPPORTED_UP_BLOCK})')
    if self.act_fn not in SUPPORTED_ACT_FNS:
      raise ValueError(f'act_fn: {self.act_fn!r} is not supported (only {SUPPORTED_ACT_FNS})')
    for c in self.block_out_channels:
      if c <= 0 or c % self.norm_num_groups:
        raise ValueError(f'block_out_channels entry {c} is not a positive multiple of '
                         f'norm_num_groups={self.norm_num_groups}')
    for name in ('in_channels', 'out_channels', 'latent_channels', 'layers_per_block',
                 'norm_num_groups'):
      if getattr(self, name) < 1:
        raise ValueError(f'{name} must be >= 1, got {getattr(self, name)}')
    if not self.scaling_factor or not math.isfinite(self.scaling_factor):
      raise ValueError(f'scaling_factor must be finite and non-zero, got {self.scaling_factor}')

  @classmethod
  def from_diffusers_dict(cls, d: dict[str, Any]) -> 'AutoencoderKLConfig':
    """Builds a config from a diffusers ``config.json`` dict.

    Keys starting with '_' (``_class_name``, ``_diffusers_version``, ...) and keys that do not
    affect the computation (sample_size, force_upcast, latents_mean, latents_std) are ignored;
    any other unknown key raises ValueError, so an architecture we do not implement is never
    loaded silently. Missing keys take diffusers' AutoencoderKL defaults (NOT the SD defaults of
    this dataclass), as diffusers itself would.
    """
    class_name = d.get('_class_name')
    if class_name is not None and class_name != 'AutoencoderKL':
      raise errors.UserError(f'config.json describes a {class_name!r}, not an AutoencoderKL')
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(k for k in d if not k.startswith('_') and k not in fields
                     and k not in _IGNORED_DIFFUSERS_KEYS)
    if unknown:
      raise errors.UserError(f'config.json has keys this port does not implement: {unknown}')
    # diffusers' own constructor defaults, used for keys that config.json leaves out.
    kwargs: dict[str, Any] = dict(
        down_block_types=(SUPPORTED_DOWN_BLOCK,), up_block_types=(SUPPORTED_UP_BLOCK,),
        block_out_channels=(64,), layers_per_block=1)
    kwargs.update({k: v for k, v in d.items() if k in fields})
    return cls(**kwargs)


def sd_config() -> AutoencoderKLConfig:
  """Stable Diffusion's VAE (about 84M parameters)."""
  return AutoencoderKLConfig()


def tiny_config() -> AutoencoderKLConfig:
  """A tiny VAE for tests and CPU demos: downsampling 2, 4 latent channels."""
  return AutoencoderKLConfig(
      down_block_types=(SUPPORTED_DOWN_BLOCK,) * 2, up_block_types=(SUPPORTED_UP_BLOCK,) * 2,
      block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8)


@dataclasses.dataclass(frozen=True)
class _Numerics:
  dtype: Any
  param_dtype: Any
  precision: Any


def _conv(cin: int, cout: int, k: int, num: _Numerics, rngs: nnx.Rngs, stride: int = 1,
          padding: Any = None) -> nnx.Conv:
  if padding is None:
    p = k // 2
    padding = ((p, p), (p, p))
  return nnx.Conv(cin, cout, (k, k), strides=stride, padding=padding, dtype=num.dtype,
                  param_dtype=num.param_dtype, precision=num.precision, rngs=rngs)


def _group_norm(channels: int, groups: int, num: _Numerics, rngs: nnx.Rngs) -> nnx.GroupNorm:
  # Two-pass variance (use_fast_variance=False) to match torch's GroupNorm closely.
  return nnx.GroupNorm(channels, num_groups=groups, epsilon=NORM_EPS, dtype=num.dtype,
                       param_dtype=num.param_dtype, use_fast_variance=False, rngs=rngs)


class ResnetBlock2D(nnx.Module):
  """Pre-norm ResNet block (no time embedding). x: (B, H, W, in_ch) -> (B, H, W, out_ch)."""

  def __init__(self, in_ch: int, out_ch: int, groups: int, num: _Numerics, rngs: nnx.Rngs):
    self.norm1 = _group_norm(in_ch, groups, num, rngs)
    self.conv1 = _conv(in_ch, out_ch, 3, num, rngs)
    self.norm2 = _group_norm(out_ch, groups, num, rngs)
    self.conv2 = _conv(out_ch, out_ch, 3, num, rngs)
    self.conv_shortcut = _conv(in_ch, out_ch, 1, num, rngs) if in_ch != out_ch else None

  def __call__(self, x: jax.Array) -> jax.Array:
    h = self.conv1(jax.nn.silu(self.norm1(x)))
    h = self.conv2(jax.nn.silu(self.norm2(h)))
    if self.conv_shortcut is not None:
      x = self.conv_shortcut(x)
    return x + h


class Attention(nnx.Module):
  """Single-head spatial self-attention with GroupNorm and a residual connection.

  x: (B, H, W, C) -> (B, H, W, C). The head dimension is C (diffusers' VAE attention_head_dim =
  channels). Logits and softmax are computed in float32 whatever the compute dtype.
  """

  def __init__(self, channels: int, groups: int, num: _Numerics, rngs: nnx.Rngs):
    self.group_norm = _group_norm(channels, groups, num, rngs)
    lin = lambda: nnx.Linear(channels, channels, dtype=num.dtype, param_dtype=num.param_dtype,
                             precision=num.precision, rngs=rngs)
    self.to_q = lin()
    self.to_k = lin()
    self.to_v = lin()
    self.to_out = lin()  # diffusers: to_out.0 (to_out.1 is dropout).
    self.precision = num.precision

  def __call__(self, x: jax.Array) -> jax.Array:
    b, h, w, c = x.shape
    t = self.group_norm(x).reshape(b, h * w, c)
    q, k, v = self.to_q(t), self.to_k(t), self.to_v(t)
    logits = jnp.einsum('bqc,bkc->bqk', q, k, precision=self.precision,
                        preferred_element_type=jnp.float32)
    probs = jax.nn.softmax(logits * (1.0 / math.sqrt(c)), axis=-1)
    out = jnp.einsum('bqk,bkc->bqc', probs.astype(v.dtype), v, precision=self.precision)
    out = self.to_out(out).reshape(b, h, w, c)
    return x + out


class Downsample2D(nnx.Module):
  """Stride-2 3x3 conv with zero padding (top 0, bottom 1, left 0, right 1), as diffusers' VAE."""

  def __init__(self, channels: int, num: _Numerics, rngs: nnx.Rngs):
    self.conv = _conv(channels, channels, 3, num, rngs, stride=2, padding=((0, 1), (0, 1)))

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.conv(x)


class Upsample2D(nnx.Module):
  """Nearest-neighbour x2 upsampling then a 3x3 conv."""

  def __init__(self, channels: int, num: _Numerics, rngs: nnx.Rngs):
    self.conv = _conv(channels, channels, 3, num, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    return self.conv(x)


class DownEncoderBlock2D(nnx.Module):

  def __init__(self, in_ch: int, out_ch: int, num_layers: int, add_downsample: bool,
               groups: int, num: _Numerics, rngs: nnx.Rngs):
    self.resnets = nnx.List([
        ResnetBlock2D(in_ch if i == 0 else out_ch, out_ch, groups, num, rngs)
        for i in range(num_layers)])
    self.downsamplers = (nnx.List([Downsample2D(out_ch, num, rngs)]) if add_downsample
                         else None)

  def __call__(self, x: jax.Array) -> jax.Array:
    for resnet in self.resnets:
      x = resnet(x)
    if self.downsamplers is not None:
      for down in self.downsamplers:
        x = down(x)
    return x


class UpDecoderBlock2D(nnx.Module):

  def __init__(self, in_ch: int, out_ch: int, num_layers: int, add_upsample: bool,
               groups: int, num: _Numerics, rngs: nnx.Rngs):
    self.resnets = nnx.List([
        ResnetBlock2D(in_ch if i == 0 else out_ch, out_ch, groups, num, rngs)
        for i in range(num_layers)])
    self.upsamplers = nnx.List([Upsample2D(out_ch, num, rngs)]) if add_upsample else None

  def __call__(self, x: jax.Array) -> jax.Array:
    for resnet in self.resnets:
      x = resnet(x)
    if self.upsamplers is not None:
      for up in self.upsamplers:
        x = up(x)
    return x


class UNetMidBlock2D(nnx.Module):
  """ResNet -> [attention] -> ResNet at constant width."""

  def __init__(self, channels: int, add_attention: bool, groups: int, num: _Numerics,
               rngs: nnx.Rngs):
    self.resnets = nnx.List([ResnetBlock2D(channels, channels, groups, num, rngs)
                             for _ in range(2)])
    self.attentions = (nnx.List([Attention(channels, groups, num, rngs)]) if add_attention
                       else None)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.resnets[0](x)
    if self.attentions is not None:
      x = self.attentions[0](x)
    return self.resnets[1](x)


class Encoder(nnx.Module):
  """(B, H, W, in_channels) -> (B, H/f, W/f, 2 * latent_channels) (before quant_conv)."""

  def __init__(self, cfg: AutoencoderKLConfig, num: _Numerics, rngs: nnx.Rngs):
    chans, groups = cfg.block_out_channels, cfg.norm_num_groups
    self.conv_in = _conv(cfg.in_channels, chans[0], 3, num, rngs)
    blocks = []
    prev = chans[0]
    for i, ch in enumerate(chans):
      blocks.append(DownEncoderBlock2D(prev, ch, cfg.layers_per_block, i < len(chans) - 1,
                                       groups, num, rngs))
      prev = ch
    self.down_blocks = nnx.List(blocks)
    self.mid_block = UNetMidBlock2D(chans[-1], cfg.mid_block_add_attention, groups, num, rngs)
    self.conv_norm_out = _group_norm(chans[-1], groups, num, rngs)
    self.conv_out = _conv(chans[-1], 2 * cfg.latent_channels, 3, num, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.conv_in(x)
    for block in self.down_blocks:
      x = block(x)
    x = self.mid_block(x)
    return self.conv_out(jax.nn.silu(self.conv_norm_out(x)))


class Decoder(nnx.Module):
  """(B, h, w, latent_channels) -> (B, h*f, w*f, out_channels) (after post_quant_conv)."""

  def __init__(self, cfg: AutoencoderKLConfig, num: _Numerics, rngs: nnx.Rngs):
    chans, groups = cfg.block_out_channels, cfg.norm_num_groups
    rev = tuple(reversed(chans))
    self.conv_in = _conv(cfg.latent_channels, rev[0], 3, num, rngs)
    self.mid_block = UNetMidBlock2D(rev[0], cfg.mid_block_add_attention, groups, num, rngs)
    blocks = []
    prev = rev[0]
    for i, ch in enumerate(rev):
      blocks.append(UpDecoderBlock2D(prev, ch, cfg.layers_per_block + 1, i < len(rev) - 1,
                                     groups, num, rngs))
      prev = ch
    self.up_blocks = nnx.List(blocks)
    self.conv_norm_out = _group_norm(chans[0], groups, num, rngs)
    self.conv_out = _conv(chans[0], cfg.out_channels, 3, num, rngs)

  def __call__(self, z: jax.Array) -> jax.Array:
    x = self.conv_in(z)
    x = self.mid_block(x)
    for block in self.up_blocks:
      x = block(x)
    return self.conv_out(jax.nn.silu(self.conv_norm_out(x)))


class AutoencoderKL(nnx.Module):
  """diffusers' AutoencoderKL in NNX, channels-last.

  Args:
    config: the architecture.
    dtype: activation/compute dtype (jnp.bfloat16 on GPU, jnp.float32 for exact parity).
    param_dtype: parameter storage dtype (float32 by default).
    precision: optional ``jax.lax.Precision`` for convs and matmuls (None: JAX's default, which
      the ``jax.default_matmul_precision`` context manager controls).
    rngs: initializer randomness (weights are normally replaced by ``vae_convert``).
  """

  def __init__(self, config: AutoencoderKLConfig, *, dtype: Any = jnp.float32,
               param_dtype: Any = jnp.float32, precision: Any = None,
               rngs: nnx.Rngs):
    self.config = config
    self.dtype = dtype
    num = _Numerics(dtype, param_dtype, precision)
    self.encoder = Encoder(config, num, rngs)
    self.decoder = Decoder(config, num, rngs)
    lc = config.latent_channels
    self.quant_conv = _conv(2 * lc, 2 * lc, 1, num, rngs) if config.use_quant_conv else None
    self.post_quant_conv = (_conv(lc, lc, 1, num, rngs) if config.use_post_quant_conv
                            else None)

  def _check_spatial(self, x: jax.Array, channels: int, what: str, multiple: int) -> None:
    if x.ndim != 4 or x.shape[-1] != channels:
      raise ValueError(f'{what} must have shape (B, H, W, {channels}), got {x.shape}')
    if x.shape[1] % multiple or x.shape[2] % multiple:
      raise ValueError(f'{what} height and width must be multiples of {multiple}, '
                       f'got {x.shape[1:3]}')

  def encode(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Posterior of images (B, H, W, in_channels) in [-1, 1].

    Returns (mean, logvar), each (B, H/f, W/f, latent_channels) float32, unscaled (as diffusers'
    ``latent_dist.mean`` / ``.logvar``; logvar clamped to [-30, 20]).
    """
    self._check_spatial(images, self.config.in_channels, 'images', self.config.downsample_factor)
    h = self.encoder(images.astype(self.dtype))
    if self.quant_conv is not None:
      h = self.quant_conv(h)
    h = h.astype(jnp.float32)
    mean, logvar = jnp.split(h, 2, axis=-1)
    return mean, jnp.clip(logvar, LOGVAR_MIN, LOGVAR_MAX)

  def decode(self, latents: jax.Array) -> jax.Array:
    """Latents (B, h, w, latent_channels), unscaled -> images (B, h*f, w*f, out_channels) f32."""
    self._check_spatial(latents, self.config.latent_channels, 'latents', 1)
    z = latents.astype(self.dtype)
    if self.post_quant_conv is not None:
      z = self.post_quant_conv(z)
    return self.decoder(z).astype(jnp.float32)

  def __call__(self, images: jax.Array) -> jax.Array:
    """Reconstruction through the posterior mean: (B, H, W, C) -> (B, H, W, out_channels)."""
    mean, _ = self.encode(images)
    return self.decode(mean)


def init_autoencoder_kl(config: AutoencoderKLConfig, *, seed: int = 0, dtype: Any = jnp.float32,
                        param_dtype: Any = jnp.float32, precision: Any = None) -> AutoencoderKL:
  """A randomly initialized ``AutoencoderKL`` (tests, benchmarks, demos without weights).

  Initialized on the host with numpy, as PyTorch's defaults would: conv/linear kernels uniform
  in +-1/sqrt(fan_in), biases 0, GroupNorm scale 1 and bias 0. (Running NNX's initializers takes
  seconds of XLA compilation on CPU even for the tiny config; this takes milliseconds.)
  """
  import numpy as np  # Host-side random numbers only.

  abstract = nnx.eval_shape(lambda: AutoencoderKL(
      config, dtype=dtype, param_dtype=param_dtype, precision=precision, rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(abstract)
  rng = np.random.default_rng(seed)
  leaves = []
  for path, var in nnx.to_flat_state(state):
    sds = var.get_value()
    if path[-1] == 'kernel':
      bound = 1.0 / math.sqrt(math.prod(sds.shape[:-1]))
      value = rng.uniform(-bound, bound, size=sds.shape).astype(np.float32)
    elif path[-1] == 'scale':
      value = np.ones(sds.shape, np.float32)
    else:
      value = np.zeros(sds.shape, np.float32)
    leaves.append((path, var.replace(value=jnp.asarray(value, dtype=sds.dtype))))
  return nnx.merge(graphdef, nnx.from_flat_state(leaves))
