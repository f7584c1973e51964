"""Config files load, validate, and reject unknown keys and bad values with clear messages."""
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO
from wvd_jax import config_lib


def _load(name):
  import importlib.util
  spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, 'configs', f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


@pytest.mark.parametrize('name', ['demo', 'small', 'wvd_2b'])
def test_shipped_configs_are_valid(name):
  config_lib.validate_config(_load(name))


@pytest.mark.parametrize('key, value, message', [
    ('model.num_heads', 5, 'not divisible by num_heads'),
    ('model.patch_size', 5, 'not divisible by patch size'),
    ('data.batch_size', 0, 'must be positive'),
    ('diffusion.prediction', 'score', "one of 'v'"),
    ('optim.b2', 1.5, 'betas'),
    ('model.attention', 'flash', 'one of'),
    ('model.qkv_matmuls', 'three', "one of \\('fused', 'separate'\\)"),
    ('data.render_size', 8, 'must be >= data.image_size'),
])
def test_bad_values_name_the_key(config, key, value, message):
  group, name = key.split('.')
  config[group][name] = value
  with pytest.raises(config_lib.ConfigError, match=rf'config\.{group}.*{message}'):
    config_lib.validate_config(config)


def test_eval_frames_must_fit_the_rendered_clip():
  config = _load('small')  # 8 frames at eval stride 2 span 15 rendered frames.
  config.data.max_frame_stride = 1  # Renders 8.
  with pytest.raises(config_lib.ConfigError, match=r'config\.eval\.frame_stride: .* span 15'):
    config_lib.validate_config(config)
  config.data.render_frames = 15
  config_lib.validate_config(config)
  config.data.render_frames, config.eval.dataset_dir = 0, '/clips'  # Another dataset's clips.
  config_lib.validate_config(config)


def test_unknown_key_in_config_file_is_rejected(config):
  config.model.widht = 3
  with pytest.raises(config_lib.ConfigError, match=r'config\.model\.widht: unknown key'):
    config_lib.validate_config(config)


def _run_main(*args, timeout=120):
  return subprocess.run([sys.executable, '-m', 'wvd_jax.main', *args], cwd=REPO,
                        capture_output=True, text=True, timeout=timeout)


def test_cli_rejects_unknown_override_before_any_work(tmp_path):
  result = _run_main('--config=configs/demo.py', f'--workdir={tmp_path}', '--config.model.widht=3')
  assert result.returncode != 0
  assert 'widht' in result.stderr
  assert not os.listdir(tmp_path)  # Nothing was started.


def test_cli_rejects_bad_value_before_any_work(tmp_path):
  result = _run_main('--config=configs/demo.py', f'--workdir={tmp_path}',
                     '--config.model.num_heads=5')
  assert result.returncode == 2
  assert 'config.model.num_heads' in result.stderr
  assert not os.listdir(tmp_path)


def test_cli_rejects_wrongly_typed_override(tmp_path):
  result = _run_main('--config=configs/demo.py', f'--workdir={tmp_path}',
                     '--config.model.width=wide')
  assert result.returncode != 0
  assert 'width' in result.stderr


def test_data_sources_parse_and_validate(tmp_path):
  from tests.conftest import tiny_config  # pylint: disable=import-outside-toplevel
  config = tiny_config()
  assert config_lib.data_sources(config) == [('synthetic_world', 1.0)]
  dataset = tmp_path / 'conv=v1' / '1.0.0'  # A '=' inside a path survives.
  dataset.mkdir(parents=True)
  (dataset / 'dataset_info.json').write_text('{}')
  config.data.sources = f'synthetic_world=0.7, {dataset}=0.3'
  assert config_lib.data_sources(config) == [('synthetic_world', 0.7), (str(dataset), 0.3)]
  config_lib.validate_config(config)
  config.data.sources = f'file://{dataset},synthetic_world'
  assert config_lib.data_sources(config) == [(f'file://{dataset}', 1.0), ('synthetic_world', 1.0)]
  config_lib.validate_config(config)
  config.data.sources = 'gs://bucket/co3d/1.0.0=2'  # Remote: checked when read.
  assert config_lib.data_sources(config) == [('gs://bucket/co3d/1.0.0', 2.0)]
  for bad, match in ((f'synthetic_world=0.5,{tmp_path}/missing=0.5', 'missing'),
                     ('synthetic_world=0', 'positive'), ('synthetic_world=-1', 'positive'),
                     ('synthetic_world,synthetic_world', 'twice'), (' , ', 'names no source')):
    config.data.sources = bad
    with pytest.raises(config_lib.ConfigError, match=match):
      config_lib.validate_config(config)
