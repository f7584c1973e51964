"""Reading model parameters from training and exported checkpoints, the config check first.

Both kinds of checkpoint keep the config that built them beside the arrays:
  <workdir>/checkpoints/config.json   written by --mode=train before its first save
  <export>/config.json                written by --mode=export (models/inference_checkpoint.py)
Before orbax reads anything, the caller's config is compared with the stored one on the keys that
shape the parameters (ARCHITECTURE_KEYS): a mismatch is one UserError line naming every differing
key with both values, instead of hundreds of lines of orbax shape errors.

This module serves --mode=sample (tasks), --mode=export and resuming (training) alike, so tasks
need not import training.
"""
from __future__ import annotations

import json
import os

import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx

from wvd_jax import errors, files
from wvd_jax.models import builder

# Config keys that shape the parameters (remat, scan, dtypes and attention do not).
ARCHITECTURE_KEYS = {
    'model': ('patch_size', 'width', 'depth', 'num_heads', 'mlp_ratio', 'fp8', 'mlp_bias',
              'qk_norm'),
    'autoencoder': ('kind', 'latent_channels', 'downsample'),
    # Same parameters, another meaning: an RGB-only ablation must not run as an XYZ model, nor
    # a model trained with XYZ at its own noise levels be sampled at others.
    'diffusion': ('modalities', 'xyz_schedule_shift'),
    # XYZ's scale in the box: tasks normalize known XYZ as the model was trained.
    'data': ('xyz_box_fill',),
}
# Of configs stored before the keys existed.
_DEFAULTS = {'diffusion.modalities': 'rgb_xyz', 'diffusion.xyz_schedule_shift': 1.0,
             'data.xyz_box_fill': 1.0, 'model.fp8': False, 'model.mlp_bias': True,
             'model.qk_norm': True}
CONFIG_FILE = 'config.json'
# Runtime choices of the machine that trained a model, not part of it: a loaded checkpoint takes
# them from the caller's config, or these portable defaults (a GPU-only kernel would otherwise
# make a GPU-trained export unloadable on a CPU).
_RUNTIME_DEFAULTS = {'norm_kernel': 'xla', 'qkv_matmuls': 'fused'}


def training_dir(workdir: str | os.PathLike) -> epath.Path:
  """Where --mode=train keeps its orbax checkpoints (one directory per step) and config.json
  (``workdir`` may be a URI: files.as_path)."""
  return files.as_path(workdir) / 'checkpoints'


def write_config(directory: str | os.PathLike, config: ml_collections.ConfigDict) -> None:
  with files.atomic_write(files.as_path(directory) / CONFIG_FILE, 'w') as f:
    f.write(config.to_json_best_effort(indent=2))


def read_config(directory: str | os.PathLike) -> ml_collections.ConfigDict | None:
  """The config stored in ``directory``, or None when there is none."""
  path = files.as_path(directory) / CONFIG_FILE
  if not path.is_file():
    return None
  try:
    with path.open() as f:
      return ml_collections.ConfigDict(json.load(f))
  except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError) as e:
    raise errors.UserError(f'{path} is not a readable config ({e}); the checkpoint beside it '
                           'is damaged: train again or restore that file') from e


def with_runtime_settings(stored: ml_collections.ConfigDict,
                          config: ml_collections.ConfigDict | None
                          ) -> ml_collections.ConfigDict:
  """A copy of a checkpoint's stored config with the runtime model settings of ``config`` (or
  the portable defaults when it is None)."""
  stored = ml_collections.ConfigDict(stored.to_dict())
  with stored.unlocked():
    for key, default in _RUNTIME_DEFAULTS.items():
      stored.model[key] = default if config is None else config.model.get(key, default)
  return stored


def check_architecture(config: ml_collections.ConfigDict, stored: ml_collections.ConfigDict,
                       checkpoint: str) -> None:
  """Raises UserError naming every architecture key where ``config`` and ``stored`` differ."""
  diffs = []
  for section, keys in ARCHITECTURE_KEYS.items():
    for key in keys:
      mine, theirs = (c.get(section, {}).get(key, _DEFAULTS.get(f'{section}.{key}'))
                      for c in (config, stored))
      if mine != theirs:
        diffs.append(f'{section}.{key}: config {mine!r} vs checkpoint {theirs!r}')
  if diffs:
    raise errors.UserError(
        f'checkpoint {checkpoint} was trained with another model ({"; ".join(diffs)}): use the '
        'config it was trained with, or another --workdir/--checkpoint')


def latest_training_step(workdir: str) -> int | None:
  """The newest complete training checkpoint's step (orbax's own listing), or None."""
  directory = training_dir(workdir)
  if not directory.is_dir():
    return None
  steps = ocp.utils.checkpoint_steps(directory)
  return max(steps) if steps else None


def restore_training_params(config, workdir: str, use_ema: bool = True, shardings=None):
  """(graphdef, params) of the newest training checkpoint in ``workdir``.

  Reads only the parameter tree (EMA or raw) of the stored TrainState, not the optimizer state.
  ``shardings``: a tree of shardings like the parameters (training passes its mesh's); None puts
  every array whole on the default device.
  """
  directory = training_dir(workdir)
  step = latest_training_step(workdir)
  if step is None:
    raise errors.UserError(f'no training checkpoint under {directory}: run --mode=train with '
                           'this --workdir first')
  stored = read_config(directory)
  if stored is not None:
    check_architecture(config, stored, directory)
  graphdef, abstract_state = builder.abstract_model(config)
  abstract = nnx.to_pure_dict(abstract_state)
  if shardings is None:
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    shardings = jax.tree.map(lambda _: device, abstract)
  target = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        abstract, shardings)
  key = 'ema_params' if use_ema else 'params'
  restored = orbax_read(directory, lambda: ocp.PyTreeCheckpointer().restore(
      directory / str(step) / 'state',
      args=ocp.args.PyTreeRestore(item={key: target}, partial_restore=True,
                                  restore_args=ocp.checkpoint_utils.construct_restore_args(
                                      {key: target}))))
  return graphdef, restored[key]


def orbax_read(checkpoint: str, read):
  """Runs ``read()`` (an orbax restore of a checkpoint whose config matched): what fails now is a
  damaged or incomplete checkpoint (missing or truncated files), reported as one UserError line."""
  try:
    return read()
  except (OSError, ValueError, KeyError) as e:
    first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
    raise errors.UserError(f'cannot read checkpoint {checkpoint} ({first}): it is damaged or '
                           'incomplete; use another checkpoint or write it again') from e
