"""Samplers against exact answers, without a trained network.

For data x ~ N(mean, cov) the optimal denoiser is closed form, so an "exact network" exists:
given noisy entries z = alpha x + sigma eps and, for entries flagged as clean conditions, their
clean value, E[x | observations] is a Gaussian posterior mean (``GaussianDenoiser``). With it:
  * unconditional samples must have the data's mean and covariance;
  * conditional samples (clean conditioning, or replacement inpainting + Langevin correction)
    must have the analytic conditional mean and covariance of the unknown entries;
  * replacement alone is visibly biased when known and unknown entries are strongly correlated,
    and the Langevin corrector removes most of that bias (the paper's observation).
Statistical checks turn every sample mean and covariance entry into a z-score, (estimate -
truth) / standard error with the standard errors of n Gaussian samples (mean: sqrt(S_ii / n);
covariance: sqrt((S_ii S_jj + S_ij^2) / n)), and require max |z| < Z_MAX. Under an exact sampler
the chance of max |z| > 4.5 over <= 44 entries is < 3e-4; seeds are fixed, so runs are
deterministic. Samples are laid out as (B, N=2, h=1, w=2, 2C=2) latents: d = 8, frame 0 is
entries 0-3, frame 1 entries 4-7, channel 0 "RGB" and channel 1 "XYZ".
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wvd_jax.diffusion import langevin, objective, samplers, schedules

SHAPE = (2, 1, 2, 2)  # (N, h, w, 2C) of one sample.
DIM = 8
SCHEDULE = schedules.CosineSchedule()
NUM_SAMPLES = 4096
Z_MAX = 4.5


def _spd_solve(m: jax.Array, b: jax.Array) -> jax.Array:
  """Solves m x = b for a batch of SPD matrices m (B, d, d), b (B, d) by Cholesky.

  (Of the solvers tried, Cholesky compiled fastest on XLA:CPU: 0.8 s against 3-4 s for LU or an
  unrolled Gauss-Jordan, which matters as every sampler program inlines this denoiser.)
  """
  factor = jax.scipy.linalg.cho_factor(m, lower=True)
  return jax.scipy.linalg.cho_solve(factor, b[..., None])[..., 0]


@dataclasses.dataclass(frozen=True)
class GaussianDenoiser:
  """The exact network for x ~ N(params['mean'], params['cov']) under ``prediction``.

  Entries flagged clean by cond_mask are observed exactly (y = x), the others as y = alpha x +
  sigma eps; with H = diag(h) (h = 1 clean, alpha noisy) and R = diag(0 clean, sigma^2 noisy),
  E[x | y] = mean + cov H (H cov H + R)^-1 (y - H mean). Returns the parameterization's target
  for (x0_hat, eps_hat = (z - alpha x0_hat) / sigma), as a trained network would.
  """
  prediction: str

  def __call__(self, params, z, t, cond_mask):
    b = z.shape[0]
    clean = jnp.broadcast_to(objective.expand_cond_mask(cond_mask, z.shape[-1] // 2), z.shape)
    clean = clean.reshape(b, -1) > 0.5
    y = z.reshape(b, -1)
    alpha, sigma = SCHEDULE.alpha_sigma(t)
    h = jnp.where(clean, 1.0, alpha[:, None])
    r = jnp.where(clean, 0.0, jnp.square(sigma)[:, None])
    cov, mean = params['cov'], params['mean']
    m = h[:, :, None] * h[:, None, :] * cov + r[:, :, None] * jnp.eye(y.shape[1])
    x0 = mean + jnp.einsum('ij,bj,bj->bi', cov, h, _spd_solve(m, y - h * mean))
    a, s = alpha[:, None], sigma[:, None]
    out = schedules.target(self.prediction, x0, (y - a * x0) / s, a, s)
    return out.reshape(z.shape)


def _gaussian(rho: float, seed: int = 0, var: float = 0.5, aniso: float = 0.3):
  """(mean (8,), cov (8, 8)) float64: frame 1 = rho * (a rotation of frame 0) + noise.

  Known (frame 0) and unknown (frame 1) parts have correlation rho along every direction; the
  conditional covariance of frame 1 given frame 0 is (1 - rho^2) var (I + a mild anisotropy).
  """
  rs = np.random.RandomState(seed)
  a = rs.randn(4, 4)
  s_kk = var * (np.eye(4) + aniso * a @ a.T / 4)
  q, _ = np.linalg.qr(rs.randn(4, 4))
  b = rho * q @ np.diag(np.sqrt(var / np.diag(s_kk)))
  e = rs.randn(4, 4)
  s_e = (1 - rho ** 2) * var * (np.eye(4) + aniso * e @ e.T / 4)
  cov = np.block([[s_kk, s_kk @ b.T], [b @ s_kk, b @ s_kk @ b.T + s_e]])
  return rs.randn(8) * 0.2, cov


def _params(mean, cov):
  return dict(mean=jnp.asarray(mean, jnp.float32), cov=jnp.asarray(cov, jnp.float32))


def _conditional(mean, cov, known_idx, x_known):
  """Analytic (mean, cov) of the entries not in known_idx given x[known_idx] = x_known."""
  u = np.setdiff1d(np.arange(len(mean)), known_idx)
  k = np.asarray(known_idx)
  gain = cov[np.ix_(u, k)] @ np.linalg.inv(cov[np.ix_(k, k)])
  return (mean[u] + gain @ (x_known - mean[k]),
          cov[np.ix_(u, u)] - gain @ cov[np.ix_(k, u)]), u


def _z_scores(x: np.ndarray, mean: np.ndarray, cov: np.ndarray):
  """(max |z| of the sample mean, max |z| of the sample covariance) against the truth."""
  n = x.shape[0]
  x = x.astype(np.float64)
  z_mean = (x.mean(0) - mean) / np.sqrt(np.diag(cov) / n)
  se_cov = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov ** 2) / n)
  z_cov = (np.cov(x.T) - cov) / se_cov
  return float(np.abs(z_mean).max()), float(np.abs(z_cov).max())


def _errors(x, mean, cov):
  """(|sample mean - mean|, |sample cov - cov|_F)."""
  return (float(np.linalg.norm(x.mean(0) - mean)),
          float(np.linalg.norm(np.cov(x.T.astype(np.float64)) - cov)))


def _inpainting_problem(mean, cov, batch, known_idx, cond_frame0=False):
  """(known, known_mask, cond_mask, x_known) with x[known_idx] fixed at a value ~1.5 std out."""
  x_full = mean + np.linalg.cholesky(cov) @ np.array([1.5, -1.0, 1.0, 0.5, 0.8, -0.6, 0.3, 1.0])
  x_known = x_full[known_idx]
  flat_known = np.zeros(DIM, np.float32)
  flat_known[known_idx] = x_known
  flat_mask = np.zeros(DIM, np.float32)
  flat_mask[known_idx] = 1.0
  known = jnp.broadcast_to(jnp.asarray(flat_known.reshape(SHAPE)), (batch,) + SHAPE)
  known_mask = jnp.broadcast_to(jnp.asarray(flat_mask.reshape(SHAPE)), (batch,) + SHAPE)
  cond_mask = jnp.zeros((batch, 2, 2))
  if cond_frame0:
    cond_mask = cond_mask.at[:, 0, :].set(1.0)
  return known, known_mask, cond_mask, x_known


def _run(config, params, known, known_mask, cond_mask, seed=0, prediction='v'):
  x = samplers.sample(GaussianDenoiser(prediction), params, jax.random.PRNGKey(seed), known,
                      known_mask, cond_mask, schedule=SCHEDULE, prediction=prediction,
                      config=config)
  return np.asarray(x).reshape(x.shape[0], -1)


# ---------------------------------------------------------------------------------------------
# API, shapes, determinism, exact relations.


def test_config_validation():
  for bad in (dict(kind='euler'), dict(num_steps=0), dict(eta=1.5), dict(guidance=-1.0),
              dict(langevin_steps=-1), dict(snr=0.0)):
    with pytest.raises(ValueError, match=list(bad)[0]):
      samplers.SamplerConfig(**bad)
  config = samplers.SamplerConfig(num_steps=50, langevin_steps=1, guidance=2.0)
  assert config.network_evals == 200
  assert hash(config) == hash(samplers.SamplerConfig(num_steps=50, langevin_steps=1,
                                                     guidance=2.0))


def test_input_validation():
  params = _params(*_gaussian(0.5))
  x = jnp.zeros((2,) + SHAPE)
  with pytest.raises(ValueError, match='cond_mask'):
    samplers.sample(GaussianDenoiser('v'), params, jax.random.PRNGKey(0), x, x,
                    jnp.zeros((2, 3, 2)), schedule=SCHEDULE, prediction='v')
  with pytest.raises(ValueError, match='known_mask'):
    samplers.sample(GaussianDenoiser('v'), params, jax.random.PRNGKey(0), x,
                    jnp.zeros((2, 3) + SHAPE[1:]), jnp.zeros((2, 2, 2)), schedule=SCHEDULE,
                    prediction='v')
  with pytest.raises(ValueError, match='prediction'):
    samplers.sample(GaussianDenoiser('v'), params, jax.random.PRNGKey(0), x, x,
                    jnp.zeros((2, 2, 2)), schedule=SCHEDULE, prediction='score')


def test_shapes_determinism_and_known_values_kept():
  """Every feature on: per-pixel mask, a clean condition, guidance, eta, Langevin."""
  mean, cov = _gaussian(0.8)
  params = _params(mean, cov)
  batch = NUM_SAMPLES  # The batch of the statistical tests: one compiled program for both.
  rng = np.random.default_rng(0)
  known = jnp.asarray(rng.normal(size=(batch,) + SHAPE).astype(np.float32))
  known_mask = jnp.asarray((rng.uniform(size=(batch,) + SHAPE) < 0.4).astype(np.float32))
  cond_mask = jnp.zeros((batch, 2, 2)).at[:, 0, 0].set(1.0)
  known_mask = known_mask.at[:, 0, ..., 0].set(1.0)  # Frame 0 RGB is a clean condition.
  config = samplers.SamplerConfig(num_steps=6, eta=0.5, guidance=2.0, langevin_steps=2)
  run = lambda seed: samplers.sample(GaussianDenoiser('v'), params, jax.random.PRNGKey(seed),
                                     known, known_mask, cond_mask, schedule=SCHEDULE,
                                     prediction='v', config=config)
  x = run(0)
  assert x.shape == (batch,) + SHAPE and x.dtype == jnp.float32
  assert np.isfinite(np.asarray(x)).all()
  np.testing.assert_array_equal(run(0), x)
  assert not np.allclose(run(1), x)
  m = np.asarray(known_mask) == 1
  np.testing.assert_array_equal(np.asarray(x)[m], np.asarray(known)[m])


def test_ancestral_equals_ddim_with_eta_one():
  """The DDPM posterior q(z_s | z_t, x0) is DDIM at eta = 1 (same noise draws)."""
  params = _params(*_gaussian(0.8))
  known, known_mask, cond_mask, _ = _inpainting_problem(*_gaussian(0.8), NUM_SAMPLES, [0, 1, 5])
  kwargs = dict(num_steps=8, langevin_steps=1)
  ddim = _run(samplers.SamplerConfig(kind='ddim', eta=1.0, **kwargs), params, known, known_mask,
              cond_mask, prediction='epsilon')
  ancestral = _run(samplers.SamplerConfig(kind='ancestral', **kwargs), params, known,
                   known_mask, cond_mask, prediction='epsilon')
  np.testing.assert_allclose(ancestral, ddim, atol=2e-5)


def test_classifier_free_guidance():
  """w = 1 is the conditional pass alone, w = 0 plain replacement with cond_mask = 0, and the
  result of a one-step sampler (x0_hat at t = 1) is affine in w."""
  mean, cov = _gaussian(0.9)
  params = _params(mean, cov)
  known, known_mask, cond_mask, _ = _inpainting_problem(mean, cov, NUM_SAMPLES, [0, 1, 2, 3],
                                                         cond_frame0=True)

  def run(guidance, cond, num_steps=5):
    config = samplers.SamplerConfig(num_steps=num_steps, guidance=guidance, langevin_steps=1)
    return _run(config, params, known, known_mask, cond)

  np.testing.assert_allclose(run(1.0 + 1e-7, cond_mask), run(1.0, cond_mask), atol=2e-4)
  np.testing.assert_allclose(run(0.0, cond_mask), run(1.0, jnp.zeros_like(cond_mask)),
                             atol=2e-5)
  x0, x1, x3 = (run(w, cond_mask, num_steps=1) for w in (0.0, 1.0, 3.0))
  np.testing.assert_allclose(x3, x0 + 3.0 * (x1 - x0), atol=2e-5)
  assert np.abs(x1 - x0).max() > 0.1  # The two passes differ: guidance has an effect.


def test_langevin_step_size_rule():
  """step = 2 a (snr mean|noise| / mean|score|)^2 over the weighted entries; 0 if nothing to do."""
  score = jnp.asarray([[3.0, 4.0, 100.0], [0.0, 5.0, 100.0]])
  noise = jnp.asarray([[1.0, 0.0, 100.0], [2.0, 0.0, 100.0]])
  weight = jnp.asarray([1.0, 1.0, 0.0])
  step = langevin.signal_to_noise_step(score, noise, weight, 0.1, 0.9)
  np.testing.assert_allclose(step, 2 * 0.9 * (0.1 * 1.5 / 5.0) ** 2, rtol=1e-6)
  assert float(langevin.signal_to_noise_step(score, noise, 0.0 * weight, 0.1, 0.9)) == 0.0


# ---------------------------------------------------------------------------------------------
# Statistics against the exact Gaussian answers (4096 samples per run).


# DDIM needs ~100 steps and ancestral ~200 for their discretization bias to fall well below the
# statistical resolution of 4096 samples: over 4-5 seeds the worst covariance entry sat at 3.1-4.0
# standard errors for DDIM at 50 steps, 2.7-4.2 for ancestral at 100 and 4.7-5.1 at 50 (against
# 2.0-2.9 and 1.5-3.1 at 100 and 200 steps).
@pytest.mark.parametrize('kind,eta,prediction,langevin_steps,num_steps', [
    ('ddim', 0.0, 'v', 0, 100), ('ancestral', 0.0, 'epsilon', 0, 200), ('ddim', 0.5, 'x0', 2, 100)])
def test_unconditional_samples_match_the_gaussian(kind, eta, prediction, langevin_steps,
                                                  num_steps):
  mean, cov = _gaussian(0.9)
  zeros = jnp.zeros((NUM_SAMPLES,) + SHAPE)
  config = samplers.SamplerConfig(kind=kind, eta=eta, num_steps=num_steps,
                                  langevin_steps=langevin_steps, snr=0.2)
  x = _run(config, _params(mean, cov), zeros, zeros, jnp.zeros((NUM_SAMPLES, 2, 2)),
           prediction=prediction)
  z_mean, z_cov = _z_scores(x, mean, cov)
  print(f'unconditional {kind} eta={eta} {prediction} K={langevin_steps} steps={num_steps}: '
        f'max|z| mean {z_mean:.2f} cov {z_cov:.2f}')
  assert z_mean < Z_MAX and z_cov < Z_MAX


def test_clean_condition_matches_the_conditional():
  """cond_mask flags frame 0 (both modalities): the network sees it clean (the training path).

  100 DDIM steps: at 50 the worst covariance z-score over 5 seeds reached 5.4 (discretization
  bias on the small conditional variances, ~0.1); at 100 it stays at 1.8-3.8.
  """
  mean, cov = _gaussian(0.9)
  known_idx = [0, 1, 2, 3]
  known, known_mask, cond_mask, x_known = _inpainting_problem(mean, cov, NUM_SAMPLES, known_idx,
                                                              cond_frame0=True)
  (c_mean, c_cov), u = _conditional(mean, cov, known_idx, x_known)
  x = _run(samplers.SamplerConfig(num_steps=100), _params(mean, cov), known, known_mask,
           cond_mask)
  z_mean, z_cov = _z_scores(x[:, u], c_mean, c_cov)
  print(f'clean condition: max|z| mean {z_mean:.2f} cov {z_cov:.2f}')
  assert z_mean < Z_MAX and z_cov < Z_MAX


# Known: all of frame 0 plus frame 1's pixel 1 RGB (a per-pixel, per-modality mask); the rest of
# frame 1 is strongly correlated with it (rho = 0.9), and nothing is a clean condition.
REPLACEMENT_KNOWN = [0, 1, 2, 3, 6]


@pytest.fixture(scope='module')
def replacement_problem():
  mean, cov = _gaussian(0.9)
  known, known_mask, cond_mask, x_known = _inpainting_problem(mean, cov, NUM_SAMPLES,
                                                              REPLACEMENT_KNOWN)
  (c_mean, c_cov), u = _conditional(mean, cov, REPLACEMENT_KNOWN, x_known)

  def run(num_steps, langevin_steps, snr=0.2):
    config = samplers.SamplerConfig(num_steps=num_steps, langevin_steps=langevin_steps, snr=snr)
    x = _run(config, _params(mean, cov), known, known_mask, cond_mask)
    np.testing.assert_array_equal(x[:, REPLACEMENT_KNOWN],
                                  np.broadcast_to(x_known.astype(np.float32), (NUM_SAMPLES, 5)))
    return x[:, u]

  return run, c_mean, c_cov


def test_replacement_with_langevin_matches_the_conditional(replacement_problem):
  """Replacement + 10 corrector steps a level at snr 0.2 (550 network evaluations).

  The corrector leaves a small bias: unadjusted Langevin inflates variances by about snr^2
  (pooled over 24576 samples: +3.6% to +5.6%, i.e. 1.6-2.5 standard errors at 4096 samples),
  so this test sits within its tolerance but not far below it.
  """
  run, c_mean, c_cov = replacement_problem
  z_mean, z_cov = _z_scores(run(50, 10), c_mean, c_cov)
  z_mean_0, z_cov_0 = _z_scores(run(50, 0), c_mean, c_cov)
  print(f'replacement + 10 Langevin steps/level: max|z| mean {z_mean:.2f} cov {z_cov:.2f}; '
        f'replacement alone: mean {z_mean_0:.1f} cov {z_cov_0:.1f}')
  assert z_mean < Z_MAX and z_cov < Z_MAX
  assert max(z_mean_0, z_cov_0) > 10 * Z_MAX  # The same check fails without the corrector.


def test_langevin_reduces_the_bias_of_replacement(replacement_problem):
  """Few steps (20) and a few corrector steps per level: the error drops by more than half."""
  run, c_mean, c_cov = replacement_problem
  mean_err_0, cov_err_0 = _errors(run(20, 0), c_mean, c_cov)
  mean_err, cov_err = _errors(run(20, 4), c_mean, c_cov)
  se_mean = np.sqrt(np.trace(c_cov) / NUM_SAMPLES)
  print(f'20 steps: |mean error| {mean_err_0:.3f} -> {mean_err:.3f} (SE {se_mean:.3f}), '
        f'|cov error| {cov_err_0:.3f} -> {cov_err:.3f}')
  assert mean_err_0 > 20 * se_mean  # Replacement alone is visibly biased.
  assert mean_err < 0.5 * mean_err_0 and cov_err < 0.5 * cov_err_0


@pytest.mark.parametrize('num_steps, langevin_steps', [(9, 0), (5, 2)])
def test_the_loop_trip_count_is_known_to_xla(num_steps, langevin_steps):
  """A static step count: XLA knows the loop's trip count, so XLA:GPU runs it without copying
  the loop condition to the host and blocking on it at every network evaluation."""
  params = _params(*_gaussian(0.8))
  known = jnp.zeros((2,) + SHAPE)
  settings = dict(eta=jnp.float32(0.0), guidance=jnp.float32(1.0), snr=jnp.float32(0.16))
  text = samplers._sample.lower(  # pylint: disable=protected-access
      GaussianDenoiser('v'), params, jax.random.PRNGKey(0), known, known, jnp.zeros((2, 2, 2)),
      settings, schedule=SCHEDULE, prediction='v', kind='ddim', guided=False, clip_x0=False,
      num_steps=num_steps, langevin_steps=langevin_steps).compile().as_text()
  latents = 'f32[2,' + ','.join(map(str, SHAPE)) + ']'
  loops = [line for line in text.splitlines() if ' while(' in line and latents in line]
  assert len(loops) == 1, loops  # The sampler's loop carries the latents.
  evaluations = num_steps * (1 + langevin_steps)
  assert f'"known_trip_count":{{"n":"{evaluations}"}}' in loops[0], loops[0]
