"""Inference checkpoints: EMA parameters + the config that built them, no optimizer state.

Layout of an exported directory:
  config.json   the full ml_collections config (JSON)
  params/       an orbax checkpoint of the parameter tree (pure dict of float32 arrays)
It is written under a temporary name and renamed when complete. Loading checks that the stored
model matches the model section of the caller's config, if one is given.
"""
from __future__ import annotations

import os
import shutil
import tempfile

import jax
import ml_collections
import orbax.checkpoint as ocp
from flax import nnx

from wvd_jax import errors
from wvd_jax.models import builder, checkpoint_reader


def save(path: str, config: ml_collections.ConfigDict, params) -> None:
  """Writes ``params`` (pure dict) and ``config`` to the directory ``path`` atomically."""
  path = os.path.abspath(path)
  parent = os.path.dirname(path)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(dir=parent, prefix='.' + os.path.basename(path) + '.tmp')
  try:
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.join(tmp, 'params'), params)
    checkpointer.wait_until_finished()
    checkpoint_reader.write_config(tmp, config)
    if os.path.exists(path):
      shutil.rmtree(path)
    os.replace(tmp, path)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def load_config(path: str) -> ml_collections.ConfigDict:
  stored = checkpoint_reader.read_config(path)
  if stored is None:
    raise errors.UserError(f'{path} is not an exported wvd_jax checkpoint (no config.json): '
                           'write one with --mode=export, or pass --checkpoint=<its directory>')
  return stored


def load(path: str, config: ml_collections.ConfigDict | None = None):
  """Returns (config, graphdef, params) of an exported checkpoint.

  If ``config`` is given, its architecture (checkpoint_reader.ARCHITECTURE_KEYS) must equal the
  stored one (a checkpoint of another model would otherwise fail deep inside orbax with shape
  errors); runtime settings (remat, scan_layers, dtypes) may differ.
  """
  stored = load_config(path)
  if config is not None:
    checkpoint_reader.check_architecture(config, stored, path)
  graphdef, abstract_state = builder.abstract_model(stored)
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                        nnx.to_pure_dict(abstract_state))
  params = checkpoint_reader.orbax_read(
      path, lambda: ocp.StandardCheckpointer().restore(
          os.path.join(os.path.abspath(path), 'params'), target))
  return stored, graphdef, params
