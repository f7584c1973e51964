"""Entry point: python -m wvd_jax.main --config=configs/demo.py --workdir=DIR --mode=train.

Config values are overridden with --config.a.b=value. The config is validated before any work
starts (unknown keys and bad values stop the run with a message naming them). On several
processes (a GPU cluster or a TPU pod), jax.distributed is initialized from the environment.
"""
from __future__ import annotations

import logging as pylogging
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from wvd_jax import config_lib

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Path to an ml_collections config file.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and outputs.')
_MODE = flags.DEFINE_enum('mode', 'train', list(config_lib.MODES), 'What to run.')
_INPUT = flags.DEFINE_string('input', None, 'Task modes: an image file (a directory of images for '
                             'multiview).')
_OUTPUT = flags.DEFINE_string('output', None, 'Task modes: output directory (default '
                              '<workdir>/<mode>).')
_CHECKPOINT = flags.DEFINE_string('checkpoint', None, 'Task and eval modes: an exported checkpoint '
                                  '(default <workdir>/export).')
_CAMERA_PATH = flags.DEFINE_string('camera_path', 'orbit', 'camera_control: a preset (orbit, '
                                   'dolly, pan) or a JSON camera path file.')
_DISTRIBUTED = flags.DEFINE_bool(
    'distributed', None, 'Call jax.distributed.initialize(); default: when the environment '
    'names several processes (SLURM, TPU pod, JAX_COORDINATOR_ADDRESS).')
flags.mark_flags_as_required(['config', 'workdir'])


def _want_distributed() -> bool:
  if _DISTRIBUTED.value is not None:
    return _DISTRIBUTED.value
  return (int(os.environ.get('SLURM_NTASKS', '1')) > 1 or 'JAX_COORDINATOR_ADDRESS' in os.environ
          or 'TPU_WORKER_HOSTNAMES' in os.environ and ',' in os.environ['TPU_WORKER_HOSTNAMES'])


def run(config, workdir: str, mode: str):
  """Dispatches one mode; each mode is one function."""
  if mode == 'train':
    from wvd_jax.training import train  # pylint: disable=import-outside-toplevel
    return train.train_and_evaluate(config, workdir)
  if mode == 'sample':
    from wvd_jax.tasks import sample  # pylint: disable=import-outside-toplevel
    return sample.sample(config, workdir)
  if mode in config_lib.TASK_MODES:
    return _run_task(config, workdir, mode)
  if mode == 'eval':
    from wvd_jax.evaluation import runner  # pylint: disable=import-outside-toplevel
    return runner.evaluate(config, workdir, _CHECKPOINT.value)
  if mode == 'export':
    from wvd_jax.training import export  # pylint: disable=import-outside-toplevel
    return export.export(config, workdir)
  raise ValueError(f'unknown mode {mode!r}')


class _QuietLibraries(pylogging.Filter):
  """Drops INFO lines of orbax/grain (dozens per checkpoint); warnings and errors still show."""

  def filter(self, record):
    noisy = any(f'/{name}/' in record.pathname for name in ('orbax', 'grain', 'jax', 'absl'))
    return record.levelno >= pylogging.WARNING or not noisy


def _run_task(config, workdir: str, mode: str):
  """Every process of a multi-host job loads the model and runs the same seeded task on its own
  devices; process 0 writes the outputs."""
  from wvd_jax import files, multihost  # pylint: disable=import-outside-toplevel
  from wvd_jax.tasks import api  # pylint: disable=import-outside-toplevel
  if not _INPUT.value:
    raise app.UsageError(f'--mode={mode} needs --input')
  model = api.WVD.load(_CHECKPOINT.value or files.as_path(workdir) / 'export', config)
  output = _OUTPUT.value or os.fspath(files.as_path(workdir) / mode)
  if not multihost.is_primary():
    output = None
  if mode == 'image_to_3d':
    return model.image_to_3d(_INPUT.value, output)
  if mode == 'depth':
    return model.monocular_depth(_INPUT.value, output)
  if mode == 'multiview':
    return model.multiview(_INPUT.value, output)
  return model.camera_control(_INPUT.value, _CAMERA_PATH.value, output)


def main(argv):
  logging.get_absl_handler().addFilter(_QuietLibraries())
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  config = _CONFIG.value
  try:
    config_lib.validate_config(config)
  except config_lib.ConfigError as e:
    logging.error('%s', e)
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  import jax  # pylint: disable=import-outside-toplevel
  if _want_distributed():
    # SLURM and TPU pods are detected by JAX itself; a manual launch names the coordinator in
    # JAX_COORDINATOR_ADDRESS and this process in JAX_NUM_PROCESSES / JAX_PROCESS_ID.
    manual = {k: int(os.environ[v]) for k, v in (('num_processes', 'JAX_NUM_PROCESSES'),
                                                 ('process_id', 'JAX_PROCESS_ID'))
              if v in os.environ}
    jax.distributed.initialize(**manual)
  logging.info('JAX process %d/%d, devices: %s', jax.process_index(), jax.process_count(),
               jax.devices())
  if jax.process_count() == 1:
    run(config, _WORKDIR.value, _MODE.value)
    return
  try:
    run(config, _WORKDIR.value, _MODE.value)
  except BaseException:  # pylint: disable=broad-except
    # A failed process would otherwise wait minutes in jax.distributed's shutdown barrier while
    # the others wait in their next collective: exit at once so the launcher ends the job.
    logging.exception('process %d failed', jax.process_index())
    sys.stderr.flush()
    os._exit(1)  # pylint: disable=protected-access


if __name__ == '__main__':
  app.run(main)
