"""Entry point: python -m wvd_jax.main --config=configs/demo.py --workdir=DIR --mode=train.

Config values are overridden with --config.a.b=value. The config is validated before any work
starts (unknown keys and bad values stop the run with a message naming them). On several
processes (a GPU cluster or a TPU pod), jax.distributed is initialized from the environment.

A mistake the user can fix (a bad flag, config, input file or checkpoint: errors.UserError) ends
the run with one line `error: ...` on stderr and exit status 2, without a traceback (--verbose
adds it); any other exception is a bug and keeps its traceback. Every mode ends with the line
`wrote DIR` naming where its outputs are.
"""
from __future__ import annotations

import logging as pylogging
import os
import re
import sys
import traceback

from absl import app, flags, logging
from ml_collections import config_flags

from wvd_jax import config_lib, errors

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
_INTRINSICS = flags.DEFINE_string(
    'intrinsics', None, "image_to_3d / depth / multiview: the known intrinsics, 'fx,fy,cx,cy' "
    'in pixels of the input photograph(s) or a JSON file (README: Known cameras).')
_POSES = flags.DEFINE_string(
    'poses', None, 'image_to_3d / depth / multiview: known camera poses, a COLMAP model folder '
    'or a JSON file naming input images (the outputs come out in their frame and units).')
_KNOWN_DISTANCE = flags.DEFINE_string(
    'known_distance', None, "image_to_3d / depth / multiview: a known distance in metres, 'D' "
    "(camera centres 0 and 1), 'D:cameras:i,j' or 'D:pixels:v,col,row,w,col,row'.")
_DISTRIBUTED = flags.DEFINE_bool(
    'distributed', None, 'Call jax.distributed.initialize(); default: when the environment '
    'names several processes (SLURM, TPU pod, JAX_COORDINATOR_ADDRESS).')
_VERBOSE = flags.DEFINE_bool('verbose', False, 'Print the traceback of user errors (bad flags, '
                             'configs, inputs, checkpoints) too.')
flags.mark_flags_as_required(['config', 'workdir'])
USER_ERROR_STATUS = 2


def _want_distributed() -> bool:
  if _DISTRIBUTED.value is not None:
    return _DISTRIBUTED.value
  return (int(os.environ.get('SLURM_NTASKS', '1')) > 1 or 'JAX_COORDINATOR_ADDRESS' in os.environ
          or 'TPU_WORKER_HOSTNAMES' in os.environ and ',' in os.environ['TPU_WORKER_HOSTNAMES'])


def run(config, workdir: str, mode: str) -> str:
  """Dispatches one mode (each mode is one function); returns the directory it wrote."""
  if mode == 'train':
    from wvd_jax.training import train  # pylint: disable=import-outside-toplevel
    train.train_and_evaluate(config, workdir)
    return workdir
  if mode == 'sample':
    from wvd_jax.tasks import sample  # pylint: disable=import-outside-toplevel
    sample.sample(config, workdir)
    return os.path.join(workdir, 'samples')
  if mode in config_lib.TASK_MODES:
    return _run_task(config, workdir, mode)
  if mode == 'eval':
    from wvd_jax.evaluation import runner  # pylint: disable=import-outside-toplevel
    runner.evaluate(config, workdir, _CHECKPOINT.value)
    return runner.output_dir(config, workdir)
  if mode == 'export':
    from wvd_jax.training import export  # pylint: disable=import-outside-toplevel
    return export.export(config, workdir)
  if mode == 'encode_latents':
    from wvd_jax.training import encode_latents  # pylint: disable=import-outside-toplevel
    return encode_latents.encode_latents(config, workdir)
  raise ValueError(f'unknown mode {mode!r}')


class _QuietLibraries(pylogging.Filter):
  """Drops INFO lines of orbax/grain (dozens per checkpoint); warnings and errors still show, but
  without the tracebacks orbax attaches to errors of its background threads: the error itself
  reaches main, which prints it (one line for a user error such as a full disk, or a traceback)."""

  def filter(self, record):
    noisy = any(f'/{name}/' in record.pathname for name in ('orbax', 'grain', 'jax', 'absl'))
    if noisy and record.exc_info:
      record.exc_info, record.exc_text = None, None
    return record.levelno >= pylogging.WARNING or not noisy


def _run_task(config, workdir: str, mode: str) -> str:
  from wvd_jax import files, multihost  # pylint: disable=import-outside-toplevel
  from wvd_jax.tasks import api, camera_paths, media  # pylint: disable=import-outside-toplevel
  if not _INPUT.value:
    raise errors.UserError(f'--mode={mode} needs --input=<an image file'
                           f'{" or a directory of images" if mode == "multiview" else ""}>')
  # Inputs are checked before the (slow) model load.
  images = media.list_images(_INPUT.value)
  if mode != 'multiview' and os.path.isdir(_INPUT.value):
    raise errors.UserError(f'--mode={mode} takes one image; --input={_INPUT.value} is a '
                           'directory (use --mode=multiview, or name one file)')
  for image in images:
    media.load_image(image, config.data.image_size)
  if mode == 'camera_control':
    camera_paths.check(_CAMERA_PATH.value)
  model = api.WVD.load(_CHECKPOINT.value or files.as_path(workdir) / 'export', config)
  output = _OUTPUT.value or os.fspath(files.as_path(workdir) / mode)
  if not multihost.is_primary():
    output = None  # Every process runs the same seeded task; process 0 writes the files.
  known = dict(intrinsics=_INTRINSICS.value, cam_to_world=_POSES.value,
               metric_distance=_KNOWN_DISTANCE.value)
  if mode == 'image_to_3d':
    model.image_to_3d(_INPUT.value, output, **known)
  elif mode == 'depth':
    model.monocular_depth(_INPUT.value, output, **known)
  elif mode == 'multiview':
    model.multiview(_INPUT.value, output, **known)
  else:
    model.camera_control(_INPUT.value, _CAMERA_PATH.value, output)
  return output


def _fail(error: BaseException, message: str | None = None, verbose: bool | None = None):
  """Ends the run for a user error: one line on stderr (the traceback only with --verbose)."""
  if _VERBOSE.value if verbose is None else verbose:
    traceback.print_exception(error)
  line = ' '.join((message or str(error)).split())
  print(f'error: {line}', file=sys.stderr, flush=True)
  sys.exit(USER_ERROR_STATUS)


def _parse_flags(argv):
  """absl's flag parsing, with every failure (unknown flag, bad value, a config file that does not
  load, an override of an unknown key) as one line."""
  verbose = any(a in ('--verbose', '--verbose=true', '--verbose=1') for a in argv)
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _fail(e, f'{e} (see --helpshort)', verbose)
  except Exception as e:  # pylint: disable=broad-except  # ml_collections config loading.
    _fail(e, _config_problem(e), verbose)


def _config_problem(error: BaseException) -> str:
  """One line for a --config file or override that ml_collections could not apply."""
  cause = error
  while cause.__cause__ or cause.__context__:
    cause = cause.__cause__ or cause.__context__
  text = ' '.join(str(error).split())
  if isinstance(cause, KeyError):
    return (f'--config override names an unknown key ({str(cause).strip(chr(34) + chr(39))}): '
            'keys are listed in wvd_jax/config_lib.py base_config')
  missing = re.search(r"No such file or directory: '([^']*)'", text)
  if missing:
    return f'--config file {missing.group(1)} does not exist'
  if 'get_config' in text:
    return f'--config file defines no get_config() returning the config ({text[:200]})'
  return f'--config could not be loaded: {type(error).__name__}: {text[:400]}'


def main(argv):
  logging.get_absl_handler().addFilter(_QuietLibraries())
  try:
    if len(argv) > 1:
      raise errors.UserError(f'unexpected arguments {argv[1:]}: flags are written --name=value')
    try:
      config = _CONFIG.value
      config.keys()  # A config file that failed to load is a stand-in that raises when used.
    except Exception as e:  # pylint: disable=broad-except  # Deferred config-file failures.
      raise errors.UserError(_config_problem(e)) from e
    config_lib.validate_config(config)
    written = _run_mode(config)
  except errors.UserError as e:
    _fail(e)
  import jax  # pylint: disable=import-outside-toplevel
  if written is not None and jax.process_index() == 0:  # Process 0 wrote the files.
    print(f'wrote {written}', flush=True)


def _run_mode(config) -> str:
  """Initializes JAX (distributed when the environment says so) and runs --mode."""
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
    return run(config, _WORKDIR.value, _MODE.value)
  try:
    return run(config, _WORKDIR.value, _MODE.value)
  except errors.UserError as e:
    # One line, then exit at once: sys.exit would wait in jax.distributed's shutdown barrier
    # while the other processes wait in their next collective.
    if _VERBOSE.value:
      traceback.print_exception(e)
    print(f'error: {" ".join(str(e).split())}', file=sys.stderr, flush=True)
    os._exit(USER_ERROR_STATUS)  # pylint: disable=protected-access
  except BaseException:  # pylint: disable=broad-except
    # A failed process would otherwise wait minutes in jax.distributed's shutdown barrier while
    # the others wait in their next collective: exit at once so the launcher ends the job.
    logging.exception('process %d failed', jax.process_index())
    sys.stderr.flush()
    os._exit(1)  # pylint: disable=protected-access


def cli(argv=None):
  """The command line: absl's app.run with one-line user errors (exits; tests call it too)."""
  app.run(main, argv=argv, flags_parser=_parse_flags)


if __name__ == '__main__':
  cli()
