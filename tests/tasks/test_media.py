"""Input images handled on purpose: EXIF orientation, grayscale, alpha, small and broken files."""
import logging

import numpy as np
import pytest
from PIL import Image

from wvd_jax import errors
from wvd_jax.tasks import media


def _save(tmp_path, name, image, **kwargs):
  path = str(tmp_path / name)
  image.save(path, **kwargs)
  return path


def test_grayscale_becomes_rgb(tmp_path, caplog):
  gray = np.arange(256, dtype=np.uint8).reshape(16, 16)
  with caplog.at_level(logging.INFO):
    out = media.load_image(_save(tmp_path, 'g.png', Image.fromarray(gray, 'L')), 16)
  assert out.shape == (16, 16, 3)
  np.testing.assert_allclose(out[..., 0], gray / 127.5 - 1.0, atol=1e-6)
  assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
  assert 'grayscale (L) image converted to RGB' in caplog.text
  # 16-bit grayscale keeps its full range (PIL's own conversion would clip it to white).
  deep = (np.arange(256, dtype=np.uint16).reshape(16, 16) * 257).astype(np.uint16)
  path = _save(tmp_path, 'g16.png', Image.fromarray(deep))
  np.testing.assert_allclose(media.load_image(path, 16)[..., 0], gray / 127.5 - 1.0, atol=1e-6)


def test_rgba_is_composited_on_white(tmp_path, caplog):
  rgba = np.zeros((16, 16, 4), np.uint8)
  rgba[..., 0] = 200  # Red where opaque.
  rgba[:8, :, 3] = 255  # Top half opaque, bottom half transparent.
  rgba[8:, :, 3] = 0
  with caplog.at_level(logging.INFO):
    out = media.load_image(_save(tmp_path, 'a.png', Image.fromarray(rgba, 'RGBA')), 16)
  np.testing.assert_allclose(out[:8, :, 0], 200 / 127.5 - 1, atol=1e-6)
  np.testing.assert_allclose(out[:8, :, 1:], -1.0)
  np.testing.assert_allclose(out[8:], 1.0)  # White.
  assert 'composited on white' in caplog.text


def test_exif_orientation_is_applied(tmp_path):
  """A 20x10 landscape stored with orientation 6 (rotate 90 clockwise to view) is 10x20 portrait
  as shown: its top row (red in the stored pixels' left column) comes out on top."""
  stored = np.zeros((10, 20, 3), np.uint8)
  stored[:, :3] = (255, 0, 0)  # The stored left columns: the top rows once rotated clockwise.
  image = Image.fromarray(stored)
  exif = image.getexif()
  exif[0x0112] = 6
  path = _save(tmp_path, 'e.jpg', image, exif=exif, quality=100, subsampling=0)
  view = media._read(path)  # pylint: disable=protected-access
  assert view.size == (10, 20)  # (width, height): portrait.
  shown = np.asarray(view).astype(float)
  assert shown[0, :, 0].mean() > 200 and shown[0, :, 1:].mean() < 60  # Red on top...
  assert shown[-1].mean() < 30 and shown[:, 0, 0].mean() < 128  # ...not down a side.


def test_small_images_are_upscaled_with_a_warning_tiny_ones_refused(tmp_path, caplog):
  small = np.random.default_rng(0).integers(0, 255, (10, 12, 3), np.uint8)
  with caplog.at_level(logging.WARNING):
    out = media.load_image(_save(tmp_path, 's.png', Image.fromarray(small)), 16)
  assert out.shape == (16, 16, 3) and 'upscaled' in caplog.text
  with pytest.raises(errors.UserError, match=r'1x1 pixels, too small'):
    media.load_image(_save(tmp_path, 'p.png', Image.fromarray(small[:1, :1])), 16)


def test_broken_files_are_one_clear_line(tmp_path):
  good = _save(tmp_path, 'ok.png', Image.fromarray(np.zeros((16, 16, 3), np.uint8)))
  with open(good, 'rb') as f:
    data = f.read()
  (tmp_path / 'cut.png').write_bytes(data[:len(data) // 2])
  (tmp_path / 'text.jpg').write_text('hello')
  for name in ('cut.png', 'text.jpg'):
    with pytest.raises(errors.UserError, match='cannot read image .* truncated, corrupt or not'):
      media.load_image(str(tmp_path / name), 16)
  with pytest.raises(errors.UserError, match='does not exist'):
    media.load_image(str(tmp_path / 'none.png'), 16)


def test_display_png_is_enlarged_by_a_whole_factor(tmp_path):
  image = np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)
  media.save_display_png(str(tmp_path / 'd.png'), image)
  shown = np.asarray(Image.open(tmp_path / 'd.png'))
  assert shown.shape == (256, 256, 3)
  np.testing.assert_array_equal(shown[::16, ::16], image)
  np.testing.assert_array_equal(shown[15::16, 15::16], image)
