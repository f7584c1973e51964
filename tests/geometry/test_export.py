"""Exports: binary PLY (trimesh) and COLMAP text models read back independently."""
import os

import numpy as np
import pytest
import trimesh

from tests.conftest import hide_package
from tests.geometry import scenes
from wvd_jax import errors
from wvd_jax.geometry import cameras, export, rotations


def read_colmap_text(directory):
  """Independent reader of COLMAP's text model, written from the format's documentation:
  '#' comments; cameras: ID MODEL W H PARAMS...; images: two lines each (ID QW QX QY QZ TX TY TZ
  CAMERA_ID NAME, then X Y POINT3D_ID triples); points3D: ID X Y Z R G B ERROR TRACK...
  Returns (cameras {id: (model, w, h, params)}, images {id: (q, t, cam_id, name)},
  points {id: (xyz, rgb)})."""
  def lines(name, keep_empty=False):
    with open(os.path.join(directory, name)) as f:
      return [l.rstrip('\n') for l in f if not l.startswith('#') and (keep_empty or l.strip())]
  cams = {}
  for l in lines('cameras.txt'):
    tok = l.split()
    cams[int(tok[0])] = (tok[1], int(tok[2]), int(tok[3]), np.array(tok[4:], float))
  imgs = {}
  img_lines = lines('images.txt', keep_empty=True)
  for head in img_lines[0::2]:
    tok = head.split()
    imgs[int(tok[0])] = (np.array(tok[1:5], float), np.array(tok[5:8], float), int(tok[8]), tok[9])
  pts = {}
  for l in lines('points3D.txt'):
    tok = l.split()
    pts[int(tok[0])] = (np.array(tok[1:4], float), np.array(tok[4:7], int))
  return cams, imgs, pts


@pytest.fixture(scope='module')
def model():
  clip = scenes.box_room(5, n_views=3, size=16, per_view_fov=True)
  rng = np.random.default_rng(0)
  pts = clip['xyz'].reshape(-1, 3)[::7]
  cols = rng.integers(0, 256, pts.shape).astype(np.uint8)
  return clip, pts, cols


def test_ply_round_trip(tmp_path, model):
  _, pts, cols = model
  path = tmp_path / 'cloud.ply'
  export.write_ply(str(path), pts.astype(np.float32), cols)
  with open(path, 'rb') as f:
    header = f.read(200)
  assert header.startswith(b'ply\nformat binary_little_endian 1.0')
  cloud = trimesh.load(str(path))
  np.testing.assert_allclose(cloud.vertices, pts, rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(cloud.colors)[:, :3], cols)
  export.write_ply(str(path), pts[:5])  # overwrite, no colours
  assert len(trimesh.load(str(path)).vertices) == 5
  assert sorted(os.listdir(tmp_path)) == ['cloud.ply']  # no temporary files left


def _check_model(clip, pts, cols, cams, imgs, points):
  assert len(cams) == 3 and len(imgs) == 3 and len(points) == len(pts)
  for i in range(3):
    q, t, cam_id, name = imgs[i + 1]
    model_name, w, h, params = cams[cam_id]
    assert (model_name, w, h, name) == ('PINHOLE', 16, 16, f'frame_{i:05d}.png')
    K = clip['K'][i]
    np.testing.assert_allclose(params, [K[0, 0], K[1, 1], K[0, 2], K[1, 2]], rtol=1e-12)
    np.testing.assert_allclose(cameras.colmap_to_cam_to_world(q, t), clip['cam_to_world'][i],
                               atol=1e-12)
  xyz = np.stack([points[k][0] for k in sorted(points)])
  rgb = np.stack([points[k][1] for k in sorted(points)])
  np.testing.assert_allclose(xyz, pts, rtol=1e-12)
  np.testing.assert_array_equal(rgb, cols)


def test_colmap_text_round_trip(tmp_path, model):
  clip, pts, cols = model
  export.write_colmap_text(str(tmp_path), clip['K'], clip['cam_to_world'], 16, 16, pts, cols)
  assert sorted(os.listdir(tmp_path)) == ['cameras.txt', 'images.txt', 'points3D.txt']
  _check_model(clip, pts, cols, *read_colmap_text(str(tmp_path)))


def test_colmap_text_read_by_pycolmap(tmp_path, model):
  pycolmap = pytest.importorskip('pycolmap')
  clip, pts, cols = model
  export.write_colmap_text(str(tmp_path), clip['K'], clip['cam_to_world'], 16, 16, pts, cols)
  rec = pycolmap.Reconstruction(str(tmp_path))
  cams = {i: (c.model.name, c.width, c.height, np.asarray(c.params))
          for i, c in rec.cameras.items()}
  imgs = {}
  for i, im in rec.images.items():
    pose = im.cam_from_world() if callable(im.cam_from_world) else im.cam_from_world
    w2c = np.asarray(pose.matrix())
    imgs[i] = (rotations.rotation_to_quaternion(w2c[:, :3]), w2c[:, 3], im.camera_id, im.name)
  points = {i: (np.asarray(p.xyz), np.asarray(p.color)) for i, p in rec.points3D.items()}
  _check_model(clip, pts, cols, cams, imgs, points)


def test_bad_inputs(tmp_path, model):
  clip, pts, cols = model
  bad = pts.copy()
  bad[0] = np.nan
  with pytest.raises(ValueError, match='NaN'):
    export.write_ply(str(tmp_path / 'x.ply'), bad)
  with pytest.raises(ValueError, match='uint8'):
    export.write_ply(str(tmp_path / 'x.ply'), pts, cols.astype(np.float32))
  with pytest.raises(ValueError, match=r'\(P, 3\)'):
    export.write_ply(str(tmp_path / 'x.ply'), pts[:, :2])
  skew = clip['K'].copy()
  skew[:, 0, 1] = 1.0
  with pytest.raises(ValueError, match='skew'):
    export.write_colmap_text(str(tmp_path), skew, clip['cam_to_world'], 16, 16)
  with pytest.raises(ValueError, match='focal'):
    export.write_colmap_text(str(tmp_path), -clip['K'], clip['cam_to_world'], 16, 16)
  with pytest.raises(ValueError, match='differ'):
    export.write_colmap_text(str(tmp_path), clip['K'], clip['cam_to_world'], 16, 16,
                             shared_camera=True)
  assert not os.listdir(tmp_path)  # nothing half-written


def test_missing_ply_writer_is_a_user_error_naming_the_package(monkeypatch):
  export.require_ply_writer('this test')  # trimesh is installed here.
  hide_package(monkeypatch, 'trimesh')
  with pytest.raises(errors.UserError, match='--mode=sample writes point clouds .* trimesh'):
    export.require_ply_writer('--mode=sample')
