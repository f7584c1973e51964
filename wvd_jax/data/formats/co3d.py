"""CO3D v2: per-category annotations, images, depth maps and masks.

Layout (the release; facebookresearch/co3d, co3d/dataset/data_types.py):

  ROOT/<category>/frame_annotations.jgz      gzipped JSON list of FrameAnnotation
  ROOT/<category>/sequence_annotations.jgz   gzipped JSON list of SequenceAnnotation
  ROOT/<category>/<sequence>/images/frameXXXXXX.jpg
  ROOT/<category>/<sequence>/depths/frameXXXXXX.jpg.geometric.png
  ROOT/<category>/<sequence>/depth_masks/frameXXXXXX.png
  ROOT/<category>/<sequence>/masks/frameXXXXXX.png
Paths inside the annotations are relative to ROOT (``--input``). One sequence = one scene,
named ``<category>/<sequence>``; frames in ``frame_number`` order.

A FrameAnnotation has image {path, size [H, W]}, depth {path, scale_adjustment, mask_path},
mask {path}, viewpoint {R, T, focal_length, principal_point, intrinsics_format}.
- Depth PNGs hold float16 bits in 16-bit pixels (the official ``_load_16big_png_depth``
  reinterprets the uint16 values as float16); depth = that * scale_adjustment; depth masks
  (> 0.5 = trusted) zero the rest. Float16 keeps 11 significant bits: 2^-11 relative. A depth
  map at another resolution of the image's aspect ratio (the official loader rescales boxes
  to it) is brought to the image's size by centre-aligned nearest neighbour.
- Cameras are PyTorch3D's (pytorch3d/renderer/cameras.py): X_cam = X_world @ R + T (row
  vectors) with camera axes +X left, +Y up, +Z forward, so OpenCV's world-to-camera is
  R_cv = diag(-1, -1, 1) R^T, t_cv = diag(-1, -1, 1) T. Focal length and principal point are
  in NDC: 'ndc_isotropic' scales both axes by s = min(W, H) / 2, the legacy
  'ndc_norm_image_bounds' by (W / 2, H / 2); with +X left / +Y up,
  fx = f_x s_x, cx = W / 2 - p_x s_x, cy = H / 2 - p_y s_y (NDC +-1 are the image's edges, so
  this is the pixel-edge frame where pixel centres sit at +0.5, ours).
"""
from __future__ import annotations

import functools
import gzip
import json
import os

import numpy as np

from wvd_jax.data.formats import common
from wvd_jax.errors import UserError

_FLIP = np.diag([-1.0, -1.0, 1.0])


def _read_jgz(path: str):
  try:
    with gzip.open(path, 'rt', encoding='utf-8') as f:
      return json.load(f)
  except (OSError, EOFError, ValueError) as e:
    raise UserError(f'{path}: cannot read the CO3D annotation file ({type(e).__name__}: '
                    f'{e})') from e


def list_scenes(options: common.FormatOptions):
  root = os.path.abspath(options.input)
  scenes, skipped = [], []
  for category in sorted(os.listdir(root)):
    path = os.path.join(root, category, 'sequence_annotations.jgz')
    if not os.path.isfile(path):
      continue
    try:
      sequences = _read_jgz(path)
      names = sorted({str(s['sequence_name']) for s in sequences})
    except UserError as e:
      skipped.append((f'{category}/*', str(e)))
      continue
    except (TypeError, KeyError) as e:
      skipped.append((f'{category}/*', f'{path}: not a list of sequence annotations ({e!r})'))
      continue
    scenes += [common.SceneRef(f'{category}/{name}', path, (root, category, name))
               for name in names]
  return scenes, skipped


@functools.lru_cache(maxsize=2)
def _frames_by_sequence(root: str, category: str):
  """frame_annotations.jgz of a category grouped by sequence (read once per worker)."""
  path = os.path.join(root, category, 'frame_annotations.jgz')
  common.require_file(path, 'the CO3D frame annotation file')
  grouped = {}
  for entry in _read_jgz(path):
    grouped.setdefault(str(entry.get('sequence_name')), []).append(entry)
  return path, grouped


def ndc_to_pixels(focal_length, principal_point, intrinsics_format: str, height: int, width: int,
                  source: str) -> np.ndarray:
  """PyTorch3D NDC focal length / principal point -> K (3, 3) in pixels (see module doc)."""
  half = np.array([width, height], np.float64) / 2
  if intrinsics_format == 'ndc_isotropic':
    scale = np.full(2, half.min())
  elif intrinsics_format == 'ndc_norm_image_bounds':
    scale = half
  else:
    raise UserError(f'{source}: unknown intrinsics_format {intrinsics_format!r} (expected '
                    "'ndc_isotropic' or 'ndc_norm_image_bounds')")
  f = np.asarray(focal_length, np.float64) * scale
  c = half - np.asarray(principal_point, np.float64) * scale
  return common.pinhole(f[0], f[1], c[0], c[1])


def pytorch3d_to_cam_to_world(R, T) -> np.ndarray:
  """OpenCV cam_to_world (4, 4) of a PyTorch3D camera (X_cam = X_world @ R + T)."""
  world_to_cam = np.eye(4)
  world_to_cam[:3, :3] = _FLIP @ np.asarray(R, np.float64).T
  world_to_cam[:3, 3] = _FLIP @ np.asarray(T, np.float64)
  rotation = world_to_cam[:3, :3]
  out = np.eye(4)
  out[:3, :3] = rotation.T
  out[:3, 3] = -rotation.T @ world_to_cam[:3, 3]
  return out


def read_depth_png(path: str) -> np.ndarray:
  """CO3D's 16-bit depth PNG: the uint16 pixels reinterpreted as float16 -> float32."""
  return common.read_png16(path).view(np.float16).astype(np.float32)


def _load(root, entry, size, foreground_only):
  rgb = common.read_rgb(os.path.join(root, entry['image']['path']))
  if rgb.shape[:2] != size:
    raise UserError(f'{os.path.join(root, entry["image"]["path"])}: the image is '
                    f'{rgb.shape[1]}x{rgb.shape[0]}, its annotation says {size[1]}x{size[0]}')
  depth_entry = entry.get('depth')
  if not depth_entry or not depth_entry.get('path'):
    return rgb, None
  depth_path = os.path.join(root, depth_entry['path'])
  depth = _at_image_size(read_depth_png(depth_path), size, depth_path)
  depth = depth * np.float32(depth_entry.get('scale_adjustment') or 1.0)
  keep = np.isfinite(depth) & (depth > 0)
  masks = [depth_entry.get('mask_path')]
  if foreground_only and entry.get('mask'):
    masks.append(entry['mask'].get('path'))
  for mask_path in filter(None, masks):
    path = os.path.join(root, mask_path)
    keep &= _at_image_size(_read_mask(path), size, path)
  return rgb, np.where(keep, depth, 0).astype(np.float32)


def _at_image_size(array: np.ndarray, size: tuple[int, int], path: str) -> np.ndarray:
  """A depth map or mask at the image's size (H, W). CO3D's loader allows depth at another
  resolution of the same aspect ratio: it is resized by nearest neighbour with centre-aligned
  pixels (no blending across holes); another aspect ratio is an error."""
  import cv2  # pylint: disable=g-import-not-at-top
  if array.shape == tuple(size):
    return array
  if abs(array.shape[1] * size[0] / (array.shape[0] * size[1]) - 1) > 0.02:
    common.check_depth_size(array, size, path)  # Raises, naming the sizes.
  resized = cv2.resize(array.astype(np.float32), (size[1], size[0]),
                       interpolation=cv2.INTER_NEAREST_EXACT)
  return resized.astype(array.dtype)


def _read_mask(path: str) -> np.ndarray:
  """A CO3D mask PNG (8- or 16-bit; foreground probability * 255) -> bool (> 0.5)."""
  import cv2  # pylint: disable=g-import-not-at-top
  common.require_file(path, 'the mask')
  image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
  if image is None or image.ndim != 2:
    raise UserError(f'{path}: expected a single-channel mask PNG')
  return image.astype(np.float32) / np.iinfo(image.dtype).max > 0.5


def load_frames(ref: common.SceneRef, options: common.FormatOptions):
  root, category, sequence = ref.key
  path, grouped = _frames_by_sequence(root, category)
  entries = grouped.get(sequence, [])
  frames = []
  try:
    entries = sorted(entries, key=lambda e: int(e['frame_number']))
    for entry in entries:
      source = f'{path} (sequence {sequence}, frame {entry["frame_number"]})'
      view = entry.get('viewpoint')
      if not view:
        raise UserError(f'{source}: the frame has no viewpoint (camera)')
      height, width = (int(v) for v in entry['image']['size'])
      K = ndc_to_pixels(view['focal_length'], view['principal_point'],
                        view.get('intrinsics_format', 'ndc_norm_image_bounds'), height, width,
                        source)
      cam_to_world = common.check_pose(pytorch3d_to_cam_to_world(view['R'], view['T']), source)
      name = os.path.basename(entry['image']['path'])
      frames.append(common.Frame(name, common.check_intrinsics(K, source), cam_to_world, source,
                                 functools.partial(_load, root, entry, (height, width),
                                                   options.foreground_only)))
  except (KeyError, TypeError, ValueError) as e:
    raise UserError(f'{path}: malformed frame annotation of sequence {sequence} ({e!r})') from e
  return frames
