"""Inference checkpoints: EMA parameters + the config that built them, no optimizer state.

Layout of an exported directory:
  config.json   the full ml_collections config (JSON)
  params/       an orbax checkpoint of the parameter tree (pure dict of float32 arrays)
It is written under a temporary name (.<name>.tmp) and renamed when complete; in a multi-host
job every process calls ``save`` with its shards of the parameters and process 0 finishes the
directory. ``path`` may be a URI (gs://...). Loading checks that the stored model matches the
model section of the caller's config, if one is given, and gives every process a whole copy.
"""
from __future__ import annotations

import json
import os

import jax
import ml_collections
import orbax.checkpoint as ocp
from flax import nnx

from wvd_jax import files, multihost
from wvd_jax.models import builder

# Config keys that shape the parameters (remat, scan, dtypes and attention do not).
_ARCHITECTURE_KEYS = {
    'model': ('patch_size', 'width', 'depth', 'num_heads', 'mlp_ratio'),
    'autoencoder': ('kind', 'latent_channels', 'downsample'),
    # Same parameters, another meaning: an RGB-only ablation must not run as an XYZ model.
    'diffusion': ('modalities',),
}
_DEFAULTS = {'diffusion.modalities': 'rgb_xyz'}  # Of configs stored before the key existed.


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
      with files.atomic_write(tmp / 'config.json', 'w') as f:
        f.write(config.to_json_best_effort(indent=2))
      if path.exists():
        path.rmtree()
      tmp.rename(path)
  except BaseException:
    if primary and tmp.exists():
      tmp.rmtree()
    raise
  multihost.sync('inference_checkpoint_done')


def load_config(path: str | os.PathLike) -> ml_collections.ConfigDict:
  config_path = files.as_path(path) / 'config.json'
  if not config_path.is_file():
    raise FileNotFoundError(f'{path} is not an exported wvd_jax checkpoint (no config.json); '
                            'write one with --mode=export')
  with config_path.open() as f:
    return ml_collections.ConfigDict(json.load(f))


def load(path: str, config: ml_collections.ConfigDict | None = None):
  """Returns (config, graphdef, params) of an exported checkpoint.

  If ``config`` is given, its architecture (the keys of _ARCHITECTURE_KEYS) must equal the
  stored one (a checkpoint of another model would otherwise fail deep inside orbax with shape
  errors); runtime settings (remat, scan_layers, dtypes) may differ.
  """
  stored = load_config(path)
  if config is not None:
    for section, keys in _ARCHITECTURE_KEYS.items():
      pairs = {k: tuple(c[section].get(k, _DEFAULTS.get(f'{section}.{k}'))
                        for c in (config, stored)) for k in keys}
      diff = {k: (a, b) for k, (a, b) in pairs.items() if a != b}
      if diff:
        details = ', '.join(f'{section}.{k}: config {a!r} vs checkpoint {b!r}'
                            for k, (a, b) in sorted(diff.items()))
        raise ValueError(f'checkpoint {path} was trained with another config ({details})')
  graphdef, abstract_state = builder.abstract_model(stored)
  # A whole copy on this process's first device (in a multi-host job: on every process).
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                        nnx.to_pure_dict(abstract_state))
  params = ocp.StandardCheckpointer().restore(files.as_path(path) / 'params', target)
  return stored, graphdef, params
