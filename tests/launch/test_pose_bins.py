"""benchmarks/pose_bins.py: pose accuracy binned by the true camera motion."""
import json

from benchmarks import pose_bins


def test_pairs_fall_in_their_true_motion_bins(tmp_path):
  clips = [
      {'clip': 0, 'pose/rre': [1.0, 4.0, 20.0], 'pose/rte': [10.0, 20.0, 30.0],
       'pose_baseline/rre': [2.0, 3.0, 25.0], 'mono/abs_rel': 0.1, 'mono_baseline/abs_rel': 0.2},
      {'clip': 1, 'pose/rre': [40.0], 'pose/rte': [5.0], 'pose_baseline/rre': [50.0],
       'mono/abs_rel': 0.3, 'mono_baseline/abs_rel': 0.2},
  ]
  path = tmp_path / 'per_clip.jsonl'
  path.write_text(''.join(json.dumps(c) + '\n' for c in clips))
  table = pose_bins.motion_table(pose_bins.load(str(path)), [0, 5, 30, 180]).splitlines()
  # 0-5 deg: 2 pairs, both under 5 deg of error, one translation under 15 deg.
  assert table[2] == '| 0-5 | 2 | 1.000 | 1.000 | 0.500 | 2.5 |'
  assert table[3] == '| 5-30 | 1 | 0.000 | 0.000 | 0.000 | 20.0 |'
  assert table[4] == '| 30-180 | 1 | 0.000 | 0.000 | 1.000 | 40.0 |'
  worst = pose_bins.worst_clips(clips, 1).splitlines()
  assert worst[2].startswith('| 1 | 40.0 | 50.0 | 0.300 |')
