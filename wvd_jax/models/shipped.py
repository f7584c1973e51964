"""Shipped pretrained models: an exported checkpoint packed small enough for the repository.

  python -m wvd_jax.models.shipped pack --export=WORKDIR/export --output=pretrained/NAME \
      [--dtype=auto|bfloat16|int8]
  python -m wvd_jax.models.shipped check --model=pretrained/NAME

Layout of a shipped directory (every file written atomically, the manifest last):
  weights.safetensors.part-000, -001, ...   consecutive pieces of ONE safetensors file, each at
                                            most MAX_PART_BYTES (16 MiB)
  manifest.json   {"format": "wvd_jax.shipped", "version": 1, "dtype": "bfloat16" | "int8",
                   "parameters": number of model parameters, "bytes": the safetensors file's
                   size, "sha256": its SHA-256, "parts": [{"file", "bytes", "sha256"}, ...],
                   "config": the exported model's full config}
The safetensors file names each parameter by its path in the parameter tree ('a/b/c'). dtype
'bfloat16': every parameter as bf16 (2 bytes a parameter). dtype 'int8': every kernel (a
parameter named '.../kernel', shape (..., in, out), layers stacked in front) as int8 with one
float32 scale per output channel (and layer), symmetric: w ~ q * scale, q = round(w / scale),
scale = max |w| / 127 over the input axis (-2); the tensor '<name>' holds q and
'<name>:scale' the scales (axis -2 kept with length 1); everything else (biases, norm scales,
embeddings: 0.1% of the small model) as bf16. About 1 byte a parameter.

``load`` reassembles the parts, verifies every part's and the whole file's SHA-256 (a missing
or altered part is one UserError line), and returns (config, graphdef, params) with float32
parameters, as models/inference_checkpoint.load does for an exported checkpoint;
``inference_checkpoint.load`` hands a directory with a manifest.json here, so every task mode,
--mode=eval and the notebook take a shipped model through --checkpoint=pretrained/NAME.
Untrusted input: JSON and safetensors only, no pickle.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys

import jax
import ml_collections
import ml_dtypes
import numpy as np
import safetensors
import safetensors.numpy
from flax import nnx

from wvd_jax import errors, files
from wvd_jax.models import builder, checkpoint_reader, inference_checkpoint

FORMAT, VERSION = 'wvd_jax.shipped', 1
MANIFEST = 'manifest.json'  # Its presence marks a shipped model (inference_checkpoint.load).
PART_PREFIX = 'weights.safetensors.part-'
MAX_PART_BYTES = 16 * 2 ** 20
MAX_MODEL_BYTES = 60 * 10 ** 6  # The repository's budget for one shipped model.
DTYPES = ('bfloat16', 'int8')
_SCALE = ':scale'
_STORED_DTYPES = {'BF16': ml_dtypes.bfloat16, 'F32': np.float32, 'I8': np.int8}


def _named_leaves(tree) -> dict[str, object]:
  """{'a/b/c': leaf} of a nested parameter dict (keys of any type, joined as strings)."""
  return {'/'.join(str(getattr(k, 'key', getattr(k, 'idx', k))) for k in path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def quantize_int8(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Symmetric int8 per slice along axis -2: (q int8 like w, scale float32 with axis -2 of
  length 1), w ~ q * scale. An all-zero slice gets scale 1 (q = 0)."""
  w = np.asarray(w, np.float32)
  peak = np.max(np.abs(w), axis=-2, keepdims=True)
  scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
  return np.clip(np.rint(w / scale), -127, 127).astype(np.int8), scale


def encode(params, dtype: str) -> dict[str, np.ndarray]:
  """The tensors of the safetensors file for a parameter tree (see the module docstring)."""
  if dtype not in DTYPES:
    raise errors.UserError(f'shipped model dtype must be one of {DTYPES}, got {dtype!r}')
  tensors = {}
  for name, value in _named_leaves(params).items():
    value = np.asarray(value, np.float32)
    if dtype == 'int8' and name.endswith('kernel') and value.ndim >= 2:
      tensors[name], tensors[name + _SCALE] = quantize_int8(value)
    else:
      tensors[name] = value.astype(ml_dtypes.bfloat16)
  return tensors


def _decode(blob: bytes, source: str) -> dict[str, np.ndarray]:
  """safetensors bytes -> {name: float32 array}, int8 tensors dequantized by their scales."""
  try:
    stored = {name: np.frombuffer(entry['data'], _STORED_DTYPES[entry['dtype']]).reshape(
        entry['shape']) for name, entry in safetensors.deserialize(blob)}
  except (KeyError, ValueError, safetensors.SafetensorError) as e:
    raise errors.UserError(f'{source}: the weights are not a readable safetensors file of a '
                           f'shipped model ({e}); pack the model again') from e
  out = {}
  for name, value in stored.items():
    if name.endswith(_SCALE):
      continue
    value = value.astype(np.float32)
    if name + _SCALE in stored:
      value = value * stored[name + _SCALE]
    out[name] = value
  return out


def pack(export: str | os.PathLike, output: str | os.PathLike, dtype: str = 'auto', **kwargs
         ) -> dict:
  """Packs the exported checkpoint ``export`` (--mode=export) into the directory ``output``
  (``pack_params``); returns the manifest."""
  _check_output(output)
  config, _, params = inference_checkpoint.load(os.fspath(export))
  return pack_params(config, params, output, dtype, source=os.fspath(export), **kwargs)


def _check_output(output):
  if os.path.exists(os.fspath(output)):
    raise errors.UserError(f'{output} exists: a shipped model is never overwritten in place; '
                           'remove it or choose another --output')


def pack_params(config: ml_collections.ConfigDict, params, output: str | os.PathLike,
                dtype: str = 'auto', *, part_bytes: int = MAX_PART_BYTES,
                max_bytes: int = MAX_MODEL_BYTES, source: str = 'the model') -> dict:
  """Writes the model (its config and parameter tree) as the shipped directory ``output``;
  returns the manifest. dtype 'auto': bfloat16 if that fits ``max_bytes``, else int8. Refuses
  (UserError) a model that does not fit, and an existing ``output``."""
  if not 0 < part_bytes <= MAX_PART_BYTES:
    raise ValueError(f'part_bytes must be in (0, {MAX_PART_BYTES}], got {part_bytes}')
  output = os.fspath(output)
  _check_output(output)
  count = int(sum(np.size(v) for v in jax.tree.leaves(params)))
  choices = ('bfloat16', 'int8') if dtype == 'auto' else (dtype,)
  for choice in choices:
    blob = safetensors.numpy.save(encode(params, choice))
    if len(blob) <= max_bytes:
      break
  else:
    raise errors.UserError(
        f'{source}: {count:,} parameters take {len(blob):,} bytes as {choice}, over the '
        f'{max_bytes:,}-byte budget of a shipped model; '
        f'{"use a smaller model" if choice == "int8" else "use dtype int8 (or auto)"}')
  parts = []
  # Built under a temporary name and renamed when complete: no half-written model directory.
  tmp = os.path.join(os.path.dirname(os.path.abspath(output)), f'.{os.path.basename(output)}.tmp')
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  try:
    for start in range(0, len(blob), part_bytes):
      piece = blob[start:start + part_bytes]
      name = f'{PART_PREFIX}{len(parts):03d}'
      with files.atomic_write(os.path.join(tmp, name)) as f:
        f.write(piece)
      parts.append(dict(file=name, bytes=len(piece), sha256=hashlib.sha256(piece).hexdigest()))
    manifest = dict(format=FORMAT, version=VERSION, dtype=choice, parameters=count,
                    bytes=len(blob), sha256=hashlib.sha256(blob).hexdigest(), parts=parts,
                    config=json.loads(config.to_json_best_effort()))
    with files.atomic_write(os.path.join(tmp, MANIFEST), 'w') as f:
      json.dump(manifest, f, indent=1)
    os.rename(tmp, output)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return manifest


def is_shipped(path: str | os.PathLike) -> bool:
  """True for a directory holding a shipped model's manifest."""
  return os.path.isfile(os.path.join(os.fspath(path), MANIFEST))


def read_manifest(path: str | os.PathLike) -> dict:
  manifest_path = os.path.join(os.fspath(path), MANIFEST)
  try:
    with open(manifest_path) as f:
      manifest = json.load(f)
  except FileNotFoundError as e:
    raise errors.UserError(f'{path} is not a shipped model (no {MANIFEST}); pack one with '
                           'python -m wvd_jax.models.shipped pack') from e
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise errors.UserError(f'{manifest_path} is not valid JSON ({e}); restore it from the '
                           f'repository (git checkout -- {path})') from e
  keys = ('format', 'version', 'dtype', 'parameters', 'bytes', 'sha256', 'parts', 'config')
  if not isinstance(manifest, dict) or manifest.get('format') != FORMAT or any(
      k not in manifest for k in keys) or manifest['version'] != VERSION:
    raise errors.UserError(f'{manifest_path} is not a version-{VERSION} {FORMAT} manifest '
                           f'(needs {", ".join(keys)}); pack the model again')
  return manifest


def read_weights(path: str | os.PathLike, manifest: dict) -> bytes:
  """The reassembled safetensors file, every part and the whole checked against the manifest."""
  pieces = []
  for part in manifest['parts']:
    name = os.path.basename(str(part['file']))
    part_path = os.path.join(os.fspath(path), name)
    try:
      with open(part_path, 'rb') as f:
        piece = f.read()
    except FileNotFoundError as e:
      raise errors.UserError(f'{part_path} is missing: the shipped model has '
                             f'{len(manifest["parts"])} parts; restore it (git checkout, or git '
                             'lfs pull) or pack the model again') from e
    if len(piece) != part['bytes'] or hashlib.sha256(piece).hexdigest() != part['sha256']:
      raise errors.UserError(f'{part_path} fails its checksum ({len(piece):,} bytes, expected '
                             f'{part["bytes"]:,} with sha256 {part["sha256"][:12]}...): the file '
                             'is damaged; restore it from the repository or pack the model again')
    pieces.append(piece)
  blob = b''.join(pieces)
  if len(blob) != manifest['bytes'] or hashlib.sha256(blob).hexdigest() != manifest['sha256']:
    raise errors.UserError(f'{path}: the reassembled weights fail the manifest checksum; the '
                           'parts do not belong together: restore the directory or pack again')
  return blob


def load(path: str | os.PathLike, config: ml_collections.ConfigDict | None = None):
  """(config, graphdef, params) of a shipped model, float32 parameters on this process's first
  device. With ``config``, its architecture must equal the shipped one
  (checkpoint_reader.check_architecture)."""
  manifest = read_manifest(path)
  stored = ml_collections.ConfigDict(manifest['config'])
  if config is not None:
    checkpoint_reader.check_architecture(config, stored, os.fspath(path))
  stored = checkpoint_reader.with_runtime_settings(stored, config)
  weights = _decode(read_weights(path, manifest), os.fspath(path))
  graphdef, abstract_state = builder.abstract_model(stored)
  abstract = nnx.to_pure_dict(abstract_state)
  wanted = _named_leaves(abstract)
  missing = sorted(set(wanted) - set(weights))
  wrong = [n for n, a in wanted.items() if n in weights and weights[n].shape != a.shape]
  if missing or wrong:
    raise errors.UserError(f'{path}: the weights do not fit the model of its manifest (missing '
                           f'{missing[:3]}, wrong shape {wrong[:3]}); pack the model again')
  device = jax.local_devices()[0]
  leaves = [jax.device_put(weights[name].astype(a.dtype), device) for name, a in wanted.items()]
  return stored, graphdef, jax.tree.unflatten(jax.tree.structure(abstract), leaves)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m wvd_jax.models.shipped',
                                   description=__doc__.split('\n')[0])
  commands = parser.add_subparsers(dest='command', required=True)
  pack_parser = commands.add_parser('pack', help='pack an exported checkpoint')
  pack_parser.add_argument('--export', required=True, help='directory written by --mode=export')
  pack_parser.add_argument('--output', required=True, help='new directory, e.g. pretrained/NAME')
  pack_parser.add_argument('--dtype', default='auto', choices=('auto',) + DTYPES)
  check_parser = commands.add_parser('check', help='verify a shipped model and load it')
  check_parser.add_argument('--model', required=True)
  args = parser.parse_args(argv)
  try:
    if args.command == 'pack':
      manifest = pack(args.export, args.output, args.dtype)
      print(f'wrote {args.output}: {manifest["parameters"]:,} parameters as {manifest["dtype"]}, '
            f'{manifest["bytes"]:,} bytes in {len(manifest["parts"])} parts')
    else:
      manifest = read_manifest(args.model)
      load(args.model)
      print(f'{args.model}: ok ({manifest["parameters"]:,} parameters as {manifest["dtype"]}, '
            f'{len(manifest["parts"])} parts, sha256 {manifest["sha256"]})')
  except errors.UserError as e:
    return errors.print_one_line(e)
  return 0


if __name__ == '__main__':
  sys.exit(main())
