"""benchmarks/paired_compare.py: two evaluations compared clip by clip."""
import gzip
import json

import numpy as np
import pytest

from benchmarks import paired_compare


def _write(path, records, compress=False):
  text = ''.join(json.dumps(r) + '\n' for r in records)
  if compress:
    with gzip.open(path, 'wt') as f:
      f.write(text)
  else:
    path.write_text(text)
  return str(path)


def test_kpm_is_the_ratio_of_means_and_the_interval_brackets_a_clear_difference(tmp_path):
  rng = np.random.default_rng(1)
  truth = rng.uniform(10, 20, 40)
  a = [{'clip': i, 'kpm/generated': 0.5 * t, 'kpm/ground_truth': t} for i, t in enumerate(truth)]
  b = [{'clip': i, 'kpm/generated': 0.25 * t, 'kpm/ground_truth': t} for i, t in enumerate(truth)]
  b.append({'clip': 99, 'kpm/generated': 1000.0, 'kpm/ground_truth': 1.0})  # Not in A: ignored.
  out = paired_compare.main([_write(tmp_path / 'a.jsonl.gz', a, compress=True),
                             _write(tmp_path / 'b.jsonl', b), '--resamples', '500'])
  assert out['clips'] == 40
  assert out['a'] == pytest.approx(50.0) and out['b'] == pytest.approx(25.0)
  assert out['difference'] == pytest.approx(25.0)
  # Every clip has the same ratio: every resample gives the same difference.
  assert out['interval_95'] == pytest.approx([25.0, 25.0])
  assert out['a_better_clips'] == 40 and out['b_better_clips'] == 0


def test_a_clip_without_true_matches_counts_in_the_means_but_wins_for_neither(recwarn):
  truth = [8.0] * 10 + [4.0] * 9 + [0.0]  # The last clip: no true matches to divide by.
  a = {i: {'clip': i, 'kpm/generated': g, 'kpm/ground_truth': t}
       for i, (g, t) in enumerate(zip([4.0] * 10 + [1.0] * 9 + [0.0], truth))}
  b = {i: {'clip': i, 'kpm/generated': g, 'kpm/ground_truth': t}
       for i, (g, t) in enumerate(zip([2.0] * 10 + [1.0] * 9 + [1.0], truth))}
  out = paired_compare.compare(a, b, 'kpm', resamples=200)
  assert out['a'] == pytest.approx(100 * 49 / 116) and out['b'] == pytest.approx(100 * 30 / 116)
  assert (out['a_better_clips'], out['b_better_clips'], out['ties'],
          out['undefined_clips']) == (10, 0, 9, 1)
  assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_noise_alone_gives_an_interval_around_zero():
  rng = np.random.default_rng(2)
  a = {i: {'clip': i, 'mono/abs_rel': v} for i, v in enumerate(rng.normal(0.2, 0.05, 200))}
  b = {i: {'clip': i, 'mono/abs_rel': v} for i, v in enumerate(rng.normal(0.2, 0.05, 200))}
  out = paired_compare.compare(a, b, 'mono/abs_rel', resamples=2000)
  low, high = out['interval_95']
  assert low < out['difference'] < high and low < 0 < high
  assert high - low < 0.03  # About 4 standard errors of a 200-clip mean difference (0.005).


def test_bad_inputs_name_the_problem(tmp_path):
  good = _write(tmp_path / 'good.jsonl', [{'clip': 0, 'kpm/generated': 1.0,
                                           'kpm/ground_truth': 2.0}])
  broken = tmp_path / 'broken.jsonl'
  broken.write_text('{"clip": 0}\nnot json\n')
  with pytest.raises(ValueError, match='broken.jsonl:2: not a JSON line'):
    paired_compare.load_clips(str(broken))
  other = _write(tmp_path / 'other.jsonl', [{'clip': 5, 'kpm/generated': 1.0}])
  with pytest.raises(ValueError, match='share no clip'):
    paired_compare.main([good, other])
  lacking = _write(tmp_path / 'lacking.jsonl', [{'clip': 0, 'pose/ate': 1.0}])
  with pytest.raises(ValueError, match="lack 'mono/abs_rel'"):
    paired_compare.main([good, lacking, '--metric', 'mono/abs_rel'])
  with pytest.raises(ValueError, match='no clips'):
    paired_compare.load_clips(_write(tmp_path / 'empty.jsonl', []))


def test_pose_accuracies_pool_the_pairs_as_the_evaluation_does():
  from wvd_jax.evaluation import pose_metrics
  rng = np.random.default_rng(3)
  sizes = rng.integers(3, 12, 30)
  make = lambda scale: {i: {'clip': i, 'pose/rre': list(rng.exponential(scale, n)),
                            'pose/rte': list(rng.exponential(2 * scale, n))}
                        for i, n in enumerate(sizes)}
  a, b = make(4.0), make(12.0)
  for metric in ('pose/rra@5', 'pose/rta@15', 'pose/maa@30'):
    out = paired_compare.compare(a, b, metric, resamples=300)
    for records, value in ((a, out['a']), (b, out['b'])):
      pooled = pose_metrics.pose_accuracy(
          np.concatenate([r['pose/rre'] for r in records.values()]),
          np.concatenate([r['pose/rte'] for r in records.values()]))
      assert value == pytest.approx(pooled[metric.split('/')[1]])
    low, high = out['interval_95']
    assert 0 < low <= out['difference'] <= high  # A's errors are a third of B's.
  with pytest.raises(ValueError, match="lack the list 'pose/rre'"):
    paired_compare.compare(a, {0: {'clip': 0, 'mono/abs_rel': 0.1}}, 'pose/rra@5')
