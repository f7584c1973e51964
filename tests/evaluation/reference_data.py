"""The stored outputs of the reference implementations (make_reference_outputs.py)."""
import functools
import json
import os

import numpy as np

PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'data',
                    'reference_networks.npz')


@functools.cache
def load() -> dict:
  with np.load(PATH, allow_pickle=False) as f:
    return {k: f[k] for k in f.files}


def shapes(key: str) -> dict[str, tuple[int, ...]]:
  return {k: tuple(v) for k, v in json.loads(str(load()[key])).items()}
