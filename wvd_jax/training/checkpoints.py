"""Orbax checkpoints of the train state together with the grain iterator state.

A checkpoint step directory holds 'state' (the TrainState pytree, restored with the shardings of
the current mesh, so a run may resume on another topology) and 'data' (the grain iterator's
position, so the next batch after a resume is the one that would have come next).
Orbax writes each step to a temporary directory and renames it when complete, so an interrupted
save never replaces the last good checkpoint.
"""
from __future__ import annotations

import contextlib
import errno
import os

import grain
import jax
import orbax.checkpoint as ocp
from absl import logging

from wvd_jax import errors
from wvd_jax.models import builder, checkpoint_reader


def make_manager(workdir: str, config, *, async_save: bool = True) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      max_to_keep=config.train.keep_checkpoints,
      enable_async_checkpointing=async_save,
      create=True,
  )
  return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, 'checkpoints')),
                               options=options, item_names=('state', 'data'))


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


def save(manager: ocp.CheckpointManager, state, data_iterator=None, *, force: bool = False):
  items = {'state': ocp.args.StandardSave(state)}
  if data_iterator is not None:
    items['data'] = grain.checkpoint.CheckpointSave(data_iterator)
  with _disk_full_is_a_user_error(manager):
    manager.save(int(jax.device_get(state.step)), args=ocp.args.Composite(**items), force=force)


def wait(manager: ocp.CheckpointManager) -> None:
  """Waits for the pending asynchronous save (UserError when the disk filled up)."""
  with _disk_full_is_a_user_error(manager):
    manager.wait_until_finished()


def restore_latest(manager: ocp.CheckpointManager, abstract_state, data_iterator=None):
  """Restores the newest complete checkpoint into ``abstract_state``'s shapes and shardings.

  Returns the restored TrainState, or None when there is no checkpoint. ``data_iterator`` (a
  grain DatasetIterator) is moved to the saved position in place.
  """
  step = manager.latest_step()
  if step is None:
    return None
  items = {'state': ocp.args.StandardRestore(abstract_state)}
  if data_iterator is not None:
    items['data'] = grain.checkpoint.CheckpointRestore(data_iterator)
  restored = manager.restore(step, args=ocp.args.Composite(**items))
  return restored['state']


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
