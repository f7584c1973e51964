"""File writing that never leaves a half-written file behind, and path handling for URIs.

Every output of the project goes through :func:`atomic_write`: the content is written to a
temporary file in the destination directory and renamed over the target only when complete.
Workdirs and dataset directories may be local paths, ``file://`` URIs or remote URIs
(``gs://``, ``s3://``, ... wherever etils.epath has the file system installed): :func:`as_path`
turns any of them into an ``epath.Path``, which orbax, TFDS and the writers here accept.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import uuid

from etils import epath

_FILE_SCHEME = 'file://'


def as_path(path: str | os.PathLike) -> epath.Path:
  """A workdir or dataset path as an epath.Path: local paths (and ``file://`` URIs) absolute,
  remote URIs (``gs://bucket/run``) unchanged."""
  if isinstance(path, epath.Path) and not is_local(path):
    return path
  path = os.fspath(path)
  if path.startswith(_FILE_SCHEME):
    path = path[len(_FILE_SCHEME):]
  if '://' in path:
    return epath.Path(path)
  return epath.Path(path).resolve()


def is_local(path: str | os.PathLike) -> bool:
  """False for remote URIs (gs://, s3://, ...); a ``file://`` URI is local."""
  text = os.fspath(path)
  return '://' not in text or text.startswith(_FILE_SCHEME)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = 'wb'):
  """Context manager yielding a file object; ``path`` appears only if the block succeeds."""
  if mode not in ('w', 'wb'):
    raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
  if not is_local(path):
    with _atomic_write_remote(epath.Path(os.fspath(path)), mode) as f:
      yield f
    return
  path = os.fspath(as_path(path))
  directory = os.path.dirname(path)
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix='.' + os.path.basename(path), suffix='.tmp')
  try:
    with os.fdopen(fd, mode) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are meant to be shared.
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
  """Context manager yielding a temporary LOCAL file name for writers that take a path, not a
  file object (ArrayRecord); the file appears as ``path`` only if the block succeeds. Local
  targets are renamed into place; remote ones are copied through :func:`atomic_write`."""
  local = is_local(path)
  directory = os.path.dirname(os.fspath(as_path(path))) if local else None
  if directory:
    os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix='.' + os.path.basename(os.fspath(path)),
                             suffix='.tmp')
  os.close(fd)
  try:
    yield tmp
    if local:
      os.chmod(tmp, 0o644)
      os.replace(tmp, os.fspath(as_path(path)))
    else:
      with open(tmp, 'rb') as src, atomic_write(path, 'wb') as dst:
        while chunk := src.read(1 << 24):
          dst.write(chunk)
  finally:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)


@contextlib.contextmanager
def _atomic_write_remote(path: epath.Path, mode: str):
  """Object stores: write a uniquely named temporary object, then rename it (a copy + delete
  on stores without rename: the target still appears only once complete)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.parent / f'.{path.name}.{uuid.uuid4().hex}.tmp'
  try:
    with tmp.open(mode) as f:
      yield f
    tmp.replace(path)
  except BaseException:
    with contextlib.suppress(Exception):
      tmp.unlink()
    raise
