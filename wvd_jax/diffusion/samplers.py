"""Jitted samplers over the VP schedule: DDIM / ancestral predictors, a Langevin corrector,
classifier-free guidance and inpainting of known values.

Entry point: ``sample(apply_fn, params, rng, known, known_mask, cond_mask, schedule=...,
prediction=..., config=SamplerConfig(...))`` (diffusion/generate.py calls it for every task).

Time grid: num_steps + 1 equally spaced times 1 = t_0 > t_1 > ... > t_num_steps = 0. At each
level t_i (i < num_steps):
  1. impose the known values at level t_i (below);
  2. ``langevin_steps`` corrector steps at t_i (``langevin.py``: score = -eps_hat / sigma_t,
     signal-to-noise step size), the known values re-imposed with fresh noise after each;
     with a per-modality schedule (``schedule.per_modality``: XYZ shifted, schedules.py) RGB and
     XYZ channels take their own alpha_t, sigma_t in every update and each modality its own
     corrector step size (norms over its own channels);
  3. the predictor moves t_i -> t_{i+1}: DDIM (eta in [0, 1]; 0 deterministic) or ancestral, the
     DDPM posterior q(z_s | z_t, x0_hat) (equal to DDIM at eta = 1). The last level returns
     x0_hat itself.
Network evaluations: num_steps * (1 + langevin_steps), doubled (one batch of 2B) with guidance.

Implementation: the whole loop is one jit, one ``lax.fori_loop`` over the num_steps * (1 +
langevin_steps) network evaluations (fixed shapes, no host round trips). Each iteration imposes
the known values, calls the network once and applies the corrector or predictor update, so the
network appears once in the compiled program. num_steps and langevin_steps are static (a new
value compiles the sampler again), so that XLA knows the loop's trip count: a loop it cannot
count (a traced bound) copies its condition to the host and blocks on it every iteration
(XLA:GPU's WhileThunk), which empties the GPU's queue before each network evaluation; with a
known count the host enqueues every iteration ahead. apply_fn, schedule, prediction, kind,
guidance on/off and clip_x0 are static too; eta, the guidance weight and snr are traced.

Known values (inpainting). ``known`` and ``known_mask`` have the latents' shape (B, N, h, w, 2C)
(RGB latents then XYZ latents on channels; in the VAE case they are latent-resolution tensors:
encode the known pixels and give a mask per latent pixel). ``known_mask`` is a float mask, 1
where a value is given (a mask per frame, per modality and per pixel; values in between blend).
Two kinds of known parts:
  * clean conditions: where ``cond_mask`` (B, N, 2) flags a frame's RGB ([..., 0]) or XYZ
    ([..., 1]) AND ``known_mask`` is set, the network input holds the clean known value, as in
    training (``objective.diffusion_loss``); the network is told through ``cond_mask``.
  * replacement: every other known part is replaced by a fresh forward sample at the current
    level, z <- (1 - m) z + m (alpha_t known + sigma_t noise) (score SDE's inpainting).
The returned sample equals ``known`` where ``known_mask`` is 1, exactly.

Classifier-free guidance (``guidance`` w; 1 = off, one network pass): the conditional pass sees
``cond_mask`` and the clean conditions; the unconditional pass sees ``cond_mask`` = 0 and every
known part (clean conditions included) replaced by its forward-noised value, i.e. plain
replacement. Predictions combine as x0 = x0_u + w (x0_c - x0_u) and likewise eps (the two inputs
agree outside the known parts, so the combination is one consistent (x0, eps) pair there).
w = 0 is replacement-only sampling with the unconditional network. The Langevin corrector uses
the guided score. With ``xyz_always_known`` (the RGB-only ablation, trained with XYZ a clean
condition always) the unconditional pass drops only the RGB conditions: XYZ keeps its flag and
clean value, as in every training example.

apply_fn: (params, z_t (B, N, h, w, 2C), t (B,), cond_mask (B, N, 2)) -> network output like
z_t (v, epsilon or x0 per ``prediction``); static, so hashable: a module-level function, a
``functools.partial`` (hashed by identity: reuse the same object to reuse the compiled sampler)
or a frozen dataclass with ``__call__``. ``params`` is a traced pytree. Optionally apply_fn has
``with_time_levels(params, times (num_steps,)) -> params``: then the sampler calls it once before
the loop with the levels t_0 .. t_{num_steps-1} and calls ``apply_fn(params, z_t, t, cond_mask,
level=i)`` at level i, so the network can compute whatever depends only on t for all levels in
one pass (models/builder.py LoopModel: the adaLN modulation rows).
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from wvd_jax import config_lib
from wvd_jax.diffusion import langevin, objective, schedules

KINDS = ('ddim', 'ancestral')


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
  """What ``sample`` does.

  Attributes:
    kind: 'ddim' (eta-controlled) or 'ancestral' (DDPM posterior sampling; equals DDIM eta=1).
    num_steps: predictor steps (noise levels) from t=1 to t=0.
    eta: DDIM stochasticity in [0, 1]; ignored by 'ancestral'.
    guidance: classifier-free guidance scale w >= 0; 1 = off (no unconditional pass).
    langevin_steps: corrector steps per level (0 = off).
    snr: the corrector's signal-to-noise ratio (score SDE uses 0.075-0.16).
    clip_x0: clip the predictor's x0 to [-1, 1] (pixel space; off for VAE latents).
    xyz_always_known: the model is the RGB-only ablation (config.diffusion.modalities ==
      'rgb'): the unconditional guidance pass keeps the XYZ clean conditions.
  """
  kind: str = 'ddim'
  num_steps: int = 50
  eta: float = 0.0
  guidance: float = 1.0
  langevin_steps: int = 0
  snr: float = 0.16
  clip_x0: bool = False
  xyz_always_known: bool = False

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f'SamplerConfig.kind must be one of {KINDS}, got {self.kind!r}')
    if not isinstance(self.num_steps, int) or self.num_steps < 1:
      raise ValueError(f'SamplerConfig.num_steps must be an int >= 1, got {self.num_steps!r}')
    if not 0.0 <= self.eta <= 1.0:
      raise ValueError(f'SamplerConfig.eta must be in [0, 1], got {self.eta}')
    if not self.guidance >= 0.0:
      raise ValueError(f'SamplerConfig.guidance must be >= 0, got {self.guidance}')
    if not isinstance(self.langevin_steps, int) or self.langevin_steps < 0:
      raise ValueError('SamplerConfig.langevin_steps must be an int >= 0, got '
                       f'{self.langevin_steps!r}')
    if not self.snr > 0.0:
      raise ValueError(f'SamplerConfig.snr must be > 0, got {self.snr}')

  @property
  def guided(self) -> bool:
    return self.guidance != 1.0

  @property
  def network_evals(self) -> int:
    """Network forward passes over a batch of B (a guided 2B call counts twice)."""
    return self.num_steps * (1 + self.langevin_steps) * (2 if self.guided else 1)

  @classmethod
  def from_config(cls, config) -> 'SamplerConfig':
    """From ``config.sample`` (keys other than num_steps/eta are optional) and the autoencoder."""
    s = config.sample
    return cls(kind=s.get('kind', 'ddim'), num_steps=int(s.num_steps), eta=float(s.eta),
               guidance=float(s.get('guidance', 1.0)),
               langevin_steps=int(s.get('langevin_steps', 0)), snr=float(s.get('snr', 0.16)),
               clip_x0=config.autoencoder.kind == 'pixel',
               xyz_always_known=config_lib.rgb_only(config))


def sample(apply_fn, params, rng: jax.Array, known: jax.Array, known_mask: jax.Array,
           cond_mask: jax.Array, *, schedule: schedules.CosineSchedule, prediction: str,
           config: SamplerConfig = SamplerConfig()) -> jax.Array:
  """Samples x0 (B, N, h, w, 2C) float32 given known values (see the module docstring).

  Args:
    apply_fn: (params, z_t, t (B,), cond_mask (B, N, 2)) -> network output; static.
    params: the network's parameters (a pytree, traced).
    rng: PRNG key; the result is a deterministic function of it.
    known: (B, N, h, w, 2C) known values (anything where known_mask is 0).
    known_mask: float mask broadcastable to known, 1 where the value is given.
    cond_mask: (B, N, 2) clean-condition flags per frame and modality (RGB, XYZ).
    schedule, prediction: the noise schedule and the network's parameterization.
    config: the sampler (kind, num_steps, eta, guidance, langevin_steps, snr, clip_x0).
  Returns:
    (B, N, h, w, 2C) float32 samples, equal to ``known`` where known_mask is 1.
  """
  settings = dict(eta=jnp.asarray(config.eta, jnp.float32),
                  guidance=jnp.asarray(config.guidance, jnp.float32),
                  snr=jnp.asarray(config.snr, jnp.float32))
  return _sample(apply_fn, params, rng, known, known_mask, cond_mask, settings,
                 schedule=schedule, prediction=prediction, kind=config.kind,
                 guided=config.guided, clip_x0=config.clip_x0,
                 xyz_always_known=config.xyz_always_known, num_steps=int(config.num_steps),
                 langevin_steps=int(config.langevin_steps))


def _check_inputs(known, known_mask, cond_mask, prediction):
  if prediction not in ('v', 'epsilon', 'x0'):
    raise ValueError(f'unknown prediction {prediction!r}')
  if known.ndim != 5 or known.shape[-1] % 2:
    raise ValueError(f'known must be (B, N, h, w, 2C) latents; got shape {known.shape}')
  try:
    if jnp.broadcast_shapes(known_mask.shape, known.shape) != known.shape:
      raise ValueError
  except ValueError:
    raise ValueError(f'known_mask {known_mask.shape} does not broadcast to known '
                     f'{known.shape}') from None
  b, n = known.shape[:2]
  if cond_mask.shape != (b, n, 2):
    raise ValueError(f'cond_mask must be (B, N, 2) = ({b}, {n}, 2); got {cond_mask.shape}')


@functools.partial(jax.jit, static_argnames=('apply_fn', 'schedule', 'prediction', 'kind',
                                             'guided', 'clip_x0', 'xyz_always_known',
                                             'num_steps', 'langevin_steps'))
def _sample(apply_fn, params, rng, known, known_mask, cond_mask, settings, *, schedule,
            prediction, kind, guided, clip_x0, num_steps: int, langevin_steps: int,
            xyz_always_known=False):
  """``sample`` with the traced settings (eta, guidance, snr) and a static step count."""
  _check_inputs(known, known_mask, cond_mask, prediction)
  known = known.astype(jnp.float32)
  known_mask = jnp.broadcast_to(known_mask.astype(jnp.float32), known.shape)
  cond_mask = cond_mask.astype(jnp.float32)
  clean = known_mask * objective.expand_cond_mask(cond_mask, known.shape[-1] // 2)
  if xyz_always_known:  # The unconditional pass keeps the XYZ conditions (see the docstring).
    cond_u = cond_mask.at[..., 0].set(0.0)
    clean_u = known_mask * objective.expand_cond_mask(cond_u, known.shape[-1] // 2)
  else:
    cond_u, clean_u = jnp.zeros_like(cond_mask), None
  batch, channels = known.shape[0], known.shape[-1] // 2
  substeps = langevin_steps + 1
  w = settings['guidance']
  rng_init, rng_loop = jax.random.split(rng)
  with_time_levels = getattr(apply_fn, 'with_time_levels', None)
  if with_time_levels is not None:  # The same float32 levels as ``body`` computes.
    params = with_time_levels(params, 1.0 - jnp.arange(num_steps, dtype=jnp.float32) / num_steps)

  def network(z_t, t_b, cond, i):
    if with_time_levels is None:
      return apply_fn(params, z_t, t_b, cond)
    return apply_fn(params, z_t, t_b, cond, level=i)

  def denoise(z, t, i, alpha, sigma):
    """(conditional network input, x0_hat, eps_hat), guided if configured."""
    z_c = (1.0 - clean) * z + clean * known
    t_b = jnp.full((batch,), t)
    if not guided:
      out = network(z_c, t_b, cond_mask, i)
      x0, eps = schedules.to_x0_eps(prediction, out, z_c, alpha, sigma)
      return z_c, x0, eps
    z_u = z if clean_u is None else (1.0 - clean_u) * z + clean_u * known
    out = network(jnp.concatenate([z_c, z_u]), jnp.concatenate([t_b, t_b]),
                  jnp.concatenate([cond_mask, cond_u]), i)
    x0_c, eps_c = schedules.to_x0_eps(prediction, out[:batch], z_c, alpha, sigma)
    x0_u, eps_u = schedules.to_x0_eps(prediction, out[batch:], z_u, alpha, sigma)
    return z_c, x0_u + w * (x0_c - x0_u), eps_u + w * (eps_c - eps_u)

  def predictor(z_c, x0, eps, noise, alpha_s, sigma_s, logsnr_t, logsnr_s, alpha_t, sigma_t):
    if clip_x0:
      x0 = jnp.clip(x0, -1.0, 1.0)
      eps = (z_c - alpha_t * x0) / sigma_t
    # 1 - r with r = alpha_t^2 sigma_s^2 / (sigma_t^2 alpha_s^2) = exp(logsnr_t - logsnr_s):
    # the posterior q(z_s | z_t, x0) has variance sigma_s^2 (1 - r).
    one_minus_r = -jnp.expm1(logsnr_t - logsnr_s)
    if kind == 'ancestral':
      mean = (alpha_t / alpha_s) * jnp.square(sigma_s / sigma_t) * z_c + alpha_s * one_minus_r * x0
      return mean + sigma_s * jnp.sqrt(one_minus_r) * noise, x0
    noise_std = settings['eta'] * sigma_s * jnp.sqrt(one_minus_r)
    return (alpha_s * x0 + jnp.sqrt(jnp.maximum(jnp.square(sigma_s) - jnp.square(noise_std), 0.0))
            * eps + noise_std * noise), x0

  def corrector(z, eps, noise, alpha_t, alpha_s, sigma_t):
    """One Langevin step at level t (a = 1 - beta of the step t -> s)."""
    score = langevin.score_from_eps(eps, sigma_t)
    a = jnp.square(alpha_t / alpha_s)
    if schedule.per_modality:  # One step size per modality, from its own norms and level.
      rgb = jnp.arange(2 * channels) < channels
      step_rgb, step_xyz = (
          langevin.signal_to_noise_step(score, noise, (1.0 - known_mask) * part, settings['snr'],
                                        a[index])
          for part, index in ((rgb, 0), (~rgb, channels)))
      step = jnp.where(rgb, step_rgb, step_xyz)
    else:
      step = langevin.signal_to_noise_step(score, noise, 1.0 - known_mask, settings['snr'], a)
    return langevin.langevin_step(z, score, noise, step)

  def body(j, z):
    """Network evaluation j: level i = j // substeps, corrector unless the last substep."""
    i, sub = j // substeps, j % substeps
    t = 1.0 - i.astype(jnp.float32) / num_steps
    s = 1.0 - (i + 1).astype(jnp.float32) / num_steps
    if schedule.per_modality:  # (2C,) levels: RGB and XYZ each at their own level of t.
      logsnr_t = schedule.channel_logsnr(t, channels)
      logsnr_s = schedule.channel_logsnr(s, channels)
    else:
      logsnr_t, logsnr_s = schedule.logsnr(t), schedule.logsnr(s)
    alpha_t, sigma_t = schedules.alpha_sigma(logsnr_t)
    alpha_s, sigma_s = schedules.alpha_sigma(logsnr_s)
    impose_key, noise_key = jax.random.split(jax.random.fold_in(rng_loop, j))
    # Known parts <- a fresh forward sample at this level (clean conditions included; the
    # conditional network input swaps those for their clean value in ``denoise``).
    noised = alpha_t * known + sigma_t * jax.random.normal(impose_key, z.shape)
    z = (1.0 - known_mask) * z + known_mask * noised
    z_c, x0, eps = denoise(z, t, i, alpha_t, sigma_t)
    noise = jax.random.normal(noise_key, z.shape)
    # Predictor: t -> s; the last level lands on t = 0 and returns x0_hat itself, not its
    # tiny-noise version.
    predicted, x0 = predictor(z_c, x0, eps, noise, alpha_s, sigma_s, logsnr_t, logsnr_s,
                              alpha_t, sigma_t)
    predicted = jnp.where(i == num_steps - 1, x0, predicted)
    if substeps == 1:  # No corrector: every evaluation is a predictor step.
      return predicted
    corrected = corrector(z, eps, noise, alpha_t, alpha_s, sigma_t)
    return jnp.where(sub == substeps - 1, predicted, corrected)

  z = jax.random.normal(rng_init, known.shape)
  z = jax.lax.fori_loop(0, num_steps * substeps, body, z)
  return (1.0 - known_mask) * z + known_mask * known

