"""Geometry benchmark: post-optimization (eq. 3) and z-buffered rasterization.

Prints one JSON object. Default (GPU) sizes: post-optimization of 16 views at 256 x 256 to
convergence, and rasterizing 16 x 65536 points into 16 views at 256 x 256 (both the shared
cloud of all 1M points into every view, and each view's own 65536 points into its view).
`--small` runs in seconds on CPU (4 views, 64 x 64, 4 x 4096 points).
Times (benchmarks/common.py's time_calls: calls dispatched back to back, synchronized with
block_until_ready, best block mean) exclude compilation, which is reported separately.

  python benchmarks/geometry_bench.py [--small] [--iters 5] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def box_room_clip(n_views: int, size: int, seed: int = 0):
  """(xyz, depth, K, cam_to_world): exact XYZ images of the inside of a box room seen by random
  cameras (numpy, float64)."""
  from wvd_jax.geometry import cameras
  rng = np.random.default_rng(seed)
  half = np.array([3.0, 2.0, 4.0])
  poses = []
  for _ in range(n_views):
    eye = rng.uniform(-0.5, 0.5, 3) * half
    z = rng.uniform(-1, 1, 3) * half - eye
    z /= np.linalg.norm(z)
    x = np.cross(np.array([0.0, -1.0, 0.0]) + rng.normal(size=3) * 0.3, z)
    x /= np.linalg.norm(x)
    poses.append(cameras.make_pose(np.stack([x, np.cross(z, x), z], 1), eye))
  c2w = np.stack(poses)
  K = cameras.intrinsics_from_fov(np.full(n_views, np.deg2rad(60.0)), size, size)
  o, d = cameras.world_rays(K, c2w, size, size, normalize=False)
  with np.errstate(divide='ignore'):
    t = np.where(np.abs(d) > 1e-12, (np.where(d > 0, half, -half) - o) / d, np.inf)
  depth = t.min(-1)
  return cameras.unproject_depth(depth, K, c2w), depth, K, c2w


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--small', action='store_true', help='CPU-sized run (seconds)')
  parser.add_argument('--iters', type=int, default=None, help='calls per timed block (10; 2 small)')
  parser.add_argument('--repeats', type=int, default=3, help='timed blocks; the best is reported')
  parser.add_argument('--num_iters', type=int, default=200, help='max L-BFGS iterations')
  parser.add_argument('--principal_point', type=int, default=0,
                      help='0 fixed, 1 shared, 2 per view (PRINCIPAL_POINT_MODES)')
  args = parser.parse_args()
  if args.small:
    os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  import jax
  import jax.numpy as jnp
  from benchmarks import common
  from wvd_jax.geometry import post_optimization, rasterizer, rotations
  iters = args.iters or (2 if args.small else 10)
  timed = lambda fn, *a: common.time_calls(fn, *a, iters=iters, warmup=1, repeats=args.repeats)
  n, size, points_per_view = (4, 64, 4096) if args.small else (16, 256, 65536)

  xyz, depth, K, c2w = box_room_clip(n, size)
  xyz_j = jnp.asarray(xyz, jnp.float32)
  ones = jnp.ones((n, size, size), jnp.float32)
  mask = jnp.ones((n, size, size), bool)
  pp = jnp.full((n, 2), size / 2, jnp.float32)
  nan_f = jnp.full((n,), jnp.nan, jnp.float32)
  aspect, known = jnp.ones((n,), jnp.float32), jnp.zeros((n,), bool)
  poses = jnp.broadcast_to(jnp.eye(4, dtype=jnp.float32), (n, 4, 4))
  flags = [jnp.asarray(v) for v in (True, False, True, args.principal_point, 1e-3)]
  run_po = lambda x: post_optimization.post_optimize_jit(
      x, ones, mask, pp, nan_f, aspect, poses, known, *flags, num_iters=args.num_iters)
  po = timed(run_po, xyz_j)
  res = run_po(xyz_j)
  rot_err = np.rad2deg(np.asarray(rotations.rotation_angle(
      c2w[:, :3, :3], np.asarray(res.cam_to_world, np.float64)[:, :3, :3])))
  absrel = float(np.mean(np.abs(np.asarray(res.depth) - depth) / depth))
  focal_err = float(np.max(np.abs(np.asarray(res.K)[:, 0, 0] / K[:, 0, 0] - 1)))

  # Rasterization: each view's own points (a random subset of its pixels) ...
  rng = np.random.default_rng(1)
  idx = np.stack([rng.choice(size * size, points_per_view, replace=size * size < points_per_view)
                  for _ in range(n)])
  pts = jnp.asarray(np.take_along_axis(xyz.reshape(n, -1, 3), idx[..., None], 1), jnp.float32)
  cols = jnp.asarray(rng.integers(0, 256, pts.shape), jnp.uint8)
  Kj, c2wj = jnp.asarray(K, jnp.float32), jnp.asarray(c2w, jnp.float32)
  per_view = jax.jit(jax.vmap(lambda p, c, k, t: rasterizer.rasterize_points(
      p, c, None, k, t, size, size)))
  rv = timed(per_view, pts, cols, Kj, c2wj)
  # ... and the shared cloud of all n * points_per_view points into every view.
  shared = jax.jit(lambda p, c, k, t: rasterizer.rasterize_points(p, c, None, k, t, size, size))
  flat_p, flat_c = pts.reshape(-1, 3), cols.reshape(-1, 3)
  rs = timed(shared, flat_p, flat_c, Kj, c2wj)
  coverage = float(jnp.mean(shared(flat_p, flat_c, Kj, c2wj).mask))

  print(json.dumps(dict(
      benchmark='geometry', small=args.small, backend=jax.default_backend(),
      device=str(jax.devices()[0].device_kind), views=n, image_size=size,
      postopt=dict(ms=round(po['mean_s'] * 1e3, 3), first_call_s=round(po['first_call_s'], 3),
                   max_rot_err_deg=float(rot_err.max()), depth_absrel=absrel,
                   max_focal_rel_err=focal_err, all_ok=bool(np.asarray(res.ok).all()),
                   lbfgs_iterations=np.asarray(res.iterations).tolist()),
      raster_per_view=dict(points_per_view=points_per_view, ms=round(rv['mean_s'] * 1e3, 3),
                           first_call_s=round(rv['first_call_s'], 3)),
      raster_shared=dict(points=n * points_per_view, ms=round(rs['mean_s'] * 1e3, 3),
                         first_call_s=round(rs['first_call_s'], 3), coverage=coverage),
      goals_h100=dict(postopt_ms=500, raster_ms=5),
  )))


if __name__ == '__main__':
  main()
