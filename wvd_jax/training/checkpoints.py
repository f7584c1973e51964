"""Orbax checkpoints of the train state together with the global data position.

A checkpoint step directory holds 'state' (the TrainState pytree, restored with the shardings of
the current mesh, so a run may resume on another topology) and 'data_position' (JSON
{"global_batches": k}: the number of global batches consumed, so the resumed run reads global
batch k next with pipeline.make_dataset(start_batch=k), on any number of processes; global
batch k's examples do not depend on the process count). Every process saves and restores
together; orbax writes each process's shards of the state and process 0 the JSON.
Orbax writes each step to a temporary directory and renames it when complete, so an interrupted
save never replaces the last good checkpoint.
"""
from __future__ import annotations

import jax
import orbax.checkpoint as ocp
from absl import logging

from wvd_jax import files


def make_manager(workdir, config, *, async_save: bool = True) -> ocp.CheckpointManager:
  """The manager of <workdir>/checkpoints; ``workdir`` may be a URI (gs://...), passed on as an
  epath.Path. Every process of a multi-host job makes one and calls save/restore together."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=config.train.keep_checkpoints,
      enable_async_checkpointing=async_save,
      create=True,
  )
  return ocp.CheckpointManager(files.as_path(workdir) / 'checkpoints', options=options,
                               item_names=('state', 'data_position'))


def save(manager: ocp.CheckpointManager, state, global_batches: int | None = None, *,
         force: bool = False):
  """Saves ``state`` at its step with the data position (global batches consumed; default the
  step, one global batch a step)."""
  step = int(jax.device_get(state.step))
  position = {'global_batches': step if global_batches is None else int(global_batches)}
  manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                             data_position=ocp.args.JsonSave(position)),
               force=force)


def restore_latest(manager: ocp.CheckpointManager, abstract_state):
  """Restores the newest complete checkpoint into ``abstract_state``'s shapes and shardings.

  Returns the restored TrainState, or None when there is no checkpoint."""
  step = manager.latest_step()
  if step is None:
    return None
  restored = manager.restore(
      step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
  return restored['state']


def data_position(manager: ocp.CheckpointManager, step: int) -> int:
  """Global batches consumed at checkpoint ``step`` (the step itself for checkpoints written
  before the position was saved)."""
  if 'data_position' not in manager.item_metadata(step):
    return step
  restored = manager.restore(step, args=ocp.args.Composite(data_position=ocp.args.JsonRestore()))
  return int(restored['data_position']['global_batches'])


def abstract_like(state_shardings, state_shapes):
  """ShapeDtypeStructs carrying shardings, the restore target for another topology."""
  return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                      state_shapes, state_shardings)


def restore_params(config, workdir, use_ema: bool = True):
  """(graphdef, params) of the newest checkpoint in ``workdir``, sharded on the config's mesh
  (across processes in a multi-host job: gather with multihost.host_copy to read them).

  Raises FileNotFoundError naming the directory when there is no checkpoint.
  """
  from wvd_jax.training import optimizer, sharding  # pylint: disable=import-outside-toplevel
  from wvd_jax.training import state as state_lib  # pylint: disable=import-outside-toplevel
  mesh = sharding.make_mesh(config)
  tx = optimizer.make_optimizer(config)
  graphdef, state_sh = state_lib.state_shardings(config, mesh, tx)
  manager = make_manager(workdir, config, async_save=False)
  if manager.latest_step() is None:
    raise FileNotFoundError(f'no checkpoint under {manager.directory}; '
                            'run --mode=train first')
  shapes = jax.eval_shape(lambda: state_lib.create_train_state(config, mesh, tx)[1])
  state = restore_latest(manager, abstract_like(state_sh, shapes))
  logging.info('loaded checkpoint at step %d', int(state.step))
  return graphdef, (state.ema_params if use_ema else state.params)
