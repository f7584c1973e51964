"""Fréchet Inception Distance (Heusel et al. 2017) with pytorch-fid's Inception-v3 features.

FID = |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between Gaussians fitted to the
2048-d pool3 features (networks/inception.py) of two image sets: mean and unbiased covariance
(ddof 1, as pytorch-fid's ``calculate_activation_statistics``). The trace of the matrix square
root is computed as the sum of the square roots of the eigenvalues of S_a^(1/2) S_b S_a^(1/2),
which is similar to S_a S_b, symmetric and positive semi-definite (eigenvalues clipped at 0), so
no complex square root arises (pytorch-fid uses scipy.linalg.sqrtm of S_a S_b; the two agree to
float64 round-off on the same statistics).

The eval (learned.py) computes the FID of the generated frames 1..N-1 of every sample against
the true frames 1..N-1 of the same clips, pooled over the split (images in [-1, 1] mapped to
[0, 1]). With fewer images than 2048 the covariance is rank-deficient and FID is biased upward:
compare FIDs only at equal image counts.
"""
from __future__ import annotations

import jax
import numpy as np

from wvd_jax.evaluation import _checks
from wvd_jax.evaluation.networks import batching, inception

BATCH = 16  # Images per Inception call.


def statistics(features) -> tuple[np.ndarray, np.ndarray]:
  """(mu (D,), sigma (D, D)) of (M, D) features, M >= 2: mean and covariance with ddof 1."""
  f = _checks.as_float64('features', features)
  if f.ndim != 2 or f.shape[0] < 2:
    raise ValueError(f'features must be (M, D) with M >= 2, got shape {f.shape}')
  _checks.all_finite('features', f)
  return f.mean(axis=0), np.cov(f, rowvar=False, ddof=1).reshape(f.shape[1], f.shape[1])


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
  values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
  return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(mu_a, sigma_a, mu_b, sigma_b) -> float:
  """Fréchet distance of N(mu_a, sigma_a) and N(mu_b, sigma_b) (float64).

  Args:
    mu_a, mu_b: (D,) means; sigma_a, sigma_b: (D, D) symmetric PSD covariances.
  """
  mu_a, mu_b = np.atleast_1d(np.float64(mu_a)), np.atleast_1d(np.float64(mu_b))
  sigma_a, sigma_b = np.atleast_2d(np.float64(sigma_a)), np.atleast_2d(np.float64(sigma_b))
  d = mu_a.shape[0]
  if mu_b.shape != (d,) or sigma_a.shape != (d, d) or sigma_b.shape != (d, d):
    raise ValueError(f'shapes disagree: mu {mu_a.shape} / {mu_b.shape}, sigma {sigma_a.shape} '
                     f'/ {sigma_b.shape}')
  for name, value in (('mu_a', mu_a), ('mu_b', mu_b), ('sigma_a', sigma_a),
                      ('sigma_b', sigma_b)):
    _checks.all_finite(name, value)
  root_a = _psd_sqrt(sigma_a)
  middle = root_a @ sigma_b @ root_a
  trace_sqrt = float(np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2),
                                            0.0, None))))
  diff = mu_a - mu_b
  return float(diff @ diff + np.trace(sigma_a) + np.trace(sigma_b) - 2.0 * trace_sqrt)


def fid_from_features(features_a, features_b) -> float:
  """FID between two (M, D) feature sets (each M >= 2)."""
  return frechet_distance(*statistics(features_a), *statistics(features_b))


class InceptionFeatures:
  """Callable: images (M, H, W, 3) in [-1, 1] -> (M, 2048) float64 pool3 features.

  Images are mapped to [0, 1], resized to 299 x 299 and fed in batches of ``batch_size`` through
  one jitted Inception (params passed as arguments: one compile per image size; the last batch is
  padded).
  """

  def __init__(self, params, batch_size: int = BATCH):
    self.params = params
    self.batch_size = batch_size
    self._apply = jax.jit(inception.features)

  def __call__(self, images) -> np.ndarray:
    return batching.map_images(lambda unit: self._apply(self.params, unit), images,
                               self.batch_size)
