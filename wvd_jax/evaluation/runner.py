"""`--mode=eval`: the WVD tasks over a held-out split, scored, with a report under the workdir.

  python -m wvd_jax.main --config=configs/small.py --workdir=DIR --mode=eval \
      [--checkpoint=EXPORT_DIR] [--config.eval.num_clips=32] [--config.eval.dataset_dir=...]

The model is the exported inference checkpoint (<workdir>/export, written first from the newest
training checkpoint when missing). Clips come from the synthetic world's ``eval.split`` or from
``eval.dataset_dir`` (any dataset in the project's shard format). Each clip runs the tasks of
``eval.tasks`` (protocol.py); the scores are pooled over the split (aggregate) and written with
plots and a gallery (report.py) to <workdir>/eval or ``eval.output_dir``.

In a multi-host job process p evaluates clips p, p + P, ... on its own devices; the per-clip
scores and gallery entries are gathered to every process (multihost.gather_records) and process 0
writes the report, the same report as one process writes.
"""
from __future__ import annotations

import dataclasses
import os
import re
import time

import jax
import numpy as np
import tqdm
from absl import logging

from wvd_jax import config_lib, files, multihost
from wvd_jax.data import pipeline, storage
from wvd_jax.evaluation import (consistency, depth_metrics, learned as learned_lib, pose_metrics,
                                protocol, report)
from wvd_jax.geometry import export
from wvd_jax.models import checkpoint_reader

DEPTH_PREFIXES = ('mono', 'mono_baseline', 'video', 'video_baseline')
POSE_PREFIXES = ('pose', 'pose_baseline')


def open_clips(config, workdir: str):
  """The clips to evaluate: eval.dataset_dir's split, or the synthetic world's."""
  if config.eval.dataset_dir:
    return storage.DirectoryClipSource(config.eval.dataset_dir, config.eval.split, complete=False)
  return pipeline.load_split(config, config.eval.split, workdir, complete=False)


def source_configs(config, workdir: str) -> list[tuple[str, str, object]]:
  """[(source, its report's subdirectory, a config that evaluates it alone)] for each of several
  config.data.sources (and no eval.dataset_dir); [] otherwise. Each source is evaluated on its
  own eval.split, its report in <output>/source<i>_<name>/."""
  sources = config_lib.data_sources(config)
  if config.eval.dataset_dir or len(sources) == 1:
    return []
  output = config.eval.output_dir or os.path.join(workdir, 'eval')
  out = []
  for index, (name, _) in enumerate(sources):
    subdir = f'source{index}_' + re.sub(r'[^A-Za-z0-9_.-]+', '_', name.strip('/'))[-48:]
    single = config.copy_and_resolve_references()
    single.data.sources = name
    single.eval.dataset_dir = '' if name == config_lib.SYNTHETIC_WORLD else name
    single.eval.output_dir = os.path.join(output, subdir)
    out.append((name, subdir, single))
  return out


def _evaluate_sources(config, workdir: str, checkpoint: str | None, sources) -> dict:
  """Evaluates each source (source_configs) and writes the index report over them."""
  per_source = {}
  for name, subdir, single in sources:
    logging.info('evaluating data source %s', name)
    per_source[name] = (subdir, evaluate(single, workdir, checkpoint))
  if jax.process_index() == 0:
    report.write_source_index(config.eval.output_dir or os.path.join(workdir, 'eval'), per_source)
  return {'per_source': {name: r for name, (_, r) in per_source.items()}}


def _scalars(values: dict, prefix: str) -> dict:
  return {k[len(prefix) + 1:]: v for k, v in values.items() if k.startswith(prefix + '/')}


def aggregate(per_clip: list[dict]) -> dict[str, dict]:
  """Pools per-clip scores over the split.

  Depth: image metrics weighted by valid pixels (depth_metrics.aggregate). Poses: RRA/RTA/mAA
  over every frame pair of every clip; ATE averaged over clips. Novel views: PSNR / SSIM averaged
  over every generated target frame. KPM: the generated clips' matches as a percentage of the true
  clips' (summed over clips). XYZ-RGB agreement: averaged over clips."""
  out = {}
  for prefix in DEPTH_PREFIXES:
    rows = [r for r in (_scalars(c, prefix) for c in per_clip) if r]
    if rows:
      out[prefix] = depth_metrics.aggregate(rows)
  for prefix in POSE_PREFIXES:
    rows = [c for c in per_clip if f'{prefix}/rre' in c]
    if rows:
      rre = np.concatenate([np.ravel(c[f'{prefix}/rre']) for c in rows])
      rte = np.concatenate([np.ravel(c[f'{prefix}/rte']) for c in rows])
      out[prefix] = dict(pose_metrics.pose_accuracy(rre, rte),
                         ate=float(np.mean([c[f'{prefix}/ate'] for c in rows])),
                         rre_median=float(np.median(rre)), rte_median=float(np.median(rte)),
                         num_pairs=int(rre.size))
  for prefix in ('nvs', 'nvs_baseline'):
    rows = [c for c in per_clip if f'{prefix}/psnr' in c]
    if rows:
      out[prefix] = {k: float(np.mean(np.concatenate([np.ravel(c[f'{prefix}/{k}']) for c in rows])))
                     for k in ('psnr', 'ssim')}
  rows = [c for c in per_clip if 'kpm/generated' in c]
  if rows:
    out['kpm'] = consistency.kpm_summary([c['kpm/generated'] for c in rows],
                                         [c['kpm/ground_truth'] for c in rows])
  for prefix in ('agreement', 'agreement_truth'):
    rows = [r for r in (_scalars(c, prefix) for c in per_clip) if r]
    if rows:
      out[prefix] = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
  return out


def _json_ready(scores: dict) -> dict:
  return {k: (np.asarray(v).tolist() if isinstance(v, np.ndarray) else
              float(v) if isinstance(v, (np.floating, np.integer)) else v)
          for k, v in scores.items()}


def _load_model(config, workdir: str, checkpoint: str | None):
  from wvd_jax.tasks import api  # pylint: disable=import-outside-toplevel
  path = checkpoint or os.fspath(files.as_path(workdir) / 'export')
  if not checkpoint and not files.as_path(path).is_dir():
    logging.info('no exported checkpoint in %s: evaluating the EMA weights of the newest training '
                 'checkpoint', path)
    graphdef, params = checkpoint_reader.restore_training_params(config, workdir)
    return os.fspath(checkpoint_reader.training_dir(workdir)), api.WVD(config, graphdef, params)
  return path, api.WVD.load(path, config)


def output_dir(config, workdir: str) -> str:
  """Where --mode=eval writes results.json and report.md."""
  return config.eval.output_dir or os.fspath(files.as_path(workdir) / 'eval')


def _record(index: int, scores: dict, features: dict, clip, shown) -> dict:
  """One clip's results as a flat dict for multihost.gather_records (gallery fields with a
  clip; None fields left out)."""
  record = {'index': index, **{f'score/{k}': v for k, v in scores.items()},
            **{f'learned/{k}': v for k, v in features.items()}}
  if clip is not None:
    record['gallery'] = True
    for prefix, value in (('clip', clip), ('shown', shown)):
      record.update({f'{prefix}/{k}': v for k, v in dataclasses.asdict(value).items()
                     if v is not None})
  return record


def evaluate(config, workdir: str, checkpoint: str | None = None) -> dict:
  """Runs the evaluation; returns the results dict also written to <output>/results.json.

  With several config.data.sources (and no eval.dataset_dir): each source separately, returning
  {'per_source': {source: its results}} (report.write_source_index)."""
  sources = source_configs(config, workdir)
  if sources:
    return _evaluate_sources(config, workdir, checkpoint, sources)
  e = config.eval
  tasks = tuple(t for t in e.tasks.split(',') if t)
  learned = learned_lib.load(e, tasks)  # Bad weight files stop here, before any generation.
  for metric, reason in learned.skipped.items():
    logging.info('%s skipped: %s', metric, reason)
  path, model = _load_model(config, workdir, checkpoint)
  xyz_model = not config_lib.rgb_only(model.config)  # False for the RGB-only ablation.
  if not xyz_model:
    skipped = [t for t in tasks if t != 'consistency']
    if skipped:
      logging.warning('RGB-only model: %s need XYZ and are skipped', ', '.join(skipped))
  if xyz_model and e.gallery_clips:  # Its point clouds are written after every clip's work.
    export.require_ply_writer('the evaluation gallery (eval.gallery_clips > 0; 0 turns it off)')
  source = open_clips(config, workdir)
  count = len(source) if e.num_clips == 0 else min(e.num_clips, len(source))
  output = output_dir(config, workdir)
  logging.info('evaluating %s on %d clips of %r (%s) -> %s', path, count, e.split,
               ', '.join(tasks), output)
  rng = jax.random.PRNGKey(config.seed)
  records, seconds = [], []
  mine = range(jax.process_index(), count, jax.process_count())
  for index in tqdm.tqdm(mine, desc='eval', disable=not multihost.is_primary()):
    start = time.time()
    clip = protocol.prepare_clip(source[index], num_frames=config.data.num_frames,
                                 image_size=config.data.image_size, stride=e.frame_stride,
                                 box_fill=config.data.xyz_box_fill)
    scores, shown = protocol.evaluate_clip(
        model.generator, clip, tasks=tasks, num_samples=config.sample.num_samples,
        alignment=e.depth_alignment, has_xyz=xyz_model, rng=jax.random.fold_in(rng, index),
        box_fill=config.data.xyz_box_fill)
    features = {}
    if shown.videos_rgb is not None:
      learned_scores, features = learned_lib.clip_scores(learned, clip.rgb, shown.videos_rgb)
      scores.update(learned_scores)
    records.append(_record(index, scores, features, clip if index < e.gallery_clips else None,
                           shown))
    seconds.append(time.time() - start)
  records = sorted(multihost.gather_records(records), key=lambda r: int(r['index']))
  per_clip = [_scalars(r, 'score') for r in records]
  metrics = aggregate(per_clip)
  metrics.update(learned_lib.aggregate(per_clip, [_scalars(r, 'learned') for r in records]))
  gallery = [(int(r['index']), protocol.EvalClip(**_scalars(r, 'clip')),
              protocol.ClipOutputs(**_scalars(r, 'shown'))) for r in records if 'gallery' in r]
  results = {
      'checkpoint': path, 'split': e.split, 'dataset': e.dataset_dir or config.data.dataset,
      'num_clips': count, 'tasks': list(tasks), 'modalities': 'rgb_xyz' if xyz_model else 'rgb',
      'depth_alignment': e.depth_alignment, 'num_samples': config.sample.num_samples,
      'sampler_steps': config.sample.num_steps, 'langevin_steps': config.sample.langevin_steps,
      'seconds_per_clip': float(np.mean(seconds[1:] if len(seconds) > 1 else seconds)),
      'device': str(jax.devices()[0].device_kind), 'date': time.strftime('%Y-%m-%d'),
      'metrics': metrics, 'skipped_metrics': learned.skipped,
  }
  if multihost.is_primary():
    report.write_report(output, results, [_json_ready(s) for s in per_clip], gallery)
  logging.info('evaluation report: %s', os.path.join(output, 'report.md'))
  return results
