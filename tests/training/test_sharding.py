"""Sharding: rules -> parameter specs, and the DiT on 4 simulated CPU devices.

The multi-device checks run in one subprocess (this file run as a script) with
XLA_FLAGS=--xla_force_host_platform_device_count=4, since the pytest process has 1 CPU device.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BATCH, FRAMES, SIZE = 4, 2, 8
TINY = dict(in_channels=6, patch_size=2, width=64, depth=1, num_heads=4)


def _worker() -> dict:
  """Runs on 4 CPU devices; returns the measurements the tests assert on."""
  import time

  import jax
  import jax.numpy as jnp
  from flax import nnx

  import configs.wvd_2b as wvd_2b
  from tests.conftest import tiny_config
  from tests.models.test_dit import random_params
  from wvd_jax.models import builder, dit
  from wvd_jax.training import sharding

  assert jax.device_count() == 4, jax.devices()
  start = time.perf_counter()
  lap = lambda what: print(f'{what}: {time.perf_counter() - start:.1f} s', file=sys.stderr)
  spec_json = lambda spec: [list(a) if isinstance(a, tuple) else a for a in spec]
  result = {}
  graphdef, params = random_params(dit.DiTConfig(**TINY))
  state = nnx.state(nnx.eval_shape(lambda: dit.DiT(dit.DiTConfig(**TINY), rngs=nnx.Rngs(0))))
  x = jax.random.normal(jax.random.PRNGKey(2), (BATCH, FRAMES, SIZE, SIZE, 6))
  t = jnp.linspace(0.1, 0.9, BATCH)
  cond = jnp.zeros((BATCH, FRAMES, 2)).at[:, 0, 0].set(1.0)

  def forward(p, x, t, c):
    return nnx.merge(graphdef, p)(x, t, c)

  reference = np.asarray(jax.jit(forward)(params, x, t, cond))
  lap('reference')
  config = tiny_config()
  for name, (fsdp, tensor) in {'fsdp4': (4, 1), 'fsdp2_tensor2': (2, 2)}.items():
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 1, fsdp, tensor
    mesh = sharding.make_mesh(config)
    p_sh = sharding.param_shardings(state, mesh)
    b_sh = sharding.batch_sharding(mesh)
    args = (jax.device_put(params, p_sh), *(jax.device_put(a, b_sh) for a in (x, t, cond)))
    with sharding.use_mesh(mesh):
      fn = jax.jit(forward)
      hlo = fn.lower(*args).as_text()
      out = fn(*args)
    fc1 = args[0]['blocks']['mlp']['fc1']['kernel']
    result[name] = dict(
        max_abs_diff=float(np.abs(np.asarray(out) - reference).max()),
        max_abs=float(np.abs(reference).max()),
        num_constraints=hlo.count('sharding_constraint') + hlo.count('@Sharding'),
        fc1_spec=spec_json(fc1.sharding.spec),
        fc1_shard_shape=list(fc1.addressable_shards[0].data.shape),
        out_spec=spec_json(out.sharding.spec))
    lap(name)
  with jax.set_mesh(mesh):  # A mesh without rules: constraints stay off.
    fresh = lambda *a: forward(*a)  # A new function: jit's trace cache ignores the rules.
    result['constraints_without_rules'] = jax.jit(fresh).lower(*args).as_text().count(
        'sharding_constraint')

  # The 2B model initializes directly sharded: lower (never run) the jitted init with the rules'
  # out_shardings on fsdp=4; the shardings of its outputs give each device's share.
  config = wvd_2b.get_config()
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 1, 4, 1
  mesh = sharding.make_mesh(config)
  _, abstract = builder.abstract_model(config)
  shardings = sharding.param_shardings(abstract, mesh)
  init = jax.jit(lambda: nnx.to_pure_dict(nnx.state(builder.build_model(config))),
                 out_shardings=shardings)
  lowered = init.lower()
  out = lowered.out_info
  total = sum(v.size * v.dtype.itemsize for v in jax.tree.leaves(out))
  per_device = sum(int(np.prod(v.sharding.shard_shape(v.shape))) * v.dtype.itemsize
                   for v in jax.tree.leaves(out))
  lap('init_2b lowered')
  result['init_2b'] = dict(total_bytes=int(total), per_device_output_bytes=int(per_device),
                           qkv_shape=list(out['blocks']['attn']['qkv']['kernel'].shape),
                           qkv_spec=spec_json(out['blocks']['attn']['qkv']['kernel'].sharding.spec))
  return result


@pytest.fixture(scope='module')
def four_devices():
  # LLVM -O0: XLA:CPU compiles ~2x faster; the reference runs in the same process and flags.
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4 '
             '--xla_backend_optimization_level=0',
             JAX_PLATFORMS='cpu', PYTHONPATH=REPO)
  proc = subprocess.run([sys.executable, os.path.abspath(__file__)], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize('mesh', ['fsdp4', 'fsdp2_tensor2'])
def test_sharded_forward_equals_single_device(four_devices, mesh):
  r = four_devices[mesh]
  assert r['max_abs'] > 0.1  # The perturbed model computes something non-trivial.
  assert r['max_abs_diff'] < 1e-5 * max(1.0, r['max_abs']), r
  assert r['num_constraints'] > 0  # use_mesh turned the activation constraints on.
  assert r['out_spec'][0] in ('fsdp', ['data', 'fsdp']), r  # Batch-sharded (size-1 'data' may
  assert len(r['out_spec']) == 1, r  # be dropped), the rest replicated.


def test_parameters_are_really_sharded(four_devices):
  r = four_devices['fsdp4']
  assert r['fc1_spec'] == [None, 'fsdp', 'tensor']
  assert r['fc1_shard_shape'] == [TINY['depth'], TINY['width'] // 4, 4 * TINY['width']]
  r = four_devices['fsdp2_tensor2']
  assert r['fc1_shard_shape'] == [TINY['depth'], TINY['width'] // 2, 2 * TINY['width']]
  assert four_devices['constraints_without_rules'] == 0


def test_2b_model_initializes_directly_sharded(four_devices):
  r = four_devices['init_2b']
  # ~8.5 GB of float32 parameters; each of 4 devices holds ~1/4 (small vectors replicated).
  assert 7.6e9 < r['total_bytes'] < 8.8e9
  assert r['per_device_output_bytes'] < 0.26 * r['total_bytes'], r
  assert r['qkv_spec'] == [None, 'fsdp', 'tensor'], r
  assert r['qkv_shape'] == [28, 2048, 3 * 2048], r  # Global shapes; each device holds 1/4.


def test_param_specs_follow_the_rules():
  import jax
  from flax import nnx
  from jax.sharding import Mesh, PartitionSpec as P

  from wvd_jax.models import dit
  from wvd_jax.training import sharding
  mesh = Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1, 1), sharding.MESH_AXES)
  abstract = nnx.state(nnx.eval_shape(lambda: dit.DiT(dit.DiTConfig(**TINY), rngs=nnx.Rngs(0))))
  specs = jax.tree.map(lambda s: s.spec, sharding.param_shardings(abstract, mesh))
  blocks = specs['blocks']
  assert blocks['attn']['qkv']['kernel'] == P(None, 'fsdp', 'tensor')
  assert blocks['attn']['out']['kernel'] == P(None, 'tensor', 'fsdp')
  assert blocks['mlp']['fc1']['kernel'] == P(None, 'fsdp', 'tensor')
  assert blocks['mlp']['fc2']['kernel'] == P(None, 'tensor', 'fsdp')
  assert blocks['modulation']['kernel'] == P(None, 'fsdp', 'tensor')
  assert blocks['attn']['q_norm']['scale'] == P(None, None)
  assert specs['patch_embed']['kernel'] == P(None, 'fsdp')
  assert specs['head']['kernel'] == P('fsdp', None)
  assert specs['cond_embed'] == P(None, None)


def test_logical_spec_replicates_what_the_mesh_cannot_divide():
  from jax.sharding import PartitionSpec as P

  from wvd_jax.models import layers
  from wvd_jax.training import sharding
  mesh_shape = {'data': 2, 'fsdp': 4, 'tensor': 2}
  spec = lambda shape, names: layers.logical_to_mesh_spec(shape, names,
                                                           sharding.LOGICAL_AXIS_RULES, mesh_shape)
  assert spec((8, 48), ('embed', 'mlp')) == P('fsdp', 'tensor')
  assert spec((6, 48), ('embed', 'mlp')) == P(None, 'tensor')  # 6 % 4 != 0.
  assert spec((16, 5, 64), layers.TOKENS) == P(('data', 'fsdp'), None, None)
  assert spec((4, 5, 64), layers.TOKENS) == P(None, None, None)  # Batch 4 on 8 data shards.
  assert spec((3,), ('unknown_name',)) == P(None)


if __name__ == '__main__':
  sys.path.insert(0, REPO)
  print(json.dumps(_worker()))


def test_mesh_and_batch_errors_name_the_keys(config):
  import types  # pylint: disable=import-outside-toplevel
  from wvd_jax import config_lib  # pylint: disable=import-outside-toplevel
  from wvd_jax.training import sharding  # pylint: disable=import-outside-toplevel
  config.data.batch_size = 4
  with pytest.raises(config_lib.ConfigError, match=r'batch_size=4 .* data x fsdp = 2 x 4 = 8'):
    sharding.check_batch(config, types.SimpleNamespace(shape={'data': 2, 'fsdp': 4}))
  config.mesh.dcn_fsdp = 2  # One process here: no DCN axis of 2.
  with pytest.raises(config_lib.ConfigError, match=r'dcn_fsdp=2 does not divide'):
    sharding.make_mesh(config)
  config.mesh.dcn_fsdp = 1
  config.mesh.logical_axis_rules = (('embed', 'model'),)
  with pytest.raises(config_lib.ConfigError, match=r'mesh.logical_axis_rules'):
    config_lib.validate_config(config)


def test_axis_rules_come_from_the_config(config):
  """Rules are a config key: replicating 'embed' changes the parameter shardings' specs."""
  import jax  # pylint: disable=import-outside-toplevel
  from wvd_jax.models import builder  # pylint: disable=import-outside-toplevel
  from wvd_jax.training import sharding  # pylint: disable=import-outside-toplevel
  _, abstract = builder.abstract_model(config)
  mesh = sharding.make_mesh(config)

  def specs(rules):
    shardings = sharding.param_shardings(abstract, mesh, rules)
    return [tuple(s.spec) for s in jax.tree.leaves(shardings)]

  assert any('fsdp' in spec for spec in specs(sharding.axis_rules(config)))
  config.mesh.logical_axis_rules = tuple((n, None) if n == 'embed' else (n, t)
                                         for n, t in config.mesh.logical_axis_rules)
  assert all('fsdp' not in spec for spec in specs(sharding.axis_rules(config)))
