"""--mode=eval end to end on the tiny config: report files, dataset directories, comparison."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import trimesh
from PIL import Image

from tests.conftest import REPO, hide_package, tiny_config
from wvd_jax import errors
from wvd_jax.data import storage
from tests.evaluation import test_learned
from wvd_jax.evaluation import compare, learned, report, runner
from wvd_jax.training import train


def eval_config():
  config = tiny_config()
  config.train.num_steps = 2
  config.train.log_sample_grids = False
  config.sample.num_steps = 2
  config.sample.num_samples = 2
  config.eval.num_clips = 2
  config.eval.gallery_clips = 1
  return config


@pytest.fixture(scope='module')
def evaluated(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('eval'))
  config = eval_config()
  train.train_and_evaluate(config, workdir)
  # FID, FC and LoFTR KPM through the whole eval path (per-clip features, gathering, pooling,
  # report) with stand-in networks: the real Inception at 299 px costs too much here
  # (test_fid.py, test_frame_consistency.py, test_loftr.py check the networks against the
  # reference implementations).
  with_learned = config.copy_and_resolve_references()
  with_learned.eval.fid_inception_weights = with_learned.eval.clip_weights = 'stand-in'
  with_learned.eval.loftr_weights = 'stand-in'
  with pytest.MonkeyPatch.context() as patch:
    for metric in ('fid', 'fc'):
      patch.setitem(learned.LOADERS, metric, lambda path: test_learned.fake_inception)
    patch.setitem(learned.LOADERS, 'kpm_loftr', lambda path: test_learned.fake_matcher)
    results = runner.evaluate(with_learned, workdir)  # The training checkpoint's EMA weights.
  return config, workdir, results


def test_report_files(evaluated):
  _, workdir, results = evaluated
  out = os.path.join(workdir, 'eval')
  assert not os.path.exists(os.path.join(workdir, 'export'))  # Evaluation writes no export.
  assert results['checkpoint'] == os.path.join(workdir, 'checkpoints')
  with open(os.path.join(out, 'results.json')) as f:
    stored = json.load(f)
  assert stored['num_clips'] == 2 and stored['modalities'] == 'rgb_xyz'
  metrics = stored['metrics']
  for section in ('mono', 'mono_baseline', 'video', 'pose', 'pose_baseline', 'nvs',
                  'nvs_baseline', 'kpm', 'agreement', 'agreement_truth'):
    assert section in metrics, section
    assert all(np.isfinite(v) for v in metrics[section].values()), section
  assert metrics['pose']['num_pairs'] == 2 * 6  # 4 frames: 6 pairs a clip.
  assert 0 <= metrics['mono']['delta_1_25'] <= 1
  with open(os.path.join(out, 'per_clip.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  assert [r['clip'] for r in rows] == [0, 1] and len(rows[0]['nvs/psnr']) == 3
  with open(os.path.join(out, 'report.md')) as f:
    text = f.read()
  assert '| AbsRel ↓ |' in text and 'identity cameras' in text and '## Goals' in text
  # FID from the stand-in: 2 clips x 2 samples x frames 1..3 against 2 clips x frames 1..3.
  assert metrics['fid']['num_generated'] == 12 and metrics['fid']['num_true'] == 6
  assert np.isfinite(metrics['fid']['fid']) and 0 < metrics['fc']['fc_ground_truth'] <= 100
  assert all(-100 <= r['fc/generated'] <= 100 for r in rows)
  assert stored['skipped_metrics'] == {} and 'kpm_percent' in metrics['kpm_loftr']
  assert all(0 <= r['kpm_loftr/ground_truth'] <= 3 for r in rows)  # 3 later frames a clip.
  assert '## Paper Table 1 metrics' in text
  assert f"| {report.format_value(metrics['fid']['fid'])} | " in text
  assert sorted(os.listdir(os.path.join(out, 'plots'))) == [
      'keypoint_matches.png', 'mono_abs_rel.png', 'novel_view_psnr.png', 'pose_accuracy.png',
      'video_abs_rel.png']
  gallery = Image.open(os.path.join(out, 'gallery', 'clip_0000.png'))
  assert gallery.size == (4 * 18, 7 * 18)  # 4 frames x 7 rows of 16 px + 2 px padding.
  cloud = trimesh.load(os.path.join(out, 'gallery', 'clip_0000.ply'))
  assert 0 < len(cloud.vertices) <= 4 * 16 * 16
  assert not os.path.exists(os.path.join(out, 'gallery', 'clip_0001.png'))


def test_dataset_directory_gives_the_same_clips(evaluated):
  config, workdir, _ = evaluated
  directory = storage.dataset_dir(storage.WorldParams.from_config(config),
                                  os.path.join(workdir, 'data'))
  by_dir = storage.DirectoryClipSource(directory, 'test')
  by_config = runner.open_clips(config, workdir)
  assert len(by_dir) == len(by_config) == 4
  # The stored fields: evaluation derives XYZ from them after selecting and resizing frames.
  for key in ('rgb', 'depth', 'intrinsics', 'cam_to_world'):
    np.testing.assert_array_equal(by_dir[1][key], by_config[1][key])
  with pytest.raises(errors.UserError, match='no dataset_info.json'):
    storage.DirectoryClipSource(workdir, 'test')
  with pytest.raises(errors.UserError, match="no split 'dev'"):
    storage.DirectoryClipSource(directory, 'dev')


def test_goal_table_and_comparison(evaluated, tmp_path):
  _, workdir, results = evaluated
  goals = {name: met for name, _, _, met in report.goal_status(
      {'mono': {'abs_rel': 0.1, 'delta_1_25': 0.5}})}
  assert goals['mono/abs_rel'] is True and goals['mono/delta_1_25'] is False
  assert goals['pose/rra@5'] is None
  rgb_only = {'metrics': {'kpm': {'kpm_percent': 42.0}}}
  text = compare.table({'wvd': results, 'rgb_only': rgb_only})
  assert '| metric | wvd | rgb_only |' in text
  kpm_row = [l for l in text.splitlines() if l.startswith('| kpm/kpm_percent')][0]
  assert kpm_row.endswith('| 42 |')
  assert [l for l in text.splitlines() if l.startswith('| mono/abs_rel')][0].endswith('| – |')
  path = str(tmp_path / 'bad.json')
  with open(path, 'w') as f:
    f.write('{"no": 1}')
  with pytest.raises(errors.UserError, match='not a results.json'):
    compare.load_results(path)


def test_cli_eval_mode(evaluated, tmp_path):
  config, workdir, _ = evaluated
  out = str(tmp_path / 'cli_eval')
  config_file = tmp_path / 'eval_config.py'
  config_file.write_text('from tests.evaluation.test_runner import eval_config as get_config\n')
  cmd = [sys.executable, '-m', 'wvd_jax.main', f'--config={config_file}', f'--workdir={workdir}',
         '--mode=eval', '--config.eval.num_clips=1', '--config.eval.tasks=mono_depth,consistency',
         '--config.eval.gallery_clips=0', f'--config.eval.output_dir={out}']
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(os.path.join(out, 'results.json')) as f:
    metrics = json.load(f)['metrics']
  assert set(metrics) == {'mono', 'mono_baseline', 'kpm', 'agreement', 'agreement_truth'}
  bad = subprocess.run(cmd[:6] + ['--config.eval.tasks=depth'], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
  assert bad.returncode != 0 and 'config.eval.tasks' in bad.stderr


def test_compare_cli(evaluated, tmp_path):
  _, workdir, _ = evaluated
  results = os.path.join(workdir, 'eval', 'results.json')
  out = str(tmp_path / 'table.md')
  assert compare.main([f'a={results}', f'b={results}', f'--output={out}']) == 0
  with open(out) as f:
    assert f.readline().strip() == '| metric | a | b |'
  assert compare.main(['no_equals_sign']) == 2
  with pytest.raises(errors.UserError, match='run --mode=eval first'):
    compare.load_results(f'{tmp_path}/missing.json')
  assert compare.main([f'a={tmp_path}/missing.json']) == 2


def test_eval_reports_each_training_source(evaluated, tmp_path):
  from tests.data import converted_fixture  # pylint: disable=import-outside-toplevel
  config, workdir, _ = evaluated
  converted = converted_fixture.write_converted_dataset(str(tmp_path / 'converted'))
  config = config.copy_and_resolve_references()
  config.data.sources = f'synthetic_world=0.5,{converted}=0.5'
  config.eval.num_clips, config.eval.tasks, config.eval.gallery_clips = 1, 'mono_depth', 0
  out = str(tmp_path / 'per_source')
  config.eval.output_dir = out
  results = runner.evaluate(config, workdir)
  assert list(results['per_source']) == ['synthetic_world', converted]
  for name, r in results['per_source'].items():
    assert r['num_clips'] == 1 and np.isfinite(r['metrics']['mono']['abs_rel']), name
  assert results['per_source'][converted]['dataset'] == converted
  subdirs = sorted(d for d in os.listdir(out) if d.startswith('source'))
  assert subdirs[0] == 'source0_synthetic_world' and subdirs[1].startswith('source1_')
  for d in subdirs:
    assert os.path.isfile(os.path.join(out, d, 'report.md'))
  with open(os.path.join(out, 'report.md')) as f:
    text = f.read()
  assert '# Source `synthetic_world`' in text and f'# Source `{converted}`' in text
  assert text.count('| AbsRel ↓ |') == 2


def test_missing_ply_writer_stops_before_any_clip(evaluated, tmp_path, monkeypatch):
  """A gallery's point clouds are written last: without trimesh the evaluation stops at once,
  naming the package, instead of after every clip's work (a GPU proof run lost its evaluation
  that way)."""
  config, workdir, _ = evaluated
  config = config.copy_and_resolve_references()
  config.eval.output_dir = str(tmp_path / 'eval')
  hide_package(monkeypatch, 'trimesh')
  monkeypatch.setattr(runner.protocol, 'prepare_clip', None)  # Not reached.
  with pytest.raises(errors.UserError, match='trimesh, which is not installed'):
    runner.evaluate(config, workdir)
  assert not os.path.exists(config.eval.output_dir)
