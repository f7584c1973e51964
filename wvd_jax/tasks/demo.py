"""`make demo`: every task of the shipped pretrained model on a held-out synthetic image and on a
real photograph, in about two minutes on a 2-core CPU.

  python -m wvd_jax.tasks.demo [--model=pretrained/wvd_small] [--output=workdir/demo]
      [--steps=4] [--frames=4] [--chunks=2]

Inputs:
  * synthetic: clip 0 of the synthetic world's TEST split of the model's own config (scenes
    never trained on), rendered on the fly (synthetic_world.render_clip: only that clip, not
    the dataset), its frames taken config.eval.frame_stride apart as in evaluation;
  * photo: scikit-image's ``coffee`` (a cup on a table, 400 x 600; PHOTO below says why).
Tasks and outputs (under --output, one directory per input):
  image_to_3d/      points.ply (the point cloud), cameras/ (COLMAP text), samples.png,
                    confidence.png, reconstruction.npz
  depth/            depth.png (turbo colour map, near = warm, >= 256 px), depth.npy; for the
                    synthetic image also truth.png (the renderer's depth, same colour scale) and
                    input.png
  multiview/        (synthetic: the clip's frames as an unposed set) depth_<i>.png, cameras/
  camera_control/   video.mp4 (an orbit), frames/, reprojected.png, camera_path.json
Monocular depth is frame 0 of image_to_3d's reconstruction (wvd_tasks.monocular_depth is that
same computation), and camera control reuses it as its first step, so the photo costs one
sampling plus one a chunk. A real photograph has one view only: multi-view runs on the synthetic
clip alone.

Speed settings (the task allows them; the model is unchanged): ``--steps`` DDIM steps (the
config's sample.num_steps, 50 for configs/small.py, is for evaluation), one sample per input (no
confidence spread: confidence maps are flat), no Langevin corrector, float32 compute on a CPU,
``--frames`` frames per sampled video (the DiT's 3D rotary embedding takes any frame count; the
model trained on data.num_frames), and an orbit of ``--chunks`` chunks of frames - 1 new views
(whole chunks: one compiled shape).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import ml_collections
import numpy as np

from wvd_jax import config_lib, errors, visualize
from wvd_jax.data import pipeline, synthetic_world
from wvd_jax.models import inference_checkpoint, shipped
from wvd_jax.tasks import api, media

DEFAULT_MODEL = 'pretrained/wvd_small'
# A real photograph without depth or disparity truth, bundled offline. Every such scene photo of
# scikit-image 0.26 and matplotlib (astronaut, coffee, chelsea/cat, rocket, camera,
# grace_hopper) is also a texture of the photo-appearance world (data/textures.py), where it is
# cropped, scaled and pasted onto surfaces, never seen as a perspective scene; the others need a
# download (eagle) or are not scenes (microscopy, text, coins). coffee has clear depth: a cup in
# front of a table and a wall.
PHOTO = 'coffee'
STEPS, FRAMES, CHUNKS = 4, 4, 2  # The demo's speed settings (module docstring).


def demo_config(model: str, *, steps: int, frames: int):
  """The model's own config with the demo's speed settings (module docstring)."""
  if not os.path.isdir(model):
    raise errors.UserError(
        f'no pretrained model at {model}: the repository ships it as {DEFAULT_MODEL} (check '
        'out the full repository); `make demo-train` trains a demo model from scratch instead')
  if shipped.is_shipped(model):
    config = ml_collections.ConfigDict(shipped.read_manifest(model)["config"])
  else:
    config = inference_checkpoint.load_config(model)
  config.sample.num_steps = steps
  config.sample.num_samples = 1
  config.sample.langevin_steps = 0
  config.sample.guidance = 1.0
  config.data.num_frames = frames
  if jax.default_backend() == 'cpu':  # XLA:CPU has no fast bf16 matmul: float32 is ~17% faster.
    config.model.compute_dtype = 'float32'
  return config


def held_out_clip(config, index: int = 0) -> dict[str, np.ndarray]:
  """Test clip ``index`` of the config's synthetic world at the model's size: rgb (N, S, S, 3)
  uint8 and depth (N, S, S) (metric z, 0 = background), N = data.num_frames frames taken
  eval.frame_stride apart (fewer when the rendered clip is too short)."""
  d = config.data
  raw = synthetic_world.render_clip(config.seed, 'test', index, config_lib.render_frames(config),
                                    d.render_size, d.object_fraction, complete=False,
                                    photo_appearance=d.photo_appearance)
  available = raw['depth'].shape[0]
  stride = max(1, min(config.eval.frame_stride, (available - 1) // max(d.num_frames - 1, 1)))
  clip = pipeline.resized_frames(raw, num_frames=d.num_frames, image_size=d.image_size,
                                 stride=stride)
  return dict(rgb=np.asarray(clip['rgb']), depth=np.asarray(clip['depth'], np.float32))


def photo_path(output: str) -> str:
  """The demo photograph written as a PNG (the API's file route: centre crop and resize)."""
  import skimage.data  # pylint: disable=g-import-not-at-top
  path = os.path.join(output, 'photo', 'input.png')
  visualize.save_png(path, getattr(skimage.data, PHOTO)())
  return path


def _log(message: str, start: float):
  print(f'[{time.time() - start:5.1f} s] {message}', flush=True)


def run(model: str, output: str, *, steps: int = STEPS, frames: int = FRAMES,
        chunks: int = CHUNKS) -> dict:
  """Runs every task (module docstring); returns {input: {task: result}}."""
  start = time.time()
  poses = chunks * (frames - 1) + 1  # The input's camera, then whole chunks.
  wvd = api.WVD.load(model, demo_config(model, steps=steps, frames=frames))
  _log(f'loaded {model} ({wvd.image_size} px, {frames} frames, {steps} DDIM steps)', start)
  clip = held_out_clip(wvd.config)
  views = clip['rgb'].astype(np.float32) / 127.5 - 1.0
  inputs = {'synthetic': views[0], 'photo': photo_path(output)}
  results = {}
  for name, image in inputs.items():
    out = os.path.join(output, name)
    rec = wvd.image_to_3d(image, os.path.join(out, 'image_to_3d'))
    depth_dir = os.path.join(out, 'depth')
    os.makedirs(depth_dir, exist_ok=True)
    media.save_depth(os.path.join(depth_dir, 'depth'), rec.depth[0], rec.foreground[0])
    if name == 'synthetic':  # The truth beside it, on the prediction's colour scale.
      truth = clip['depth'][0]
      scale = np.median(truth[truth > 0]) / np.median(rec.depth[0][rec.foreground[0]])
      lo, hi = visualize.depth_range(rec.depth[0] * scale, rec.foreground[0])
      media.save_display_png(os.path.join(depth_dir, 'truth.png'),
                             visualize.colorize_depth(truth, truth > 0, (lo, hi)))
      media.save_display_png(os.path.join(depth_dir, 'input.png'), clip['rgb'][0])
    _log(f'{name}: image_to_3d and depth', start)
    results[name] = {'image_to_3d': rec}
    if name == 'synthetic':
      results[name]['multiview'] = wvd.multiview(views, os.path.join(out, 'multiview'))
      _log(f'{name}: multiview ({len(views)} views)', start)
    results[name]['camera_control'] = wvd.camera_control(
        image, 'orbit', os.path.join(out, 'camera_control'), num_targets=poses, first=rec)
    _log(f'{name}: camera_control ({poses} frames)', start)
  print(f'wrote {output}', flush=True)
  return results


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m wvd_jax.tasks.demo',
                                   description=__doc__.split('\n')[0])
  parser.add_argument('--model', default=DEFAULT_MODEL,
                      help='a shipped model directory or an exported checkpoint')
  parser.add_argument('--output', default='workdir/demo')
  parser.add_argument('--steps', type=int, default=STEPS, help='DDIM steps per sampled video')
  parser.add_argument('--frames', type=int, default=FRAMES, help='frames per sampled video')
  parser.add_argument('--chunks', type=int, default=CHUNKS,
                      help='camera control: chunks of frames - 1 new views')
  args = parser.parse_args(argv)
  # Compiled programs are kept (JAX's persistent cache) beside the outputs: a second run skips
  # the compiles, a third of the first run's time on a CPU.
  if not jax.config.jax_compilation_cache_dir:
    jax.config.update('jax_compilation_cache_dir', os.path.join(
        os.path.dirname(os.path.abspath(args.output)), '.jax_cache'))
  try:
    if args.steps < 1 or args.frames < 2 or args.chunks < 1:
      raise errors.UserError(f'--steps ({args.steps}) and --chunks ({args.chunks}) must be '
                             f'>= 1 and --frames ({args.frames}) >= 2')
    run(args.model, args.output, steps=args.steps, frames=args.frames, chunks=args.chunks)
  except errors.UserError as e:
    return errors.print_one_line(e)
  return 0


if __name__ == '__main__':
  sys.exit(main())
