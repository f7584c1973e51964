"""The Python API: load an exported checkpoint once, run any task, optionally write files.

  wvd = WVD.load('workdir/demo/export')
  result = wvd.monocular_depth('photo.jpg', output_dir='out/')   # depth.npy, depth.png, ...
  video = wvd.camera_control('photo.jpg', 'orbit', output_dir='out/')

Outputs (when output_dir is given):
  image_to_3d:    samples.png (RGB and XYZ rows), points.ply, cameras/ (COLMAP text),
                  confidence.npy/.png, reconstruction.npz (no video)
  depth:          depth.npy (frame 0, units in units.json, model resolution), depth.png (colour
                  map, >= 256 px), confidence.npy/.png
  multiview:      depth_<i>.npy/.png, confidence_<i>.npy/.png, cameras/ (COLMAP text),
                  confidence.npy/.png (frame 0), reconstruction.npz
  camera_control: video.mp4, frames/frame_<t>.png, reprojected.png, camera_path.json (the
                  cameras used, in the model's normalized world)
PNGs of depth and confidence are enlarged (nearest) to at least media.DISPLAY_SIZE pixels.
Known cameras (image_to_3d, monocular_depth, multiview keyword arguments; README.md "Known
cameras and metric scale"): intrinsics=, cam_to_world=, metric_distance=. The units of depth,
points and cameras (normalized, the poses' units, or metres) are in units.json, the PLY and
COLMAP headers and reconstruction.npz.
"""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from PIL import Image

from wvd_jax import config_lib, files, visualize
from wvd_jax.errors import UserError
from wvd_jax.diffusion import generate
from wvd_jax.geometry import export, normalization
from wvd_jax.models import inference_checkpoint
from wvd_jax.tasks import camera_paths, known_cameras, many_views, media, wvd_tasks


class ModelGenerator:
  """The trained model as a task generator (see wvd_tasks): inpaints known RGB/XYZ videos."""

  def __init__(self, config, graphdef, params):
    self.config, self.graphdef, self.params = config, graphdef, params

  def __call__(self, rgb, rgb_mask, xyz, xyz_mask, cond_mask, rng, cameras=None):
    del cameras  # The model infers geometry; it takes no camera input.
    return generate.generate_video(self.config, self.graphdef, self.params, jnp.asarray(rgb),
                                   jnp.asarray(rgb_mask), jnp.asarray(xyz),
                                   jnp.asarray(xyz_mask), jnp.asarray(cond_mask), rng)


class WVD:
  """A loaded model and the four tasks. Inputs are image paths or (H, W, 3) arrays in [-1, 1]."""

  def __init__(self, config, graphdef, params, generator=None):
    self.config = config
    self.image_size = config.data.image_size
    self.num_frames = config.data.num_frames
    self.num_samples = config.sample.num_samples
    self.generator = generator or ModelGenerator(config, graphdef, params)
    self._rng = jax.random.PRNGKey(config.seed)

  @classmethod
  def load(cls, path: str, config=None) -> 'WVD':
    """From an exported checkpoint (--mode=export). ``config`` overrides sampling settings; its
    model section must match the checkpoint's."""
    stored, graphdef, params = inference_checkpoint.load(path, config)
    return cls(config if config is not None else stored, graphdef, params)

  def _image(self, image) -> np.ndarray:
    if isinstance(image, str):
      return media.load_image(image, self.image_size)
    image = np.asarray(image, np.float32)
    if image.shape != (self.image_size, self.image_size, 3):
      raise UserError(f'image arrays must be ({self.image_size}, {self.image_size}, 3) in '
                             f'[-1, 1]; got {image.shape} (pass a file path to crop and resize)')
    return image

  def _require_xyz(self, task: str):
    """The four tasks read geometry off the generated XYZ: an RGB-only model has none."""
    if config_lib.rgb_only(self.config):
      raise UserError(
          f"{task} needs XYZ, but this model is the RGB-only ablation "
          "(config.diffusion.modalities='rgb'); it only generates RGB videos from a first frame "
          "(--mode=sample, generate.sample_from_first_frame)")

  def _next_rng(self):
    self._rng, rng = jax.random.split(self._rng)
    return rng

  def _known(self, inputs, intrinsics, cam_to_world, metric_distance) -> dict:
    """The known-camera keyword arguments of wvd_tasks in the model image's pixels.

    inputs: image paths or arrays. intrinsics: 'fx,fy,cx,cy', a JSON file, or K (3, 3) /
    (N, 3, 3), in pixels of the input photographs when the inputs are files (mapped through
    the centre crop and resize), else of the model image. cam_to_world: a COLMAP folder or
    JSON file (poses by image name), or (N, 4, 4) with NaN matrices for unknown views.
    metric_distance: 'D[:cameras:i,j|:pixels:v,col,row,w,col,row]', metres between cameras
    0 and 1, or a known_cameras.MetricDistance."""
    names = _input_names(inputs)
    K = None
    if isinstance(cam_to_world, str):
      cam_to_world, K = known_cameras.load_poses(cam_to_world, names)
    elif cam_to_world is not None:
      cam_to_world = known_cameras.check_poses(
          np.reshape(cam_to_world, (-1, 4, 4)) if len(inputs) == 1 else cam_to_world)
      if len(cam_to_world) != len(inputs):
        raise UserError(f'cam_to_world has {len(cam_to_world)} poses for {len(inputs)} '
                        'images; give one 4 x 4 pose per image (NaN for unknown ones)')
    if isinstance(intrinsics, str):
      K = known_cameras.parse_intrinsics(intrinsics)
    elif intrinsics is not None:
      K = known_cameras.check_intrinsics(intrinsics)
    if K is not None:
      K = np.broadcast_to(K, (len(inputs), 3, 3))
      # (a missing file keeps K as is: reading the image then says what is wrong)
      K = np.stack([known_cameras.to_model_pixels(k, *_image_size(i), self.image_size)
                    if isinstance(i, str) and os.path.isfile(i) else k
                    for k, i in zip(K, inputs)])
      K = K[0] if len(inputs) == 1 else K
    if isinstance(metric_distance, str):
      metric_distance = known_cameras.parse_distance(metric_distance)
    elif metric_distance is not None:
      metric_distance = known_cameras.check_distance(metric_distance)
    if len(inputs) == 1 and cam_to_world is not None:
      cam_to_world = None if np.isnan(cam_to_world[0]).all() else cam_to_world[0]
    return dict(intrinsics=K, cam_to_world=cam_to_world, metric_distance=metric_distance)

  def image_to_3d(self, image, output_dir: str | None = None, *, intrinsics=None,
                  cam_to_world=None, metric_distance=None) -> wvd_tasks.Reconstruction:
    """Known cameras: see `_known` (cam_to_world is the image's pose (4, 4))."""
    self._require_xyz('image_to_3d')
    if output_dir:  # Its point cloud is written after sampling.
      export.require_ply_writer('image_to_3d with an output directory')
    known = self._known([image], intrinsics, cam_to_world, metric_distance)
    rec = wvd_tasks.single_image_to_3d(self.generator, self._image(image),
                                       num_frames=self.num_frames,
                                       num_samples=self.num_samples, rng=self._next_rng(),
                                       **known)
    if output_dir:
      self._write_reconstruction(rec, output_dir)
      export.write_ply(os.path.join(output_dir, 'points.ply'), rec.points[rec.foreground],
                       visualize.to_uint8(rec.rgb.mean(axis=0))[rec.foreground],
                       comment=f'units: {rec.units}')
      grid = visualize.frame_grid([visualize.to_uint8(x) for s in range(len(rec.rgb))
                                   for x in (rec.rgb[s], rec.xyz[s])])
      visualize.save_png(os.path.join(output_dir, 'samples.png'), grid)
    return rec

  def monocular_depth(self, image, output_dir: str | None = None, *, intrinsics=None,
                      cam_to_world=None, metric_distance=None) -> wvd_tasks.Reconstruction:
    """Known cameras: see `_known`; with a metric distance the depth is in metres."""
    self._require_xyz('depth')
    known = self._known([image], intrinsics, cam_to_world, metric_distance)
    rec = wvd_tasks.monocular_depth(self.generator, self._image(image),
                                    num_frames=self.num_frames, num_samples=self.num_samples,
                                    rng=self._next_rng(), **known)
    if output_dir:
      os.makedirs(output_dir, exist_ok=True)
      media.save_depth(os.path.join(output_dir, 'depth'), rec.depth[0])
      self._save_confidence(os.path.join(output_dir, 'confidence'), rec.confidence[0])
      _write_units(output_dir, rec.units)
    return rec

  def multiview(self, images, output_dir: str | None = None, *, intrinsics=None,
                cam_to_world=None, metric_distance=None) -> wvd_tasks.Reconstruction:
    """Known cameras: see `_known` (poses by image name from a file, or (N, 4, 4)). More
    images than the model's frames go through `many_views` (windows, flat memory) and return
    a many_views.ManyViewResult."""
    self._require_xyz('multiview')
    if isinstance(images, str):
      images = media.list_images(images)
    names = _input_names(images)
    known = self._known(images, intrinsics, cam_to_world, metric_distance)
    if len(images) > self.num_frames:
      return self._multiview_many(images, names, output_dir, **known)
    frames = np.stack([self._image(i) for i in images])
    rec = wvd_tasks.multiview(self.generator, frames, num_samples=self.num_samples,
                              rng=self._next_rng(), **known)
    if output_dir:
      self._write_reconstruction(rec, output_dir, names)
      for k in range(len(frames)):
        media.save_depth(os.path.join(output_dir, f'depth_{k}'), rec.depth[k])
        self._save_confidence(os.path.join(output_dir, f'confidence_{k}'), rec.confidence[k])
    return rec

  def _multiview_many(self, images, names, output_dir, intrinsics, cam_to_world,
                      metric_distance) -> many_views.ManyViewResult:
    def write_view(k, depth, confidence):
      if output_dir:
        media.save_depth(os.path.join(output_dir, f'depth_{k}'), depth)
        self._save_confidence(os.path.join(output_dir, f'confidence_{k}'), confidence)
    result = many_views.reconstruct_many(
        self.generator, _LazyImages(self, images), window=self.num_frames,
        anchors=max(1, self.num_frames // 4), num_samples=self.num_samples,
        rng=self._next_rng(), intrinsics=intrinsics, cam_to_world=cam_to_world,
        metric_distance=metric_distance, on_view=write_view)
    if output_dir:
      if result.depth_scale != 1.0:  # Known cameras rescaled the world after depths were written.
        for k in range(len(images)):
          prefix = os.path.join(output_dir, f'depth_{k}')
          with open(prefix + '.npy', 'rb') as f:
            depth = np.load(f, allow_pickle=False)
          media.save_depth(prefix, depth * np.float32(result.depth_scale))
      export.write_colmap_text(os.path.join(output_dir, 'cameras'), result.intrinsics,
                               result.cam_to_world, self.image_size, self.image_size,
                               points=result.points, colors=result.colors, image_names=names,
                               comment=f'units: {result.units}')
      _write_units(output_dir, result.units)
    return result

  def camera_control(self, image, path='orbit', output_dir: str | None = None,
                     num_targets: int = 12, first: wvd_tasks.Reconstruction | None = None
                     ) -> wvd_tasks.CameraControlResult:
    """``path``: a preset name ('orbit', 'dolly', 'pan'), a JSON file, or (T, 4, 4) poses.
    ``first``: this image's image_to_3d result, reused instead of sampling it again."""
    self._require_xyz('camera_control')
    intrinsics = None
    if isinstance(path, str):
      relative, intrinsics = camera_paths.resolve(path, num_targets)
    else:
      relative = np.asarray(path)
    result = wvd_tasks.camera_control(self.generator, self._image(image), relative,
                                      num_frames=self.num_frames, rng=self._next_rng(),
                                      intrinsics=intrinsics,
                                      box_fill=self.config.data.get('xyz_box_fill', 1.0),
                                      first=first)
    if output_dir:
      frames = visualize.to_uint8(result.frames)
      for t, frame in enumerate(frames):
        visualize.save_png(os.path.join(output_dir, 'frames', f'frame_{t:05d}.png'), frame)
      media.save_video(os.path.join(output_dir, 'video.mp4'), frames)
      shown = normalization.fill_background(result.reprojected_xyz, result.reprojected_mask)
      visualize.save_png(os.path.join(output_dir, 'reprojected.png'),
                     visualize.frame_grid([frames, visualize.to_uint8(shown)]))
      camera_paths.save(os.path.join(output_dir, 'camera_path.json'), result.cam_to_world,
                        result.intrinsics[0])
    return result

  def _write_reconstruction(self, rec, output_dir, names=None):
    os.makedirs(output_dir, exist_ok=True)
    n, h, w = rec.depth.shape
    points = rec.points[rec.foreground]
    colors = visualize.to_uint8(rec.rgb.mean(axis=0))[rec.foreground]
    export.write_colmap_text(os.path.join(output_dir, 'cameras'), rec.intrinsics,
                             rec.cam_to_world, w, h, points=points, colors=colors,
                             image_names=names, comment=f'units: {rec.units}')
    self._save_confidence(os.path.join(output_dir, 'confidence'), rec.confidence[0])
    with files.atomic_write(os.path.join(output_dir, 'reconstruction.npz')) as f:
      np.savez(f, rgb=rec.rgb, xyz=rec.xyz, depth=rec.depth, intrinsics=rec.intrinsics,
               cam_to_world=rec.cam_to_world, spread=rec.spread, confidence=rec.confidence,
               foreground=rec.foreground, points=rec.points, units=np.array(rec.units))
    _write_units(output_dir, rec.units)
    logging.info('wrote %s (post-optimization residual %.3g)', output_dir, rec.residual)

  @staticmethod
  def _save_confidence(prefix, confidence):
    with files.atomic_write(prefix + '.npy') as f:
      np.save(f, confidence)
    media.save_display_png(prefix + '.png',
                           np.round(np.clip(confidence, 0, 1) * 255).astype(np.uint8))


class _LazyImages:
  """The inputs as a sequence read on access (one window at a time stays in memory)."""

  def __init__(self, wvd: WVD, inputs):
    self.wvd, self.inputs = wvd, inputs

  def __len__(self):
    return len(self.inputs)

  def __getitem__(self, i):
    return self.wvd._image(self.inputs[i])  # pylint: disable=protected-access


def _input_names(inputs) -> list[str]:
  """Base names of image paths (poses files name images so); frame_<k>.png for arrays."""
  return [os.path.basename(i) if isinstance(i, str) else f'frame_{k:05d}.png'
          for k, i in enumerate(inputs)]


def _image_size(path: str) -> tuple[int, int]:
  """(width, height) of an image file (its header only)."""
  with Image.open(path) as image:
    return image.size


def _write_units(output_dir: str, units: str) -> None:
  """units.json: the units of every length in the directory's outputs (depth .npy/.png,
  points, camera centres); PLY and COLMAP files also say them in their headers."""
  with files.atomic_write(os.path.join(output_dir, 'units.json'), 'w') as f:
    json.dump(dict(units=units, depth='z-depth along each camera\'s optical axis',
                   intrinsics='pixels of the model image (centre crop of the input, resized)'),
              f, indent=1)
