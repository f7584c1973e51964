"""The texture bank of the synthetic world: real photographs and procedural patterns, mip-mapped.

Photographs come from scikit-image's bundled sample data (``skimage.data``) and matplotlib's
bundled sample data (``mpl-data/sample_data``); they ship inside the installed packages and load
offline. Never an image that comes with depth or disparity ground truth (scikit-image's
``stereo_motorcycle`` and any stereo pair): those are the project's held-out real-photo
evaluation (``EXCLUDED_PHOTOS``; a test checks every source against it). Procedural patterns (checkers, stripes, tiles, dots, value
noise, wood, marble) are drawn from a fixed seed. Every texture is a square RGB image of
``TEXTURE_SIZE`` texels in [0, 1]; grey sources are stored grey and tinted per material.

The bank is packed into one flat texel array with a mip pyramid per texture (sizes S, S/2, ...,
``TEXTURE_SIZE >> (MIP_LEVELS - 1)``), so a ray caster samples texture ``i`` at level ``l`` with one
gather: ``texels[offsets[i, l] + row * (S >> l) + col]``. Building the bank is deterministic
(same bytes on every machine with the same scikit-image version) and cached per process.
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np

TEXTURE_SIZE = 256
MIP_LEVELS = 6  # 256 ... 8 texels.

# (name, kind): 'photo' textures are natural colour images; 'grey' photos are tinted per material.
PHOTOS = (
    ('astronaut', 'photo'), ('coffee', 'photo'), ('chelsea', 'photo'), ('rocket', 'photo'),
    ('immunohistochemistry', 'photo'), ('hubble_deep_field', 'photo'),
    ('brick', 'grey'), ('grass', 'grey'), ('gravel', 'grey'), ('camera', 'grey'),
    ('moon', 'grey'), ('coins', 'grey'), ('clock', 'grey'), ('text', 'grey'),
)
PROCEDURAL = ('checker', 'stripes', 'tiles', 'dots', 'noise', 'wood', 'marble', 'planks')
# More photographs for the photo-appearance mode (scenes.photo_appearance): (name, package,
# file or skimage.data function, kind). Appended after the textures above, whose ids (and so the
# default world's renders) stay as they were.
APPEARANCE_PHOTOS = (
    ('retina', 'skimage', 'retina', 'photo'), ('page', 'skimage', 'page', 'grey'),
    ('grace_hopper', 'matplotlib', 'grace_hopper.jpg', 'photo'),
    ('present', 'matplotlib', 'Minduka_Present_Blue_Pack.png', 'photo'),
)
# Images with depth / disparity ground truth: held out for evaluation, never textures.
EXCLUDED_PHOTOS = ('stereo_motorcycle', 'motorcycle_left.png', 'motorcycle_right.png',
                   'motorcycle_disp.npz')
NAMES = tuple(name for name, _ in PHOTOS) + PROCEDURAL + tuple(p[0] for p in APPEARANCE_PHOTOS)
# Every photograph the bank reads, as (package, skimage.data function or sample file).
PHOTO_SOURCES = tuple(('skimage', name) for name, _ in PHOTOS) + tuple(
    (package, source) for _, package, source, _ in APPEARANCE_PHOTOS)

# Texture groups the scene generator draws from (indices into NAMES).
_INDEX = {name: i for i, name in enumerate(NAMES)}
FLOOR = tuple(_INDEX[n] for n in ('gravel', 'grass', 'planks', 'tiles', 'checker', 'wood',
                                  'marble', 'noise'))
WALL = tuple(_INDEX[n] for n in ('brick', 'tiles', 'stripes', 'noise', 'marble', 'dots',
                                 'planks', 'moon', 'text'))
OBJECT = tuple(range(len(PHOTOS) + len(PROCEDURAL)))  # The default world's object textures.
# The photo-appearance mode's textures: every photograph of the bank but the near-black deep
# field (mean 0.08: a surface of it reads as a hole).
PHOTO_IDS = tuple(i for i, name in enumerate(NAMES)
                  if name not in PROCEDURAL and name != 'hubble_deep_field')
GROUND = tuple(_INDEX[n] for n in ('grass', 'gravel', 'noise', 'tiles', 'checker', 'planks',
                                   'marble'))


@dataclasses.dataclass(frozen=True)
class TextureBank:
  """All textures with their mip pyramids, packed for gathers.

  texels: (total, 3) float32 in [0, 1], every level of every texture, row-major.
  offsets: (num_textures, MIP_LEVELS) int32, first texel of texture i at level l.
  names: texture names, index = texture id.
  """
  texels: np.ndarray
  offsets: np.ndarray
  names: tuple[str, ...]

  @property
  def num_textures(self) -> int:
    return len(self.names)


def _square(image: np.ndarray, size: int) -> np.ndarray:
  """Centre-crops to a square and resizes (area averaging) to (size, size, 3) float32 in [0, 1]."""
  import cv2  # pylint: disable=g-import-not-at-top
  image = np.asarray(image)
  if image.dtype == bool:
    image = image.astype(np.uint8) * 255
  if image.ndim == 2:
    image = np.repeat(image[..., None], 3, axis=-1)
  image = image[..., :3]
  h, w = image.shape[:2]
  side = min(h, w)
  top, left = (h - side) // 2, (w - side) // 2
  image = image[top:top + side, left:left + side].astype(np.float32)
  if image.max() > 1.0:
    image = image / 255.0
  return np.clip(cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA), 0.0, 1.0)


def _load_photo(package: str, source: str) -> np.ndarray:
  """One bundled photograph as an array (package 'skimage': a skimage.data function;
  'matplotlib': a file of matplotlib's sample data)."""
  if source in EXCLUDED_PHOTOS:
    raise ValueError(f'{source} has depth / disparity ground truth: evaluation only')
  try:
    if package == 'skimage':
      import skimage.data  # pylint: disable=g-import-not-at-top
      return getattr(skimage.data, source)()
    import cv2  # pylint: disable=g-import-not-at-top
    from matplotlib import cbook  # pylint: disable=g-import-not-at-top
    image = cv2.imread(str(cbook.get_sample_data(source, asfileobj=False)), cv2.IMREAD_COLOR)
    if image is None:
      raise OSError('unreadable file')
    return image[..., ::-1]  # BGR -> RGB.
  except Exception as e:  # A package without the file: say which one.
    raise RuntimeError(f'{package} sample image {source!r} could not be loaded: {e}') from e


def _photo(name: str, size: int, package: str = 'skimage', source: str | None = None
           ) -> np.ndarray:
  image = _square(_load_photo(package, source or name), size)
  if name in ('text', 'moon', 'camera', 'coins', 'clock', 'page'):
    # Stretch the contrast of dim grey photos so tinted surfaces keep visible structure.
    lo, hi = np.percentile(image, [1, 99])
    image = np.clip((image - lo) / max(hi - lo, 1e-3), 0.0, 1.0) * 0.8 + 0.2
  return image


def _value_noise(rng: np.random.Generator, size: int, octaves: int = 5) -> np.ndarray:
  """Tileable multi-octave value noise (size, size) in [0, 1]."""
  import cv2  # pylint: disable=g-import-not-at-top
  out = np.zeros((size, size), np.float32)
  total = 0.0
  for octave in range(octaves):
    cells = 4 * 2 ** octave
    grid = rng.random((cells, cells)).astype(np.float32)
    # Wrap-pad then resize, so the noise tiles.
    padded = np.pad(grid, 1, mode='wrap')
    up = cv2.resize(padded, ((cells + 2) * size // cells,) * 2, interpolation=cv2.INTER_CUBIC)
    step = size // cells
    amp = 0.5 ** octave
    out += amp * up[step:step + size, step:step + size]
    total += amp
  out /= total
  return (out - out.min()) / max(out.max() - out.min(), 1e-6)


def _procedural(name: str, size: int) -> np.ndarray:
  """One procedural pattern (size, size, 3) in [0, 1], fixed seed per name."""
  rng = np.random.default_rng(abs(hash_name(name)))
  y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
  noise = _value_noise(rng, size)
  if name == 'checker':
    g = ((np.floor(x * 8) + np.floor(y * 8)) % 2) * 0.6 + 0.3
  elif name == 'stripes':
    g = 0.55 + 0.35 * np.sign(np.sin(2 * np.pi * 6 * x)) + 0.1 * (noise - 0.5)
  elif name == 'tiles':
    gx, gy = (x * 4) % 1, (y * 4) % 1
    grout = (np.minimum(gx, 1 - gx) < 0.04) | (np.minimum(gy, 1 - gy) < 0.04)
    g = np.where(grout, 0.25, 0.8 + 0.15 * (noise - 0.5))
  elif name == 'dots':
    gx, gy = (x * 6) % 1 - 0.5, (y * 6) % 1 - 0.5
    g = np.where(gx ** 2 + gy ** 2 < 0.09, 0.25, 0.85)
  elif name == 'noise':
    g = 0.3 + 0.6 * noise
  elif name == 'wood':
    r = np.sqrt((x - 0.5) ** 2 * 0.2 + (y - 0.3) ** 2) * 40 + 6 * noise
    g = 0.45 + 0.3 * (0.5 + 0.5 * np.sin(r)) ** 3
  elif name == 'marble':
    g = 0.55 + 0.4 * np.sin(2 * np.pi * (3 * x + 2 * y) + 8 * noise)
  elif name == 'planks':
    row = np.floor(y * 6)
    shift = (row * 0.37) % 1
    seam = ((y * 6) % 1 < 0.05) | (((x + shift) * 2) % 1 < 0.02)
    g = np.where(seam, 0.2, 0.55 + 0.25 * np.sin(x * 80 + 10 * noise) * 0.5 + 0.1 * row % 0.3)
  else:
    raise ValueError(f'unknown procedural texture {name!r}')
  return np.repeat(np.clip(g, 0.0, 1.0)[..., None], 3, axis=-1).astype(np.float32)


def hash_name(name: str) -> int:
  """A stable (not per-process salted) integer hash of a texture name."""
  value = 0
  for ch in name.encode():
    value = (value * 131 + ch) % (2 ** 31 - 1)
  return value


def _mip_pyramid(image: np.ndarray, levels: int) -> list[np.ndarray]:
  """[image, image/2, ...] by 2x2 box averaging (exact for power-of-two sizes)."""
  pyramid = [image]
  for _ in range(levels - 1):
    x = pyramid[-1]
    h, w = x.shape[:2]
    pyramid.append(x.reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3)))
  return pyramid


@functools.lru_cache(maxsize=None)
def texture_bank(size: int = TEXTURE_SIZE, levels: int = MIP_LEVELS) -> TextureBank:
  """The packed texture bank (cached per process). ``size`` must be a power of two."""
  if size & (size - 1) or size >> (levels - 1) < 1:
    raise ValueError(f'texture size {size} must be a power of two >= 2**(levels - 1)')
  images = ([_photo(name, size) for name, _ in PHOTOS] + [_procedural(n, size) for n in PROCEDURAL]
            + [_photo(name, size, package, source)
               for name, package, source, _ in APPEARANCE_PHOTOS])
  chunks, offsets, cursor = [], np.zeros((len(images), levels), np.int32), 0
  for i, image in enumerate(images):
    for level, mip in enumerate(_mip_pyramid(image, levels)):
      offsets[i, level] = cursor
      chunks.append(mip.reshape(-1, 3))
      cursor += mip.shape[0] * mip.shape[1]
  texels = np.concatenate(chunks).astype(np.float32)
  return TextureBank(texels=texels, offsets=offsets, names=NAMES)


def pack_rgb(texels: np.ndarray) -> np.ndarray:
  """(T, 3) float in [0, 1] -> (T,) uint32 with 8-bit R | G << 8 | B << 16 (one gather a tap)."""
  q = np.round(np.clip(texels, 0.0, 1.0) * 255.0).astype(np.uint32)
  return q[:, 0] | (q[:, 1] << 8) | (q[:, 2] << 16)


def is_grey(texture_id: int) -> bool:
  """Whether a texture is grey (tinted freely by its material) rather than a colour photo."""
  name = NAMES[texture_id]
  kinds = dict(PHOTOS, **{p[0]: p[3] for p in APPEARANCE_PHOTOS})
  return name in PROCEDURAL or kinds.get(name) == 'grey'
