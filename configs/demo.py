"""Demo config: a tiny WVD on the embedded synthetic world, minutes on a laptop CPU.

  python -m wvd_jax.main --config=configs/demo.py --workdir=/tmp/wvd_demo
"""
from wvd_jax import config_lib


def get_config():
  config = config_lib.base_config()
  config.data.image_size = 32
  config.data.num_frames = 4
  config.data.num_train_scenes = 96
  config.data.num_validation_scenes = 8
  config.data.num_test_scenes = 8
  config.data.render_size = 32
  config.data.batch_size = 8

  config.model.patch_size = 4
  config.model.width = 96
  config.model.depth = 3
  config.model.num_heads = 4
  config.model.mlp_ratio = 4.0

  config.optim.learning_rate = 1e-3
  config.optim.warmup_steps = 100
  config.optim.weight_decay = 0.0

  config.train.num_steps = 1200
  config.train.log_every = 100
  config.train.checkpoint_every = 600
  config.train.eval_every = 600
  config.train.num_eval_batches = 2

  config.sample.num_steps = 32
  config.sample.num_samples = 2
  return config
