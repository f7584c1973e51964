"""The embedded default dataset: seeded clips of the synthetic 3D world.

Clip ``index`` of split ``split`` is a pure function of (GENERATOR_VERSION, seed, split, index,
frames, size, object fraction): its scene (scenes.py), camera trajectory and field of view
(trajectories.py) come from one numpy Generator seeded with those, then the JAX ray caster
(renderer.py) renders it. Splits hold out scenes: each split seeds its scenes from its own
stream, so the validation / test scenes are never training scenes.

World frame: metres, y up. Cameras: OpenCV, cam_to_world, square pixels, principal point at
the image centre, pixel centres at (col + 0.5, row + 0.5).
"""
from __future__ import annotations

import numpy as np

from wvd_jax.data import clips, renderer, scenes, trajectories
from wvd_jax.geometry import cameras

# Bump when the generator's output changes for the same arguments (it is part of the dataset's
# version, so stale shards are never reused).
GENERATOR_VERSION = 1
SPLITS = ('train', 'validation', 'test')


def clip_rng(seed: int, split: str, index: int) -> np.random.Generator:
  if split not in SPLITS:
    raise ValueError(f'unknown split {split!r}; expected one of {SPLITS}')
  return np.random.default_rng([GENERATOR_VERSION, seed, SPLITS.index(split), index])


def appearance_rng(seed: int, split: str, index: int) -> np.random.Generator:
  """The photo-appearance stream of a clip, apart from clip_rng: appearance never moves the
  draws of geometry or cameras."""
  return np.random.default_rng([GENERATOR_VERSION, seed, SPLITS.index(split), index, 1])


def make_clip_spec(seed: int, split: str, index: int, num_frames: int, size: int,
                   object_fraction: float = 0.5, photo_appearance: bool = False):
  """The scene and cameras of one clip: (Scene, K (N, 3, 3) f32, cam_to_world (N, 4, 4) f32).
  With ``photo_appearance`` the scene gets scenes.photo_appearance (same geometry, cameras)."""
  rng = clip_rng(seed, split, index)
  scene = scenes.random_scene(rng, object_fraction)
  poses, fov_x = trajectories.sample_cameras(rng, scene, num_frames)
  if photo_appearance:
    scene = scenes.photo_appearance(scene, appearance_rng(seed, split, index))
  K = np.asarray(cameras.intrinsics_from_fov(np.float32(fov_x), size, size), np.float32)
  return scene, np.broadcast_to(K, (num_frames, 3, 3)).copy(), poses.astype(np.float32)


def render_clip(seed: int, split: str, index: int, num_frames: int, size: int,
                object_fraction: float = 0.5, *, complete: bool = True,
                with_surface: bool = False, photo_appearance: bool = False
                ) -> dict[str, np.ndarray]:
  """Renders one clip.

  Returns the stored fields (rgb (N, H, W, 3) uint8, depth (N, H, W) float32 z-depth (0 =
  background), intrinsics (N, 3, 3), cam_to_world (N, 4, 4), both float32) plus ``scene_kind``
  (0 room, 1 objects); with ``complete`` also mask and world xyz (see clips.complete_clip);
  with ``with_surface`` the hit surface ids (N, H, W) int32 (-1 = background); with
  ``photo_appearance`` photo textures and varied light (scenes.photo_appearance).
  """
  scene, K, poses = make_clip_spec(seed, split, index, num_frames, size, object_fraction,
                                   photo_appearance)
  out = renderer.render(scene, K, poses, size, size)
  clip = dict(rgb=out['rgb'], depth=out['depth'], intrinsics=K, cam_to_world=poses,
              scene_kind=np.int32(scene.kind))
  if with_surface:
    clip['surface'] = out['surface']
  return clips.complete_clip(clip) if complete else clip
