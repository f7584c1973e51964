"""Many-view reconstruction (tasks/many_views.py): time and peak memory at 50, 100 and 200 views.

An oracle generator stands in for the model (tests/tasks/test_many_views.py: each window's true
XYZ of a box room, as the generator contract asks; two samples a window), so the figures are
those of the windowing, the Sim(3) chaining, the window post-optimizations and the joint
refinement, not of sampling. Peak memory: host
(tracemalloc, Python allocations) and, where the backend reports it, the device's peak bytes
in use since the start (cumulative: read how it grows from size to size).
Compilation is excluded (one warm-up run). Prints one JSON object.

  python benchmarks/many_views_bench.py [--small]     # --small: CPU, 20 px, window 8
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--small', action='store_true', help='CPU smoke sizes (20 px)')
  parser.add_argument('--views', default='50,100,200')
  args = parser.parse_args()
  if args.small:
    os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  import jax
  from tests.tasks import test_many_views as oracle_lib
  if not args.small:
    oracle_lib.SIZE = 64

  def device_peak():
    stats = jax.devices()[0].memory_stats()
    return None if not stats else stats.get('peak_bytes_in_use')

  oracle_lib._run(oracle_lib.WINDOW + 1)  # compile  # pylint: disable=protected-access
  rows = {}
  for n in (int(v) for v in args.views.split(',')):
    peak, elapsed = oracle_lib._peak_and_time(n)  # pylint: disable=protected-access
    rows[n] = dict(seconds=round(elapsed, 3), ms_per_view=round(elapsed / n * 1e3, 2),
                   host_peak_mb=round(peak / 1e6, 3), device_peak_bytes_so_far=device_peak())
  print(json.dumps(dict(benchmark='many_views', small=args.small, backend=jax.default_backend(),
                        image_size=oracle_lib.SIZE, window=oracle_lib.WINDOW,
                        anchors=oracle_lib.ANCHORS, results=rows), indent=1))


if __name__ == '__main__':
  main()
