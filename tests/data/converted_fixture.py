"""A tiny "converted" dataset in the project's shard format, for mixture tests.

Its clips differ from the model's format on purpose: non-square frames (16 x 12), more frames
than the tiny model takes (6), and a ``valid`` field whose top rows are unknown (depth 0, valid
False). The geometry is the synthetic world's (rendered with known cameras), cropped to 12
columns; frames render 4 at a time at 16 x 16, the tiny world's shapes, so no new compile."""
import os

import numpy as np

from wvd_jax.data import renderer, storage, synthetic_world

FRAMES, HEIGHT, WIDTH = 6, 16, 12
UNKNOWN_ROWS = 3  # Top rows of every frame without depth.
_CLASS = None


def _builder_class():
  global _CLASS
  if _CLASS is not None:
    return _CLASS
  tfds = storage._tfds()  # pylint: disable=protected-access  # Its TensorFlow-free workarounds.

  class ConvertedFixture(tfds.core.GeneratorBasedBuilder):
    """Synthetic clips stored as a converted real dataset would be."""
    VERSION = tfds.core.Version('1.0.0')

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
      return tfds.core.Path(__file__)

    def __init__(self, *, counts, seed, **kwargs):
      self.counts, self.seed = counts, seed
      super().__init__(file_format='array_record', **kwargs)

    def _info(self):
      tensor, raw = tfds.features.Tensor, tfds.features.Encoding.BYTES
      f, h, w = FRAMES, HEIGHT, WIDTH
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          'rgb': tensor(shape=(f, h, w, 3), dtype=np.uint8, encoding=raw),
          'depth': tensor(shape=(f, h, w), dtype=np.float32, encoding=raw),
          'valid': tensor(shape=(f, h, w), dtype=np.bool_, encoding=raw),
          'intrinsics': tensor(shape=(f, 3, 3), dtype=np.float32, encoding=raw),
          'cam_to_world': tensor(shape=(f, 4, 4), dtype=np.float32, encoding=raw)}))

    def _split_generators(self, dl_manager):
      return {split: self._generate_examples(split) for split in self.counts}

    def _generate_examples(self, split='train'):
      for i in range(self.counts[split]):
        yield i, fixture_clip(self.seed, split, i)

  _CLASS = ConvertedFixture
  return _CLASS


def fixture_clip(seed: int, split: str, index: int) -> dict[str, np.ndarray]:
  """One stored example: a synthetic clip, centre columns cropped, top rows unknown."""
  scene, K, poses = synthetic_world.make_clip_spec(seed, split, index, FRAMES, HEIGHT, 1.0)
  first, last = (renderer.render(scene, K[f], poses[f], HEIGHT, HEIGHT)
                 for f in (slice(0, 4), slice(FRAMES - 4, FRAMES)))
  rendered = {k: np.concatenate([first[k], last[k][4 - (FRAMES - 4):]]) for k in ('rgb', 'depth')}
  left = (HEIGHT - WIDTH) // 2
  K = K.copy()
  K[:, 0, 2] -= left
  valid = np.ones((FRAMES, HEIGHT, WIDTH), bool)
  valid[:, :UNKNOWN_ROWS] = False
  depth = np.where(valid, rendered['depth'][:, :, left:left + WIDTH], 0.0).astype(np.float32)
  return dict(rgb=np.ascontiguousarray(rendered['rgb'][:, :, left:left + WIDTH]), depth=depth,
              valid=valid, intrinsics=K, cam_to_world=poses)


def write_converted_dataset(data_dir: str, counts=None, seed: int = 5) -> str:
  """Writes the fixture under ``data_dir``; returns its version directory (what
  config.data.sources and storage.DirectoryClipSource take)."""
  counts = counts or {'train': 6, 'validation': 2, 'test': 2}
  builder = _builder_class()(counts=counts, seed=seed, data_dir=data_dir)
  builder.download_and_prepare(
      download_config=storage._tfds().download.DownloadConfig(try_download_gcs=False))  # pylint: disable=protected-access
  return os.fspath(builder.data_dir)
