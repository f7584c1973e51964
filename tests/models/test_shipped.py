"""The shipped-model format: pack an export, reassemble, verify, load; refusals of bad parts."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.conftest import tiny_config
from wvd_jax import errors
from wvd_jax.models import builder, inference_checkpoint, shipped


def _export(directory, config):
  params = nnx.to_pure_dict(nnx.state(builder.build_model(config, seed=0)))
  # Random values everywhere (some layers start at zero): every tensor carries information.
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  params = jax.tree.unflatten(tree, [jax.random.normal(k, x.shape) * 0.05
                                     for k, x in zip(keys, leaves)])
  inference_checkpoint.save(directory, config, params)
  return params


@pytest.fixture(scope='module')
def tiny_export(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp('shipped') / 'export')
  return directory, _export(directory, tiny_config())


@pytest.mark.parametrize('dtype', ['bfloat16', 'int8'])
def test_round_trip_error_is_bounded(tiny_export, tmp_path, dtype):
  export, params = tiny_export
  output = str(tmp_path / 'wvd_tiny')
  manifest = shipped.pack(export, output, dtype)
  assert manifest['dtype'] == dtype
  assert manifest['parameters'] == sum(np.size(x) for x in jax.tree.leaves(params))
  # Through the loader every task uses (an exported checkpoint's load hands shipped models on).
  config, graphdef, loaded = inference_checkpoint.load(output, tiny_config())
  assert config.model.width == 48
  for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(params)[0], jax.tree.leaves(loaded)):
    a, b = np.asarray(a), np.asarray(b)
    assert b.dtype == np.float32 and a.shape == b.shape, path
    if dtype == 'int8' and path[-1].key == 'kernel':  # Half a quantization step at most.
      step = np.abs(a).max(axis=-2, keepdims=True) / 127
      assert np.all(np.abs(a - b) <= step / 2 * 1.001 + 1e-9), path
    else:  # bf16 keeps 8 significant bits: relative error <= 2^-8 (round to nearest).
      assert np.all(np.abs(a - b) <= np.abs(a) * 2.0 ** -8), path
  # The model's output moves little.
  rng = np.random.default_rng(0)
  z = jnp.asarray(rng.normal(size=(1, 4, 16, 16, 6)).astype(np.float32))
  t, cond = jnp.array([0.5]), jnp.zeros((1, 4, 2))
  out = [builder.apply_model(graphdef, p, z, t, cond) for p in (params, loaded)]
  rel = float(jnp.linalg.norm(out[1] - out[0]) / jnp.linalg.norm(out[0]))
  assert rel < (0.01 if dtype == 'bfloat16' else 0.03), rel


def test_several_parts_each_within_the_limit(tmp_path):
  """A model of ~20 MB in bf16 needs two 16 MiB parts; a smaller part size gives more."""
  config = tiny_config()
  config.model.width, config.model.num_heads = 640, 8
  _, abstract = builder.abstract_model(config)
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda a: rng.normal(size=a.shape).astype(np.float32) * 0.05,
                        nnx.to_pure_dict(abstract))
  manifest = shipped.pack_params(config, params, str(tmp_path / 'wide'), 'bfloat16')
  sizes = [os.path.getsize(tmp_path / 'wide' / p['file']) for p in manifest['parts']]
  assert len(sizes) >= 2 and max(sizes) <= shipped.MAX_PART_BYTES == 16 * 2 ** 20
  assert sum(sizes) == manifest['bytes'] <= shipped.MAX_MODEL_BYTES
  assert 0 < manifest['bytes'] - 2 * manifest['parameters'] < 2 ** 16  # bf16 + the header.
  shipped.load(str(tmp_path / 'wide'))
  small = shipped.pack_params(config, params, str(tmp_path / 'small_parts'), 'bfloat16',
                              part_bytes=2 ** 20)
  assert len(small['parts']) > len(manifest['parts']) and small['sha256'] == manifest['sha256']
  assert all(p['bytes'] <= 2 ** 20 for p in small['parts'])
  with pytest.raises(errors.UserError, match='over the 10,000,000-byte budget.*smaller model'):
    shipped.pack_params(config, params, str(tmp_path / 'too_big'), 'int8', max_bytes=10 ** 7)
  assert not (tmp_path / 'too_big').exists()
  auto = shipped.pack_params(config, params, str(tmp_path / 'auto'), 'auto',
                             max_bytes=20 * 10 ** 6)
  assert auto['dtype'] == 'int8' and auto['bytes'] <= 20 * 10 ** 6  # bf16 would not fit.


@pytest.fixture
def packed(tiny_export, tmp_path):
  output = str(tmp_path / 'wvd_tiny')
  shipped.pack(tiny_export[0], output, 'bfloat16', part_bytes=50_000)
  return output


def test_a_flipped_byte_is_refused(packed, capsys):
  part = os.path.join(packed, shipped.PART_PREFIX + '001')
  data = bytearray(open(part, 'rb').read())
  data[123] ^= 0x01
  open(part, 'wb').write(bytes(data))
  with pytest.raises(errors.UserError, match=r'part-001 fails its checksum'):
    shipped.load(packed)
  assert shipped.main(['check', f'--model={packed}']) == 2
  err = capsys.readouterr().err
  assert err.count('\n') == 1 and err.startswith('error: ') and 'fails its checksum' in err


def test_a_missing_part_and_a_bad_manifest_are_refused(packed):
  os.remove(os.path.join(packed, shipped.PART_PREFIX + '002'))
  with pytest.raises(errors.UserError, match=r'part-002 is missing'):
    inference_checkpoint.load(packed)
  manifest = os.path.join(packed, shipped.MANIFEST)
  data = json.load(open(manifest))
  data['format'] = 'other'
  json.dump(data, open(manifest, 'w'))
  with pytest.raises(errors.UserError, match='manifest'):
    shipped.load(packed)


def test_cli_and_architecture_check(tiny_export, tmp_path, capsys):
  output = str(tmp_path / 'cli')
  assert shipped.main(['pack', f'--export={tiny_export[0]}', f'--output={output}']) == 0
  assert 'as bfloat16' in capsys.readouterr().out  # auto: bf16 fits the budget.
  assert shipped.main(['check', f'--model={output}']) == 0
  assert shipped.main(['pack', f'--export={tiny_export[0]}', f'--output={output}']) == 2
  assert 'exists' in capsys.readouterr().err
  other = tiny_config()
  other.model.width = 64
  with pytest.raises(errors.UserError, match='model.width: config 64 vs checkpoint 48'):
    shipped.load(output, other)


def test_the_kernel_choice_follows_the_loading_machine(tiny_export, tmp_path):
  """A model trained with the GPU-only kernels (model.norm_kernel='pallas') loads on a CPU: the
  kernel choice is the caller's (or the portable 'xla'), not the stored config's."""
  import shutil  # pylint: disable=import-outside-toplevel
  export = str(tmp_path / 'gpu_trained')
  shutil.copytree(tiny_export[0], export)
  path = os.path.join(export, 'config.json')
  with open(path) as f:
    stored = json.load(f)
  stored['model']['norm_kernel'] = 'pallas'
  with open(path, 'w') as f:
    json.dump(stored, f)
  config, graphdef, params = inference_checkpoint.load(export)
  assert config.model.norm_kernel == 'xla'
  mine = tiny_config()
  mine.model.norm_kernel = 'pallas_interpret'
  config, graphdef_interpreted, _ = inference_checkpoint.load(export, mine)
  assert config.model.norm_kernel == 'pallas_interpret'
  z = jnp.asarray(np.random.default_rng(0).normal(size=(1, 4, 16, 16, 6)).astype(np.float32))
  t, cond = jnp.array([0.5]), jnp.zeros((1, 4, 2))
  np.testing.assert_allclose(builder.apply_model(graphdef_interpreted, params, z, t, cond),
                             builder.apply_model(graphdef, params, z, t, cond),
                             rtol=1e-4, atol=1e-5)
