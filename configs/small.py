"""Small config: one GPU, a real but short training run on the synthetic world (pixel space).

  python -m wvd_jax.main --config=configs/small.py --workdir=/tmp/wvd_small
"""
from wvd_jax import config_lib


def get_config():
  config = config_lib.base_config()
  config.data.image_size = 64
  config.data.render_size = 64
  config.data.num_frames = 8
  config.data.num_train_scenes = 2000
  config.data.num_validation_scenes = 32
  config.data.num_test_scenes = 64
  config.data.batch_size = 32
  config.data.worker_count = 4

  config.model.patch_size = 4
  config.model.width = 512
  config.model.depth = 12
  config.model.num_heads = 8
  config.model.compute_dtype = 'bfloat16'

  config.optim.learning_rate = 3e-4
  config.optim.warmup_steps = 1000

  config.train.num_steps = 20000
  config.train.log_every = 100
  config.train.checkpoint_every = 2000
  config.train.eval_every = 2000

  config.sample.num_steps = 50
  return config
