"""Cached latents (--mode=encode_latents, data/latents.py) with the tiny SD-VAE of
tests/data/vae_golden: the shards hold what the encoder gives, an interrupted encode resumes to
the same bytes, other settings are refused in one line, the latent path's loss equals the pixel
path's, and training from latents resumes exactly."""
import os
import shutil

import jax
import numpy as np
import pytest
from flax import nnx

from tests.conftest import REPO, tiny_config
from wvd_jax import errors, multihost
from wvd_jax.data import latents, pipeline
from wvd_jax.models import autoencoder as autoencoder_lib
from wvd_jax.models import builder
from wvd_jax.training import encode_latents, train

VAE_DIR = os.path.join(REPO, 'tests', 'data', 'vae_golden')


def vae_config(workdir):
  config = tiny_config()
  config.autoencoder.kind = 'sd_vae'
  config.autoencoder.latent_channels = 4
  config.autoencoder.downsample = 4  # The golden VAE: 16x16 frames -> 4x4x4 latents.
  config.autoencoder.weights = VAE_DIR
  config.model.patch_size = 2
  config.data.encode_batch_per_device = 2
  config.data.latents_shard_size = 3  # 8 train clips -> shards of 3, 3, 2.
  config.data.data_dir = os.path.join(workdir, 'data')
  config.data.latents_dir = os.path.join(workdir, 'latents')
  config.train.peak_tflops = 1.0
  config.train.log_sample_grids = False
  config.train.eval_every = 1000  # Validation reads pixels: not what these tests are about.
  return config


@pytest.fixture(scope='module')
def encoded(tmp_path_factory):
  """A complete encode, and one interrupted after its first shard then resumed."""
  root = str(tmp_path_factory.mktemp('latents'))
  config = vae_config(root)
  encode_latents.encode_latents(config, root)
  resumed = vae_config(root)
  resumed.data.latents_dir = os.path.join(root, 'resumed')
  written = []
  real_write = latents.write_shard

  def failing_write(path, clips, layout):
    if written:
      raise KeyboardInterrupt  # Killed while encoding the second shard.
    written.append(path)
    real_write(path, clips, layout)

  latents.write_shard = failing_write
  try:
    with pytest.raises(KeyboardInterrupt):
      encode_latents.encode_latents(resumed, root)
  finally:
    latents.write_shard = real_write
  first = os.stat(written[0])
  state = dict(files=sorted(os.listdir(os.path.dirname(written[0]))))
  # What a kill -9 inside the second shard's write leaves: its temporary file.
  stale = os.path.join(os.path.dirname(written[0]), '.shard-00001-of-00003.array_recordx1.tmp')
  open(stale, 'wb').close()
  encode_latents.encode_latents(resumed, root)
  state['first_unchanged'] = os.stat(written[0]).st_mtime_ns == first.st_mtime_ns
  state['stale_removed'] = not os.path.exists(stale)
  return root, config, resumed, state


def _shards(directory):
  folder = os.path.join(directory, 'train', 'source-0')
  return {name: open(os.path.join(folder, name), 'rb').read() for name in os.listdir(folder)}


def test_resumed_encode_equals_uninterrupted(encoded):
  root, config, resumed, state = encoded
  # Interrupted: the first shard complete, nothing half-written.
  assert state['files'] == ['shard-00000-of-00003.array_record']
  assert state['first_unchanged']  # The re-run skipped the finished shard.
  assert state['stale_removed']  # And removed what a killed write left.
  done = _shards(config.data.latents_dir)
  assert sorted(done) == [f'shard-0000{k}-of-00003.array_record' for k in range(3)]
  assert _shards(resumed.data.latents_dir) == done  # Bit for bit.


def test_processes_split_the_shards(encoded, monkeypatch):
  """Process p of 2 encodes shards 1 (p = 1) and 0, 2 (p = 0): together the same bytes."""
  root = encoded[0]
  config = vae_config(root)
  config.data.latents_dir = os.path.join(root, 'two_processes')
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  monkeypatch.setattr(multihost, 'sync', lambda name: None)
  for index, shards in ((1, [1]), (0, [0, 1, 2])):
    monkeypatch.setattr(jax, 'process_index', lambda index=index: index)
    encode_latents.encode_latents(config, root)
    assert sorted(_shards(config.data.latents_dir)) == [
        f'shard-0000{k}-of-00003.array_record' for k in shards]
  assert _shards(config.data.latents_dir) == _shards(vae_config(root).data.latents_dir)


def test_shards_hold_the_encoders_posterior(encoded):
  root, config, _, _ = encoded
  source, = latents.open_sources(config, 'train')
  assert len(source) == 8
  clips = pipeline.fixed_window_clips(config, 'train', root, 0)
  ae = autoencoder_lib.make_autoencoder(config)
  graphdef, params = nnx.split(ae)

  @jax.jit
  def posterior(params, batch):
    model = nnx.merge(graphdef, params)
    rgb, xyz, valid = train.model_inputs(config, batch, model.downsample)
    return autoencoder_lib.encode_video_posterior(model, rgb, xyz) + (valid,)

  for index in (0, 7):  # The first and the last shard.
    clip, record = clips[index], source[index]
    batch = {k: clip[k][None] for k in ('rgb', 'xyz', 'mask', 'xyz_valid')}
    mean, std, valid = jax.device_get(posterior(params, batch))
    np.testing.assert_allclose(record['latent_mean'], mean[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(record['latent_std'], std[0], rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(record['latent_valid'], valid[0])
    assert record['latent_mean'].shape == (4, 4, 4, 8) and 0 < valid[0].mean() <= 1
    for key in ('intrinsics', 'cam_to_world', 'norm_center', 'norm_scale', 'clip',
                'frame_indices'):
      np.testing.assert_array_equal(record[key], clip[key])
  # The VAE's posterior is not a point: the std is what sampling adds.
  assert float(record['latent_std'].min()) > 0


def test_bad_directories_are_refused_in_one_line(encoded):
  """Other settings, a damaged shard, no latents: one UserError line each, nothing written."""
  root, config, _, _ = encoded
  other = vae_config(root)
  other.seed = 1
  with pytest.raises(errors.UserError, match=r'settings \(seed: stored 0, config 1\)') as info:
    encode_latents.encode_latents(other, root)
  assert '\n' not in str(info.value)
  other = vae_config(root)
  other.diffusion.background = 'masked'  # The stored XYZ and masks depend on it.
  with pytest.raises(errors.UserError, match='xyz.background'):
    pipeline.make_dataset(other, 'train', root, from_latents=True)
  other = vae_config(root)
  other.data.latents_shard_size = 4
  with pytest.raises(errors.UserError, match='shard_size'):
    encode_latents.encode_latents(other, root)
  # A damaged shard: reading names it (the checkpointed trainer stops there).
  damaged = vae_config(root)
  damaged.data.latents_dir = os.path.join(root, 'damaged')
  shutil.copytree(config.data.latents_dir, damaged.data.latents_dir)
  shard = os.path.join(damaged.data.latents_dir, 'train', 'source-0',
                       'shard-00001-of-00003.array_record')
  os.truncate(shard, os.path.getsize(shard) // 2)
  source, = latents.open_sources(damaged, 'train')
  with pytest.raises(errors.UserError, match=f'latent shard {shard}'):
    source[4]
  empty = vae_config(root)
  empty.data.latents_dir = os.path.join(root, 'none')
  with pytest.raises(errors.UserError, match='run --mode=encode_latents'):
    train.train_and_evaluate(empty, os.path.join(root, 'never'))
  assert not os.path.exists(os.path.join(root, 'never'))


def test_latent_batches_keep_the_global_data_position(encoded):
  """make_dataset(from_latents=True): global batch k from start_batch=k, and 2 processes' rows
  together are the global batch (pipeline's global-position contract)."""
  config = vae_config(encoded[0])
  batches = lambda **kw: iter(pipeline.make_dataset(config, 'train', encoded[0],
                                                    from_latents=True, **kw))
  first = batches()
  straight = [next(first) for _ in range(3)]
  np.testing.assert_array_equal(next(batches(start_batch=2))['latent_mean'],
                                straight[2]['latent_mean'])
  halves = [next(batches(start_batch=1, process_index=p, process_count=2)) for p in (0, 1)]
  for key in ('latent_mean', 'clip', 'source'):
    np.testing.assert_array_equal(np.concatenate([h[key] for h in halves]), straight[1][key])
  assert straight[0]['latent_mean'].shape == (4, 4, 4, 4, 8)
  assert len({int(c) for b in straight[:2] for c in b['clip']}) == 8  # One epoch, shuffled.


def test_latent_loss_equals_pixel_loss(encoded):
  """The same clips through the encoder in the step and from the shards: the same loss (and
  the posterior sample is drawn: it differs from the mean's loss)."""
  root = encoded[0]
  config = vae_config(root)
  clips = pipeline.fixed_window_clips(config, 'train', root, 0)
  source, = latents.open_sources(config, 'train')
  stack = lambda items: {k: np.stack([c[k] for c in items]) for k in items[0]}
  pixels = stack([clips[i] for i in range(4)])
  cached = stack([source[i] for i in range(4)])
  ae = autoencoder_lib.make_autoencoder(config)
  model = builder.build_model(config, seed=0)
  graphdef, params = nnx.split(model)
  rng = jax.random.PRNGKey(3)
  loss = lambda config, batch: float(
      jax.jit(train.make_loss_fn(config, graphdef, ae))(params, batch, rng)[0])
  sampled = loss(config, cached)
  # Bit-identical on XLA:CPU (jax 0.11.2); the bound leaves room for other compilers.
  assert loss(config, pixels) == pytest.approx(sampled, rel=1e-6)
  config.autoencoder.sample_posterior = False  # The mean: another loss.
  assert abs(loss(config, cached) - sampled) > 1e-6


def test_training_from_latents_resumes_exactly(encoded):
  """4 steps from latents (checkpoints at 2 and 4); then the step-4 checkpoint is removed and
  the run resumes from step 2 (global batch 2): the same weights bit for bit."""
  root = encoded[0]
  config = vae_config(root)
  config.train.num_steps = 4
  workdir = os.path.join(root, 'run')
  straight = jax.device_get(train.train_and_evaluate(config, workdir).params)
  shutil.rmtree(os.path.join(workdir, 'checkpoints', '4'))
  resumed = train.train_and_evaluate(config, workdir)
  assert int(resumed.step) == 4
  for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed.params)):
    np.testing.assert_array_equal(a, b)


def test_a_mixture_encodes_every_source(encoded):
  """synthetic_world + a converted dataset (unknown depth in its top rows): each source's clips
  in its own shards, the unknown rows out of the latent mask, batches from both sources."""
  from tests.data import converted_fixture  # pylint: disable=import-outside-toplevel
  root = encoded[0]
  converted = converted_fixture.write_converted_dataset(os.path.join(root, 'converted'),
                                                        counts={'train': 3, 'validation': 1})
  config = vae_config(root)
  config.data.sources = f'synthetic_world=0.5,{converted}=0.5'
  config.data.latents_dir = os.path.join(root, 'mixture')
  encode_latents.encode_latents(config, root)
  world, other = latents.open_sources(config, 'train')
  assert (len(world), len(other)) == (8, 3)
  # The synthetic world's clips are the single-source encode's: the same bytes.
  assert _shards(config.data.latents_dir) == _shards(vae_config(root).data.latents_dir)
  valid = np.stack([other[i]['latent_valid'] for i in range(3)])
  assert not valid[:, :, 0].any()  # Unknown depth in the top rows: no XYZ loss there.
  batch = next(iter(pipeline.make_dataset(config, 'train', root, from_latents=True)))
  assert set(batch['source'].tolist()) == {0, 1}
