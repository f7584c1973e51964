"""Import diffusers-format AutoencoderKL weights (safetensors) into the NNX port in ``vae.py``.

Nothing is downloaded: the user supplies either
  * a diffusers model directory holding ``config.json`` and ``diffusion_pytorch_model.safetensors``
    (the architecture is read from config.json), or
  * a single ``.safetensors`` file in diffusers' naming (the architecture is the ``config``
    argument, else a ``config.json`` beside the file, else Stable Diffusion's default).

Name and layout mapping (diffusers / PyTorch -> NNX):
  ``<module path>.weight`` of a conv, OIHW          -> ``(... , 'kernel')`` HWIO
  ``<module path>.weight`` of a linear, (out, in)   -> ``(... , 'kernel')`` (in, out)
  ``<module path>.weight`` / ``.bias`` of GroupNorm  -> ``'scale'`` / ``'bias'``
  ``...attentions.N.to_out.0.*``                    -> ``(..., 'attentions', N, 'to_out', *)``
Old checkpoints name the attention projections ``query``/``key``/``value``/``proj_attn``, and
original-LDM-derived files may store them as 1x1 convs (out, in, 1, 1); both are accepted.

Every tensor in the file must be used and every model parameter filled with the right shape;
otherwise ``ValueError`` names the offending tensor(s). Tensors are read with safetensors' numpy
API (no torch, no pickle); bfloat16 tensors, which numpy cannot represent, are read through
``ml_dtypes``. Floating tensors of any width are cast to ``param_dtype``.
"""
from __future__ import annotations

import functools
import json
import os
import re
import struct
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx
from safetensors import safe_open

from wvd_jax import errors
from wvd_jax.models import vae as vae_lib

WEIGHTS_NAME = 'diffusion_pytorch_model.safetensors'
CONFIG_NAME = 'config.json'

_LEGACY_ATTN = re.compile(
    r'^(?P<prefix>.*\.attentions\.\d+\.)(?P<name>query|key|value|proj_attn)\.(?P<leaf>weight|bias)$')
_LEGACY_TO_NEW = {'query': 'to_q', 'key': 'to_k', 'value': 'to_v', 'proj_attn': 'to_out.0'}
_MAX_NAMES_IN_ERROR = 10


# ----------------------------------------------------------------------------------- file I/O

def _read_bf16(path: str, name: str) -> np.ndarray:
  """Reads one BF16 tensor through the documented safetensors layout (header + raw bytes)."""
  with open(path, 'rb') as f:
    (header_len,) = struct.unpack('<Q', f.read(8))
    header = json.loads(f.read(header_len))
    info = header[name]
    start, end = info['data_offsets']
    f.seek(8 + header_len + start)
    buf = f.read(end - start)
  return np.frombuffer(buf, dtype=ml_dtypes.bfloat16).reshape(info['shape'])


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """All tensors of a .safetensors file as numpy arrays, keyed by name."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise errors.UserError(f'safetensors file not found: {path}')
  out = {}
  with safe_open(path, framework='numpy') as f:
    for name in f.keys():
      if f.get_slice(name).get_dtype() == 'BF16':
        out[name] = _read_bf16(path, name)
      else:
        out[name] = f.get_tensor(name)
  return out


def read_config(path: str | os.PathLike) -> vae_lib.AutoencoderKLConfig:
  """Reads a diffusers config.json (or the config.json inside a directory)."""
  path = os.fspath(path)
  if os.path.isdir(path):
    path = os.path.join(path, CONFIG_NAME)
  if not os.path.isfile(path):
    raise errors.UserError(f'config file not found: {path}')
  with open(path) as f:
    try:
      d = json.load(f)
    except json.JSONDecodeError as e:
      raise errors.UserError(f'{path} is not valid JSON: {e}') from e
  if not isinstance(d, dict):
    raise errors.UserError(f'{path} does not hold a JSON object')
  return vae_lib.AutoencoderKLConfig.from_diffusers_dict(d)


def resolve_paths(path: str | os.PathLike,
                  config: vae_lib.AutoencoderKLConfig | None = None,
                  ) -> tuple[str, vae_lib.AutoencoderKLConfig]:
  """(weights file, config) for a diffusers directory or a single safetensors file.

  An explicit ``config`` wins over any config.json. A directory needs config.json unless
  ``config`` is given; a lone file without config or sibling config.json gets SD's config.
  """
  path = os.fspath(path)
  if os.path.isdir(path):
    weights = os.path.join(path, WEIGHTS_NAME)
    if not os.path.isfile(weights):
      found = sorted(n for n in os.listdir(path) if n.endswith('.safetensors'))
      if len(found) != 1:
        raise errors.UserError(f'{path}: expected {WEIGHTS_NAME} (or exactly one .safetensors '
                               'file), '
                               f'found {found}')
      weights = os.path.join(path, found[0])
    if config is None:
      if not os.path.isfile(os.path.join(path, CONFIG_NAME)):
        raise errors.UserError(f'{path}: no {CONFIG_NAME} in the directory and no config given')
      config = read_config(path)
    return weights, config
  if not os.path.isfile(path):
    raise errors.UserError(f'VAE weights not found: {path}')
  if config is None:
    sibling = os.path.join(os.path.dirname(os.path.abspath(path)), CONFIG_NAME)
    config = read_config(sibling) if os.path.isfile(sibling) else vae_lib.sd_config()
  return path, config


# ------------------------------------------------------------------------------ name mapping

def _diffusers_name(path: tuple[Any, ...]) -> str:
  """NNX parameter path -> diffusers tensor name."""
  parts = []
  for p in path[:-1]:
    parts.append(str(p))
    if p == 'to_out':
      parts.append('0')
  leaf = path[-1]
  parts.append({'kernel': 'weight', 'scale': 'weight', 'bias': 'bias'}[leaf])
  return '.'.join(parts)


def _torch_shape(nnx_shape: tuple[int, ...]) -> tuple[int, ...]:
  """The PyTorch shape of a tensor with this NNX shape."""
  if len(nnx_shape) == 4:  # HWIO -> OIHW
    h, w, i, o = nnx_shape
    return (o, i, h, w)
  if len(nnx_shape) == 2:  # (in, out) -> (out, in)
    return (nnx_shape[1], nnx_shape[0])
  return tuple(nnx_shape)


def _to_nnx_layout(name: str, arr: np.ndarray, nnx_shape: tuple[int, ...]) -> np.ndarray:
  """Transposes a diffusers tensor into the NNX layout, checking its shape."""
  want = _torch_shape(nnx_shape)
  got = tuple(arr.shape)
  if len(nnx_shape) == 2 and len(got) == 4 and got[2:] == (1, 1) and got[:2] == want:
    arr = arr[:, :, 0, 0]  # 1x1-conv attention projection of old checkpoints.
    got = tuple(arr.shape)
  if got != want:
    raise errors.UserError(f'tensor {name!r} has shape {got} but the model expects {want} '
                           f'(PyTorch layout)')
  if arr.ndim == 4:
    return np.transpose(arr, (2, 3, 1, 0))
  if arr.ndim == 2:
    return arr.T
  return arr


def _normalize_names(tensors: Mapping[str, np.ndarray]) -> dict[str, tuple[str, np.ndarray]]:
  """Maps legacy attention names to current ones: new name -> (name in the file, array)."""
  if any(k.startswith('first_stage_model.') or k.startswith('encoder.down.')
         or k.startswith('decoder.up.') for k in tensors):
    example = next(k for k in tensors if k.startswith(('first_stage_model.', 'encoder.down.',
                                                       'decoder.up.')))
    raise errors.UserError(f'tensor {example!r} is in the original (CompVis/LDM) naming, not '
                           f'diffusers naming; convert the checkpoint to diffusers format first')
  out: dict[str, tuple[str, np.ndarray]] = {}
  for name, arr in tensors.items():
    m = _LEGACY_ATTN.match(name)
    new = (f"{m['prefix']}{_LEGACY_TO_NEW[m['name']]}.{m['leaf']}" if m else name)
    if new in out:
      raise ValueError(f'tensors {out[new][0]!r} and {name!r} both map to {new!r}')
    out[new] = (name, arr)
  return out


def _abbrev(names: list[str]) -> str:
  shown = names[:_MAX_NAMES_IN_ERROR]
  more = len(names) - len(shown)
  return ', '.join(repr(n) for n in shown) + (f' and {more} more' if more else '')


@functools.lru_cache(maxsize=8)
def abstract_params(config: vae_lib.AutoencoderKLConfig,
                    param_dtype: Any = jnp.float32) -> nnx.State:
  """The parameter State (ShapeDtypeStruct leaves) of an AutoencoderKL, without allocating it.

  Cached per (config, param_dtype); treat the result as read-only.
  """
  model = nnx.eval_shape(
      lambda: vae_lib.AutoencoderKL(config, param_dtype=param_dtype, rngs=nnx.Rngs(0)))
  return nnx.state(model, nnx.Param)


def convert_state_dict(tensors: Mapping[str, np.ndarray],
                       config: vae_lib.AutoencoderKLConfig,
                       param_dtype: Any = jnp.float32) -> nnx.State:
  """diffusers tensors (name -> numpy array) -> NNX parameter State of ``AutoencoderKL(config)``.

  Raises ValueError naming the tensor(s) that are missing from ``tensors``, unexpected (not used
  by the model), of the wrong shape, or not floating point.
  """
  named = _normalize_names(tensors)
  flat = nnx.to_flat_state(abstract_params(config, param_dtype))
  expected = {_diffusers_name(path): (path, var) for path, var in flat}

  missing = sorted(set(expected) - set(named))
  if missing:
    raise errors.UserError(f'missing tensor(s) that the model needs: {_abbrev(missing)} '
                           f'({len(missing)} of {len(expected)} missing)')
  unexpected = sorted(named[n][0] for n in set(named) - set(expected))
  if unexpected:
    raise errors.UserError('unexpected tensor(s) that the model does not use: '
                           f'{_abbrev(unexpected)} '
                           f'(check the config: block_out_channels, layers_per_block, '
                           f'mid_block_add_attention, use_quant_conv)')

  new_flat = []
  for dname, (path, var) in expected.items():
    file_name, arr = named[dname]
    arr = np.asarray(arr)
    if not np.issubdtype(arr.dtype, np.floating) and arr.dtype != ml_dtypes.bfloat16:
      raise ValueError(f'tensor {file_name!r} has non-float dtype {arr.dtype}')
    target = var.get_value()
    arr = _to_nnx_layout(file_name, arr, tuple(target.shape))
    value = jnp.asarray(np.ascontiguousarray(arr.astype(np.dtype(target.dtype))))
    new_flat.append((path, var.replace(value=value)))
  return nnx.from_flat_state(new_flat)


# ---------------------------------------------------------------------------------- loading

def load_diffusers_vae(path: str | os.PathLike,
                       config: vae_lib.AutoencoderKLConfig | None = None,
                       *, param_dtype: Any = jnp.float32) -> nnx.State:
  """Reads diffusers weights into an NNX parameter State for ``AutoencoderKL(config)``.

  Args:
    path: a diffusers model directory (config.json + diffusion_pytorch_model.safetensors) or a
      single .safetensors file.
    config: the architecture; None reads it from config.json (see ``resolve_paths``).
    param_dtype: dtype of the returned parameters.
  Returns:
    an ``nnx.State`` to ``nnx.merge`` with the graphdef of ``AutoencoderKL(config)`` or to
    ``nnx.update`` a model with. Use ``load_vae`` to get the model directly.
  """
  weights, config = resolve_paths(path, config)
  return convert_state_dict(read_safetensors(weights), config, param_dtype)


def load_vae(path: str | os.PathLike,
             config: vae_lib.AutoencoderKLConfig | None = None,
             *, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
             precision: Any = None) -> vae_lib.AutoencoderKL:
  """Builds an ``AutoencoderKL`` filled with the diffusers weights at ``path``.

  The config comes from ``config`` or config.json (see ``resolve_paths``); ``dtype`` is the
  compute dtype (bfloat16 on GPU), ``param_dtype`` the parameter dtype.
  """
  weights, config = resolve_paths(path, config)
  state = convert_state_dict(read_safetensors(weights), config, param_dtype)
  abstract = nnx.eval_shape(lambda: vae_lib.AutoencoderKL(
      config, dtype=dtype, param_dtype=param_dtype, precision=precision, rngs=nnx.Rngs(0)))
  graphdef, abstract_state = nnx.split(abstract)
  if jax.tree.structure(abstract_state) != jax.tree.structure(state):
    raise ValueError('the model holds state other than parameters; cannot fill it from weights')
  return nnx.merge(graphdef, state)
