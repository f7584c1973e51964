"""Data throughput: the synthetic world's renderer and dataset build, and the grain pipeline.

Prints one JSON object with
  render:   clips/s of the ray caster in a pool of ``--render-procs`` CPU processes (one XLA
            thread each; compile excluded), at ``--render-size`` x ``--render-frames``, plus CPU
            seconds per clip for scene + camera generation and for the jitted render;
  build:    a whole dataset build (render pool + TFDS ArrayRecord writing) into a temporary
            directory: start-up (spawn + compile), steady clips/s while generating, the time
            after generation (shard writing), and the projected time for 10k clips;
  pipeline: batches/s and clips/s of ``pipeline.make_dataset`` at ``--size`` x ``--frames``
            with ``--workers`` grain worker processes (after a warm-up), and the per-stage CPU
            milliseconds per clip measured in this process (read, frame selection + crop /
            resize, canonicalize, batch);
  mixture:  clips/s of the ``small`` config's training pipeline (64x64, 8 frames at stride
            1-2 of 15 rendered, batch 32, photo appearance) mixing the synthetic world (0.7)
            with a dataset directory read as a converted dataset is (0.3; DirectoryClipSource,
            96x96 clips of 18 frames, so frames are selected and resized), against what the
            ``small`` model consumes on an H200 (SMALL_MODEL_CLIPS_PER_S): ``headroom``.

  python benchmarks/data_bench.py            # 128x128x8 renders; 256x256x8 pipeline
  python benchmarks/data_bench.py --small    # seconds: 32x32 renders, 64x64 pipeline
  python benchmarks/data_bench.py --skip=render,build,pipeline --workers=16   # mixture only

The issue's goals: 10k clips of 8 x 128 x 128 rendered in under 10 minutes on 2 cores
(>= 16.7 clips/s), and a pipeline delivering >= 66 clips/s at 256 x 256 x 8 (3x what the 2B
model consumes on one H100). The machine this runs on may be shared: CPU seconds per clip are
reported next to wall-clock rates.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The small model's training rate on one H200 (README, RESULTS.md): 12.75 steps/s x batch 32.
SMALL_MODEL_CLIPS_PER_S = 12.75 * 32


def _parse(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--small', action='store_true', help='tiny sizes (seconds)')
  p.add_argument('--render-procs', type=int, default=None, help='render processes (default: cores)')
  p.add_argument('--render-size', type=int, default=None, help='render side (default 128; 32 small)')
  p.add_argument('--render-frames', type=int, default=8)
  p.add_argument('--render-clips', type=int, default=None, help='timed clips (default 64; 8 small)')
  p.add_argument('--build-clips', type=int, default=None, help='clips of the timed dataset build '
                 '(default 128; 16 small)')
  p.add_argument('--size', type=int, default=None, help='pipeline side (default 256; 64 small)')
  p.add_argument('--frames', type=int, default=8)
  p.add_argument('--batch', type=int, default=4, help='pipeline batch (clips)')
  p.add_argument('--workers', type=int, default=None, help='grain workers (default: cores)')
  p.add_argument('--batches', type=int, default=None, help='timed batches (default 16; 4 small)')
  p.add_argument('--mix-clips', type=int, default=None, help='synthetic clips of the mixture '
                 '(default 512; 96 small)')
  p.add_argument('--mix-batches', type=int, default=None, help='timed mixture batches of 32 '
                 '(default 32; 4 small)')
  p.add_argument('--skip', default='',
                 help='comma list of sections to skip: render,build,pipeline,mixture')
  return p.parse_args(argv)


def _timed_render(job):
  """(clip seconds of CPU for spec generation, for rendering) of one clip, in a pool worker."""
  from wvd_jax.data import renderer, synthetic_world  # pylint: disable=g-import-not-at-top
  seed, index, frames, size = job
  t0 = time.process_time()
  scene, K, poses = synthetic_world.make_clip_spec(seed, 'train', index, frames, size)
  t1 = time.process_time()
  renderer.render(scene, K, poses, size, size)
  return t1 - t0, time.process_time() - t1


def bench_render(args) -> dict:
  from wvd_jax.data import storage  # pylint: disable=g-import-not-at-top
  procs = args.render_procs or os.cpu_count()
  with storage.render_pool(procs) as pool:
    t0 = time.perf_counter()
    list(pool.map(_timed_render, [(0, 10_000 + i, args.render_frames, args.render_size)
                                  for i in range(2 * procs)]))  # Start + compile every worker.
    warmup = time.perf_counter() - t0
    jobs = [(0, i, args.render_frames, args.render_size) for i in range(args.render_clips)]
    t0 = time.perf_counter()
    costs = np.array(list(pool.map(_timed_render, jobs)))
    wall = time.perf_counter() - t0
  return dict(processes=procs, size=args.render_size, frames=args.render_frames,
              clips=args.render_clips, clips_per_s=args.render_clips / wall,
              cpu_s_per_clip_scene_and_cameras=float(costs[:, 0].mean()),
              cpu_s_per_clip_render=float(costs[:, 1].mean()),
              clips_per_s_per_core_from_cpu_time=float(1 / costs.sum(1).mean()),
              startup_and_compile_s=warmup)


def bench_build(args) -> dict:
  from wvd_jax.data import storage  # pylint: disable=g-import-not-at-top
  params = storage.WorldParams(seed=0, size=args.render_size, frames=args.render_frames,
                               num_train=args.build_clips, num_validation=1, num_test=1)
  stamps = []
  original_map = storage._Renderer.map  # pylint: disable=protected-access

  def timed_map(self, jobs):
    for clip in original_map(self, jobs):
      stamps.append(time.perf_counter())
      yield clip

  old = storage._POOL_THRESHOLD_S  # pylint: disable=protected-access
  storage._POOL_THRESHOLD_S = 0.0  # Always the pool, as a large build would.  pylint: disable=protected-access
  storage._Renderer.map = timed_map  # pylint: disable=protected-access
  try:
    with tempfile.TemporaryDirectory() as tmp:
      t0 = time.perf_counter()
      storage.prepare(params, tmp, render_workers=args.render_procs or 0)
      wall = time.perf_counter() - t0
      size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(tmp) for f in fs)
  finally:
    storage._POOL_THRESHOLD_S = old  # pylint: disable=protected-access
    storage._Renderer.map = original_map  # pylint: disable=protected-access
  clips = args.build_clips + 2
  train = stamps[:args.build_clips]
  startup = train[0] - t0
  steady = (len(train) - 1) / (train[-1] - train[0])
  rest = wall - (train[-1] - t0)  # The small splits and TFDS's shard writing after the train split.
  return dict(clips=clips, size=args.render_size, frames=args.render_frames, wall_s=wall,
              startup_s=startup, steady_clips_per_s=steady, after_generation_s=rest,
              bytes_per_clip=size / clips,
              projected_10k_clips_minutes=(startup + 10_000 / steady
                                           + rest * 10_000 / clips) / 60)


def _stage_costs(config, workdir, n=8) -> dict:
  """Per-clip CPU milliseconds of each pipeline stage, in this process."""
  from wvd_jax.data import clips, pipeline, transforms  # pylint: disable=g-import-not-at-top
  from wvd_jax.data import storage  # pylint: disable=g-import-not-at-top
  source = storage.open_split(storage.WorldParams.from_config(config),
                              pipeline.data_dir(config, workdir), 'train', complete=False)
  rng = np.random.default_rng(0)
  totals = dict(read=0.0, frames_crop_resize=0.0, canonicalize=0.0, batch=0.0)
  outs = []
  for i in range(n):
    t0 = time.process_time()
    clip = source[i % len(source)]
    t1 = time.process_time()
    idx = transforms.frame_indices(clip['depth'].shape[0], config.data.num_frames,
                                   config.data.max_frame_stride, rng)
    clip = transforms.crop_and_resize(
        transforms.select_frames({k: clip[k] for k in clips.STORED_FIELDS}, idx),
        config.data.image_size)
    t2 = time.process_time()
    outs.append(transforms.canonicalize(clip))
    t3 = time.process_time()
    totals['read'] += t1 - t0
    totals['frames_crop_resize'] += t2 - t1
    totals['canonicalize'] += t3 - t2
  t0 = time.process_time()
  {k: np.stack([o[k] for o in outs]) for k in outs[0]}  # pylint: disable=expression-not-assigned
  totals['batch'] = time.process_time() - t0
  return {f'{k}_ms_per_clip': 1000 * v / n for k, v in totals.items()}


def bench_pipeline(args) -> dict:
  from wvd_jax import config_lib  # pylint: disable=g-import-not-at-top
  from wvd_jax.data import pipeline, storage  # pylint: disable=g-import-not-at-top
  config = config_lib.base_config()
  d = config.data
  d.image_size = d.render_size = args.size
  d.num_frames = args.frames
  d.num_train_scenes = max(2 * args.batch, 16 if args.small else 32)
  d.num_validation_scenes = d.num_test_scenes = 1
  d.batch_size = args.batch
  d.worker_count = os.cpu_count() if args.workers is None else args.workers
  with tempfile.TemporaryDirectory() as workdir:
    t0 = time.perf_counter()
    storage.prepare(storage.WorldParams.from_config(config), pipeline.data_dir(config, workdir))
    build = time.perf_counter() - t0
    stages = _stage_costs(config, workdir)
    it = iter(pipeline.make_dataset(config, 'train', workdir))
    t0 = time.perf_counter()
    next(it)
    next(it)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(args.batches):
      batch = next(it)
    wall = time.perf_counter() - t0
    if hasattr(it, 'close'):
      it.close()
  return dict(size=args.size, frames=args.frames, batch=args.batch, workers=d.worker_count,
              batches=args.batches, batches_per_s=args.batches / wall,
              clips_per_s=args.batches * args.batch / wall, first_two_batches_s=first,
              dataset_build_s=build, batch_bytes=int(sum(v.nbytes for v in batch.values())),
              **stages)


def bench_mixture(args) -> dict:
  from wvd_jax.data import pipeline, storage  # pylint: disable=g-import-not-at-top
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location('small', os.path.join(
      os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs', 'small.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  d = config.data
  d.num_train_scenes = args.mix_clips
  d.num_validation_scenes = d.num_test_scenes = 1
  d.worker_count = os.cpu_count() if args.workers is None else args.workers
  with tempfile.TemporaryDirectory() as workdir:
    t0 = time.perf_counter()
    storage.prepare(storage.WorldParams.from_config(config), pipeline.data_dir(config, workdir))
    other = storage.WorldParams(seed=1, size=96, frames=18, num_train=max(args.mix_clips // 4, 16),
                                num_validation=1, num_test=1)
    storage.prepare(other, os.path.join(workdir, 'other'))
    build = time.perf_counter() - t0
    d.sources = (f'synthetic_world=0.7,'
                 f'{storage.dataset_dir(other, os.path.join(workdir, "other"))}=0.3')
    # CPU time a clip in this process (the shared machine's load does not count in it).
    examples = pipeline.global_examples(config, 'train', workdir)
    examples[0]  # pylint: disable=pointless-statement
    t0 = time.process_time()
    for g in range(1, 33):
      examples[g]  # pylint: disable=pointless-statement
    cpu_ms = (time.process_time() - t0) / 32 * 1000
    it = iter(pipeline.make_dataset(config, 'train', workdir))
    t0 = time.perf_counter()
    next(it)
    next(it)
    first = time.perf_counter() - t0
    sources = []
    t0 = time.perf_counter()
    for _ in range(args.mix_batches):
      sources.append(next(it)['source'])
    wall = time.perf_counter() - t0
    if hasattr(it, 'close'):
      it.close()
  clips_per_s = args.mix_batches * d.batch_size / wall
  return dict(size=d.image_size, frames=d.num_frames, batch=d.batch_size,
              workers=d.worker_count, batches=args.mix_batches, clips_per_s=clips_per_s,
              converted_share=float(np.mean(np.concatenate(sources) == 1)),
              first_two_batches_s=first, datasets_build_s=build, cpu_ms_per_clip=cpu_ms,
              clips_per_s_per_core_from_cpu_time=1000 / cpu_ms,
              small_model_clips_per_s=SMALL_MODEL_CLIPS_PER_S,
              headroom=clips_per_s / SMALL_MODEL_CLIPS_PER_S)


def main(argv=None) -> dict:
  args = _parse(argv)
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  # Every render / grain worker process compiles the ray caster: share it through JAX's
  # persistent cache (the environment is inherited by the spawned workers).
  os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                        os.path.join(tempfile.gettempdir(), 'wvd_jax_compilation_cache'))
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
  args.render_size = args.render_size or (32 if args.small else 128)
  args.render_clips = args.render_clips or (8 if args.small else 64)
  args.build_clips = args.build_clips or (16 if args.small else 128)
  args.size = args.size or (64 if args.small else 256)
  args.batches = args.batches or (4 if args.small else 16)
  args.mix_clips = args.mix_clips or (96 if args.small else 512)
  args.mix_batches = args.mix_batches or (4 if args.small else 32)
  skip = set(filter(None, args.skip.split(',')))
  result = dict(cpu_count=os.cpu_count(),
                load_average_1min=os.getloadavg()[0] if hasattr(os, 'getloadavg') else None)
  if 'render' not in skip:
    result['render'] = bench_render(args)
  if 'build' not in skip:
    result['build'] = bench_build(args)
  if 'pipeline' not in skip:
    result['pipeline'] = bench_pipeline(args)
  if 'mixture' not in skip:
    result['mixture'] = bench_mixture(args)
  print(json.dumps(result))
  return result


if __name__ == '__main__':
  main()
