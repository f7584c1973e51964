"""The VP cosine schedule and the parameterization conversions, against exact identities."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wvd_jax.diffusion import schedules


def test_variance_preserving_and_monotone():
  schedule = schedules.CosineSchedule()
  t = jnp.linspace(0.0, 1.0, 101)
  alpha, sigma = schedule.alpha_sigma(t)
  np.testing.assert_allclose(alpha ** 2 + sigma ** 2, 1.0, atol=1e-6)
  logsnr = schedule.logsnr(t)
  assert np.all(np.diff(np.asarray(logsnr)) < 0)
  np.testing.assert_allclose([logsnr[0], logsnr[-1]], [15.0, -15.0], atol=1e-3)
  # Mid-point of the unshifted cosine schedule is logSNR 0 (alpha = sigma).
  np.testing.assert_allclose(schedule.logsnr(0.5), 0.0, atol=1e-5)


def test_shift_moves_to_more_noise():
  base, shifted = schedules.CosineSchedule(), schedules.CosineSchedule(shift=2.0)
  np.testing.assert_allclose(shifted.logsnr(0.5), base.logsnr(0.5) - 2 * np.log(2.0), atol=1e-5)


@pytest.mark.parametrize('prediction', ['v', 'epsilon', 'x0'])
def test_target_inverts_to_x0_and_eps(prediction):
  x0, eps = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 3))
  alpha, sigma = schedules.CosineSchedule().alpha_sigma(0.3)
  z = alpha * x0 + sigma * eps
  out = schedules.target(prediction, x0, eps, alpha, sigma)
  x0_hat, eps_hat = schedules.to_x0_eps(prediction, out, z, alpha, sigma)
  np.testing.assert_allclose(x0_hat, x0, atol=1e-5)
  np.testing.assert_allclose(eps_hat, eps, atol=1e-5)
