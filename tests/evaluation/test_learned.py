"""The learned Table 1 metrics in the eval: which run, which are skipped and why, how the per-clip
features pool, the report's table, and weight files that cannot be used."""
import numpy as np
import pytest

from wvd_jax import config_lib, errors
from wvd_jax.evaluation import consistency, fid, frame_consistency, learned, report

TASKS = config_lib.EVAL_TASKS


def fake_inception(images):
  """Deterministic stand-in features: per-channel means and spreads of the images."""
  images = np.asarray(images, np.float64)
  return np.concatenate([images.mean(axis=(1, 2)), images.std(axis=(1, 2))], axis=1)


def fake_matcher(video):
  """Stand-in match count of a video: how many later frames are brighter than frame 0."""
  video = np.asarray(video)
  return float(np.sum(video[1:].mean(axis=(1, 2, 3)) > video[0].mean()))


def test_metrics_without_weights_are_skipped_with_the_key_to_set():
  out = learned.load(config_lib.base_config().eval, TASKS)
  assert out.inception is None and out.clip is None
  assert 'config.eval.fid_inception_weights' in out.skipped['fid']
  assert 'config.eval.clip_weights' in out.skipped['fc']
  assert 'config.eval.loftr_weights' in out.skipped['kpm_loftr'] and out.matcher is None
  out = learned.load(config_lib.base_config().eval, ('mono_depth',))
  assert set(out.skipped) == set(learned.WEIGHT_KEYS)
  assert all('consistency' in reason for reason in out.skipped.values())


def test_unusable_weights_name_the_config_key(tmp_path):
  config = config_lib.base_config()
  config.eval.fid_inception_weights = str(tmp_path / 'missing.pth')
  with pytest.raises(errors.UserError, match=r'^config.eval.fid_inception_weights: weights file '
                     'not found') as info:
    learned.load(config.eval, TASKS)
  assert '\n' not in str(info.value)


def test_features_and_scores_pool_over_clips(monkeypatch):
  monkeypatch.setitem(learned.LOADERS, 'fid', lambda path: fake_inception)
  monkeypatch.setitem(learned.LOADERS, 'fc', lambda path: fake_inception)
  monkeypatch.setitem(learned.LOADERS, 'kpm_loftr', lambda path: fake_matcher)
  config = config_lib.base_config()
  config.eval.fid_inception_weights = config.eval.clip_weights = 'given'
  config.eval.loftr_weights = 'given'
  metrics = learned.load(config.eval, TASKS)
  assert not metrics.skipped
  rng = np.random.default_rng(0)
  clips = [(rng.uniform(-1, 1, (4, 8, 8, 3)), rng.uniform(-1, 1, (2, 4, 8, 8, 3)))
           for _ in range(3)]
  results = [learned.clip_scores(metrics, truth, generated) for truth, generated in clips]
  scores, features = [r[0] for r in results], [r[1] for r in results]
  assert features[0]['fid/generated'].shape == (2 * 3, 6)  # Frames 1..3 of both samples.
  assert features[0]['fid/ground_truth'].shape == (3, 6)
  np.testing.assert_allclose(features[0]['fid/ground_truth'], fake_inception(clips[0][0][1:]),
                             rtol=1e-6)
  truth, generated = clips[0]
  assert scores[0]['fc/ground_truth'] == pytest.approx(
      frame_consistency.frame_consistency(fake_inception(truth)))
  assert scores[0]['fc/generated'] == pytest.approx(np.mean(
      [frame_consistency.frame_consistency(fake_inception(v)) for v in generated]))
  pooled = learned.aggregate(scores, features)
  all_generated = np.concatenate([c['fid/generated'] for c in features])
  all_truth = np.concatenate([c['fid/ground_truth'] for c in features])
  assert pooled['fid'] == {'fid': fid.fid_from_features(all_generated, all_truth),
                           'num_generated': 18, 'num_true': 9}
  assert pooled['fc']['fc_generated'] == pytest.approx(
      np.mean([s['fc/generated'] for s in scores]))
  assert scores[0]['kpm_loftr/ground_truth'] == fake_matcher(truth)
  assert scores[0]['kpm_loftr/generated'] == np.mean([fake_matcher(v) for v in generated])
  assert pooled['kpm_loftr'] == consistency.kpm_summary(
      [s['kpm_loftr/generated'] for s in scores], [s['kpm_loftr/ground_truth'] for s in scores])
  assert learned.aggregate([], []) == {}


def test_table1_lines():
  lines = report.table1_lines({'fid': {'fid': 12.5, 'num_generated': 18, 'num_true': 9},
                               'kpm': {'kpm_percent': 80.0}},
                              {'fc': 'no CLIP weights (set config.eval.clip_weights)'})
  assert '| 12.5 | 80 | – | – |' in lines
  assert '- fc skipped: no CLIP weights (set config.eval.clip_weights)' in lines
  assert report.table1_lines({}, {}) == []
