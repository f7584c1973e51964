"""Loss-curve parity of FP8 training: the same run with model.fp8 off and on; prints JSON.

Both runs train the given config (default configs/small.py) through `python -m wvd_jax.main`
from the same seed on the same rendered data for --steps steps, logging every --log_every; the
report gives both loss curves, their largest relative gap over windows of --window logged
points (the loss is noisy step to step: each step draws its own times and noise), and the
training speed of each (steps/s and MFU, as the train loop logs them).

  python benchmarks/fp8_parity.py --workdir /tmp/fp8 --steps 600          # GPU, configs/small
  python benchmarks/fp8_parity.py --workdir /tmp/fp8 --small              # CPU smoke test
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def train(workdir, config, overrides, fp8):
  run_dir = os.path.join(workdir, 'fp8' if fp8 else 'plain')
  cmd = [sys.executable, '-m', 'wvd_jax.main', f'--config={config}', f'--workdir={run_dir}',
         f'--config.model.fp8={fp8}', *overrides]
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False,
                        env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                            p for p in (REPO, os.environ.get('PYTHONPATH', '')) if p)))
  if proc.returncode:
    raise SystemExit(f'error: {" ".join(cmd)} failed:\n{proc.stderr[-3000:]}')
  with open(os.path.join(run_dir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f if '"train/loss"' in line]
  return rows


def windowed(values, window):
  values = np.asarray(values, np.float64)
  usable = len(values) // window * window
  return values[:usable].reshape(-1, window).mean(axis=1)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--config', default='configs/small.py')
  parser.add_argument('--steps', type=int, default=600)
  parser.add_argument('--log_every', type=int, default=10)
  parser.add_argument('--window', type=int, default=10, help='logged points a window')
  parser.add_argument('--small', action='store_true', help='configs/demo.py, tiny, CPU')
  args, extra = parser.parse_known_args()
  overrides = [f'--config.train.num_steps={args.steps}',
               f'--config.train.log_every={args.log_every}',
               '--config.train.eval_every=1000000', '--config.train.checkpoint_every=1000000',
               '--config.train.max_minutes=0', '--config.train.log_sample_grids=False',
               f'--config.data.data_dir={os.path.join(args.workdir, "data")}', *extra]
  if args.small:
    args.config = 'configs/demo.py'
    overrides += ['--config.model.width=32', '--config.model.depth=1',
                  '--config.data.num_train_scenes=8', '--config.data.batch_size=4']
  runs = {name: train(args.workdir, args.config, overrides, fp8)
          for name, fp8 in (('plain', False), ('fp8', True))}
  curves = {name: [r['train/loss'] for r in rows] for name, rows in runs.items()}
  plain, fp8 = (windowed(curves[n], args.window) for n in ('plain', 'fp8'))
  gap = np.abs(fp8 - plain) / plain
  speed = {name: {'steps_per_sec': float(np.median([r['train/steps_per_sec'] for r in rows[1:]]
                                                   or [np.nan])),
                  'mfu': float(np.median([r.get('train/mfu', np.nan) for r in rows[1:]]
                                         or [np.nan]))}
           for name, rows in runs.items()}
  print(json.dumps({
      'benchmark': 'fp8_parity', 'config': args.config, 'steps': args.steps,
      'windowed_loss': {'plain': plain.round(5).tolist(), 'fp8': fp8.round(5).tolist()},
      'max_relative_gap': float(gap.max()) if gap.size else None,
      'last_window_relative_gap': float(gap[-1]) if gap.size else None,
      'speed': speed,
      'speedup': speed['plain']['steps_per_sec'] and
                 speed['fp8']['steps_per_sec'] / speed['plain']['steps_per_sec'],
  }))


if __name__ == '__main__':
  main()
