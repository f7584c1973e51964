"""`--mode=encode_latents`: the VAE encoder run once over the training clips, written as latent
shards (data/latents.py) that `--mode=train` reads when config.data.latents_dir is set.

  python -m wvd_jax.main --config=configs/wvd_2b.py --workdir=DIR --mode=encode_latents \
      --config.data.latents_dir=LATENTS --config.autoencoder.weights=/path/to/sd-vae

What is encoded: for every source of config.data.sources, every clip of its train split once, in
stored order, at ONE window (frames, stride) fixed by (config.seed, source, clip)
(pipeline.fixed_window_clips), cropped, resized, canonicalized and normalized as in training,
then train.model_inputs (the XYZ background sentinel, the latent loss mask) and the
autoencoder's posterior (mean, std) for its RGB and XYZ frames: exactly what the train step
encodes from pixels. Stored: the posterior mean and std, so that training still draws
z = mean + std * eps every step (autoencoder.sample_posterior), as from pixels.

How: the clips are cut into shards of data.latents_shard_size; process p of P encodes shards c
with c % P == p (c counts the shards of every split and source) on its own devices: a batch of
data.encode_batch_per_device clips per device, split over them by the data axis, through one
jitted function with the VAE parameters as arguments. The clips are read and prepared by grain
(data.worker_count processes, or threads) while the devices encode. Each shard is written
atomically once its clips are encoded, so an interrupted run loses only the shard in flight,
and a re-run with the same settings (manifest.json, compared first) skips the finished shards;
other settings are refused with one line.
"""
from __future__ import annotations

import dataclasses
import time

import grain
import jax
import numpy as np
import tqdm
from absl import logging
from flax import nnx

from wvd_jax import config_lib, errors, files, multihost
from wvd_jax.data import latents, pipeline
from wvd_jax.models import autoencoder as autoencoder_lib
from wvd_jax.training import sharding, train

_PIXEL_KEYS = ('rgb', 'xyz', 'mask', 'xyz_valid')  # What the encoder reads; the rest is stored.
_METADATA = ('intrinsics', 'cam_to_world', 'norm_center', 'norm_scale', 'clip', 'frame_indices')


def make_encode_fn(config, autoencoder, mesh):
  """encode(batch) -> {latent_mean, latent_std, latent_valid} for a pixel batch (numpy rgb, xyz,
  mask, xyz_valid with a leading batch axis divisible by the mesh's data axes), jitted with the
  batch split over the mesh and the autoencoder's parameters passed as (replicated) arguments."""
  if isinstance(autoencoder, nnx.Module):
    graphdef, params = nnx.split(autoencoder)
  else:  # The pixel autoencoder has no parameters.
    graphdef, params = None, {}

  def encode(params, batch):
    ae = autoencoder if graphdef is None else nnx.merge(graphdef, params)
    rgb, xyz, valid = train.model_inputs(config, batch, ae.downsample)
    mean, std = autoencoder_lib.encode_video_posterior(ae, rgb, xyz)
    return {latents.LATENT_MEAN: mean, latents.LATENT_STD: std, latents.LATENT_VALID: valid}

  batch_sh, rep = sharding.batch_sharding(mesh), sharding.replicated(mesh)
  jitted = jax.jit(encode, in_shardings=(rep, batch_sh), out_shardings=batch_sh)
  params = jax.device_put(params, rep)
  # device_put: jit refuses numpy inputs with a non-trivial sharding in multi-process jobs.
  return lambda batch: jitted(params, jax.device_put({k: batch[k] for k in _PIXEL_KEYS}, batch_sh))


@dataclasses.dataclass(frozen=True)
class _Job:
  """One encode batch: clips ``indices`` of shard ``shard`` of (split, source)."""
  split: str
  source: int
  shard: int
  indices: tuple[int, ...]
  last: bool  # The shard's last batch: the shard is written after it.


@dataclasses.dataclass(frozen=True)
class _LoadBatch(grain.transforms.Map):
  """_Job -> its clips stacked, padded to ``size`` by repeating the last clip."""
  clips: dict  # (split, source) -> pipeline.fixed_window_clips
  size: int

  def map(self, job: _Job) -> dict[str, np.ndarray]:
    items = [self.clips[(job.split, job.source)][i] for i in job.indices]
    items += [items[-1]] * (self.size - len(items))
    return {k: np.stack([c[k] for c in items]) for k in items[0]}


def _jobs(shards, batch: int) -> list[_Job]:
  jobs = []
  for split, source, shard, first, end in shards:
    starts = range(first, end, batch)
    jobs += [_Job(split, source, shard, tuple(range(s, min(s + batch, end))), s == starts[-1])
             for s in starts]
  return jobs


def encode_latents(config, workdir: str) -> str:
  """Encodes the config's training clips into config.data.latents_dir (module docstring);
  returns the directory. Resumes an interrupted run with the same settings."""
  directory = config.data.latents_dir
  if not directory:
    raise errors.UserError('--mode=encode_latents writes into config.data.latents_dir: set it '
                           '(--config.data.latents_dir=DIR), then train with the same value')
  latents.check_settings(config)  # Before the (maybe long) first render of the world.
  shard_size = config.data.latents_shard_size
  num_sources = len(config_lib.data_sources(config))
  clips = {(split, s): pipeline.fixed_window_clips(config, split, workdir, s)
           for split in latents.SPLITS for s in range(num_sources)}
  wanted = latents.manifest(config, shard_size, {
      split: [len(clips[(split, s)]) for s in range(num_sources)] for split in latents.SPLITS})
  latents.check_manifest(directory, wanted)  # Every process refuses other settings alike.
  multihost.sync('encode_latents: manifest checked')
  if multihost.is_primary():  # Nothing writes until every process has passed the next barrier.
    latents.claim(directory, wanted)
    for path in latents.remove_partial_shards(directory):
      logging.info('encode_latents: removed %s, left by an interrupted run', path)
  multihost.sync('encode_latents: manifest written')

  # This process's unfinished shards: (split, source, shard, first clip, end clip).
  mine, counter = [], 0
  for (split, source), dataset in clips.items():
    n = latents.num_shards(len(dataset), shard_size)
    for k in range(n):
      path = latents.shard_path(directory, split, source, k, n)
      if counter % jax.process_count() == jax.process_index() and not files.as_path(path).exists():
        mine.append((split, source, k, k * shard_size, min((k + 1) * shard_size, len(dataset))))
      counter += 1
  mesh = sharding.local_mesh()
  batch = config.data.encode_batch_per_device * mesh.devices.size
  jobs = _jobs(mine, batch)
  total = sum(end - first for *_, first, end in mine)
  logging.info('encode_latents: %d of %d shards to encode here (%d clips, %d a batch on %d '
               'devices) into %s', len(mine), counter, total, batch, mesh.devices.size, directory)
  if jobs:
    _run(config, jobs, clips, batch, mesh, directory, total, shard_size)
  multihost.sync('encode_latents: done')
  return directory


def _run(config, jobs, clips, batch, mesh, directory, total, shard_size):
  encode = make_encode_fn(config, autoencoder_lib.make_autoencoder(config), mesh)
  loader = grain.MapDataset.source(jobs).map(_LoadBatch(clips, batch))
  batches = pipeline.read_ahead(loader, config.data.worker_count)
  layout = latents.fields(config)
  records, in_flight = [], None
  start = time.time()
  with tqdm.tqdm(total=total, desc='encode latents', unit='clip',
                 disable=not multihost.is_primary()) as progress:
    # One batch in flight: the devices encode batch j while the host stores batch j - 1.
    for job, pixels in zip(jobs, batches):
      encoded = encode(pixels)
      if in_flight is not None:
        _store(*in_flight, records, progress)
      in_flight = (job, pixels, encoded)
      if job.last:
        _store(*in_flight, records, progress)
        in_flight = None
        shards = latents.num_shards(len(clips[(job.split, job.source)]), shard_size)
        latents.write_shard(latents.shard_path(directory, job.split, job.source, job.shard,
                                               shards), records, layout)
        records = []
  logging.info('encode_latents: %d clips in %.1f s (%.1f clips/s)', total, time.time() - start,
               total / max(time.time() - start, 1e-9))


def _store(job: _Job, pixels, encoded, records: list, progress) -> None:
  """Appends the job's clips (its unpadded rows) as records."""
  encoded = jax.device_get(encoded)
  count = len(job.indices)
  for i in range(count):
    records.append({**{k: pixels[k][i] for k in _METADATA},
                    **{k: v[i] for k, v in encoded.items()}})
  progress.update(count)
