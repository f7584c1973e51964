"""Inference checkpoints: EMA parameters + the config that built them, no optimizer state.

Layout of an exported directory:
  config.json   the full ml_collections config (JSON)
  params/       an orbax checkpoint of the parameter tree (pure dict of float32 arrays)
It is written under a temporary name and renamed when complete. Loading checks that the stored
model matches the model section of the caller's config, if one is given.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile

import jax
import ml_collections
import orbax.checkpoint as ocp
from flax import nnx

from wvd_jax import files
from wvd_jax.models import builder

# Config keys that shape the parameters (remat, scan, dtypes and attention do not).
_ARCHITECTURE_KEYS = {
    'model': ('patch_size', 'width', 'depth', 'num_heads', 'mlp_ratio'),
    'autoencoder': ('kind', 'latent_channels', 'downsample'),
    # Same parameters, another meaning: an RGB-only ablation must not run as an XYZ model.
    'diffusion': ('modalities',),
}
_DEFAULTS = {'diffusion.modalities': 'rgb_xyz'}  # Of configs stored before the key existed.


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
    with files.atomic_write(os.path.join(tmp, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=2))
    if os.path.exists(path):
      shutil.rmtree(path)
    os.replace(tmp, path)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def load_config(path: str) -> ml_collections.ConfigDict:
  config_path = os.path.join(path, 'config.json')
  if not os.path.isfile(config_path):
    raise FileNotFoundError(f'{path} is not an exported wvd_jax checkpoint (no config.json); '
                            'write one with --mode=export')
  with open(config_path) as f:
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
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                        nnx.to_pure_dict(abstract_state))
  params = ocp.StandardCheckpointer().restore(os.path.join(os.path.abspath(path), 'params'),
                                              target)
  return stored, graphdef, params
