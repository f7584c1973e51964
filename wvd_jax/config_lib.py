"""The config schema shared by every config file, and its validation.

Config files in ``configs/`` start from :func:`base_config` and change values; they never add
keys, so that a misspelt ``--config.a.b=v`` override fails instead of being silently ignored.
:func:`validate_config` runs before any work starts and names the first bad value it finds.
"""
from __future__ import annotations

import os

import ml_collections

from wvd_jax import errors

TASK_MODES = ('image_to_3d', 'depth', 'multiview', 'camera_control')
MODES = ('train', 'sample', 'export', 'eval', 'encode_latents') + TASK_MODES
EVAL_TASKS = ('mono_depth', 'video_depth', 'novel_view', 'consistency')
# evaluation/depth_metrics.py METHODS less 'none' (scores need an alignment); spelt out here
# because config_lib must not import evaluation (tests/test_import_rules.py checks both agree).
DEPTH_ALIGNMENTS = ('median', 'lstsq', 'lstsq_disparity')
# 'splash': the Pallas TPU kernel; 'splash_interpret' runs it in the Pallas interpreter (tests).
ATTENTION_IMPLEMENTATIONS = ('auto', 'xla', 'cudnn', 'splash', 'splash_interpret')
# models/fused_norm.IMPLEMENTATIONS, and 'auto': 'pallas' on a GPU, 'xla' elsewhere.
NORM_KERNELS = ('auto', 'xla', 'pallas', 'pallas_interpret')
REMAT_POLICIES = ('none', 'full', 'dots_saveable', 'minimal')  # See models/dit.py REMAT_POLICIES.
QKV_MATMULS = ('fused', 'separate')  # models/layers.QKV_MATMULS.
DTYPES = ('float32', 'bfloat16')
MODALITIES = ('rgb_xyz', 'rgb')  # 'rgb': the RGB-only ablation (config.diffusion.modalities).
MESH_AXES = ('data', 'fsdp', 'tensor')
LOGICAL_AXIS_RULES = (
    # Parameters: FSDP shards the model width, tensor parallelism the heads and MLP hidden.
    ('layers', None),
    ('embed', 'fsdp'),
    ('mlp', 'tensor'),
    ('heads', 'tensor'),
    ('kv', None),
    ('patch', None),
    ('freq', None),
    ('cond', None),
    # Activations: the batch over both data axes, heads and MLP hidden over 'tensor'; the width
    # of the residual stream stays whole on every device.
    ('activation_batch', ('data', 'fsdp')),
    ('activation_length', None),
    ('activation_embed', None),
    ('activation_heads', 'tensor'),
    ('activation_kv', None),
    ('activation_mlp', 'tensor'),
)
SYNTHETIC_WORLD = 'synthetic_world'  # The embedded dataset's name in config.data.sources.

def base_config() -> ml_collections.ConfigDict:
  """Every key a config may set, with defaults for a CPU run."""
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.data = ml_collections.ConfigDict()
  config.data.dataset = 'synthetic_world'  # The embedded synthetic 3D world (wvd_jax/data).
  config.data.data_dir = ''  # Where rendered datasets live; '' means <workdir>/data.
  # Training mixture: comma-separated SOURCE=WEIGHT entries (=WEIGHT optional, default 1); a
  # SOURCE is 'synthetic_world' (the embedded world of this config) or a dataset directory in
  # the project's shard format (local path or URI). See data_sources().
  config.data.sources = SYNTHETIC_WORLD
  config.data.image_size = 32  # Model resolution (square).
  config.data.render_size = 32  # Rendered resolution (centre-cropped and resized to image_size).
  config.data.num_frames = 4
  config.data.num_train_scenes = 64
  config.data.num_validation_scenes = 8
  config.data.num_test_scenes = 8
  config.data.batch_size = 8  # Global batch over all processes.
  # grain worker processes; 0 runs in the main process, -1 one per CPU core less one.
  config.data.worker_count = 0
  config.data.max_frame_stride = 1  # Frames of a clip are taken with a random stride in [1, max].
  # Curriculum from small to large camera motion (training split): over the first so many global
  # batches the frame stride grows from 1 to [1, max_frame_stride] (0: off; the data position
  # fixes it, so resumes are exact). See transforms.curriculum_frame_indices.
  config.data.motion_curriculum_steps = 0
  # XYZ normalization: each clip's robust (2nd-98th percentile) box maps into [-fill, fill]
  # before XYZ is clipped to [-1, 1]; < 1 keeps points beyond the box unflattened (and away from
  # the background corner). benchmarks/xyz_box_stats.py measures both.
  config.data.xyz_box_fill = 1.0
  # Frames rendered per clip; 0: just enough for the largest stride, (num_frames-1)*stride+1.
  config.data.render_frames = 0
  config.data.object_fraction = 0.5  # Share of object-centric scenes (the rest are rooms).
  # Synthetic world surfaces textured with crops / scales / rotations of real photographs and
  # varied light, exposure and white balance (scenes.photo_appearance); same geometry.
  config.data.photo_appearance = False
  config.data.render_workers = 0  # Processes rendering the dataset on first use; 0: all cores.
  # Cached VAE latents (data/latents.py): --mode=encode_latents writes them here once, and train
  # then reads them instead of encoding pixels in every step; '' trains from pixels. A clip's
  # frame window and XYZ normalization are fixed at encode time (README: Cached latents).
  config.data.latents_dir = ''
  config.data.encode_batch_per_device = 4  # Clips a device encodes at once (encode_latents).
  config.data.latents_shard_size = 256  # Clips a latent shard (wvd_2b: 0.53 MB a clip).

  config.autoencoder = ml_collections.ConfigDict()
  config.autoencoder.kind = 'pixel'  # 'pixel' (identity) or 'sd_vae'.
  config.autoencoder.latent_channels = 3  # Per modality.
  config.autoencoder.downsample = 1
  config.autoencoder.weights = ''  # diffusers-format safetensors for 'sd_vae'.
  # Train on a posterior sample z = mean + std * eps drawn every step (the VAE's regularization,
  # as latent diffusion trains); False: the posterior mean. No effect for 'pixel'.
  config.autoencoder.sample_posterior = True

  config.model = ml_collections.ConfigDict()
  config.model.patch_size = 4
  config.model.width = 128
  config.model.depth = 2
  config.model.num_heads = 4
  config.model.mlp_ratio = 4.0
  config.model.compute_dtype = 'float32'  # Parameters are always float32.
  config.model.residual_dtype = 'float32'  # The residual stream between blocks (models/dit.py).
  config.model.attention = 'auto'  # cuDNN on GPU (16-bit), Pallas splash on TPU, XLA elsewhere.
  config.model.remat = 'none'  # Per-block remat policy: none/full/dots_saveable/minimal (dit.py).
  config.model.scan_layers = False  # Unrolled is faster on GPU (DESIGN.md); scan compiles faster.
  # Attention and MLP projections as FP8 matmuls with delayed scaling (models/layers.py); adds
  # scaling state to the parameters, so a checkpoint is FP8 or not.
  config.model.fp8 = False
  # RMSNorm + adaLN modulation and QK RMSNorm + RoPE in the blocks: 'xla', or Pallas kernels with
  # their own backward ('pallas': Triton, GPU; 'pallas_interpret': interpreted, CPU tests;
  # 'auto': 'pallas' on a GPU, else 'xla'). A runtime choice: a checkpoint loads with the
  # loading config's value (or 'xla').
  config.model.norm_kernel = 'xla'
  # Architecture switches (each shapes the parameters): biases on the MLP's projections, and
  # RMSNorm of queries and keys before RoPE. Off, they remove memory-bound passes over the
  # activations that a small model's step is dominated by (benchmarks/RESULTS.md).
  config.model.mlp_bias = True
  config.model.qk_norm = True
  # Attention's q/k/v projection as one matmul then a split ('fused'), or three matmuls with
  # slices of the same kernel ('separate': no split of the activations, nor a stack of their
  # gradients). Same parameters and function: a runtime choice, as norm_kernel (not with FP8).
  config.model.qkv_matmuls = 'fused'

  config.diffusion = ml_collections.ConfigDict()
  config.diffusion.prediction = 'v'  # 'v', 'epsilon' or 'x0'.
  config.diffusion.logsnr_min = -15.0
  config.diffusion.logsnr_max = 15.0
  config.diffusion.schedule_shift = 1.0  # >1 shifts toward noisier levels (larger images/videos).
  # XYZ's own further shift (1 = off): XYZ latents at logSNR lambda(t) - 2 log(this), the shifted
  # cosine of simple diffusion, in training and sampling alike (diffusion/schedules.py).
  config.diffusion.xyz_schedule_shift = 1.0
  # Pixels without a surface (masked background): 'sentinel' trains XYZ there toward the corner
  # (-1, -1, -1) (geometry/normalization.py BACKGROUND_XYZ) so samples mark their own background;
  # 'masked' leaves them out of the loss (the model's XYZ there is then arbitrary).
  config.diffusion.background = 'sentinel'
  config.diffusion.rgb_loss_weight = 1.0
  config.diffusion.xyz_loss_weight = 1.0
  # Training mixture of conditioning patterns (the rest is single-image-conditioned).
  config.diffusion.p_unconditional = 0.1
  config.diffusion.p_rgb_known = 0.1  # All RGB clean, XYZ noised: the multi-view task.
  # 'rgb_xyz': RGB + XYZ (WVD). 'rgb': the paper's "RGB only" ablation, same network and FLOPs,
  # but the XYZ half of the latents is a constant zero, always a clean condition, never in the
  # loss (XYZ tasks refuse such a model; RGB videos from a first frame work).
  config.diffusion.modalities = 'rgb_xyz'

  config.optim = ml_collections.ConfigDict()
  config.optim.learning_rate = 3e-4  # The paper's.
  # The paper prints betas (0.99, 0.95); b1=0.9 is the usual choice and what we default to, as
  # 0.99 with b2=0.95 makes the second moment adapt faster than the first (see WORKSPACE.md).
  config.optim.b1 = 0.9
  config.optim.b2 = 0.95
  config.optim.weight_decay = 0.0
  config.optim.warmup_steps = 100
  config.optim.decay = 'cosine'  # 'cosine' or 'constant' after warmup.
  config.optim.grad_clip_norm = 1.0
  config.optim.ema_decay = 0.999
  config.optim.ema_every = 1  # Update the EMA every k steps (with decay**k): less HBM traffic.
  config.optim.mu_dtype = 'float32'  # Adam first-moment dtype ('bfloat16' halves its traffic).
  # Clipping, AdamW, the EMA and the non-finite guard as one elementwise pass per parameter
  # (training/optimizer.fused_adamw_ema; same numbers, less memory traffic). Needs ema_every=1.
  config.optim.fused_update = False

  config.mesh = ml_collections.ConfigDict()
  config.mesh.data = -1  # -1: all devices not used by the other axes.
  config.mesh.fsdp = 1
  config.mesh.tensor = 1
  # Multi-host / multi-slice: the factor of each axis that spans the data-centre network (slices
  # on TPU, processes elsewhere); the product must equal the number of slices / processes.
  config.mesh.dcn_data = 1
  config.mesh.dcn_fsdp = 1
  config.mesh.dcn_tensor = 1
  # (logical axis name, mesh axis | tuple of mesh axes | None) pairs (training/sharding.py).
  config.mesh.logical_axis_rules = LOGICAL_AXIS_RULES

  config.train = ml_collections.ConfigDict()
  config.train.num_steps = 100
  config.train.log_every = 10
  config.train.checkpoint_every = 50
  config.train.keep_checkpoints = 3
  config.train.eval_every = 50
  config.train.num_eval_batches = 1
  config.train.log_sample_grids = True  # A sample grid in TensorBoard at every evaluation.
  config.train.max_nonfinite_steps = 10  # Stop after this many skipped updates in a row.
  # Wall-clock budget of one train invocation in minutes (0: none); it saves and stops at the
  # first logging step past it. Resuming starts a new budget.
  config.train.max_minutes = 0.0
  # Steps between checks for SIGTERM and max_minutes; on several processes each check is a
  # tiny all-gather so all stop at the same step (benchmarks/stop_check.py measures its cost).
  config.train.stop_check_every = 10
  config.train.peak_tflops = 0.0  # Matmul rate for MFU; 0 measures it at start-up.

  config.sample = ml_collections.ConfigDict()
  config.sample.num_steps = 32
  config.sample.kind = 'ddim'  # 'ddim' or 'ancestral'.
  config.sample.eta = 0.0  # DDIM stochasticity.
  config.sample.guidance = 1.0  # Classifier-free guidance scale; 1 is off.
  config.sample.langevin_steps = 0  # Langevin corrector steps per noise level (WVD uses them).
  config.sample.snr = 0.16  # Corrector signal-to-noise ratio.
  config.sample.num_samples = 1  # Samples per held-out input.
  config.sample.split = 'test'
  config.sample.example_index = 0
  config.sample.use_ema = True

  # --mode=eval (wvd_jax/evaluation): the tasks over a held-out split, a report under the workdir.
  config.eval = ml_collections.ConfigDict()
  config.eval.split = 'test'
  # A dataset directory in the project's shard format (TFDS ArrayRecord build with the clip
  # fields); '' evaluates the synthetic world of config.data.
  config.eval.dataset_dir = ''
  config.eval.num_clips = 0  # 0: every clip of the split.
  config.eval.frame_stride = 1  # Frames 0, s, 2s, ... of each stored clip.
  config.eval.tasks = ','.join(EVAL_TASKS)  # Comma-separated subset of EVAL_TASKS.
  config.eval.depth_alignment = 'median'  # Scale of monocular depth; video depth: per sequence.
  config.eval.gallery_clips = 4  # Clips shown in the report's gallery.
  config.eval.output_dir = ''  # '' means <workdir>/eval.
  # The paper's Table 1 metrics from user-supplied weights ('' skips the metric; README
  # "Evaluation" lists the formats; .pth / .bin / .ckpt files need torch, else convert them once
  # to .safetensors): FID (pytorch-fid's pt_inception-2015-12-05 state dict), Frame Consistency
  # (a CLIP ViT image encoder: Hugging Face model directory or file, or open_clip file) and KPM
  # counted by LoFTR (kornia's loftr_outdoor / loftr_indoor(_ds_new) checkpoint) beside SIFT's.
  config.eval.fid_inception_weights = ''
  config.eval.clip_weights = ''
  config.eval.loftr_weights = ''
  return config


def render_frames(config: ml_collections.ConfigDict) -> int:
  """Frames rendered per clip: data.render_frames, or enough for the largest frame stride."""
  d = config.data
  return int(d.render_frames) if d.render_frames else (d.num_frames - 1) * d.max_frame_stride + 1


def rgb_only(config: ml_collections.ConfigDict) -> bool:
  """True for the RGB-only ablation (config.diffusion.modalities == 'rgb').

  Configs stored before the key existed (exported checkpoints) are RGB + XYZ models."""
  return config.diffusion.get('modalities', 'rgb_xyz') == 'rgb'


class ConfigError(errors.UserError, ValueError):
  """A config value that cannot work, named by its dotted key."""


def data_sources(config: ml_collections.ConfigDict) -> list[tuple[str, float]]:
  """config.data.sources as [(source, weight)], in order (the index is a batch's ``source``).

  'synthetic_world=0.7,/data/co3d=0.3' -> [('synthetic_world', 0.7), ('/data/co3d', 0.3)]. The
  weight follows an entry's last '=' (a path or URI may hold '=' itself, never a comma)."""
  text = config.data.get('sources', SYNTHETIC_WORLD)
  out = []
  for entry in str(text).split(','):
    entry = entry.strip()
    if not entry:
      continue
    name, weight = entry, '1'
    if '=' in entry:
      head, tail = entry.rsplit('=', 1)
      try:
        float(tail)
        name, weight = head.strip(), tail.strip()
      except ValueError:  # A '=' inside the path and no weight.
        pass
    weight = float(weight)
    if not weight > 0 or weight == float('inf'):
      raise ConfigError(f'config.data.sources: the weight of {name!r} must be a positive '
                        f'number, got {weight} (write SOURCE=WEIGHT, e.g. synthetic_world=0.7)')
    out.append((name, weight))
  if not out:
    raise ConfigError("config.data.sources: names no source (e.g. 'synthetic_world' or "
                      "'synthetic_world=0.7,/data/co3d_converted=0.3')")
  names = [n for n, _ in out]
  if len(set(names)) != len(names):
    raise ConfigError(f'config.data.sources: a source is listed twice in {text!r} (list each '
                      'once with its total weight)')
  return out


def _check_source(name: str) -> None:
  """A dataset directory must exist (checked here for local paths and file:// URIs; other
  schemes are checked when read)."""
  if name == SYNTHETIC_WORLD:
    return
  local = name[len('file://'):] if name.startswith('file://') else name
  if '://' in local:
    return
  if not os.path.isfile(os.path.join(local, 'dataset_info.json')):
    raise ConfigError(
        f'config.data.sources: {name!r} is neither {SYNTHETIC_WORLD!r} nor a dataset directory '
        'in the project\'s shard format (no dataset_info.json there; convert a dataset with '
        'python -m wvd_jax.data.convert and name its version directory)')


def _require(condition: bool, key: str, message: str):
  if not condition:
    raise ConfigError(f'config.{key}: {message}')


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first invalid value; cheap, runs before any work."""
  reference = base_config()
  _check_same_keys(config, reference, prefix='')
  d, m, o, t = config.data, config.model, config.optim, config.train
  _require(d.dataset in (SYNTHETIC_WORLD,), 'data.dataset', f'unknown dataset {d.dataset!r}')
  for name, _ in data_sources(config):
    _check_source(name)
  for key in ('image_size', 'render_size', 'num_frames', 'batch_size', 'num_train_scenes',
              'num_validation_scenes', 'num_test_scenes', 'max_frame_stride'):
    _require(d[key] > 0, f'data.{key}', f'must be positive, got {d[key]}')
  _require(d.worker_count >= -1, 'data.worker_count', 'must be >= 0, or -1 (one per core)')
  _require(0.0 < d.xyz_box_fill <= 1.0, 'data.xyz_box_fill',
           f'must be in (0, 1] (1: the robust box fills [-1, 1]), got {d.xyz_box_fill}')
  _require(d.motion_curriculum_steps >= 0, 'data.motion_curriculum_steps',
           f'must be >= 0 (0: off), got {d.motion_curriculum_steps}')
  _require(d.render_workers >= 0, 'data.render_workers', 'must be >= 0')
  _require(d.encode_batch_per_device > 0, 'data.encode_batch_per_device', 'must be positive')
  _require(d.latents_shard_size > 0, 'data.latents_shard_size', 'must be positive')
  _require(0.0 <= d.object_fraction <= 1.0, 'data.object_fraction', 'must be in [0, 1]')
  _require(d.render_frames == 0 or d.render_frames >= (d.num_frames - 1) * d.max_frame_stride + 1,
           'data.render_frames', f'must be 0 (auto) or >= (num_frames - 1) * max_frame_stride '
           f'+ 1 = {(d.num_frames - 1) * d.max_frame_stride + 1}, got {d.render_frames}')
  _require(d.render_size >= d.image_size, 'data.render_size',
           f'must be >= data.image_size ({d.image_size}), got {d.render_size}')
  ae = config.autoencoder
  _require(ae.kind in ('pixel', 'sd_vae'), 'autoencoder.kind', f'unknown kind {ae.kind!r}')
  if ae.kind == 'pixel':
    _require(ae.latent_channels == 3 and ae.downsample == 1, 'autoencoder',
             'pixel space needs latent_channels=3 and downsample=1')
  latent_size = d.image_size // ae.downsample
  _require(d.image_size % ae.downsample == 0, 'data.image_size',
           f'{d.image_size} is not divisible by the autoencoder downsampling {ae.downsample}')
  _require(m.patch_size > 0 and latent_size % m.patch_size == 0, 'model.patch_size',
           f'latent size {latent_size} is not divisible by patch size {m.patch_size}')
  _require(m.width > 0 and m.depth > 0 and m.num_heads > 0, 'model',
           'width, depth and num_heads must be positive')
  _require(m.width % m.num_heads == 0, 'model.num_heads',
           f'width {m.width} is not divisible by num_heads {m.num_heads}')
  head_dim = m.width // m.num_heads
  _require(head_dim % 2 == 0 and head_dim >= 6, 'model.num_heads',
           f'head dim {head_dim} too small for 3D rotary embedding (needs >= 6, even)')
  _require(m.compute_dtype in DTYPES, 'model.compute_dtype', f'one of {DTYPES}')
  _require(m.residual_dtype in DTYPES, 'model.residual_dtype', f'one of {DTYPES}')
  _require(m.norm_kernel in NORM_KERNELS, 'model.norm_kernel',
           f'one of {NORM_KERNELS}, got {m.norm_kernel!r}')
  _require(m.get('qkv_matmuls', 'fused') in QKV_MATMULS, 'model.qkv_matmuls',
           f"one of {QKV_MATMULS}, got {m.get('qkv_matmuls')!r}")
  _require(m.attention in ATTENTION_IMPLEMENTATIONS, 'model.attention',
           f'one of {ATTENTION_IMPLEMENTATIONS}, got {m.attention!r}')
  _require(m.remat in REMAT_POLICIES, 'model.remat', f'one of {REMAT_POLICIES}, got {m.remat!r}')
  for key in ('mlp_bias', 'qk_norm'):
    _require(isinstance(m.get(key, True), bool), f'model.{key}',
             f'must be True or False, got {m.get(key)!r}')
  df = config.diffusion
  _require(df.prediction in ('v', 'epsilon', 'x0'), 'diffusion.prediction',
           f"one of 'v', 'epsilon', 'x0', got {df.prediction!r}")
  _require(df.logsnr_min < df.logsnr_max, 'diffusion.logsnr_min', 'must be < logsnr_max')
  _require(df.schedule_shift > 0, 'diffusion.schedule_shift', 'must be positive')
  _require(df.xyz_schedule_shift > 0, 'diffusion.xyz_schedule_shift',
           f'must be positive (1: off), got {df.xyz_schedule_shift}')
  _require(df.background in ('sentinel', 'masked'), 'diffusion.background',
           f"'sentinel' or 'masked', got {df.background!r}")
  for key in ('p_unconditional', 'p_rgb_known'):
    _require(0.0 <= df[key] <= 1.0, f'diffusion.{key}', 'must be a probability in [0, 1]')
  _require(df.p_unconditional + df.p_rgb_known <= 1.0, 'diffusion',
           'p_unconditional + p_rgb_known must be <= 1')
  _require(df.modalities in MODALITIES, 'diffusion.modalities',
           f'one of {MODALITIES}, got {df.modalities!r}')
  _require(o.learning_rate > 0, 'optim.learning_rate', 'must be positive')
  _require(0 <= o.b1 < 1 and 0 <= o.b2 < 1, 'optim.b1', 'betas must be in [0, 1)')
  _require(o.warmup_steps >= 0, 'optim.warmup_steps', 'must be >= 0')
  _require(o.decay in ('cosine', 'constant'), 'optim.decay', f'unknown decay {o.decay!r}')
  _require(0 <= o.ema_decay < 1, 'optim.ema_decay', 'must be in [0, 1)')
  _require(o.ema_every >= 1, 'optim.ema_every', 'must be >= 1')
  _require(o.mu_dtype in DTYPES, 'optim.mu_dtype', f'one of {DTYPES}')
  _require(not o.fused_update or o.ema_every == 1, 'optim.fused_update',
           'needs optim.ema_every=1 (the fused pass updates the EMA every step)')
  _require(o.grad_clip_norm >= 0, 'optim.grad_clip_norm', 'must be >= 0 (0 disables)')
  for key in MESH_AXES:
    _require(config.mesh[key] == -1 or config.mesh[key] > 0, f'mesh.{key}', 'positive or -1')
    _require(config.mesh[f'dcn_{key}'] > 0, f'mesh.dcn_{key}', 'must be positive (1: no DCN)')
  _check_axis_rules(config.mesh.logical_axis_rules)
  for key in ('num_steps', 'log_every', 'checkpoint_every', 'keep_checkpoints', 'eval_every',
              'stop_check_every'):
    _require(t[key] > 0, f'train.{key}', f'must be positive, got {t[key]}')
  _require(t.num_eval_batches >= 0, 'train.num_eval_batches', 'must be >= 0')
  _require(t.max_nonfinite_steps > 0, 'train.max_nonfinite_steps', 'must be positive')
  _require(t.peak_tflops >= 0, 'train.peak_tflops', 'must be >= 0 (0 measures it)')
  _require(t.max_minutes >= 0, 'train.max_minutes', 'must be >= 0 (0: no time limit)')
  s = config.sample
  _require(s.num_steps > 0, 'sample.num_steps', 'must be positive')
  _require(0.0 <= s.eta <= 1.0, 'sample.eta', 'must be in [0, 1]')
  _require(s.kind in ('ddim', 'ancestral'), 'sample.kind', f"'ddim' or 'ancestral', got {s.kind!r}")
  _require(s.guidance >= 0, 'sample.guidance', 'must be >= 0 (1 is off)')
  _require(s.langevin_steps >= 0, 'sample.langevin_steps', 'must be >= 0')
  _require(s.snr > 0, 'sample.snr', 'must be positive')
  _require(s.num_samples > 0, 'sample.num_samples', 'must be positive')
  _require(s.split in ('train', 'validation', 'test'), 'sample.split',
           f'one of train/validation/test, got {s.split!r}')
  _require(s.example_index >= 0, 'sample.example_index', 'must be >= 0')
  e = config.eval
  _require(e.split in ('train', 'validation', 'test'), 'eval.split',
           f'one of train/validation/test, got {e.split!r}')
  _require(e.num_clips >= 0, 'eval.num_clips', 'must be >= 0 (0: all)')
  _require(e.frame_stride >= 1, 'eval.frame_stride', 'must be >= 1')
  eval_span = (d.num_frames - 1) * e.frame_stride + 1
  _require(bool(e.dataset_dir) or eval_span <= render_frames(config), 'eval.frame_stride',
           f'{d.num_frames} frames at stride {e.frame_stride} span {eval_span} frames; the '
           f'synthetic world renders {render_frames(config)} a clip (raise data.render_frames '
           'or data.max_frame_stride)')
  tasks = [t for t in e.tasks.split(',') if t]
  _require(bool(tasks) and all(t in EVAL_TASKS for t in tasks), 'eval.tasks',
           f'a comma-separated subset of {EVAL_TASKS}, got {e.tasks!r}')
  _require(e.depth_alignment in DEPTH_ALIGNMENTS, 'eval.depth_alignment',
           f'one of {DEPTH_ALIGNMENTS}, got {e.depth_alignment!r}')
  _require(e.gallery_clips >= 0, 'eval.gallery_clips', 'must be >= 0')


def _check_axis_rules(rules):
  for rule in rules:
    ok = isinstance(rule, (list, tuple)) and len(rule) == 2 and isinstance(rule[0], str)
    targets = rule[1] if ok and isinstance(rule[1], (list, tuple)) else [rule[1] if ok else 0]
    _require(ok and all(t is None or t in MESH_AXES for t in targets), 'mesh.logical_axis_rules',
             f'{rule!r} is not a (logical name, mesh axis or tuple of {MESH_AXES} or None) pair')


def _check_same_keys(config, reference, prefix):
  """Config files may only set keys the schema has (a typo would otherwise pass silently)."""
  for key in config.keys():
    dotted = f'{prefix}{key}'
    if key not in reference:
      raise ConfigError(f'config.{dotted}: unknown key (not in wvd_jax.config_lib.base_config)')
    value, ref = config[key], reference[key]
    if isinstance(ref, ml_collections.ConfigDict):
      if not isinstance(value, ml_collections.ConfigDict):
        raise ConfigError(f'config.{dotted}: must be a group of keys, got {value!r}')
      _check_same_keys(value, ref, prefix=dotted + '.')
    elif isinstance(value, ml_collections.ConfigDict):
      raise ConfigError(f'config.{dotted}: must be a value, got a group of keys')
