"""Inference checkpoints: EMA parameters + the config that built them, no optimizer state.

Layout of an exported directory:
  config.json   the full ml_collections config (JSON)
  params/       an orbax checkpoint of the parameter tree (pure dict of float32 arrays)
It is written under a temporary name (.<name>.tmp) and renamed when complete; in a multi-host
job every process calls ``save`` with its shards of the parameters and process 0 finishes the
directory. ``path`` may be a URI (gs://...). Loading checks that the stored model matches the
model section of the caller's config, if one is given, and gives every process a whole copy.
``load`` also reads a shipped model (models/shipped.py: the packed form kept in pretrained/).
"""
from __future__ import annotations

import os

import jax
import ml_collections
import orbax.checkpoint as ocp
from flax import nnx

from wvd_jax import errors, files, multihost
from wvd_jax.models import builder, checkpoint_reader


def save(path: str | os.PathLike, config: ml_collections.ConfigDict, params) -> None:
  """Writes ``params`` (pure dict of numpy arrays or jax.Arrays, sharded across processes in a
  multi-host job: every process calls this) and ``config`` to the directory ``path``
  atomically."""
  path = files.as_path(path)
  tmp = path.parent / f'.{path.name}.tmp'  # The same name on every process.
  primary = multihost.is_primary()
  if primary:
    if tmp.exists():
      tmp.rmtree()
    tmp.mkdir(parents=True)
  multihost.sync('inference_checkpoint_tmp')
  try:
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp / 'params', params)
    checkpointer.wait_until_finished()
    if primary:
      checkpoint_reader.write_config(tmp, config)
      if path.exists():
        path.rmtree()
      tmp.rename(path)
  except BaseException:
    if primary and tmp.exists():
      tmp.rmtree()
    raise
  multihost.sync('inference_checkpoint_done')


def load_config(path: str | os.PathLike) -> ml_collections.ConfigDict:
  stored = checkpoint_reader.read_config(path)
  if stored is None:
    raise errors.UserError(f'{path} is not an exported wvd_jax checkpoint (no config.json): '
                           'write one with --mode=export, or pass --checkpoint=<its directory>')
  return stored


def load(path: str, config: ml_collections.ConfigDict | None = None):
  """Returns (config, graphdef, params) of an exported checkpoint.

  If ``config`` is given, its architecture (checkpoint_reader.ARCHITECTURE_KEYS) must equal the
  stored one (a checkpoint of another model would otherwise fail deep inside orbax with shape
  errors); runtime settings (remat, scan_layers, dtypes) may differ. A shipped model's directory
  (models/shipped.py: manifest.json and weight parts) loads through shipped.load.
  """
  if files.is_local(path) and os.path.isfile(os.path.join(os.fspath(path), 'manifest.json')):
    # Imported here: saving and reading exports never need safetensors.
    from wvd_jax.models import shipped  # pylint: disable=import-outside-toplevel
    return shipped.load(path, config)
  stored = load_config(path)
  if config is not None:
    checkpoint_reader.check_architecture(config, stored, path)
  stored = checkpoint_reader.with_runtime_settings(stored, config)
  graphdef, abstract_state = builder.abstract_model(stored)
  # A whole copy on this process's first device (in a multi-host job: on every process).
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                        nnx.to_pure_dict(abstract_state))
  params = checkpoint_reader.orbax_read(
      path, lambda: ocp.StandardCheckpointer().restore(files.as_path(path) / 'params', target))
  return stored, graphdef, params
