"""The XYZ noise-schedule shift: analytic levels, training at them, sampling at them exactly.

The statistical check reuses test_samplers' exact Gaussian network, here aware of the two
modalities' levels: under a correct per-modality sampler its samples have the data's moments."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.diffusion import test_samplers as ts
from wvd_jax import config_lib
from wvd_jax.diffusion import objective, samplers, schedules

SHIFT = 3.0
SHIFTED = schedules.CosineSchedule(xyz_shift=SHIFT)


def test_shifted_levels_against_the_formula():
  t = np.linspace(0.0, 1.0, 41)
  t_min, t_max = (np.arctan(np.exp(-0.5 * v)) * 2 / np.pi for v in (15.0, -15.0))
  tc = t_min + t * (t_max - t_min)
  base = -2 * np.log(np.tan(np.pi * tc / 2))  # float64 reference
  np.testing.assert_allclose(SHIFTED.logsnr(t), np.clip(base, -15, 15), atol=2e-4)
  np.testing.assert_allclose(SHIFTED.xyz_logsnr(t), np.clip(base - 2 * np.log(SHIFT), -15, 15),
                             atol=2e-4)
  np.testing.assert_allclose(SHIFTED.xyz_logsnr(0.5), -2 * np.log(SHIFT), atol=1e-5)
  # sigma / alpha of XYZ is SHIFT times RGB's wherever neither level is clipped (SD3's shift).
  a_rgb, s_rgb = SHIFTED.alpha_sigma(0.3)
  levels = SHIFTED.channel_logsnr(jnp.asarray([0.3, 0.7]), 2)
  assert levels.shape == (2, 4)
  alpha, sigma = SHIFTED.channel_alpha_sigma(0.3, 2)
  np.testing.assert_allclose(alpha[:2], a_rgb, rtol=1e-6)
  np.testing.assert_allclose(sigma[2:] / alpha[2:], SHIFT * s_rgb / a_rgb, rtol=1e-5)
  np.testing.assert_allclose(alpha ** 2 + sigma ** 2, 1.0, atol=1e-6)
  # Off by default: the default config's schedule is today's single-level one.
  default = schedules.CosineSchedule.from_config(config_lib.base_config())
  assert default == schedules.CosineSchedule() and not default.per_modality
  assert SHIFTED.per_modality


def test_training_noises_xyz_at_its_level():
  """Clean latents of 1 everywhere: a clip's noisy input averages alpha of its modality's level."""
  seen = {}

  def spy(z_t, t, cond_mask):
    seen.update(z_t=z_t, t=t)
    return jnp.zeros_like(z_t)

  latents = jnp.ones((4, 2, 32, 32, 6))
  objective.diffusion_loss(spy, latents, jnp.ones((4, 2, 32, 32), bool), jax.random.PRNGKey(3),
                           schedule=SHIFTED, prediction='v', p_unconditional=1.0,
                           p_rgb_known=0.0, rgb_weight=1.0, xyz_weight=1.0)
  alpha, _ = SHIFTED.channel_alpha_sigma(seen['t'], 3)  # (B, 6)
  means = seen['z_t'].mean(axis=(1, 2, 3))  # (B, 6); standard error ~ 1 / sqrt(2048) = 0.02
  np.testing.assert_allclose(means, alpha, atol=0.1)
  assert np.abs(alpha[:, :3] - alpha[:, 3:]).max() > 0.2  # The two levels really differ.


@dataclasses.dataclass(frozen=True)
class _SharedLevelsPerChannel(schedules.CosineSchedule):
  """xyz_shift 1 through the per-channel code path (for comparing the two paths)."""

  @property
  def per_modality(self) -> bool:
    return True


def test_per_channel_path_with_equal_levels_is_the_shared_path():
  """Equal levels through the per-channel path give today's loss and samples (no corrector:
  the per-modality corrector takes its step sizes from each modality's own norms)."""
  rng = np.random.default_rng(0)
  latents = jnp.asarray(rng.normal(size=(4, 2, 4, 4, 6)).astype(np.float32))
  net = lambda z, t, c: 0.3 * z + t[:, None, None, None, None]
  kwargs = dict(prediction='v', p_unconditional=0.2, p_rgb_known=0.3, rgb_weight=1.0,
                xyz_weight=2.0)
  valid = jnp.ones((4, 2, 4, 4), bool)
  loss = [objective.diffusion_loss(net, latents, valid, jax.random.PRNGKey(1), schedule=s,
                                   **kwargs)[0]
          for s in (schedules.CosineSchedule(), _SharedLevelsPerChannel())]
  np.testing.assert_allclose(loss[0], loss[1], rtol=1e-6)
  mean, cov = ts._gaussian(0.9)
  known, known_mask, cond_mask, _ = ts._inpainting_problem(mean, cov, 64, [0, 1, 5])
  config = samplers.SamplerConfig(num_steps=8, eta=0.5)
  x = [samplers.sample(ts.GaussianDenoiser('v'), ts._params(mean, cov), jax.random.PRNGKey(2),
                       known, known_mask, cond_mask, schedule=s, prediction='v', config=config)
       for s in (schedules.CosineSchedule(), _SharedLevelsPerChannel())]
  np.testing.assert_allclose(x[0], x[1], atol=1e-5)


@dataclasses.dataclass(frozen=True)
class ShiftedGaussianDenoiser(ts.GaussianDenoiser):
  """test_samplers' exact network for data noised at SHIFTED's per-channel levels."""

  def __call__(self, params, z, t, cond_mask):
    b = z.shape[0]
    clean = jnp.broadcast_to(objective.expand_cond_mask(cond_mask, z.shape[-1] // 2), z.shape)
    clean = clean.reshape(b, -1) > 0.5
    y = z.reshape(b, -1)
    alpha, sigma = (jnp.broadcast_to(v[:, None, None, None, :], z.shape).reshape(b, -1)
                    for v in SHIFTED.channel_alpha_sigma(t, z.shape[-1] // 2))
    h = jnp.where(clean, 1.0, alpha)
    r = jnp.where(clean, 0.0, jnp.square(sigma))
    cov, mean = params['cov'], params['mean']
    m = h[:, :, None] * h[:, None, :] * cov + r[:, :, None] * jnp.eye(y.shape[1])
    x0 = mean + jnp.einsum('ij,bj,bj->bi', cov, h, ts._spd_solve(m, y - h * mean))
    out = schedules.target(self.prediction, x0, (y - alpha * x0) / sigma, alpha, sigma)
    return out.reshape(z.shape)


@pytest.mark.parametrize('eta,langevin_steps', [(0.0, 0), (0.5, 2)])
def test_shifted_sampler_matches_the_gaussian(eta, langevin_steps):
  """Unconditional samples under the XYZ-shifted schedule (DDIM, and DDIM + per-modality
  corrector) have the data's mean and covariance (z-scores as in test_samplers)."""
  mean, cov = ts._gaussian(0.9)
  zeros = jnp.zeros((ts.NUM_SAMPLES,) + ts.SHAPE)
  config = samplers.SamplerConfig(eta=eta, num_steps=100, langevin_steps=langevin_steps,
                                  snr=0.2)
  x = samplers.sample(ShiftedGaussianDenoiser('v'), ts._params(mean, cov),
                      jax.random.PRNGKey(0), zeros, zeros, jnp.zeros((ts.NUM_SAMPLES, 2, 2)),
                      schedule=SHIFTED, prediction='v', config=config)
  z_mean, z_cov = ts._z_scores(np.asarray(x).reshape(ts.NUM_SAMPLES, -1), mean, cov)
  print(f'xyz shift {SHIFT} eta={eta} K={langevin_steps}: max|z| mean {z_mean:.2f} '
        f'cov {z_cov:.2f}')
  assert z_mean < ts.Z_MAX and z_cov < ts.Z_MAX


def test_a_network_run_at_the_wrong_levels_is_caught():
  """The statistical check has power: the shifted network under the unshifted sampler fails."""
  mean, cov = ts._gaussian(0.9)
  zeros = jnp.zeros((ts.NUM_SAMPLES,) + ts.SHAPE)
  x = samplers.sample(ShiftedGaussianDenoiser('v'), ts._params(mean, cov),
                      jax.random.PRNGKey(0), zeros, zeros, jnp.zeros((ts.NUM_SAMPLES, 2, 2)),
                      schedule=schedules.CosineSchedule(), prediction='v',
                      config=samplers.SamplerConfig(num_steps=100))
  z_mean, z_cov = ts._z_scores(np.asarray(x).reshape(ts.NUM_SAMPLES, -1), mean, cov)
  assert max(z_mean, z_cov) > 2 * ts.Z_MAX
