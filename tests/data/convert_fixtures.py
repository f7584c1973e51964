"""Writes one synthetic scene in each source format's on-disk layout (the converter's fixtures).

The scene: 6 frames of a synthetic-world clip rendered at 32x40 (H x W) with a principal point
off the centre and fx != fy, so axis or sign mistakes show. The writers invert the conventions
independently of wvd_jax.data.formats (PyTorch3D's camera for CO3D is checked against its own
projection formula in the tests).
"""
from __future__ import annotations

import functools
import gzip
import json
import os

import cv2
import numpy as np
from PIL import Image

from wvd_jax.data import renderer, synthetic_world
from wvd_jax.geometry import cameras

FRAMES, HEIGHT, WIDTH = 6, 32, 40
CROP_LEFT = (WIDTH - HEIGHT) // 2  # The converter's centre square at --image_size=HEIGHT.


@functools.lru_cache(maxsize=1)
def synthetic_scene() -> dict:
  """rgb (6, 32, 40, 3) uint8, depth (6, 32, 40) float32 (0 = background), K (3, 3) and
  cam_to_world (6, 4, 4) float64 (exactly the float32 values rendered with)."""
  scene, _, poses = synthetic_world.make_clip_spec(0, 'train', 3, FRAMES, HEIGHT)
  K = np.array([[30.0, 0.0, WIDTH / 2 + 1.5], [0.0, 30.6, HEIGHT / 2 - 1.0], [0.0, 0.0, 1.0]],
               np.float32)
  out = renderer.render(scene, np.broadcast_to(K, (FRAMES, 3, 3)), poses, HEIGHT, WIDTH)
  return dict(rgb=np.asarray(out['rgb']), depth=np.asarray(out['depth'], np.float32),
              K=K.astype(np.float64), cam_to_world=np.asarray(poses, np.float64))


def cropped_truth(scene: dict, depth: np.ndarray | None = None) -> dict:
  """What a conversion at --image_size=32 must store: the centre 32x32 square, K shifted."""
  depth = scene['depth'] if depth is None else depth
  K = scene['K'].copy()
  K[0, 2] -= CROP_LEFT
  sl = slice(CROP_LEFT, CROP_LEFT + HEIGHT)
  return dict(rgb=scene['rgb'][:, :, sl], depth=depth[:, :, sl],
              intrinsics=np.broadcast_to(K, (FRAMES, 3, 3)), cam_to_world=scene['cam_to_world'])


def _png(path, array):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array).save(path)


def png16(path, array):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  assert cv2.imwrite(path, np.asarray(array, np.uint16))


def _world_to_cam(c2w):
  return np.linalg.inv(c2w)


# COLMAP -------------------------------------------------------------------------------------

COLMAP_NAMES = [f'img_{i:02d}.png' for i in range(FRAMES)]


def write_colmap(scene_dir: str, scene: dict, *, binary: bool = False, mvs_depth: bool = True,
                 camera_model: str = 'PINHOLE') -> None:
  """SCENE/images/*.png, SCENE/sparse/0/{cameras,images,points3D}.txt (or .bin),
  SCENE/stereo/depth_maps/<name>.geometric.bin."""
  model = os.path.join(scene_dir, 'sparse', '0')
  os.makedirs(model, exist_ok=True)
  K = scene['K']
  params = {'PINHOLE': [K[0, 0], K[1, 1], K[0, 2], K[1, 2]],
            'SIMPLE_PINHOLE': [K[0, 0], K[0, 2], K[1, 2]],
            'SIMPLE_RADIAL': [K[0, 0], K[0, 2], K[1, 2], 0.01]}[camera_model]
  with open(os.path.join(model, 'cameras.txt'), 'w') as f:
    f.write(f'1 {camera_model} {WIDTH} {HEIGHT} ' + ' '.join(repr(float(p)) for p in params) + '\n')
  with open(os.path.join(model, 'images.txt'), 'w') as f:
    # Image ids in reverse order: frames must come back in name order, not id order.
    for i, name in enumerate(COLMAP_NAMES):
      q, t = cameras.cam_to_world_to_colmap(scene['cam_to_world'][i])
      values = ' '.join(repr(float(v)) for v in [*np.asarray(q), *np.asarray(t)])
      f.write(f'{FRAMES - i} {values} 1 {name}\n\n')
  open(os.path.join(model, 'points3D.txt'), 'w').close()
  if binary:
    import pycolmap  # pylint: disable=g-import-not-at-top
    reconstruction = pycolmap.Reconstruction(model)
    for name in ('cameras', 'images', 'points3D'):
      os.remove(os.path.join(model, f'{name}.txt'))
    reconstruction.write_binary(model)
  for i, name in enumerate(COLMAP_NAMES):
    _png(os.path.join(scene_dir, 'images', name), scene['rgb'][i])
    if mvs_depth:
      path = os.path.join(scene_dir, 'stereo', 'depth_maps', f'{name}.geometric.bin')
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path, 'wb') as f:  # read_write_dense.py: header, then x fastest.
        f.write(f'{WIDTH}&{HEIGHT}&1&'.encode())
        f.write(np.asarray(scene['depth'][i], '<f4').tobytes())


# CO3D ---------------------------------------------------------------------------------------

CO3D_SCALE = 2.0  # depth_scale_adjustment: the PNG stores depth / 2.
CO3D_MASKED = (slice(0, 4), slice(CROP_LEFT, CROP_LEFT + 5))  # Depth-mask holes (rows, cols).


def pytorch3d_camera(K, c2w):
  """(R, T, focal_length, principal_point) in PyTorch3D's conventions ('ndc_isotropic')."""
  w2c = _world_to_cam(c2w)
  flip = np.diag([-1.0, -1.0, 1.0])
  R = (flip @ w2c[:3, :3]).T  # X_cam = X_world @ R + T, camera +X left, +Y up.
  T = flip @ w2c[:3, 3]
  s = min(WIDTH, HEIGHT) / 2
  focal = [K[0, 0] / s, K[1, 1] / s]
  principal = [(WIDTH / 2 - K[0, 2]) / s, (HEIGHT / 2 - K[1, 2]) / s]
  return R, T, focal, principal


def co3d_depth(scene: dict) -> np.ndarray:
  """The depth a CO3D fixture can hold: float16 of depth / scale, times scale; holes at 0."""
  depth = (scene['depth'] / CO3D_SCALE).astype(np.float16).astype(np.float32) * CO3D_SCALE
  depth[(slice(None),) + CO3D_MASKED] = 0
  return depth


def write_co3d(root: str, category: str, sequences: list[str], scene: dict) -> None:
  frames, seqs = [], []
  for sequence in sequences:
    seqs.append({'sequence_name': sequence, 'category': category})
    # Listed out of order: frame_number decides.
    for i in reversed(range(FRAMES)):
      base = f'{category}/{sequence}'
      image = f'{base}/images/frame{i + 1:06d}.jpg'
      depth = f'{base}/depths/frame{i + 1:06d}.jpg.geometric.png'
      depth_mask = f'{base}/depth_masks/frame{i + 1:06d}.png'
      mask = f'{base}/masks/frame{i + 1:06d}.png'
      Image.fromarray(scene['rgb'][i]).save(_mkdir(os.path.join(root, image)), quality=95)
      png16(os.path.join(root, depth),
             (scene['depth'][i] / CO3D_SCALE).astype(np.float16).view(np.uint16))
      keep = np.full((HEIGHT, WIDTH), 255, np.uint8)
      keep[CO3D_MASKED] = 0
      _png(os.path.join(root, depth_mask), keep)
      _png(os.path.join(root, mask), np.full((HEIGHT, WIDTH), 255, np.uint8))
      R, T, focal, principal = pytorch3d_camera(scene['K'], scene['cam_to_world'][i])
      frames.append({
          'sequence_name': sequence, 'frame_number': i, 'frame_timestamp': i / 30,
          'image': {'path': image, 'size': [HEIGHT, WIDTH]},
          'depth': {'path': depth, 'scale_adjustment': CO3D_SCALE, 'mask_path': depth_mask},
          'mask': {'path': mask, 'mass': float(HEIGHT * WIDTH)},
          'viewpoint': {'R': R.tolist(), 'T': T.tolist(), 'focal_length': focal,
                        'principal_point': principal, 'intrinsics_format': 'ndc_isotropic'},
          'meta': {}})
  for name, content in (('frame_annotations.jgz', frames), ('sequence_annotations.jgz', seqs)):
    with gzip.open(_mkdir(os.path.join(root, category, name)), 'wt') as f:
      json.dump(content, f)


def _mkdir(path):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  return path


# RealEstate10K ------------------------------------------------------------------------------

RE10K_TIMESTAMPS = [str(1_000_000 + 33_367 * i) for i in range(FRAMES)]
RE10K_POINTS_FRAME = 1  # This frame's --depth file is a world point map; ...
RE10K_NO_DEPTH_FRAME = 4  # ... this one has none (unknown depth).


def write_re10k(root: str, sequence: str, scene: dict, depth_dir: str | None = None) -> None:
  K = scene['K']
  lines = [f'https://www.youtube.com/watch?v={sequence}']
  for i, ts in enumerate(RE10K_TIMESTAMPS):
    w2c = _world_to_cam(scene['cam_to_world'][i])[:3]
    values = [K[0, 0] / WIDTH, K[1, 1] / HEIGHT, K[0, 2] / WIDTH, K[1, 2] / HEIGHT, 0, 0,
              *w2c.reshape(-1)]
    lines.append(ts + ' ' + ' '.join(repr(float(v)) for v in values))
    _png(os.path.join(root, sequence, f'{ts}.png'), scene['rgb'][i])
    if depth_dir and i != RE10K_NO_DEPTH_FRAME:
      path = _mkdir(os.path.join(depth_dir, sequence, f'{ts}.npy'))
      depth = scene['depth'][i]
      if i == RE10K_POINTS_FRAME:
        points = cameras.unproject_depth(depth, K, scene['cam_to_world'][i])
        np.save(path, np.where(depth[..., None] > 0, np.asarray(points, np.float64), np.nan))
      else:
        np.save(path, depth)
  with open(os.path.join(root, f'{sequence}.txt'), 'w') as f:
    f.write('\n'.join(lines) + '\n')


def re10k_depth(scene: dict, with_depth: bool) -> np.ndarray:
  depth = scene['depth'].copy() if with_depth else np.zeros_like(scene['depth'])
  depth[RE10K_NO_DEPTH_FRAME] = 0
  return depth


# ScanNet (SensReader export) ----------------------------------------------------------------

def write_scannet(root: str, name: str, scene: dict) -> None:
  """color/<i>.jpg at twice the depth resolution, depth/<i>.png in mm, pose/<i>.txt,
  intrinsic/intrinsic_depth.txt."""
  base = os.path.join(root, name)
  K4 = np.eye(4)
  K4[:3, :3] = scene['K']
  np.savetxt(_mkdir(os.path.join(base, 'intrinsic', 'intrinsic_depth.txt')), K4)
  for i in range(FRAMES):
    big = np.repeat(np.repeat(scene['rgb'][i], 2, axis=0), 2, axis=1)
    Image.fromarray(big).save(_mkdir(os.path.join(base, 'color', f'{i}.jpg')), quality=100)
    png16(os.path.join(base, 'depth', f'{i}.png'), np.round(scene['depth'][i] * 1000))
    np.savetxt(_mkdir(os.path.join(base, 'pose', f'{i}.txt')), scene['cam_to_world'][i])


def scannet_depth(scene: dict) -> np.ndarray:
  return np.round(scene['depth'] * 1000).astype(np.float32) * np.float32(0.001)


def write_scannetpp_iphone(root: str, name: str, scene: dict) -> list[str]:
  """SCENE/iphone/{rgb/<id>.jpg at twice the depth size, depth/<id>.png mm,
  pose_intrinsic_imu.json (K of the RGB, aligned_pose)}; frame 3 has no extracted RGB.
  Returns the frame ids that have RGB."""
  base = os.path.join(root, name, 'iphone')
  entries, extracted = {}, []
  K_rgb = scene['K'].copy()
  K_rgb[:2] *= 2  # Pixel-edge frame: scaling the image scales K exactly.
  for i in range(FRAMES):
    frame_id = f'frame_{i:06d}'
    entries[frame_id] = {'intrinsic': K_rgb.tolist(),
                         'aligned_pose': scene['cam_to_world'][i].tolist(),
                         'pose': np.eye(4).tolist(), 'timestamp': i / 60}
    png16(os.path.join(base, 'depth', f'{frame_id}.png'), np.round(scene['depth'][i] * 1000))
    if i != 3:
      big = np.repeat(np.repeat(scene['rgb'][i], 2, axis=0), 2, axis=1)
      Image.fromarray(big).save(_mkdir(os.path.join(base, 'rgb', f'{frame_id}.jpg')), quality=100)
      extracted.append(frame_id)
  with open(_mkdir(os.path.join(base, 'pose_intrinsic_imu.json')), 'w') as f:
    json.dump(entries, f)
  return extracted
