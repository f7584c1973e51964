"""PSNR / SSIM against hand-computed values."""
import numpy as np
import pytest

from wvd_jax.evaluation import image_metrics


def texture(h=16, w=16):
  rows, cols = np.mgrid[:h, :w]
  return np.stack([np.sin(rows / 2.0), np.cos(cols / 3.0), np.sin((rows + cols) / 4.0)], -1) * 0.8


def test_psnr_of_a_constant_offset():
  a = texture()
  # MSE 0.1^2 with range 2: 10 log10(4 / 0.01).
  assert image_metrics.psnr(a + 0.1, a) == pytest.approx(10 * np.log10(4 / 0.01))
  uint8 = np.full((8, 8, 3), 100, np.uint8)
  assert image_metrics.psnr(uint8, uint8 + 10, data_range=255) == pytest.approx(
      10 * np.log10(255 ** 2 / 100))


def test_psnr_batched_per_image():
  a = np.stack([texture(), texture()])[None]  # (1, 2, H, W, 3)
  b = a.copy()
  b[0, 0] += 0.2
  b[0, 1, :8] -= 0.2  # Half the pixels off by 0.2: MSE 0.02.
  values = image_metrics.psnr(b, a)
  assert values.shape == (1, 2)
  np.testing.assert_allclose(values[0], [10 * np.log10(4 / 0.04), 10 * np.log10(4 / 0.02)])
  assert image_metrics.psnr(a[0, 0], a[0, 0]) == np.inf


def test_ssim():
  a = texture()
  assert image_metrics.ssim(a, a) == pytest.approx(1.0)
  batch = np.stack([a, a, np.zeros_like(a)])
  values = image_metrics.ssim(batch, np.stack([a, a * 0.5, a]))
  assert values.shape == (3,)
  assert values[0] == pytest.approx(1.0) and 0 < values[1] < 1 and values[2] < values[1]


def test_bad_inputs_raise():
  a = texture()
  with pytest.raises(ValueError, match='shape mismatch'):
    image_metrics.psnr(a, a[:8])
  with pytest.raises(ValueError, match='NaN'):
    image_metrics.ssim(np.where(a > 0.5, np.nan, a), a)
  with pytest.raises(ValueError, match='at least 7x7'):
    image_metrics.ssim(a[:5, :5], a[:5, :5])
  with pytest.raises(ValueError, match=r'\(\.\.\., H, W, C\)'):
    image_metrics.psnr(a[..., 0], a[..., 0])
