"""The paper's scale: a ~2B-parameter DiT over 8 frames at 256x256, RGB+XYZ through the SD VAE.

Needs a GPU/TPU pod and the SD VAE weights (diffusers safetensors) supplied by the user:
  python -m wvd_jax.main --config=configs/wvd_2b.py --workdir=DIR \
      --config.autoencoder.weights=/path/to/sd-vae
"""
from wvd_jax import config_lib


def get_config():
  config = config_lib.base_config()
  config.data.image_size = 256
  config.data.render_size = 256
  config.data.num_frames = 8
  config.data.photo_appearance = True  # Real-photo textures and varied light (transfer to photos).
  config.data.num_train_scenes = 10000
  config.data.num_validation_scenes = 64
  config.data.num_test_scenes = 256
  config.data.batch_size = 128  # The paper's effective batch.
  config.data.worker_count = 8

  config.autoencoder.kind = 'sd_vae'
  config.autoencoder.latent_channels = 4
  config.autoencoder.downsample = 8

  config.model.patch_size = 2  # 32x32 latents -> 256 tokens a frame, 2048 for 8 frames.
  config.model.width = 2048
  config.model.depth = 28
  config.model.num_heads = 16
  config.model.mlp_ratio = 4.0
  config.model.compute_dtype = 'bfloat16'
  config.model.remat = 'none'
  # The fastest measured step (benchmarks/RESULTS.md, issue 19): FP8 projections (loss-curve
  # parity checked on the GPU) and the fused norm kernels where there is a GPU.
  config.model.fp8 = True
  config.model.norm_kernel = 'auto'

  # benchmarks/RESULTS.md: 1% faster step and 4 GiB less memory than a float32 first moment.
  config.optim.mu_dtype = 'bfloat16'
  config.optim.learning_rate = 3e-4
  config.optim.warmup_steps = 5000
  config.train.num_steps = 1_000_000
  config.train.checkpoint_every = 5000
  config.train.eval_every = 5000
  config.sample.num_steps = 50
  return config
