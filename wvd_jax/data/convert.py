"""Converts a real dataset's public layout into the project's shard format.

  python -m wvd_jax.data.convert --format={colmap,co3d,re10k,scannetpp} --input=DIR \
      --output=DIR [--depth=DIR] [--image_size=256] [--frames=16 --stride=1] [--workers=N]

Formats and their layouts: wvd_jax/data/formats/<format>.py (and WORKSPACE.md). Output: a TFDS
ArrayRecord dataset version directory (data/converted.py) that
``storage.DirectoryClipSource(output, split)`` reads; ``read_scene(output, name)`` gives one
scene's stored frames back.

Scenes are converted in a pool of spawned processes (``--workers``), each written to
``<output>.partial/scenes/`` as it finishes; the shards are then written under
``<output>.partial/`` and the finished dataset is renamed to ``<output>`` in one step, so an
interrupted or failed conversion never leaves anything at ``<output>``. Running the same command
again resumes: scenes already in ``<output>.partial/`` are reused when the conversion's settings
are unchanged (else it starts clean). A scene with a bad file is skipped with one line naming
the file and the problem; the other scenes still convert. The command fails (exit 1) only when
no scene converted, or on a bad flag.
"""
from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import shutil
import sys
from concurrent import futures

from absl import app, flags

from wvd_jax import files
from wvd_jax.data import converted
from wvd_jax.data.converted import read_scene  # noqa: F401  (the public entry point)
from wvd_jax.data.formats import FORMATS, common
from wvd_jax.errors import UserError

PARTIAL_SUFFIX = '.partial'


@dataclasses.dataclass
class Summary:
  """What a conversion wrote: scenes, clips, frames, and the skipped scenes with reasons."""
  output: str
  scenes: int = 0
  clips: int = 0
  frames: int = 0
  resumed: int = 0
  skipped: list = dataclasses.field(default_factory=list)

  def lines(self) -> list[str]:
    out = [f'wrote {self.scenes} scenes, {self.clips} clips, {self.frames} frames to '
           f'{self.output}' + (f' ({self.resumed} scenes resumed)' if self.resumed else '')]
    if self.skipped:
      out.append(f'skipped {len(self.skipped)} scenes:')
      out += [f'  {name}: {reason}' for name, reason in self.skipped]
    return out


def _convert_scene(format_name: str, ref: common.SceneRef, options: common.FormatOptions,
                   params: converted.ClipParams, path: str):
  """Worker: one scene to its stage-1 file -> (name, frames, clips) or (name, reason)."""
  try:
    frames = FORMATS[format_name].load_frames(ref, options)
    scene = converted.prepare_scene(ref.name, frames, params)
  except UserError as e:
    return ref.name, str(e)
  converted.write_scene(path, scene)
  return ref.name, (len(scene['indices']), len(scene['clips']))


def _pool(workers: int) -> futures.Executor:
  return futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context('spawn'))


def _start_partial(partial: str, manifest: dict) -> bool:
  """Prepares ``partial``; True when it resumes an earlier run with the same settings."""
  manifest_path = os.path.join(partial, 'manifest.json')
  if os.path.isfile(manifest_path):
    with open(manifest_path, encoding='utf-8') as f:
      try:
        same = json.load(f) == manifest
      except ValueError:
        same = False
    if same:
      return True
  if os.path.exists(partial):
    shutil.rmtree(partial)
  os.makedirs(os.path.join(partial, 'scenes'))
  with files.atomic_write(manifest_path, 'w') as f:
    json.dump(manifest, f, indent=1, sort_keys=True)
  return False


def _check_arguments(format_name, options, split, validation_fraction, test_fraction, output):
  if format_name not in FORMATS:
    raise UserError(f'--format={format_name!r}: expected one of {sorted(FORMATS)}')
  if not os.path.isdir(options.input):
    raise UserError(f'--input={options.input}: not a folder')
  if options.depth and not os.path.isdir(options.depth):
    raise UserError(f'--depth={options.depth}: not a folder')
  if split and split not in converted.SPLITS:
    raise UserError(f'--split={split!r}: expected one of {converted.SPLITS}')
  if not (0 <= validation_fraction and 0 <= test_fraction
          and validation_fraction + test_fraction <= 1):
    raise UserError('--validation_fraction and --test_fraction must be >= 0 with a sum <= 1, got '
                    f'{validation_fraction} and {test_fraction}')
  if os.path.exists(output):
    raise UserError(f'--output={output} exists: remove it or choose another folder')


def _list_scenes(format_name, options):
  scenes, skipped = FORMATS[format_name].list_scenes(options)
  if not scenes and not skipped:
    raise UserError(f'--input={options.input}: no scene in the {format_name} layout found (see '
                    f'wvd_jax/data/formats/{format_name}.py or the README\'s "Your own data")')
  names = [s.name for s in scenes]
  if len(set(names)) != len(names):
    repeated = sorted({n for n in names if names.count(n) > 1})
    raise UserError(f'{options.input}: scene names repeat: {repeated}')
  return scenes, skipped


def _run_scenes(format_name, todo, options, params, *, workers, progress, initial, total,
                summary, log):
  """Converts the (SceneRef, stage-1 path) pairs of ``todo`` (in a spawn pool when workers > 1);
  returns {name: (frames, clips)} and adds the skipped scenes to ``summary``."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  done = {}
  bar = tqdm(total=total, initial=initial, unit='scene', desc='convert', disable=not progress,
             file=sys.stderr)
  executor = _pool(workers) if workers > 1 and len(todo) > 1 else None
  try:
    if executor is None:
      results = (_convert_scene(format_name, ref, options, params, path) for ref, path in todo)
    else:
      jobs = [executor.submit(_convert_scene, format_name, ref, options, params, path)
              for ref, path in todo]
      results = (job.result() for job in futures.as_completed(jobs))
    for name, result in results:
      bar.update(1)
      if isinstance(result, str):
        summary.skipped.append((name, result))
        (bar.write if progress else log)(f'skipped {name}: {result}')
      else:
        done[name] = result
  finally:
    bar.close()
    if executor is not None:
      executor.shutdown(cancel_futures=True)
  return done


def convert(format_name: str, options: common.FormatOptions, output: str,
            params: converted.ClipParams, *, validation_fraction: float = 0.05,
            test_fraction: float = 0.05, split: str = '', workers: int = 1,
            progress: bool = True, log=print) -> Summary:
  """Converts ``options.input`` (layout ``format_name``) into the dataset ``output``.

  ``split`` puts every scene into that split; else scenes go to test / validation / train by a
  hash of their name against the fractions. Returns the Summary; raises UserError on a bad
  argument or when no scene converted (then nothing is written)."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  output = os.path.abspath(output)
  _check_arguments(format_name, options, split, validation_fraction, test_fraction, output)
  scenes, skipped = _list_scenes(format_name, options)
  partial = output + PARTIAL_SUFFIX
  manifest = dict(format=format_name, options=dataclasses.asdict(options),
                  input=os.path.abspath(options.input), clips=dataclasses.asdict(params),
                  version=converted.VERSION)
  resumed = _start_partial(partial, manifest)
  summary = Summary(output, skipped=list(skipped))
  for name, reason in skipped:
    log(f'skipped {name}: {reason}')
  scene_dir = os.path.join(partial, 'scenes')
  done, todo = {}, []
  for ref in scenes:
    path = converted.scene_file(scene_dir, ref.name)
    if resumed and os.path.isfile(path):
      done[ref.name] = converted.scene_counts(path)
      summary.resumed += 1
    else:
      todo.append((ref, path))
  done.update(_run_scenes(format_name, todo, options, params, workers=workers,
                          progress=progress, initial=len(done), total=len(scenes),
                          summary=summary, log=log))
  summary.skipped.sort()
  if not done:
    shutil.rmtree(partial, ignore_errors=True)
    reasons = '; '.join(f'{n}: {r}' for n, r in summary.skipped[:3])
    raise UserError(f'no scene of {options.input} converted ({len(scenes)} found as '
                    f'{format_name}){": " + reasons if reasons else ""}')
  scene_files = {}
  for ref in scenes:
    if ref.name in done:
      which = split or converted.split_of(ref.name, validation_fraction, test_fraction)
      scene_files.setdefault(which, []).append(converted.scene_file(scene_dir, ref.name))
      summary.scenes += 1
      summary.frames += done[ref.name][0]
      summary.clips += done[ref.name][1]
  build_dir = os.path.join(partial, 'tfds')
  shutil.rmtree(build_dir, ignore_errors=True)
  metadata = dict(format=format_name, input=os.path.abspath(options.input),
                  clips=dataclasses.asdict(params), converter_version=converted.VERSION,
                  conventions='OpenCV cameras, cam_to_world 4x4, K in pixels with pixel centres '
                              'at (col + 0.5, row + 0.5), z-depth in the source units (0 = '
                              'unknown), valid = depth > 0')
  with tqdm(total=summary.clips, unit='clip', desc='write', disable=not progress,
            file=sys.stderr) as write_bar:
    directory = converted.build(build_dir, scene_files, frames=params.frames,
                                size=params.image_size, metadata=metadata,
                                skipped=summary.skipped, progress=write_bar)
  os.makedirs(os.path.dirname(output), exist_ok=True)
  os.rename(directory, output)
  shutil.rmtree(partial, ignore_errors=True)
  return summary


_FORMAT = flags.DEFINE_enum('format', None, sorted(FORMATS), 'The input\'s layout.')
_INPUT = flags.DEFINE_string('input', None, 'The dataset folder (see the format\'s layout).')
_OUTPUT = flags.DEFINE_string('output', None, 'The dataset directory to write (must not exist).')
_DEPTH = flags.DEFINE_string('depth', '', 'Per-frame depth or point maps: '
                             '<DIR>/<scene>/<frame stem>.npy|.png (colmap, re10k).')
_DEPTH_SCALE = flags.DEFINE_float('depth_scale', 0.0, '16-bit PNG depth = value * this (0: the '
                                  'format\'s default, 1; scannetpp 0.001).')
_FOREGROUND = flags.DEFINE_bool('foreground_only', False, 'co3d: depth outside the foreground '
                                'mask becomes unknown.')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 256, 'Square output resolution.')
_FRAMES = flags.DEFINE_integer('frames', 16, 'Frames a clip.')
_STRIDE = flags.DEFINE_integer('stride', 1, 'Source frames between a clip\'s frames.')
_STEP = flags.DEFINE_integer('step', 0, 'Source frames between clip starts (0: (frames - 1) * '
                             'stride).')
_MAX_ROTATION = flags.DEFINE_float('max_rotation_deg', 60.0, 'Largest rotation between a clip\'s '
                                   'first and last camera (degrees).')
_MAX_TRANSLATION = flags.DEFINE_float('max_translation', 1.0, 'Largest distance between a clip\'s '
                                      'first and last camera, in median depths of its first '
                                      'frame.')
_MIN_TRANSLATION = flags.DEFINE_float('min_translation', 0.0, 'Smallest such distance.')
_SPLIT = flags.DEFINE_string('split', '', 'Put every scene into this split (train, validation, '
                             'test); empty: by a hash of the scene name.')
_VALIDATION = flags.DEFINE_float('validation_fraction', 0.05, 'Share of scenes in validation.')
_TEST = flags.DEFINE_float('test_fraction', 0.05, 'Share of scenes in test.')
_WORKERS = flags.DEFINE_integer('workers', 0, 'Processes converting scenes (0: one a CPU core).')
flags.mark_flags_as_required(['format', 'input', 'output'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  workers = _WORKERS.value or len(os.sched_getaffinity(0))
  try:
    params = converted.ClipParams(
        image_size=_IMAGE_SIZE.value, frames=_FRAMES.value, stride=_STRIDE.value,
        step=_STEP.value, max_rotation_deg=_MAX_ROTATION.value,
        max_translation=_MAX_TRANSLATION.value, min_translation=_MIN_TRANSLATION.value)
    options = common.FormatOptions(input=_INPUT.value, depth=_DEPTH.value,
                                   depth_scale=_DEPTH_SCALE.value,
                                   foreground_only=_FOREGROUND.value)
    summary = convert(_FORMAT.value, options, _OUTPUT.value, params,
                      validation_fraction=_VALIDATION.value, test_fraction=_TEST.value,
                      split=_SPLIT.value, workers=workers)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)
  except KeyboardInterrupt:
    print(f'interrupted: nothing was written to {_OUTPUT.value}; run the same command again to '
          f'resume from {_OUTPUT.value}{PARTIAL_SUFFIX}', file=sys.stderr)
    sys.exit(130)
  for line in summary.lines():
    print(line)


if __name__ == '__main__':
  app.run(main)
