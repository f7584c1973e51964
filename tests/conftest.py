"""Shared fixtures: tiny configs that run in seconds on 2 CPU cores."""
import os

import pytest

# Tests see 1 CPU device unless a test process sets XLA_FLAGS itself (subprocess tests do).
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
# Many tests (and their subprocesses) compile the same tiny programs: share compiled executables
# through JAX's persistent cache instead of paying XLA:CPU compile time again.
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', '/tmp/wvd_jax_test_compilation_cache')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')

from wvd_jax import config_lib  # noqa: E402  pylint: disable=wrong-import-position

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config():
  """A model and dataset small enough for unit tests (16x16 images, 4 frames, width 48)."""
  config = config_lib.base_config()
  config.data.image_size = 16
  config.data.render_size = 16
  config.data.num_frames = 4
  config.data.num_train_scenes = 8
  config.data.num_validation_scenes = 4
  config.data.num_test_scenes = 4
  config.data.batch_size = 4
  config.model.patch_size = 4
  config.model.width = 48
  config.model.depth = 2
  config.model.num_heads = 4
  config.train.num_steps = 4
  config.train.log_every = 2
  config.train.checkpoint_every = 2
  config.train.eval_every = 4
  config.sample.num_steps = 4
  config_lib.validate_config(config)
  return config


@pytest.fixture
def config():
  return tiny_config()


def hide_package(monkeypatch, name: str) -> None:
  """Makes importlib.util.find_spec(name) answer None, as when package ``name`` is not installed."""
  import importlib.util  # pylint: disable=import-outside-toplevel
  find_spec = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, 'find_spec',
                      lambda module, *a: None if module == name else find_spec(module, *a))


# The multi-process and kill tests take minutes each: started first, the other worker of
# `pytest -n 2` runs the rest beside them instead of after them (the suite's critical path).
SLOW_FIRST = ('tests/training/test_multihost.py', 'tests/training/test_resume.py',
              'tests/training/test_distributed.py')


def pytest_collection_modifyitems(items):
  def rank(item):
    path = item.nodeid.split('::')[0]
    return SLOW_FIRST.index(path) if path in SLOW_FIRST else len(SLOW_FIRST)
  items.sort(key=rank)  # Stable: the order inside each group is kept.
