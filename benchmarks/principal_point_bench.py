"""Which principal-point mode works best on generated-like XYZ: fixed at the image centre,
shared across views, or per view (post_optimization.PRINCIPAL_POINT_MODES).

Generated XYZ is modelled as exact XYZ images of a box room (benchmarks/geometry_bench.py) plus
i.i.d. Gaussian noise of a fraction of the scene's RMS radius per point; the true principal
point is the image centre (as in every training clip), and, as a control, off-centre (a cropped
photograph). Prints one JSON object: per case and mode, the focal's and principal point's
relative errors, the largest rotation error (degrees) and depth AbsRel.

  python benchmarks/principal_point_bench.py [--small]
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--small', action='store_true', help='CPU smoke sizes (8 views, 32 px)')
  parser.add_argument('--seeds', type=int, default=None, help='scenes per case (2; 4 full)')
  args = parser.parse_args()
  if args.small:
    os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  import jax
  from benchmarks.geometry_bench import box_room_clip
  from wvd_jax.geometry import cameras, post_optimization, rotations
  n, size = (8, 32) if args.small else (16, 128)
  seeds = args.seeds or (2 if args.small else 4)
  cases = [('centre', 0.0), ('centre', 0.005), ('centre', 0.01), ('centre', 0.02),
           ('off_centre', 0.0), ('off_centre', 0.01)]
  out = {}
  for where, noise in cases:
    rows = {m: [] for m in post_optimization.PRINCIPAL_POINT_MODES}
    for seed in range(seeds):
      xyz, depth, K, c2w = box_room_clip(n, size, seed)
      if where == 'off_centre':  # the same cameras, K's principal point moved (a crop)
        K = K.copy()
        K[:, :2, 2] = [size * 0.6, size * 0.42]
        xyz = cameras.unproject_depth(depth, K, c2w)
      rng = np.random.default_rng(100 + seed)
      radius = np.sqrt(np.mean(np.sum((xyz - xyz.mean((0, 1, 2))) ** 2, -1)))
      noisy = (xyz + rng.normal(size=xyz.shape) * noise * radius).astype(np.float32)
      for mode in rows:
        res = post_optimization.post_optimize(noisy, principal_point_mode=mode)
        jax.block_until_ready(res)
        k_est = np.asarray(res.K, np.float64)
        est_rot = np.asarray(res.cam_to_world, np.float64)[:, :3, :3]
        rot = np.rad2deg(rotations.rotation_angle(c2w[:, :3, :3], est_rot))
        rows[mode].append(dict(
            focal_rel_err=float(np.max(np.abs(k_est[:, 0, 0] / K[:, 0, 0] - 1))),
            pp_rel_err=float(np.max(np.abs(k_est[:, :2, 2] - K[:, :2, 2])) / size),
            max_rot_err_deg=float(rot.max()),
            depth_absrel=float(np.mean(np.abs(np.asarray(res.depth) - depth) / depth))))
    out[f'{where}_noise_{noise}'] = {
        m: {k: float(np.mean([r[k] for r in v])) for k in v[0]} for m, v in rows.items()}
  print(json.dumps(dict(benchmark='principal_point', small=args.small,
                        backend=jax.default_backend(), views=n, image_size=size, seeds=seeds,
                        results=out), indent=1))


if __name__ == '__main__':
  main()
