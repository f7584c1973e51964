"""Subprocess of tests/test_main_fuzz.py: malformed command lines through wvd_jax.main, in one
process (one JAX start-up for all of them).

  python -m tests.main_fuzz_worker <directory> <results.json>

Builds the fixtures (a tiny exported checkpoint and a tiny training checkpoint, both of random
weights, and the malformed files) under <directory>, then runs every case of cases() through
main.cli with fd 2 captured, and writes [{name, argv, status, stderr, stdout}] to results.json.
"""
import contextlib
import json
import os
import shutil
import sys
import tempfile

import numpy as np
from absl import flags
from PIL import Image

from tests.conftest import tiny_config

CONFIG_FILE = 'from tests.conftest import tiny_config as get_config\n'
RIGID = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]


def build_fixtures(d: str) -> dict:
  """The files the cases point at; returns their paths by name."""
  import jax  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel

  # pylint: disable=import-outside-toplevel
  from wvd_jax.models import builder, inference_checkpoint
  from wvd_jax.training import checkpoints, optimizer, sharding
  from wvd_jax.training import state as state_lib
  config = tiny_config()
  p = {name: os.path.join(d, name) for name in (
      'config.py', 'bad_syntax.py', 'no_get_config.py', 'export', 'other_export', 'broken_export',
      'no_config_export', 'train', 'damaged_train', 'empty', 'views_empty', 'views_one', 'out',
      'latents')}
  with open(p['config.py'], 'w') as f:
    f.write(CONFIG_FILE)
  with open(p['bad_syntax.py'], 'w') as f:
    f.write('def get_config(:\n')
  with open(p['no_get_config.py'], 'w') as f:
    f.write('x = 1\n')
  params = nnx.to_pure_dict(nnx.state(builder.build_model(config, seed=0)))
  inference_checkpoint.save(p['export'], config, params)
  other = tiny_config()
  other.model.width = 96
  inference_checkpoint.save(p['other_export'], other,
                            nnx.to_pure_dict(nnx.state(builder.build_model(other, seed=0))))
  shutil.copytree(p['export'], p['broken_export'])
  with open(os.path.join(p['broken_export'], 'config.json'), 'w') as f:
    f.write('{"model": ')
  shutil.copytree(p['export'], p['no_config_export'])
  os.remove(os.path.join(p['no_config_export'], 'config.json'))
  # A training checkpoint of random weights (step 0), and a copy with its arrays cut short.
  mesh = sharding.make_mesh(config)
  tx = optimizer.make_optimizer(config)
  _, state, _ = state_lib.create_train_state(config, mesh, tx)
  manager = checkpoints.make_manager(p['train'], config, async_save=False)
  checkpoints.check_or_store_config(p['train'], config)
  checkpoints.save(manager, state)
  manager.close()
  shutil.copytree(p['train'], p['damaged_train'])
  for root, _, names in os.walk(os.path.join(p['damaged_train'], 'checkpoints', '0')):
    for name in names:
      path = os.path.join(root, name)
      if os.path.getsize(path) > 1000:
        os.truncate(path, os.path.getsize(path) // 2)
  # A latents directory encoded (its manifest) with another seed.
  from wvd_jax.data import latents  # pylint: disable=import-outside-toplevel
  other_seed = tiny_config()
  other_seed.seed = 7
  latents.claim(p['latents'], latents.manifest(other_seed, 4, {'train': [8]}))
  os.makedirs(p['empty'])
  os.makedirs(p['views_empty'])
  os.makedirs(p['views_one'])
  rng = np.random.default_rng(0)
  image = rng.integers(0, 255, (24, 24, 3), np.uint8)
  files = {'good.png': None, 'one_pixel.png': None, 'truncated.png': None, 'text.png': None,
           'empty.png': None, 'truncated.jpg': None}
  for name in files:
    files[name] = os.path.join(d, name)
  Image.fromarray(image).save(files['good.png'])
  Image.fromarray(image).save(os.path.join(p['views_one'], 'v0.png'))
  Image.fromarray(image[:1, :1]).save(files['one_pixel.png'])
  Image.fromarray(image).save(files['truncated.jpg'])
  for name, source in (('truncated.png', 'good.png'), ('truncated.jpg', 'truncated.jpg')):
    with open(files[source], 'rb') as f:
      data = f.read()
    with open(files[name], 'wb') as f:
      f.write(data[:len(data) // 2])
  with open(files['text.png'], 'w') as f:
    f.write('not an image')
  open(files['empty.png'], 'wb').close()
  p.update(files)
  paths = {
      'not_json': 'this is not json', 'no_key': '{"poses": []}', 'scalar': '{"cam_to_world": 3}',
      'shape': '{"cam_to_world": [[1, 2, 3]]}',
      'strings': '{"cam_to_world": [[["a", "b", "c", "d"]]]}',
      'nan': json.dumps({'cam_to_world': [[[float('nan')] * 4] * 4]}),
      'scaled': json.dumps({'cam_to_world': [[[2, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0],
                                              [0, 0, 0, 1]]]}),
      'bad_intrinsics': json.dumps({'cam_to_world': [RIGID, RIGID], 'intrinsics': [[0, 0, 8]]}),
      'one_pose': json.dumps({'cam_to_world': [RIGID]}),
      'list': '[1, 2, 3]', 'binary': None,
  }
  for name, text in paths.items():
    p[f'path_{name}'] = os.path.join(d, f'path_{name}.json')
    with open(p[f'path_{name}'], 'wb') as f:
      f.write(text.encode() if text is not None else bytes(range(256)))
  # Weights of another network for the learned eval metrics (a CLIP tensor where Inception's
  # are expected, and vice versa).
  from safetensors import numpy as safetensors_numpy  # pylint: disable=import-outside-toplevel
  p['clip_like.safetensors'] = os.path.join(d, 'clip_like.safetensors')
  with open(p['clip_like.safetensors'], 'wb') as f:
    f.write(safetensors_numpy.save(
        {'vision_model.embeddings.class_embedding': np.zeros(8, np.float32)}))
  p['inception_like.safetensors'] = os.path.join(d, 'inception_like.safetensors')
  with open(p['inception_like.safetensors'], 'wb') as f:
    f.write(safetensors_numpy.save({'Conv2d_1a_3x3.conv.weight': np.zeros((32, 3, 3, 3),
                                                                          np.float32)}))
  del jax
  return p


def cases(p: dict) -> list[tuple[str, list[str]]]:
  """(name, argv) of malformed command lines: every mode, flags, files, camera paths,
  checkpoints."""
  base = [f'--config={p["config.py"]}', f'--workdir={p["empty"]}']
  task = lambda mode, *extra: [*base, f'--mode={mode}', f'--checkpoint={p["export"]}',
                               f'--output={p["out"]}/{mode}', *extra]
  depth = lambda image: task('depth', f'--input={image}')
  eval_weights = lambda key, path: task('eval', f'--config.eval.{key}={path}')
  camera = lambda path: task('camera_control', f'--input={p["good.png"]}',
                             f'--camera_path={path}')
  return [
      ('unknown mode', [*base, '--mode=bogus']),
      ('unknown flag', [*base, '--no_such_flag=1']),
      ('unknown config key', [*base, '--config.foo=1']),
      ('unknown nested config key', [*base, '--config.model.widht=3']),
      ('wrongly typed override', [*base, '--config.model.width=abc']),
      ('group overridden by a value', [*base, '--config.model=3']),
      ('missing config file', [f'--config={p["empty"]}/none.py', f'--workdir={p["empty"]}']),
      ('config syntax error', [f'--config={p["bad_syntax.py"]}', f'--workdir={p["empty"]}']),
      ('config without get_config', [f'--config={p["no_get_config.py"]}',
                                     f'--workdir={p["empty"]}']),
      ('missing --workdir', [f'--config={p["config.py"]}']),
      ('positional argument', [*base, 'extra']),
      ('invalid config value', [*base, '--config.model.num_heads=5']),
      ('negative steps', [*base, '--config.train.num_steps=-1']),
      ('unknown sampler', [*base, '--mode=sample', '--config.sample.kind=euler']),
      ('mesh larger than the devices', [*base, '--config.mesh.data=3']),
      ('train on a checkpoint of another model', [f'--config={p["config.py"]}',
                                                  f'--workdir={p["train"]}',
                                                  '--config.model.width=96']),
      ('sample without a checkpoint', [*base, '--mode=sample']),
      ('sample of another model', [f'--config={p["config.py"]}', f'--workdir={p["train"]}',
                                   '--mode=sample', '--config.model.depth=3']),
      ('sample of a damaged checkpoint', [f'--config={p["config.py"]}',
                                          f'--workdir={p["damaged_train"]}', '--mode=sample']),
      ('export without a checkpoint', [*base, '--mode=export']),
      ('eval without a checkpoint', [*base, '--mode=eval']),
      ('eval of a missing dataset directory', [*base, '--mode=eval', f'--checkpoint={p["export"]}',
                                               f'--config.eval.dataset_dir={p["empty"]}/none']),
      ('eval with FID weights of another network',
       eval_weights('fid_inception_weights', p['clip_like.safetensors'])),
      ('eval with an FID weights file that is not safetensors',
       eval_weights('fid_inception_weights', p['text.png'])),
      ('eval with CLIP weights of another network',
       eval_weights('clip_weights', p['inception_like.safetensors'])),
      ('eval with LoFTR weights of another network',
       eval_weights('loftr_weights', p['inception_like.safetensors'])),
      ('depth without --input', task('depth')),
      ('depth of a missing file', depth(f'{p["empty"]}/missing.png')),
      ('depth of a truncated PNG', depth(p['truncated.png'])),
      ('depth of a truncated JPEG', depth(p['truncated.jpg'])),
      ('depth of a text file', depth(p['text.png'])),
      ('depth of an empty file', depth(p['empty.png'])),
      ('depth of a 1x1 image', depth(p['one_pixel.png'])),
      ('depth of a directory', depth(p['views_one'])),
      ('image_to_3d of a missing file', task('image_to_3d', f'--input={p["empty"]}/x.jpg')),
      ('multiview of an empty directory', task('multiview', f'--input={p["views_empty"]}')),
      ('multiview of one image', task('multiview', f'--input={p["views_one"]}')),
      ('unknown camera preset', camera('spin')),
      *[(f'camera path: {name}', camera(p[f'path_{name}'])) for name in (
          'not_json', 'no_key', 'scalar', 'shape', 'strings', 'nan', 'scaled', 'bad_intrinsics',
          'one_pose', 'list', 'binary')],
      ('missing checkpoint', [*base, '--mode=depth', f'--input={p["good.png"]}',
                              f'--checkpoint={p["empty"]}/none']),
      ('checkpoint without config.json', [*base, '--mode=depth', f'--input={p["good.png"]}',
                                          f'--checkpoint={p["no_config_export"]}']),
      ('checkpoint with a broken config.json', [*base, '--mode=depth',
                                                f'--input={p["good.png"]}',
                                                f'--checkpoint={p["broken_export"]}']),
      ('checkpoint of another model', [*base, '--mode=depth', f'--input={p["good.png"]}',
                                       f'--checkpoint={p["other_export"]}']),
      ('encode_latents without a latents_dir', [*base, '--mode=encode_latents']),
      ('encode_latents into latents of other settings', [
          *base, '--mode=encode_latents', f'--config.data.latents_dir={p["latents"]}']),
      ('train from latents of other settings', [*base,
                                                f'--config.data.latents_dir={p["latents"]}']),
      ('train from a missing latents_dir', [*base,
                                            f'--config.data.latents_dir={p["empty"]}/none']),
      ('non-positive encode batch', [*base, '--mode=encode_latents',
                                     '--config.data.encode_batch_per_device=0']),
      ('training workdir as --checkpoint', [*base, '--mode=depth', f'--input={p["good.png"]}',
                                            f'--checkpoint={p["train"]}']),
  ]


@contextlib.contextmanager
def captured_fd(fd: int):
  """Everything written to file descriptor ``fd`` inside the block -> the yielded list's [0]."""
  out = []
  sys.stdout.flush()
  sys.stderr.flush()
  saved = os.dup(fd)
  with tempfile.TemporaryFile() as tmp:
    os.dup2(tmp.fileno(), fd)
    try:
      yield out
    finally:
      sys.stdout.flush()
      sys.stderr.flush()
      os.dup2(saved, fd)
      os.close(saved)
      tmp.seek(0)
      out.append(tmp.read().decode(errors='replace'))


def run_case(argv: list[str]) -> tuple[int, str, str]:
  """(exit status, stderr, stdout) of main.cli(argv), in this process."""
  from wvd_jax import main  # pylint: disable=import-outside-toplevel
  flags.FLAGS.unparse_flags()
  for name in list(flags.FLAGS):  # Overrides are defined while --config is parsed.
    if name.startswith('config.'):
      delattr(flags.FLAGS, name)
  sys.modules.pop('config_config', None)  # ml_collections would exec a new file into it.
  sys.argv = ['wvd_jax.main', *argv]  # ml_collections reads the overrides from sys.argv.
  status = 0
  with captured_fd(2) as err, captured_fd(1) as out:
    try:
      main.cli(list(sys.argv))
    except SystemExit as e:
      status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
  return status, err[0], out[0]


def main_(directory: str, results_path: str):
  fixtures = build_fixtures(directory)
  results = []
  for name, argv in cases(fixtures) + [('verbose', [f'--config={fixtures["config.py"]}',
                                                    f'--workdir={fixtures["empty"]}',
                                                    '--mode=sample', '--verbose'])]:
    status, stderr, stdout = run_case(argv)
    results.append(dict(name=name, argv=argv, status=status, stderr=stderr, stdout=stdout))
  with open(results_path, 'w') as f:
    json.dump(dict(results=results, fixtures=fixtures), f)


if __name__ == '__main__':
  main_(sys.argv[1], sys.argv[2])
