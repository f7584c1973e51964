"""Photo appearance: real-photo textures and varied light on the same geometry."""
import numpy as np
import pytest

from tests.test_config_lib import _load
from wvd_jax.data import scenes, storage, synthetic_world, textures


def test_photo_sources_exclude_images_with_depth_ground_truth():
  for package, source in textures.PHOTO_SOURCES:
    assert source not in textures.EXCLUDED_PHOTOS
    assert not any(word in source.lower() for word in ('stereo', 'motorcycle', 'disp')), source
  assert 'stereo_motorcycle' in textures.EXCLUDED_PHOTOS
  with pytest.raises(ValueError, match='evaluation only'):
    textures._load_photo('skimage', 'stereo_motorcycle')  # pylint: disable=protected-access
  # The appearance mode draws photographs only, and the default world's ids did not move.
  assert all(textures.NAMES[i] not in textures.PROCEDURAL for i in textures.PHOTO_IDS)
  assert len(textures.OBJECT) == len(textures.PHOTOS) + len(textures.PROCEDURAL)


def test_switch_changes_appearance_deterministically_and_keeps_geometry():
  args = (3, 'train', 1, 4, 16, 0.5)  # The tiny world's render shapes.
  plain = synthetic_world.render_clip(*args, complete=False)
  photo = synthetic_world.render_clip(*args, complete=False, photo_appearance=True)
  again = synthetic_world.render_clip(*args, complete=False, photo_appearance=True)
  np.testing.assert_array_equal(photo['rgb'], again['rgb'])  # Deterministic per seed.
  np.testing.assert_array_equal(photo['depth'], plain['depth'])  # Same geometry...
  np.testing.assert_array_equal(photo['cam_to_world'], plain['cam_to_world'])  # ...and cameras.
  np.testing.assert_array_equal(photo['intrinsics'], plain['intrinsics'])
  assert np.abs(photo['rgb'].astype(int) - plain['rgb']).mean() > 10  # Another appearance.
  # In range and not washed out: few clipped pixels, a mid-range mean.
  assert photo['rgb'].dtype == np.uint8
  assert np.mean((photo['rgb'] == 0) | (photo['rgb'] == 255)) < 0.05
  assert 20 < photo['rgb'].mean() < 235
  # The scenes: geometry arrays equal, materials and light redrawn.
  plain_scene, _, _ = synthetic_world.make_clip_spec(*args)
  photo_scene, _, _ = synthetic_world.make_clip_spec(*args, photo_appearance=True)
  for field in ('spheres', 'boxes', 'cylinders', 'room', 'ground'):
    np.testing.assert_array_equal(getattr(photo_scene, field), getattr(plain_scene, field))
  assert plain_scene.appearance is None and photo_scene.appearance.shape == (
      scenes.APPEARANCE_SIZE,)
  assert not np.array_equal(photo_scene.light, plain_scene.light)
  assert set(photo_scene.texture[photo_scene.texture != plain_scene.texture]) <= set(
      textures.PHOTO_IDS)
  other = synthetic_world.make_clip_spec(4, 'train', 1, 4, 16, 0.5, photo_appearance=True)[0]
  assert not np.array_equal(other.appearance, photo_scene.appearance)


def test_switch_names_its_own_dataset_and_is_on_in_the_gpu_configs():
  default = storage.WorldParams()
  assert default.config_name == 'r32_f4_n64-8-8_seed0_obj0p5000'  # Earlier datasets stay valid.
  assert storage.WorldParams(photo_appearance=True).config_name == default.config_name + '_photo'
  assert not _load('demo').data.photo_appearance
  assert _load('small').data.photo_appearance and _load('wvd_2b').data.photo_appearance
  assert storage.WorldParams.from_config(_load('small')).photo_appearance
