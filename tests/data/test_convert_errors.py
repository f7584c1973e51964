"""Converters on bad inputs: one line naming the file, the scene skipped, the others converted;
interrupted conversions leave nothing that reads as complete and resume."""
import gzip
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO
from tests.data import convert_fixtures as fx
from wvd_jax.data import convert, converted, storage
from wvd_jax.data.formats import common
from wvd_jax.errors import UserError

PARAMS = converted.ClipParams(image_size=fx.HEIGHT, frames=3, stride=1)


def _convert(fmt, input_dir, output, depth='', **kwargs):
  options = common.FormatOptions(input=str(input_dir), depth=str(depth) if depth else '')
  return convert.convert(fmt, options, str(output), PARAMS, split='train', progress=False,
                         log=lambda line: None, **kwargs)


def _assert_one_skipped(summary, output, bad, good, *phrases):
  """``bad`` skipped with a one-line reason holding every phrase; ``good`` converted."""
  assert summary.scenes == 1 and [n for n, _ in summary.skipped] == [bad], summary.skipped
  reason = summary.skipped[0][1]
  assert '\n' not in reason
  for phrase in phrases:
    assert phrase in reason, (phrase, reason)
  assert len(convert.read_scene(str(output), good)['names']) == fx.FRAMES
  with pytest.raises(UserError, match='skipped'):
    convert.read_scene(str(output), bad)


def test_missing_image(tmp_path):
  scene = fx.synthetic_scene()
  fx.write_colmap(str(tmp_path / 'in' / 'bicycle'), scene)
  fx.write_colmap(str(tmp_path / 'in' / 'garden'), scene)
  missing = tmp_path / 'in' / 'garden' / 'images' / fx.COLMAP_NAMES[3]
  os.remove(missing)
  summary = _convert('colmap', tmp_path / 'in', tmp_path / 'out')
  _assert_one_skipped(summary, tmp_path / 'out', 'garden', 'bicycle', str(missing), 'missing')


def test_nan_pose(tmp_path):
  scene = fx.synthetic_scene()
  fx.write_re10k(str(tmp_path / 'in'), 'aaaa', scene)
  fx.write_re10k(str(tmp_path / 'in'), 'bbbb', scene)
  camera_file = tmp_path / 'in' / 'bbbb.txt'
  lines = camera_file.read_text().splitlines()
  values = lines[3].split()
  values[10] = 'nan'
  lines[3] = ' '.join(values)
  camera_file.write_text('\n'.join(lines) + '\n')
  summary = _convert('re10k', tmp_path / 'in', tmp_path / 'out')
  _assert_one_skipped(summary, tmp_path / 'out', 'bbbb', 'aaaa', f'{camera_file}:4', 'NaN')


def test_non_rotation_pose(tmp_path):
  scene = fx.synthetic_scene()
  fx.write_scannet(str(tmp_path / 'in'), 'scene0000_00', scene)
  fx.write_scannet(str(tmp_path / 'in'), 'scene0001_00', scene)
  pose_file = tmp_path / 'in' / 'scene0001_00' / 'pose' / '2.txt'
  pose = np.loadtxt(pose_file)
  pose[:3, :3] *= 1.5
  np.savetxt(pose_file, pose)
  summary = _convert('scannetpp', tmp_path / 'in', tmp_path / 'out')
  _assert_one_skipped(summary, tmp_path / 'out', 'scene0001_00', 'scene0000_00', str(pose_file),
                      'not a rigid transform')


def test_non_pinhole_camera(tmp_path):
  scene = fx.synthetic_scene()
  fx.write_colmap(str(tmp_path / 'in' / 'bicycle'), scene)
  fx.write_colmap(str(tmp_path / 'in' / 'garden'), scene, binary=True, camera_model='SIMPLE_RADIAL')
  summary = _convert('colmap', tmp_path / 'in', tmp_path / 'out')
  _assert_one_skipped(summary, tmp_path / 'out', 'garden', 'bicycle',
                      str(tmp_path / 'in' / 'garden' / 'sparse' / '0'), 'SIMPLE_RADIAL',
                      'image_undistorter')


def test_depth_of_the_wrong_size(tmp_path):
  scene = fx.synthetic_scene()
  fx.write_re10k(str(tmp_path / 'in'), 'aaaa', scene, str(tmp_path / 'depth'))
  fx.write_re10k(str(tmp_path / 'in'), 'bbbb', scene, str(tmp_path / 'depth'))
  bad = tmp_path / 'depth' / 'bbbb' / f'{fx.RE10K_TIMESTAMPS[0]}.npy'
  np.save(bad, np.ones((16, 20), np.float32))
  summary = _convert('re10k', tmp_path / 'in', tmp_path / 'out', depth=tmp_path / 'depth')
  _assert_one_skipped(summary, tmp_path / 'out', 'bbbb', 'aaaa', str(bad), '20x16', '40x32')


def test_empty_sequence(tmp_path):
  scene = fx.synthetic_scene()
  fx.write_re10k(str(tmp_path / 'in'), 'aaaa', scene)
  (tmp_path / 'in' / 'empty.txt').write_text('https://www.youtube.com/watch?v=empty\n')
  summary = _convert('re10k', tmp_path / 'in', tmp_path / 'out')
  _assert_one_skipped(summary, tmp_path / 'out', 'empty', 'aaaa', 'empty', 'no frames')


def test_unreadable_annotation_file(tmp_path):
  scene = fx.synthetic_scene()
  fx.write_co3d(str(tmp_path / 'in'), 'apple', ['1_2_3'], scene)
  fx.write_co3d(str(tmp_path / 'in'), 'bench', ['4_5_6'], scene)
  broken = tmp_path / 'in' / 'bench' / 'frame_annotations.jgz'
  broken.write_bytes(gzip.compress(b'[{"sequence_name": "4_5_6", ')[:-9])  # Truncated.
  summary = _convert('co3d', tmp_path / 'in', tmp_path / 'out')
  _assert_one_skipped(summary, tmp_path / 'out', 'bench/4_5_6', 'apple/1_2_3', str(broken),
                      'cannot read the CO3D annotation file')


def test_nothing_converted_writes_nothing(tmp_path):
  (tmp_path / 'in').mkdir()
  (tmp_path / 'in' / 'empty.txt').write_text('https://www.youtube.com/watch?v=empty\n')
  with pytest.raises(UserError, match='no scene'):
    _convert('re10k', tmp_path / 'in', tmp_path / 'out')
  assert sorted(os.listdir(tmp_path)) == ['in']


def test_cli_skips_a_bad_scene_without_traceback(tmp_path):
  scene = fx.synthetic_scene()
  fx.write_colmap(str(tmp_path / 'in' / 'bicycle'), scene)
  fx.write_colmap(str(tmp_path / 'in' / 'garden'), scene, camera_model='SIMPLE_RADIAL')
  env = dict(os.environ, PYTHONPATH=REPO)
  command = [sys.executable, '-m', 'wvd_jax.data.convert', '--format=colmap',
             f'--input={tmp_path / "in"}', f'--output={tmp_path / "out"}', '--image_size=32',
             '--frames=3', '--workers=2', '--split=test']
  result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=300, check=False)
  output = result.stdout + result.stderr
  assert result.returncode == 0, output
  assert 'Traceback' not in output
  skipped = [line for line in output.splitlines() if line.startswith('skipped garden:')]
  assert len(skipped) == 1 and 'SIMPLE_RADIAL' in skipped[0], output
  assert 'wrote 1 scenes, 3 clips, 6 frames' in output
  assert len(storage.DirectoryClipSource(str(tmp_path / 'out'), 'test')) == 3
  result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=300, check=False)  # The output exists now: a user error.
  assert result.returncode == 1 and 'Traceback' not in result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith('error: --output=')


def _interrupt_at_bbbb(tmp_path, monkeypatch):
  """Runs a conversion of tmp_path/in that a Ctrl-C stops while it converts scene 'bbbb'."""
  real = converted.prepare_scene

  def interrupted(name, frames, params):
    if name == 'bbbb':
      raise KeyboardInterrupt
    return real(name, frames, params)

  monkeypatch.setattr(converted, 'prepare_scene', interrupted)
  with pytest.raises(KeyboardInterrupt):
    _convert('re10k', tmp_path / 'in', tmp_path / 'out')


def test_interrupted_conversion_leaves_nothing_and_resumes(tmp_path, monkeypatch):
  scene = fx.synthetic_scene()
  for name in ('aaaa', 'bbbb', 'cccc'):
    fx.write_re10k(str(tmp_path / 'in'), name, scene)
  real = converted.prepare_scene
  _interrupt_at_bbbb(tmp_path, monkeypatch)
  assert not os.path.exists(tmp_path / 'out')
  with pytest.raises(UserError, match="not a dataset directory"):
    storage.DirectoryClipSource(str(tmp_path / 'out'), 'train')
  # A crash while writing the shards: still nothing at the output.
  monkeypatch.setattr(converted, 'prepare_scene', real)
  monkeypatch.setattr(converted, 'build', lambda *a, **k: (_ for _ in ()).throw(OSError('disk')))
  with pytest.raises(OSError):
    _convert('re10k', tmp_path / 'in', tmp_path / 'out')
  assert not os.path.exists(tmp_path / 'out')
  monkeypatch.undo()
  calls = []
  monkeypatch.setattr(converted, 'prepare_scene', lambda *a: calls.append(a[0]) or real(*a))
  summary = _convert('re10k', tmp_path / 'in', tmp_path / 'out')
  assert calls == []  # Every scene was kept from the earlier runs.
  assert (summary.scenes, summary.resumed, summary.clips) == (3, 3, 9)
  assert len(storage.DirectoryClipSource(str(tmp_path / 'out'), 'train')) == 9
  assert not os.path.exists(str(tmp_path / 'out') + convert.PARTIAL_SUFFIX)


def test_changed_settings_start_clean(tmp_path, monkeypatch):
  scene = fx.synthetic_scene()
  fx.write_re10k(str(tmp_path / 'in'), 'aaaa', scene)
  fx.write_re10k(str(tmp_path / 'in'), 'bbbb', scene)
  _interrupt_at_bbbb(tmp_path, monkeypatch)
  monkeypatch.undo()
  options = common.FormatOptions(input=str(tmp_path / 'in'))
  summary = convert.convert('re10k', options, str(tmp_path / 'out'),
                            converted.ClipParams(image_size=16, frames=3), split='train',
                            progress=False)
  assert (summary.scenes, summary.resumed) == (2, 0)
  assert convert.read_scene(str(tmp_path / 'out'), 'aaaa')['rgb'].shape[1:] == (16, 16, 3)
