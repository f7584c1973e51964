"""Reading user-supplied PyTorch-layout weight files without unpickling untrusted data.

Formats:
  * ``.safetensors``: read with safetensors' numpy API (no torch, no pickle).
  * ``.pth`` / ``.pt`` / ``.bin`` / ``.ckpt`` (PyTorch's zip of pickles, e.g. pytorch-fid's
    ``pt_inception-2015-12-05-6726825d.pth``): only with torch installed, and only through
    ``torch.load(weights_only=True)``, whose restricted unpickler builds tensors and plain
    containers and refuses any other object. Without torch, convert the file once where torch is
    installed: ``python -m wvd_jax.evaluation.networks.weights IN.pth OUT.safetensors`` (with
    ``--trusted`` it unpickles fully: only for a file you trust whose extra objects
    weights_only refuses; the .safetensors it writes holds tensors only).

A checkpoint holding ``{'state_dict': {...}}`` (Lightning / LoFTR ``.ckpt`` style) is unwrapped.
Every problem with a file is a one-line ``UserError`` naming the file, what was expected and the
fix.
"""
from __future__ import annotations

import os
import re
import sys
from typing import Mapping

import numpy as np
from safetensors import SafetensorError
from safetensors import numpy as safetensors_numpy

from wvd_jax import errors, files
from wvd_jax.models import vae_convert

TORCH_SUFFIXES = ('.pth', '.pt', '.bin', '.ckpt')
_MAX_NAMES = 5


def _first_line(e: Exception, limit: int = 160) -> str:
  """The first line of an exception's text, without terminal escape codes, at most ``limit``."""
  text = re.sub(r'\x1b\[[0-9;]*m', '', str(e)).strip()
  first = text.splitlines()[0] if text else type(e).__name__
  return first if len(first) <= limit else first[:limit - 3] + '...'


def _conversion_hint(path: str) -> str:
  stem = os.path.splitext(path)[0]
  return (f'convert it once where torch is installed: python -m '
          f'wvd_jax.evaluation.networks.weights {path} {stem}.safetensors')


def _load_torch(path: str, trusted: bool = False) -> dict[str, np.ndarray]:
  """A PyTorch file through torch.load(weights_only=True): tensors and plain containers only.
  ``trusted`` (the converter's --trusted flag, for a file the user vouches for) unpickles fully."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise errors.UserError(f'{path} is a PyTorch (pickle) file and torch is not installed; '
                           f'{_conversion_hint(path)}, or install torch') from None
  try:
    loaded = torch.load(path, map_location='cpu', weights_only=not trusted)
  except Exception as e:  # pylint: disable=broad-except
    raise errors.UserError(
        f'{path} cannot be read as PyTorch weights with torch.load(weights_only=True) '
        f'({_first_line(e)}); if it is a checkpoint you trust that holds more than tensors, '
        f'{_conversion_hint(path)} --trusted') from None
  if isinstance(loaded, Mapping) and isinstance(loaded.get('state_dict'), Mapping):
    loaded = loaded['state_dict']
  if not isinstance(loaded, Mapping):
    raise errors.UserError(f'{path} holds a {type(loaded).__name__}, not a state dict of tensors')
  out = {}
  for name, value in loaded.items():
    if isinstance(value, torch.Tensor):
      value = value.detach().cpu()
      if value.dtype == torch.bfloat16:
        value = value.float()
      out[str(name)] = value.numpy()
  return out


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """name -> numpy array of a weights file (.safetensors, or a PyTorch file with torch)."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise errors.UserError(f'weights file not found: {path}')
  if path.endswith(TORCH_SUFFIXES):
    return _load_torch(path)
  try:
    return vae_convert.read_safetensors(path)
  except (SafetensorError, OSError, ValueError) as e:
    raise errors.UserError(f'{path} is not a readable .safetensors file ({_first_line(e)}); give a '
                           f'.safetensors file or a PyTorch {"/".join(TORCH_SUFFIXES)} '
                           'file') from None


def _names(names) -> str:
  names = sorted(names)
  more = len(names) - _MAX_NAMES
  return ', '.join(repr(n) for n in names[:_MAX_NAMES]) + (f' and {more} more' if more > 0 else '')


def check_tensors(path: str, what: str, tensors: Mapping[str, np.ndarray],
                  expected: Mapping[str, tuple[int, ...]], optional=(), hint: str = '') -> None:
  """Raises a one-line UserError unless ``tensors`` holds exactly the ``expected`` names (plus
  any of ``optional``) with the expected (PyTorch-layout) shapes and a floating dtype."""
  missing = set(expected) - set(tensors)
  unexpected = set(tensors) - set(expected) - set(optional)
  suffix = f'; {hint}' if hint else ''
  if missing:
    raise errors.UserError(
        f'{path} is not {what}: {len(missing)} of its {len(expected)} tensors are missing '
        f'({_names(missing)}){suffix}')
  if unexpected:
    raise errors.UserError(f'{path} is not {what}: unexpected tensors {_names(unexpected)}'
                           f'{suffix}')
  for name, shape in expected.items():
    got = tuple(tensors[name].shape)
    if got != tuple(shape):
      raise errors.UserError(f'{path} is not {what}: tensor {name!r} has shape {got}, expected '
                             f'{tuple(shape)}{suffix}')
    if not np.issubdtype(np.asarray(tensors[name]).dtype, np.floating):
      raise errors.UserError(f'{path}: tensor {name!r} has dtype {tensors[name].dtype}, '
                             'expected floating point')


def conv_kernel(weight: np.ndarray) -> np.ndarray:
  """PyTorch conv weight (out, in, kh, kw) -> lax HWIO (kh, kw, in, out)."""
  return np.transpose(np.asarray(weight), (2, 3, 1, 0))


def linear_kernel(weight: np.ndarray) -> np.ndarray:
  """PyTorch linear weight (out, in) -> (in, out), for x @ kernel."""
  return np.asarray(weight).T


def convert_file(source: str, target: str, trusted: bool = False) -> int:
  """Writes the tensors of a PyTorch weights file as .safetensors (atomically); their count."""
  tensors = {k: np.ascontiguousarray(v)
             for k, v in _load_torch(os.fspath(source), trusted).items()}
  with files.atomic_write(target) as f:
    f.write(safetensors_numpy.save(tensors))
  return len(tensors)


USAGE = ('usage: python -m wvd_jax.evaluation.networks.weights IN.pth OUT.safetensors '
         '[--trusted]\n  --trusted: unpickle IN fully (only for a file you trust: a checkpoint '
         'that holds more than tensors, which weights_only=True refuses)')


def main(argv: list[str]) -> int:
  trusted = '--trusted' in argv
  argv = [a for a in argv if a != '--trusted']
  if len(argv) != 2 or any(a.startswith('-') for a in argv):
    print(USAGE, file=sys.stderr)
    return 2
  try:
    count = convert_file(argv[0], argv[1], trusted)
  except errors.UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(f'wrote {count} tensors to {argv[1]}')
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
