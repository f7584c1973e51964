"""Renders the config's synthetic dataset (every split) without training: a separate step for
launch scripts that start several runs on the same data.

  python -m wvd_jax.data.build --config=configs/small.py [--config.data.data_dir=DIR]

A module, not a script fed through stdin: the render pool spawns worker processes, which
re-import the main module by its path.
"""
from __future__ import annotations

import sys
import time

from absl import app, flags
from ml_collections import config_flags

from wvd_jax import config_lib, errors

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Path to an ml_collections config file.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', '', 'Workdir (the data lands in <workdir>/data unless '
                               'config.data.data_dir is set).')
flags.mark_flags_as_required(['config'])


def main(argv):
  try:
    if len(argv) > 1:
      raise errors.UserError(f'unexpected arguments {argv[1:]}: flags are written --name=value')
    config_lib.validate_config(_CONFIG.value)
    from wvd_jax.data import pipeline  # pylint: disable=import-outside-toplevel
    start = time.time()
    for split in ('train', 'validation', 'test'):
      print(f'{split}: {len(pipeline.load_split(_CONFIG.value, split, _WORKDIR.value))} clips',
            flush=True)
  except errors.UserError as e:  # One line, as wvd_jax.main prints it.
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  print(f'dataset ready in {time.time() - start:.0f} s', flush=True)


if __name__ == '__main__':
  app.run(main)
