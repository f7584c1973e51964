"""Small helpers for code that runs on every process of a multi-host JAX job.

Rules the modes follow: every process runs the same program (collectives must be reached by
all); arrays sharded across processes are gathered with :func:`host_copy`, never fetched with
jax.device_get; files are written by process 0 (:func:`is_primary`) unless orbax writes them
cooperatively.
"""
from __future__ import annotations

import io

import jax
import numpy as np
from jax.experimental import multihost_utils


def is_primary() -> bool:
  """True on the process that writes summaries and files (process 0)."""
  return jax.process_index() == 0


def host_copy(tree):
  """Numpy copies of (possibly multi-process sharded) arrays, on every process.

  A collective: every process must call it. Arrays sharded across processes cannot be fetched
  with jax.device_get; this all-gathers them through the devices."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  return multihost_utils.process_allgather(tree, tiled=True)


def sync(name: str) -> None:
  """A barrier of all processes (no-op on one)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def gather_records(records: list[dict]) -> list[dict]:
  """Every process's records (flat dicts of arrays / numbers), process 0's first, on every
  process. A collective. Records travel as .npz bytes (no pickle); numbers come back as 0-d
  arrays."""
  if jax.process_count() == 1:
    return list(records)
  buffer = io.BytesIO()
  np.savez(buffer, **{f'{i}{_SEP}{k}': np.asarray(v) for i, r in enumerate(records)
                      for k, v in r.items()}, count=np.asarray(len(records)))
  data = np.frombuffer(buffer.getvalue(), np.uint8)
  sizes = multihost_utils.process_allgather(np.asarray([data.size], np.int64))
  padded = np.zeros(int(np.max(sizes)), np.uint8)
  padded[:data.size] = data
  gathered = multihost_utils.process_allgather(padded)
  out = []
  for size, row in zip(np.ravel(sizes), gathered):
    with np.load(io.BytesIO(row[:size].tobytes()), allow_pickle=False) as z:
      process_records = [{} for _ in range(int(z['count']))]
      for name in z.files:
        if name != 'count':
          i, key = name.split(_SEP, 1)
          process_records[int(i)][key] = z[name]
    out.extend(process_records)
  return out


_SEP = '|'
