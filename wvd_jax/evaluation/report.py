"""The evaluation report: results.json, per_clip.jsonl, report.md, plots/ and gallery/.

  <output>/report.md         tables (model beside the no-training baselines and the goals)
  <output>/results.json      pooled metrics and run settings (runner.evaluate's return value)
  <output>/per_clip.jsonl    every clip's scores
  <output>/plots/*.png       per-clip depth errors, pose-error curves, novel-view PSNR, matches
  <output>/gallery/clip_<i>.png / .ply   truth and generations of the first clips; the PLY is
                             the generated point cloud without background (model world)

With several training sources (config.data.sources) each source gets such a report in its own
subdirectory, and <output>/report.md and results.json index them (write_source_index).
"""
from __future__ import annotations

import json
import os

import matplotlib
import numpy as np

from wvd_jax import files, visualize
from wvd_jax.geometry import normalization, rasterizer, rotations
from wvd_jax.tasks import media

matplotlib.use('Agg')
from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position

# The goals on held-out synthetic scenes: (section, metric, 'lt' | 'gt', value).
GOALS = (('mono', 'abs_rel', 'lt', 0.15), ('mono', 'delta_1_25', 'gt', 0.80),
         ('video', 'abs_rel', 'lt', 0.10), ('pose', 'rra@5', 'gt', 0.90),
         ('pose', 'rta@15', 'gt', 0.80), ('pose', 'maa@30', 'gt', 0.70))

# (title, model section, baseline section, baseline name, metrics (key, label, higher better)).
TABLES = (
    ('Monocular depth (frame 0 from one image; per-image {alignment} alignment)', 'mono',
     'mono_baseline', 'constant depth',
     (('abs_rel', 'AbsRel', False), ('delta_1_25', 'δ<1.25', True),
      ('delta_1_25_2', 'δ<1.25²', True), ('rmse', 'RMSE', False))),
    ('Video depth (all frames\' RGB given; one median scale per sequence, clipped to [0.1, 100])',
     'video', 'video_baseline', 'constant depth',
     (('abs_rel', 'AbsRel', False), ('delta_1_03', 'δ<1.03', True),
      ('delta_1_25', 'δ<1.25', True))),
    ('Camera poses (all frame pairs; ATE after Sim(3) alignment, normalized scene units)',
     'pose', 'pose_baseline', 'identity cameras',
     (('rra@5', 'RRA@5', True), ('rra@15', 'RRA@15', True), ('rta@5', 'RTA@5', True),
      ('rta@15', 'RTA@15', True), ('maa@30', 'mAA(30)', True), ('ate', 'ATE', False))),
    ('Novel views (camera-controlled generation along the true path)', 'nvs', 'nvs_baseline',
     'frame 0 repeated', (('psnr', 'PSNR (dB)', True), ('ssim', 'SSIM', True))),
    ('XYZ-RGB agreement (generated XYZ re-projected into the other frames, colours compared)',
     'agreement', 'agreement_truth', 'true XYZ and RGB',
     (('color_l1', 'colour L1', False), ('color_psnr', 'colour PSNR (dB)', True),
      ('coverage', 'coverage', True))),
)

GALLERY_ROWS = ('true RGB', 'generated RGB from frame 0 (sample 0)',
                'generated XYZ (sample 0, as colours)', 'true depth',
                'monocular depth (frame 0) | multi-view depth (same colour scale as the truth)',
                'novel views along the true camera path',
                'generated point cloud rendered from orbiting cameras')


def format_value(value) -> str:
  """A metric as table text ('–' when missing)."""
  if value is None:
    return '–'
  if isinstance(value, (int, np.integer)):
    return str(value)
  return f'{value:.4g}' if abs(value) < 1000 else f'{value:.0f}'


def goal_status(metrics: dict) -> list[tuple[str, str, float | None, bool | None]]:
  """(metric, goal text, value, met) for every goal whose section was evaluated."""
  rows = []
  for section, key, direction, target in GOALS:
    value = metrics.get(section, {}).get(key)
    text = f'{section} {key} {"<" if direction == "lt" else ">"} {target}'
    met = None if value is None else (value < target if direction == 'lt' else value > target)
    rows.append((f'{section}/{key}', text, value, met))
  return rows


def table1_lines(metrics: dict, skipped: dict) -> list[str]:
  """The paper's Table 1 columns (FID, KPM, FC) with the matchers and networks behind them;
  metrics whose weights were not given show '–' and are listed with the reason."""
  names = ('fid', 'kpm', 'kpm_loftr', 'fc')
  if not any(n in metrics for n in names) and not skipped:
    return []
  get = lambda section, key: metrics.get(section, {}).get(key)
  fc = (f"{format_value(get('fc', 'fc_generated'))} / {format_value(get('fc', 'fc_ground_truth'))}"
        if 'fc' in metrics else '–')
  lines = ['## Paper Table 1 metrics (videos generated from frame 0)', '',
           '| FID ↓ | KPM, SIFT (%) ↑ | KPM, LoFTR (%) ↑ | FC, generated / true ↑ |',
           '|---|---|---|---|',
           f"| {format_value(get('fid', 'fid'))} | {format_value(get('kpm', 'kpm_percent'))} | "
           f"{format_value(get('kpm_loftr', 'kpm_percent'))} | {fc} |", '']
  if 'fid' in metrics:
    lines.append(f"FID: {metrics['fid']['num_generated']} generated frames (frames 1..N-1 of "
                 f"every sample) against {metrics['fid']['num_true']} true frames; pytorch-fid's "
                 'Inception-v3. Few frames bias FID upward: compare at equal counts.')
  lines += [f'- {name} skipped: {reason}' for name, reason in skipped.items()]
  return lines + ([''] if skipped or 'fid' in metrics else [])


def markdown(results: dict) -> str:
  """report.md's text."""
  m = results['metrics']
  lines = ['# WVD evaluation', '',
           f"- checkpoint: `{results['checkpoint']}` ({results['modalities']})",
           f"- data: {results['dataset']}, split `{results['split']}`, "
           f"{results['num_clips']} clips; tasks: {', '.join(results['tasks'])}",
           f"- sampling: {results['num_samples']} sample(s) per input, "
           f"{results['sampler_steps']} steps, {results['langevin_steps']} Langevin step(s); "
           f"{results['seconds_per_clip']:.2f} s per clip on {results['device']}, "
           f"{results['date']}", '']
  for title, section, base, base_name, metrics in TABLES:
    if section not in m:
      continue
    lines += [f"## {title.format(alignment=results['depth_alignment'])}", '',
              f'| metric | WVD | {base_name} |', '|---|---|---|']
    for key, label, higher in metrics:
      arrow = '↑' if higher else '↓'
      lines.append(f'| {label} {arrow} | {format_value(m[section].get(key))} | '
                   f'{format_value(m.get(base, {}).get(key))} |')
    lines.append('')
  if 'kpm' in m:
    k = m['kpm']
    lines += ['## Multi-view consistency (key-point matches, SIFT + ratio test + RANSAC)', '',
              '| KPM (% of the true clips\' matches) ↑ | matches, generated | matches, true |',
              '|---|---|---|',
              f"| {format_value(k['kpm_percent'])} | {format_value(k['matches_generated'])} | "
              f"{format_value(k['matches_ground_truth'])} |", '']
  lines += table1_lines(m, results.get('skipped_metrics', {}))
  goals = goal_status(m)
  if any(value is not None for _, _, value, _ in goals):
    lines += ['## Goals', '', '| goal | value | met |', '|---|---|---|']
    verdict = {None: '–', True: 'yes', False: 'no'}
    lines += [f'| {text} | {format_value(value)} | {verdict[met]} |'
              for _, text, value, met in goals]
    lines.append('')
  lines += ['## Files', '', '- `results.json`, `per_clip.jsonl`: the numbers',
            '- `plots/`: per-clip depth errors, pose-error curves, novel-view PSNR, matches',
            '- `gallery/clip_<i>.png`, rows: ' + '; '.join(
                f'({i + 1}) {r}' for i, r in enumerate(GALLERY_ROWS)),
            '- `gallery/clip_<i>.ply`: the generated point cloud', '']
  return '\n'.join(lines)


def _save_figure(fig, path: str):
  with files.atomic_write(path) as f:
    fig.savefig(f, format='png', dpi=100, bbox_inches='tight')
  plt.close(fig)


def write_plots(directory: str, per_clip: list[dict]) -> list[str]:
  """Per-clip plots; returns the files written."""
  written = []

  def values(key):
    return [c[key] for c in per_clip if key in c]

  for name, model_key, base_key, label in (
      ('mono_abs_rel.png', 'mono/abs_rel', 'mono_baseline/abs_rel', 'monocular depth AbsRel'),
      ('video_abs_rel.png', 'video/abs_rel', 'video_baseline/abs_rel', 'video depth AbsRel')):
    if values(model_key):
      fig, ax = plt.subplots(figsize=(5, 3.2))
      bins = np.linspace(0, max(max(values(model_key)), max(values(base_key) or [0])), 21)
      ax.hist(values(model_key), bins=bins, alpha=0.7, label='WVD')
      ax.hist(values(base_key), bins=bins, alpha=0.5, label='constant depth')
      ax.set_xlabel(f'{label} per clip'), ax.set_ylabel('clips'), ax.legend()
      _save_figure(fig, os.path.join(directory, name))
      written.append(name)
  if values('pose/rre'):
    fig, ax = plt.subplots(figsize=(5, 3.2))
    thresholds = np.arange(0, 31)
    for prefix, label in (('pose', 'WVD'), ('pose_baseline', 'identity cameras')):
      err = np.maximum(np.concatenate([np.ravel(v) for v in values(f'{prefix}/rre')]),
                       np.concatenate([np.ravel(v) for v in values(f'{prefix}/rte')]))
      ax.plot(thresholds, [np.mean(err < t) for t in thresholds], label=label)
    ax.set_xlabel('threshold (degrees)'), ax.set_ylabel('pairs with max(RRE, RTE) < threshold')
    ax.legend()
    _save_figure(fig, os.path.join(directory, 'pose_accuracy.png'))
    written.append('pose_accuracy.png')
  if values('nvs/psnr'):
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for key, label in (('nvs/psnr', 'WVD'), ('nvs_baseline/psnr', 'frame 0 repeated')):
      curve = np.mean(np.stack([np.ravel(v) for v in values(key)]), axis=0)
      ax.plot(np.arange(1, len(curve) + 1), curve, marker='o', label=label)
    ax.set_xlabel('target frame'), ax.set_ylabel('PSNR (dB)'), ax.legend()
    _save_figure(fig, os.path.join(directory, 'novel_view_psnr.png'))
    written.append('novel_view_psnr.png')
  if values('kpm/generated'):
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.scatter(values('kpm/ground_truth'), values('kpm/generated'), s=12)
    top = max(values('kpm/ground_truth') + values('kpm/generated') + [1.0])
    ax.plot([0, top], [0, top], 'k--', lw=0.8)
    ax.set_xlabel('matches per frame pair, true clip'), ax.set_ylabel('generated')
    _save_figure(fig, os.path.join(directory, 'keypoint_matches.png'))
    written.append('keypoint_matches.png')
  return written


def orbit_cameras(cam_to_world: np.ndarray, center: np.ndarray, count: int,
                  degrees: float = 35.0) -> np.ndarray:
  """(count, 4, 4) cameras: ``cam_to_world`` (4, 4) rotated about the vertical axis (its camera
  y axis, OpenCV: down) through ``center`` (3,) by angles in [-degrees, degrees]."""
  axis = cam_to_world[:3, 1] / np.linalg.norm(cam_to_world[:3, 1])
  angles = np.radians(np.linspace(-degrees, degrees, count))
  rotation = np.asarray(rotations.axis_angle_to_rotation(angles[:, None] * axis), np.float64)
  poses = np.broadcast_to(np.eye(4), (count, 4, 4)).copy()
  poses[:, :3, :3] = rotation @ cam_to_world[:3, :3]
  poses[:, :3, 3] = (rotation @ (cam_to_world[:3, 3] - center)) + center
  return poses.astype(np.float32)


def render_point_cloud(xyz: np.ndarray, rgb: np.ndarray, K: np.ndarray, cam_to_world: np.ndarray,
                       count: int) -> np.ndarray:
  """Points of (N, H, W, 3) XYZ coloured by RGB ([-1, 1]) rendered from ``count`` cameras
  orbiting the point cloud's median point -> (count, H, W, 3) uint8 (black background)."""
  n, h, w, _ = xyz.shape
  surface = ~np.asarray(normalization.background_mask(xyz)).reshape(-1)
  points = xyz.reshape(-1, 3)
  center = np.median(points[surface], axis=0) if surface.any() else np.zeros(3)
  cams = orbit_cameras(np.asarray(cam_to_world, np.float64), center, count)
  raster = rasterizer.rasterize_points(points, rgb.reshape(-1, 3), surface,
                                       np.broadcast_to(K, (count, 3, 3)), cams, h, w, near=1e-3)
  colors = np.where(np.asarray(raster.mask)[..., None], np.asarray(raster.colors), -1.0)
  return visualize.to_uint8(colors)


def gallery_image(clip, shown) -> np.ndarray:
  """One clip's rows (GALLERY_ROWS) as a uint8 image; rows whose task did not run are blank."""
  n, h, w, _ = clip.rgb.shape
  blank = np.full((n, h, w, 3), 255, np.uint8)
  value_range = visualize.depth_range(clip.depth, clip.mask)
  rows = [visualize.to_uint8(clip.rgb)]
  rows.append(visualize.to_uint8(shown.videos_rgb[0]) if shown.videos_rgb is not None else blank)
  rows.append(visualize.to_uint8(shown.videos_xyz[0]) if shown.videos_xyz is not None else blank)
  rows.append(visualize.colorize_depth(clip.depth, clip.mask, value_range))
  depth_row = blank.copy()
  if shown.mono_depth is not None:
    depth_row[0] = visualize.colorize_depth(shown.mono_depth,
                                            clip.mask[0] & (shown.mono_depth > 0), value_range)
  if shown.video_depth is not None:
    depth_row[1:] = visualize.colorize_depth(shown.video_depth,
                                             clip.mask & (shown.video_depth > 0), value_range)[1:]
  rows.append(depth_row)
  rows.append(visualize.to_uint8(shown.novel_frames) if shown.novel_frames is not None
              else blank)
  if shown.videos_xyz is not None:
    rows.append(render_point_cloud(shown.videos_xyz[0], shown.videos_rgb[0], shown.intrinsics[0],
                                   shown.cam_to_world[0], n))
  else:
    rows.append(blank)
  return visualize.frame_grid(rows)


def write_report(output: str, results: dict, per_clip: list[dict], gallery: list) -> None:
  """Writes every file of the report (module docstring) atomically."""
  for sub in ('plots', 'gallery'):  # Local or a URI (epath; a gs:// workdir's eval/).
    files.as_path(output).joinpath(sub).mkdir(parents=True, exist_ok=True)
  with files.atomic_write(os.path.join(output, 'results.json'), 'w') as f:
    json.dump(results, f, indent=1, sort_keys=True)
  with files.atomic_write(os.path.join(output, 'per_clip.jsonl'), 'w') as f:
    for index, scores in enumerate(per_clip):
      f.write(json.dumps({'clip': index, **scores}, sort_keys=True) + '\n')
  write_plots(os.path.join(output, 'plots'), per_clip)
  for index, clip, shown in gallery:
    visualize.save_png(os.path.join(output, 'gallery', f'clip_{index:04d}.png'),
                       gallery_image(clip, shown))
    if shown.videos_xyz is not None:
      media.write_surface_ply(os.path.join(output, 'gallery', f'clip_{index:04d}.ply'),
                               shown.videos_xyz[0], shown.videos_rgb[0])
  with files.atomic_write(os.path.join(output, 'report.md'), 'w') as f:
    f.write(markdown(results))


def write_source_index(output: str, per_source: dict[str, tuple[str, dict]]) -> None:
  """<output>/results.json ({'per_source': {source: results}}) and report.md: every source's
  report (``per_source``: source -> (its subdirectory, its results)) under one heading each."""
  files.as_path(output).mkdir(parents=True, exist_ok=True)
  with files.atomic_write(os.path.join(output, 'results.json'), 'w') as f:
    json.dump({'per_source': {name: r for name, (_, r) in per_source.items()}}, f, indent=1,
              sort_keys=True)
  lines = ['# WVD evaluation per data source', '']
  for name, (subdir, results) in per_source.items():
    lines += [f'# Source `{name}`', '', f'Full report with plots and gallery: `{subdir}/`', '']
    lines += ['#' + line if line.startswith('#') else line
              for line in markdown(results).splitlines()[1:]]
  with files.atomic_write(os.path.join(output, 'report.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')
