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

import contextlib
import errno

import jax
import orbax.checkpoint as ocp
from absl import logging

from wvd_jax import errors, files
from wvd_jax.models import builder, checkpoint_reader



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


def check_or_store_config(workdir: str, config) -> None:
  """Before anything is restored: the model of ``config`` must be the one the workdir's
  checkpoints were trained with (UserError naming the differing keys); then the config is stored
  beside them (checkpoints/config.json, what sample/export/eval check against)."""
  directory = checkpoint_reader.training_dir(workdir)
  stored = checkpoint_reader.read_config(directory)
  if stored is not None and checkpoint_reader.latest_training_step(workdir) is not None:
    checkpoint_reader.check_architecture(config, stored, directory)
  if jax.process_index() == 0:
    checkpoint_reader.write_config(directory, config)


_DISK_FULL = ('RESOURCE_EXHAUSTED', 'No space left on device', 'Disk quota exceeded')


@contextlib.contextmanager
def _disk_full_is_a_user_error(manager: ocp.CheckpointManager):
  """A save that fails for want of disk space (orbax reports it from a background thread, at the
  next save or wait) becomes one UserError line; the last complete checkpoint stays intact."""
  try:
    yield
  except (OSError, ValueError, RuntimeError) as e:
    if (getattr(e, 'errno', None) not in (errno.ENOSPC, errno.EDQUOT)
        and not any(m in str(e) for m in _DISK_FULL)):
      raise
    manager.reload()
    raise errors.UserError(
        f'disk full while writing a checkpoint under {manager.directory}: free space there (or '
        'use another --workdir) and run again; training resumes from the last complete '
        f'checkpoint (step {manager.latest_step()})') from e


def save(manager: ocp.CheckpointManager, state, global_batches: int | None = None, *,
         force: bool = False):
  """Saves ``state`` at its step with the data position (global batches consumed; default the
  step, one global batch a step)."""
  step = int(jax.device_get(state.step))
  position = {'global_batches': step if global_batches is None else int(global_batches)}
  with _disk_full_is_a_user_error(manager):
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                               data_position=ocp.args.JsonSave(position)),
                 force=force)


def wait(manager: ocp.CheckpointManager) -> None:
  """Waits for the pending asynchronous save (UserError when the disk filled up)."""
  with _disk_full_is_a_user_error(manager):
    manager.wait_until_finished()


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


def restore_params(config, workdir: str, use_ema: bool = True):
  """(graphdef, params) of the newest checkpoint in ``workdir``, sharded on this process's mesh
  (models/checkpoint_reader.py reads them; UserError when there is none or the model differs)."""
  from wvd_jax.training import sharding  # pylint: disable=import-outside-toplevel
  mesh = sharding.make_mesh(config)
  _, abstract_state = builder.abstract_model(config)
  params_sh = sharding.param_shardings(abstract_state, mesh)
  graphdef, params = checkpoint_reader.restore_training_params(config, workdir, use_ema,
                                                               params_sh)
  logging.info('loaded checkpoint at step %d', checkpoint_reader.latest_training_step(workdir))
  return graphdef, params
