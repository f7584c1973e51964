"""The tiny config of tests/training/test_multihost.py as a config file for wvd_jax.main.

fsdp=4 spans both processes of the two-process runs (2 devices each, one DCN factor of 2), so
every parameter is sharded across processes; one-process runs override the mesh."""
from tests.conftest import tiny_config


def get_config():
  config = tiny_config()
  config.mesh.data, config.mesh.fsdp = 1, 4
  config.mesh.dcn_fsdp = 2
  config.optim.decay = 'constant'  # The learning rate must not depend on train.num_steps.
  config.train.num_steps = 4
  config.train.log_every = 1
  config.train.checkpoint_every = 2
  config.train.eval_every = 4
  config.train.stop_check_every = 1
  config.train.peak_tflops = 1.0  # Skip measuring the matmul rate.
  config.sample.num_steps = 2
  config.eval.num_clips = 2
  config.eval.tasks = 'mono_depth'
  config.eval.gallery_clips = 1
  return config
