"""Cost of the multi-host stop check (training/train.py StopCheck): one tiny all-gather of each
process's stop reasons, with a host sync, every train.stop_check_every steps.

  python benchmarks/stop_check.py --small            # 2 CPU processes (gloo), a smoke run
  python benchmarks/stop_check.py --processes 2      # on a 2-GPU host: one GPU a process (NCCL)

Starts the processes itself and prints one JSON line: the seconds of one check (median over
--calls), and of one check right after a queued matmul (what a train step pays: the host waits
for the queued work, then the collective).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np


def _child(args):
  import jax  # pylint: disable=import-outside-toplevel
  if args.small:
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(f'127.0.0.1:{args.port}', num_processes=args.processes,
                             process_id=args.process_id)
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from tests.conftest import tiny_config  # pylint: disable=import-outside-toplevel
  from wvd_jax.training import train  # pylint: disable=import-outside-toplevel
  config = tiny_config()
  config.train.stop_check_every = 1
  check = train.StopCheck(config)
  size = 256 if args.small else 8192
  x = jnp.ones((size, size), jnp.float32)
  matmul = jax.jit(lambda a: a @ a)
  for _ in range(3):  # Warm-up: compiles and sets up the collectives.
    check(0)
    matmul(x).block_until_ready()
  alone, after_work, work = [], [], []
  for step in range(args.calls):
    start = time.perf_counter()
    check(step)
    alone.append(time.perf_counter() - start)
    start = time.perf_counter()
    matmul(x).block_until_ready()
    work.append(time.perf_counter() - start)
    y = matmul(x)  # Queued, not waited for: the check's host sync waits behind it.
    start = time.perf_counter()
    check(step)
    after_work.append(time.perf_counter() - start)
    y.block_until_ready()
  if jax.process_index() == 0:
    print(json.dumps({
        'benchmark': 'stop_check', 'processes': jax.process_count(),
        'devices': jax.device_count(), 'device': jax.devices()[0].device_kind,
        'check_s': float(np.median(alone)), 'check_after_queued_matmul_s': float(np.median(after_work)),
        'matmul_s': float(np.median(work)), 'calls': args.calls}), flush=True)
  jax.distributed.shutdown()


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--small', action='store_true', help='CPU processes with gloo')
  parser.add_argument('--processes', type=int, default=2)
  parser.add_argument('--calls', type=int, default=50)
  parser.add_argument('--process_id', type=int, default=-1, help=argparse.SUPPRESS)
  parser.add_argument('--port', type=int, default=0, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.process_id >= 0:
    return _child(args)
  import portpicker  # pylint: disable=import-outside-toplevel
  port = portpicker.pick_unused_port()
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  procs = []
  for i in range(args.processes):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([repo, os.environ.get('PYTHONPATH', '')]))
    if not args.small:
      env['CUDA_VISIBLE_DEVICES'] = str(i)
    procs.append(subprocess.Popen(
        [sys.executable, __file__, '--process_id', str(i), '--port', str(port),
         '--processes', str(args.processes), '--calls', str(args.calls)]
        + (['--small'] if args.small else []), env=env))
  codes = [p.wait() for p in procs]
  sys.exit(max(codes))


if __name__ == '__main__':
  main()
