"""config.data.sources: a weighted mixture of the synthetic world and converted datasets."""
import collections

import numpy as np
import pytest

from tests.conftest import tiny_config
from tests.data import converted_fixture
from tests.data.test_pipeline import _take
from wvd_jax import config_lib
from wvd_jax.data import pipeline
from wvd_jax.training import metrics, train


@pytest.fixture(scope='module')
def mixture(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('mixture'))
  converted = converted_fixture.write_converted_dataset(workdir + '/converted')
  config = tiny_config()
  config.data.data_dir = workdir + '/data'
  config.data.sources = f'synthetic_world=0.7,{converted}=0.3'
  config_lib.validate_config(config)
  return config, workdir, converted


def test_drawn_proportions_follow_the_weights(mixture):
  config, workdir, _ = mixture
  sources = pipeline.open_sources(config, 'train', workdir)
  # The proportions come from the mixing alone (grain's shuffle of a tiny split costs ~10 ms an
  # index: cycle walking over a large domain).
  unshuffled = pipeline.mixed_keys(config, sources, shuffle=False)
  counts = collections.Counter(unshuffled[g][0] for g in range(5000))
  assert abs(counts[0] / 5000 - 0.7) < 0.02 and abs(counts[1] / 5000 - 0.3) < 0.02, counts
  # Shuffled, each source still visits all its clips once per epoch (8 synthetic, 6 converted),
  # in a new order each epoch.
  mixed = pipeline.mixed_keys(config, sources)
  keys = [mixed[g] for g in range(48)]
  assert [k[0] for k in keys] == [unshuffled[g][0] for g in range(48)]
  for s, count in ((0, 8), (1, 6)):
    drawn = [i for source, i in keys if source == s]
    assert sorted(drawn[:count]) == sorted(drawn[count:2 * count]) == list(range(count))
    assert drawn[:count] != drawn[count:2 * count]


def test_mixture_batches_and_resume_on_another_process_count(mixture):
  config, workdir, _ = mixture
  uninterrupted = _take(pipeline.make_dataset(config, 'train', workdir), 5)
  sources = np.concatenate([b['source'] for b in uninterrupted])
  assert set(sources.tolist()) == {0, 1}
  s = config.data.image_size
  for batch in uninterrupted:
    assert batch['rgb'].shape == (4, 4, s, s, 3)
    converted = batch['source'] == 1
    # The fixture's unknown top rows: 16 x 12 -> centre 12 x 12 (from row 2) -> 16: row 0.
    assert not batch['xyz_valid'][converted][:, :, 0].any()
    assert batch['xyz_valid'][converted][:, :, 1:].all() and batch['xyz_valid'][~converted].all()
    assert not batch['mask'][~batch['xyz_valid']].any()
  resumed = [_take(pipeline.make_dataset(config, 'train', workdir, process_index=p,
                                         process_count=2, start_batch=3), 2) for p in (0, 1)]
  for i, batch in enumerate(uninterrupted[3:]):
    for key in batch:
      np.testing.assert_array_equal(
          batch[key], np.concatenate([resumed[0][i][key], resumed[1][i][key]]), err_msg=key)


def test_two_source_training_run(mixture, tmp_path):
  config, workdir, _ = mixture
  config = config.copy_and_resolve_references()
  config.train.num_steps = 3
  config.train.log_every = 1
  config.train.eval_every = 3  # Validation over both sources' validation splits.
  config.train.checkpoint_every = 3
  config.train.log_sample_grids = False
  config.train.peak_tflops = 1.0  # Not measured: MFU is not the point here.
  train.train_and_evaluate(config, str(tmp_path))
  rows = metrics.read_jsonl(str(tmp_path))
  losses = [r['train/loss'] for r in rows if 'train/loss' in r]
  assert len(losses) == 3 and np.all(np.isfinite(losses))
  assert any(np.isfinite(r.get('validation/loss', np.nan)) for r in rows)
