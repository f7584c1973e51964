"""Subprocess entry for tests that need several (simulated) devices or processes.

  python -m tests.training.multidevice_worker <case> <outdir> [process_id]

The parent test sets XLA_FLAGS=--xla_force_host_platform_device_count=K before starting it.
Each case writes its results as .npz under <outdir> for the parent to compare.
"""
import os
import sys

import jax
import numpy as np

from tests.conftest import tiny_config
from wvd_jax.data import pipeline
from wvd_jax.models import autoencoder
from wvd_jax.training import checkpoints, optimizer, sharding, train
from wvd_jax.training import state as state_lib

NUM_STEPS = 3


def _fixed_global_batch(config, workdir):
  """The first global batch of the train split, identical in every process."""
  return next(iter(pipeline.make_dataset(config, 'train', workdir)))


def _run_steps(config, mesh, batch_rows, num_steps=NUM_STEPS):
  """num_steps train steps on one batch; batch_rows are this process's rows of it."""
  tx = optimizer.make_optimizer(config)
  graphdef, state, state_sh = state_lib.create_train_state(config, mesh, tx)
  step = jax.jit(train.make_train_step(config, graphdef, tx, autoencoder.PixelAutoencoder()),
                 in_shardings=(state_sh, sharding.batch_sharding(mesh)),
                 out_shardings=(state_sh, None))
  batch = sharding.global_batch(batch_rows, mesh)
  losses = []
  for _ in range(num_steps):
    state, metrics = step(state, batch)
    losses.append(float(metrics['loss']))
  return state, state_sh, np.array(losses)


def _gather(tree):
  """Fully replicated host copies (works across processes)."""
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  return [np.asarray(x) for x in
          jax.tree.leaves(multihost_utils.process_allgather(tree, tiled=True))]


MESHES = {'single': (1, 1, 1, 1), 'data2_fsdp2': (2, 2, 1, 4), 'fsdp2_tensor2': (1, 2, 2, 4),
          'data2_fsdp4': (2, 4, 1, 8)}


def case_mesh(outdir, names):
  """The same batch on the named meshes of MESHES (data, fsdp, tensor, devices)."""
  config = tiny_config()
  config.data.batch_size = max(4, *(MESHES[n][3] for n in names))  # Divisible by every mesh.
  batch = _fixed_global_batch(config, outdir)
  results = {}
  for name in names:
    data, fsdp, tensor, ndev = MESHES[name]
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = data, fsdp, tensor
    mesh = sharding.make_mesh(config, jax.devices()[:ndev])
    state, _, losses = _run_steps(config, mesh, batch)
    results[f'{name}_losses'] = losses
    for i, leaf in enumerate(_gather(state.params)):
      results[f'{name}_param{i}'] = leaf
  np.savez(os.path.join(outdir, 'mesh.npz'), **results)


def case_sampling(outdir):
  """Sampling with the batch spread over all devices equals sampling on one device."""
  from wvd_jax.diffusion import generate  # pylint: disable=import-outside-toplevel
  config = tiny_config()
  mesh = sharding.make_mesh(config, jax.devices()[:1])
  tx = optimizer.make_optimizer(config)
  graphdef, state, _ = state_lib.create_train_state(config, mesh, tx)
  params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.PRNGKey(p.size), p.shape),
                        jax.device_get(state.params))
  rgb0 = jax.random.uniform(jax.random.PRNGKey(1), (len(jax.devices()), 16, 16, 3), minval=-1)
  spread = generate.sample_from_first_frame(config, graphdef, params, rgb0, 4,
                                            jax.random.PRNGKey(2))
  assert len(spread[0].sharding.device_set) == len(jax.devices()), spread[0].sharding
  with jax.default_device(jax.devices()[0]):
    generate._spread_over_devices = lambda *a: a  # pylint: disable=protected-access
    single = generate.sample_from_first_frame(config, graphdef, params, rgb0, 4,
                                              jax.random.PRNGKey(2))
  np.savez(os.path.join(outdir, 'sampling.npz'), spread_rgb=spread[0], spread_xyz=spread[1],
           single_rgb=single[0], single_xyz=single[1])


def case_topology(outdir):
  """Save with fsdp=4; restore with fsdp=2 x data=2 and on one device; train on."""
  config = tiny_config()
  batch = _fixed_global_batch(config, outdir)
  config.mesh.data, config.mesh.fsdp = 1, 4
  mesh4 = sharding.make_mesh(config)
  state, _, _ = _run_steps(config, mesh4, batch, num_steps=2)
  manager = checkpoints.make_manager(outdir, config, async_save=False)
  checkpoints.save(manager, state)
  manager.wait_until_finished()
  saved = _gather(state)
  results = {}
  for name, (data, fsdp, devices) in {'fsdp2': (2, 2, jax.devices()),
                                      'one': (1, 1, jax.devices()[:1])}.items():
    config.mesh.data, config.mesh.fsdp = data, fsdp
    mesh = sharding.make_mesh(config, devices)
    tx = optimizer.make_optimizer(config)
    graphdef, state_sh = state_lib.state_shardings(config, mesh, tx)
    shapes = jax.eval_shape(lambda: state)
    restored = checkpoints.restore_latest(manager, checkpoints.abstract_like(state_sh, shapes))
    leaf = jax.tree.leaves(restored.params)[0]
    assert leaf.sharding.mesh.devices.size == len(devices), leaf.sharding
    results[f'{name}_max_diff'] = max(float(np.max(np.abs(a - b)))
                                      for a, b in zip(saved, _gather(restored)))
    step = jax.jit(train.make_train_step(config, graphdef, tx, autoencoder.PixelAutoencoder()),
                   in_shardings=(state_sh, sharding.batch_sharding(mesh)),
                   out_shardings=(state_sh, None))
    continued, metrics = step(restored, sharding.global_batch(batch, mesh))
    results[f'{name}_continued_step'] = int(continued.step)
    results[f'{name}_continued_loss'] = float(metrics['loss'])
  np.savez(os.path.join(outdir, 'topology.npz'), **results)


if __name__ == '__main__':
  case, out = sys.argv[1], sys.argv[2]
  if case == 'mesh':
    case_mesh(out, sys.argv[3].split(','))
  elif case == 'sampling':
    case_sampling(out)
  elif case == 'topology':
    case_topology(out)
  else:
    raise SystemExit(f'unknown case {case}')
