"""The train loop: `--mode=train`.

Reading order: make_train_step (the jitted step: loss, gradients, AdamW, EMA, non-finite skip),
then train_and_evaluate (data, mesh, state, checkpoints, logging).
"""
from __future__ import annotations

import functools
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm
from absl import logging
from jax.experimental import multihost_utils

from wvd_jax import config_lib, errors, files, multihost, visualize
from wvd_jax.data import latents as latents_lib
from wvd_jax.data import pipeline
from wvd_jax.diffusion import generate, objective, schedules
from wvd_jax.geometry import normalization
from wvd_jax.models import autoencoder as autoencoder_lib
from wvd_jax.models import builder, dit
from wvd_jax.training import checkpoints, flops, metrics, optimizer, sharding
from wvd_jax.training import state as state_lib


def latent_valid_mask(mask: jax.Array, downsample: int) -> jax.Array:
  """(B, N, H, W) pixel validity -> (B, N, H/d, W/d): a latent is valid if its whole cell is."""
  if downsample == 1:
    return mask
  b, n, h, w = mask.shape
  cells = mask.reshape(b, n, h // downsample, downsample, w // downsample, downsample)
  return cells.all(axis=(3, 5))


# The posterior sample's noise: its own stream, so the diffusion noise is that of a mean-latent run.
_POSTERIOR_STREAM = 0x9E3779B9


def model_inputs(config, batch, downsample: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """A pixel batch as the autoencoder encodes it: (rgb, xyz, valid).

  rgb, xyz (B, N, H, W, 3): XYZ zero for the RGB-only ablation and the background sentinel where
  known background is trained toward it; valid (B, N, H/d, W/d) bool: the latents whose XYZ is
  in the loss (objective.xyz_supervision, a latent valid if its whole cell is). The train step
  and --mode=encode_latents (training/encode_latents.py) both call this."""
  rgb_only = config_lib.rgb_only(config)
  # RGB-only ablation: the batch's XYZ is never read (diffusion_loss zeroes the XYZ latents).
  xyz = jnp.zeros_like(batch['xyz']) if rgb_only else batch['xyz']
  # Known pixels have an XYZ target: their point, or (sentinel) the background corner where
  # no surface; unknown depth (converted datasets) is out of the XYZ loss.
  in_loss, background = objective.xyz_supervision(
      batch['mask'], batch['xyz_valid'], config.diffusion.background == 'sentinel' and not rgb_only)
  xyz = normalization.fill_background(xyz, ~background)
  return batch['rgb'], xyz, latent_valid_mask(in_loss, downsample)


def samples_posterior(config) -> bool:
  """Whether training draws latents from the VAE posterior (autoencoder.sample_posterior)."""
  return config.autoencoder.kind != 'pixel' and config.autoencoder.sample_posterior


def make_loss_fn(config, graphdef, autoencoder):
  """loss_fn(params, batch, rng) -> (loss, metrics): encode, noise, predict, weigh.

  A pixel batch (pipeline.make_dataset) is encoded here; a cached-latent batch (its
  ``latent_mean`` / ``latent_std`` / ``latent_valid``, data/latents.py) skips the encoder. Either
  way the latent is the posterior mean, or with samples_posterior(config) mean + std * eps with
  eps from the step's rng: both paths give the same loss for the same clip and rng."""
  schedule = schedules.CosineSchedule.from_config(config)
  d = config.diffusion
  sample = samples_posterior(config)

  def loss_fn(params, batch, rng):
    if latents_lib.LATENT_MEAN in batch:
      mean, std = batch[latents_lib.LATENT_MEAN], batch[latents_lib.LATENT_STD]
      valid = batch[latents_lib.LATENT_VALID]
    else:
      rgb, xyz, valid = model_inputs(config, batch, autoencoder.downsample)
      if sample:
        mean, std = autoencoder_lib.encode_video_posterior(autoencoder, rgb, xyz)
      else:
        mean, std = autoencoder_lib.encode_video(autoencoder, rgb, xyz), None
    latents = mean
    if sample:
      eps = jax.random.normal(jax.random.fold_in(rng, _POSTERIOR_STREAM), mean.shape, mean.dtype)
      latents = mean + std * eps
    apply_fn = functools.partial(builder.apply_model, graphdef, params)
    return objective.diffusion_loss(
        apply_fn, latents, valid, rng, schedule=schedule, prediction=d.prediction,
        p_unconditional=d.p_unconditional, p_rgb_known=d.p_rgb_known,
        rgb_weight=d.rgb_loss_weight, xyz_weight=d.xyz_loss_weight,
        xyz_known=config_lib.rgb_only(config))

  return loss_fn


def make_train_step(config, graphdef, tx, autoencoder):
  """The pure train step (state, batch) -> (state, metrics); jit it with shardings."""
  loss_fn = make_loss_fn(config, graphdef, autoencoder)
  ema_every = config.optim.ema_every
  ema_decay = config.optim.ema_decay
  fp8 = bool(config.model.get('fp8', False))
  fused_update = config.optim.fused_update  # optimizer.fused_adamw_ema: one pass a parameter.

  def ema_decay_at(step):
    # Warm-up: early on, the average follows the weights (decay (1+t)/(10+t) < ema_decay), so
    # a short run's EMA is not mostly its random initialization.
    return jnp.minimum(ema_decay, (1.0 + step) / (10.0 + step)) ** ema_every

  def update_ema(ema, params, step):
    decay = ema_decay_at(step)
    return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)

  def train_step(state: state_lib.TrainState, batch):
    rng = jax.random.fold_in(state.rng, state.step)
    (loss, step_metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, batch, rng)
    fp8_meta = grads  # With FP8, these entries are the next scaling state (optimizer.py).
    if fp8:
      grads = optimizer.without_fp8_meta(grads)
    grad_norm = optax.global_norm(grads)
    # A non-finite loss or gradient skips the update (counted), instead of poisoning the weights.
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
    step = state.step.astype(jnp.float32)
    if fused_update:
      params, opt_state, ema = optimizer.fused_adamw_ema(
          config, grads, state.opt_state, state.params, state.ema_params, ema_decay_at(step),
          finite)
    else:
      updates, opt_state = tx.update(grads, state.opt_state, state.params)
      params = optax.apply_updates(state.params, updates)
      if ema_every == 1:
        ema = update_ema(state.ema_params, params, step)
      else:  # lax.cond, so that skipped steps do not even read the EMA.
        ema = jax.lax.cond((state.step + 1) % ema_every == 0, update_ema, lambda e, *_: e,
                           state.ema_params, params, step)
      params, opt_state, ema = (keep(params, state.params), keep(opt_state, state.opt_state),
                                keep(ema, state.ema_params))
    if fp8:  # The scaling state is written, not trained; the EMA runs with the current one.
      meta = keep(fp8_meta, state.params)
      params, ema = optimizer.with_fp8_meta(params, meta), optimizer.with_fp8_meta(ema, meta)
    new_state = state.replace(
        step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema,
        num_nonfinite=jnp.where(finite, 0, state.num_nonfinite + 1),
    )
    step_metrics = dict(step_metrics, grad_norm=grad_norm,
                        num_nonfinite=new_state.num_nonfinite)
    return new_state, step_metrics

  return train_step


def make_eval_step(config, graphdef, autoencoder):
  loss_fn = make_loss_fn(config, graphdef, autoencoder)

  def eval_step(params, batch, rng):
    return loss_fn(params, batch, rng)[1]

  return eval_step


class _Preemption:
  """Turns SIGTERM into a flag so the loop can checkpoint and exit cleanly."""

  def __init__(self):
    self.requested = False
    try:
      signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # Not the main thread (e.g. inside some test runners).
      pass

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True


def _restore_or_init(config, mesh, tx, manager, state_sh):
  """(state, global batches consumed): the newest checkpoint's, or a fresh state at 0."""
  state_shapes = jax.eval_shape(lambda: state_lib.create_train_state(config, mesh, tx)[1])
  restored = checkpoints.restore_latest(manager, checkpoints.abstract_like(state_sh, state_shapes))
  if restored is not None:
    step = int(restored.step)
    position = checkpoints.data_position(manager, step)
    logging.info('resumed from step %d at global batch %d', step, position)
    return restored, position
  return state_lib.create_train_state(config, mesh, tx)[1], 0


class StopCheck:
  """When to stop early: SIGTERM (preemption) or the wall-clock budget (train.max_minutes).

  Asked every train.stop_check_every steps. Processes of a multi-host job agree: each one's
  reasons are OR-ed across processes (a tiny all-gather, see benchmarks/stop_check.py for its
  cost), so a SIGTERM delivered to any one process stops all of them at the same step; a
  collective reached by some but not all processes would hang."""

  SIGTERM, OUT_OF_TIME = 1, 2

  def __init__(self, config):
    self.every = config.train.stop_check_every
    self.minutes = config.train.max_minutes
    self.start = time.time()
    self.preemption = _Preemption()

  def local_reasons(self) -> int:
    out_of_time = 0 < self.minutes < (time.time() - self.start) / 60.0
    return self.SIGTERM * self.preemption.requested | self.OUT_OF_TIME * out_of_time

  def __call__(self, step: int) -> int:
    """The reasons (bit flags) to stop after ``step``, the same on every process; 0: go on."""
    if step % self.every:
      return 0
    reasons = self.local_reasons()
    if jax.process_count() > 1:
      gathered = multihost_utils.process_allgather(np.asarray([reasons], np.int32))
      reasons = int(np.bitwise_or.reduce(np.ravel(gathered)))
    return reasons


def train_and_evaluate(config, workdir) -> state_lib.TrainState:
  """Trains the config's model, resuming from the latest checkpoint in ``workdir`` (a local
  path or a URI such as gs://bucket/run)."""
  if config.data.latents_dir:  # Refuse missing, incomplete or mismatched latents before any write.
    latents_lib.open_sources(config, 'train')
  workdir = files.as_path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  mesh = sharding.make_mesh(config)
  sharding.check_batch(config, mesh)
  rules = sharding.axis_rules(config)
  logging.info('mesh: %s', dict(mesh.shape))
  tx = optimizer.make_optimizer(config)
  autoencoder = autoencoder_lib.make_autoencoder(config)
  graphdef, state_sh = state_lib.state_shardings(config, mesh, tx)

  manager = checkpoints.make_manager(workdir, config)
  checkpoints.check_or_store_config(workdir, config)
  state, position = _restore_or_init(config, mesh, tx, manager, state_sh)
  if int(state.step) >= config.train.num_steps:
    logging.warning('training in %s is already finished (step %d, config.train.num_steps=%d); '
                    'raise --config.train.num_steps to train on', workdir, int(state.step),
                    config.train.num_steps)
    manager.close()
    return state
  # The data position is global: any process count resumes at the same global batch. With
  # config.data.latents_dir the batches are cached latents; validation still reads pixels.
  train_iter = iter(pipeline.make_dataset(config, 'train', workdir,
                                          process_index=jax.process_index(),
                                          process_count=jax.process_count(),
                                          start_batch=position,
                                          from_latents=bool(config.data.latents_dir)))

  batch_sh = sharding.batch_sharding(mesh)
  rep = sharding.replicated(mesh)
  train_step = jax.jit(make_train_step(config, graphdef, tx, autoencoder),
                       in_shardings=(state_sh, batch_sh), out_shardings=(state_sh, rep),
                       donate_argnums=(0,))
  eval_step = jax.jit(make_eval_step(config, graphdef, autoencoder),
                      in_shardings=(state_sh.ema_params, batch_sh, rep), out_shardings=rep)
  writer = metrics.MetricWriter(workdir, resume_step=int(state.step))
  stop_check = StopCheck(config)
  logging.info('model parameters: %.3fM', sum(x.size for x in jax.tree.leaves(state.params)) / 1e6)
  step_flops = _train_step_flops(config)
  peak_tflops = config.train.peak_tflops or flops.measure_matmul_tflops(
      dtype=jnp.dtype(config.model.compute_dtype))
  logging.info('train step: %.3g TFLOP (model FLOPs); matmul rate %.1f TFLOP/s a device',
               step_flops / 1e12, peak_tflops)

  step = int(state.step)
  pending = []
  last_time, last_step = time.time(), step
  # Inside the mesh context the model's logical activation constraints are active.
  progress = tqdm.tqdm(total=config.train.num_steps, initial=step, desc='train',
                       disable=jax.process_index() != 0)
  with sharding.use_mesh(mesh, rules), progress:
    while step < config.train.num_steps:
      batch = sharding.global_batch(next(train_iter), mesh)
      state, step_metrics = train_step(state, batch)
      step += 1
      position += 1
      pending.append(step_metrics)
      progress.update(1)
      if step % config.train.log_every == 0 or step == config.train.num_steps:
        # One host sync per logging interval, not per step (the metrics are replicated).
        fetched = jax.device_get(pending)
        pending = []
        means = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
        now = time.time()
        means['steps_per_sec'] = (step - last_step) / max(now - last_time, 1e-9)
        means['mfu'] = means['steps_per_sec'] * step_flops / (
            peak_tflops * 1e12 * jax.device_count())
        last_time, last_step = now, step
        means['num_nonfinite'] = float(fetched[-1]['num_nonfinite'])
        means['skipped_steps'] = float(sum(float(m['num_nonfinite']) > 0 for m in fetched))
        writer.write_scalars(step, means, prefix='train/')
        progress.set_postfix(loss=f"{means['loss']:.4f}")
        if means['num_nonfinite'] >= config.train.max_nonfinite_steps:
          checkpoints.wait(manager)
          raise errors.UserError(
              f'{int(means["num_nonfinite"])} non-finite updates in a row at step {step} '
              f'(config.train.max_nonfinite_steps={config.train.max_nonfinite_steps}); the '
              'updates were skipped and the last checkpoint is intact: lower '
              'config.optim.learning_rate or check the data')
      stop = stop_check(step)
      if step % config.train.eval_every == 0:
        evaluate(config, workdir, eval_step, graphdef, state, mesh, writer, step)
        last_time = time.time()  # Evaluation time is not training time.
      if step % config.train.checkpoint_every == 0 or stop:
        checkpoints.save(manager, state, position)
      if stop & StopCheck.SIGTERM:
        logging.warning('SIGTERM (on this or another process): saved a checkpoint at step %d, '
                        'exiting', step)
      if stop & StopCheck.OUT_OF_TIME:
        logging.warning('train.max_minutes=%g reached at step %d: saved and stopping',
                        config.train.max_minutes, step)
      if stop:
        break
  if manager.latest_step() != step:
    checkpoints.save(manager, state, position)
  checkpoints.wait(manager)
  manager.close()
  writer.close()
  return state


def _train_step_flops(config) -> float:
  d = config.data
  latent = d.image_size // config.autoencoder.downsample
  tokens = d.num_frames * (latent // config.model.patch_size) ** 2
  return flops.dit_train_step_flops(dit.DiTConfig.from_config(config), d.batch_size, tokens)


def evaluate(config, workdir, eval_step, graphdef, state, mesh, writer, step):
  """Validation losses (EMA weights, fixed batches and noise) and a sample grid to TensorBoard.

  Every process reads its share of the validation batches; the losses come back replicated. The
  sample grid needs the whole EMA parameters on one process: they are all-gathered (every
  process takes part), then process 0 samples one clip on its own devices."""
  ds = pipeline.make_dataset(config, 'validation', workdir, process_index=jax.process_index(),
                             process_count=jax.process_count(), shuffle=False, repeat=True)
  batches = [b for _, b in zip(range(max(config.train.num_eval_batches, 1)), ds)]
  if config.train.num_eval_batches > 0:
    totals = [jax.device_get(eval_step(state.ema_params, sharding.global_batch(b, mesh),
                                       jax.random.PRNGKey(10_000 + i)))
              for i, b in enumerate(batches)]
    writer.write_scalars(step, {k: float(np.mean([t[k] for t in totals])) for k in totals[0]},
                         prefix='validation/')
  if config.train.log_sample_grids:
    params = multihost.host_copy(state.ema_params)
    if multihost.is_primary():
      # This process's devices only: a mesh context of the global mesh would pin the sampler's
      # activations onto other processes' devices.
      with sharding.use_mesh(sharding.local_mesh(), sharding.axis_rules(config)):
        clip = jax.tree.map(lambda x: x[:1], batches[0])
        rgb, xyz = jax.device_get(generate.sample_from_first_frame(
            config, graphdef, params, jnp.asarray(clip['rgb'][:, 0]), config.data.num_frames,
            jax.random.PRNGKey(step)))
      grid = visualize.sample_grid(jax.tree.map(lambda x: x[0], clip), rgb[0], xyz[0],
                                   config_lib.rgb_only(config))
      writer.write_image(step, 'validation/samples', grid)
  writer.flush()
