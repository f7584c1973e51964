"""Our train step against the PyTorch peer, both measured in this run on this GPU; prints JSON.

The peer (`peer_dit.py torch 28 4`: the 2B DiT shape, torch.compile, SDPA, fused AdamW) is not
part of this repository: it lives in the workspace's shared bench folder and is run from there.
Device calls send only the repository, so copy it into the ignored folder `.peer/` first
(`make peer`, i.e. `mkdir -p .peer && cp ../shared/bench/peer_dit.py .peer/`) and carry `.peer`.

Order: peer, ours, peer again. The peer's figure is the mean of its two runs, and their spread
is reported, so a clock or thermal drift during our run shows instead of hiding in the ratio.

  python benchmarks/vs_peer.py -- --batch 4 --parts 0               # wvd_2b, latents
  python benchmarks/vs_peer.py --peer .peer/peer_dit.py -- --batch 4 --data pixels
  python benchmarks/vs_peer.py --peer_only                          # the peer alone
  python benchmarks/vs_peer.py --small                              # CPU smoke test: no peer

Everything after `--` goes to benchmarks/train_step.py unchanged.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER_LINE = re.compile(r'^torch: step ([0-9.]+) ms')
GOAL_RATIO = 0.9  # Issue 19: our full step at most 0.9x the peer's.


def run_peer(path: str, peer_args: list[str], timeout: float) -> dict:
  """Runs the peer script from its own folder; returns {'step_ms', 'line'}."""
  if not os.path.isfile(path):
    raise SystemExit(f'error: peer script {path} not found: run `make peer` (copies '
                     '../shared/bench/peer_dit.py into the ignored .peer/) and carry .peer')
  folder, name = os.path.split(os.path.abspath(path))
  proc = subprocess.run([sys.executable, name, *peer_args], cwd=folder, capture_output=True,
                        text=True, timeout=timeout, check=False)
  for line in proc.stdout.splitlines():
    match = PEER_LINE.match(line)
    if match:
      return {'step_ms': float(match.group(1)), 'line': line.strip()}
  raise SystemExit(f'error: the peer printed no step time (exit {proc.returncode}):\n'
                   f'{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}')


def run_ours(train_step_args: list[str], timeout: float) -> dict:
  """Runs benchmarks/train_step.py; returns its JSON object."""
  proc = subprocess.run([sys.executable, os.path.join(REPO, 'benchmarks', 'train_step.py'),
                         *train_step_args], capture_output=True, text=True, timeout=timeout,
                        check=False, env=dict(os.environ, PYTHONPATH=REPO))
  objects = [line for line in proc.stdout.splitlines() if line.startswith('{')]
  if proc.returncode or not objects:
    raise SystemExit(f'error: train_step.py failed (exit {proc.returncode}):\n'
                     f'{proc.stderr[-3000:]}')
  return json.loads(objects[-1])


def compare(peer_ms: list[float], ours: dict) -> dict:
  """The JSON record: both figures, their ratio and the goal."""
  peer = sum(peer_ms) / len(peer_ms)
  return {
      'benchmark': 'vs_peer', 'device': ours.get('device'),
      'peer_step_ms_runs': peer_ms, 'peer_step_ms': round(peer, 2),
      'peer_spread_pct': round(100 * (max(peer_ms) - min(peer_ms)) / peer, 2),
      'step_ms': ours['step_ms'], 'ratio_to_peer': round(ours['step_ms'] / peer, 4),
      'goal_ratio': GOAL_RATIO, 'goal_met': ours['step_ms'] <= GOAL_RATIO * peer,
      'ours': ours,
  }


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  ours_args = argv[argv.index('--') + 1:] if '--' in argv else []
  own = argv[:argv.index('--')] if '--' in argv else argv
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--peer', default=os.path.join(REPO, '.peer', 'peer_dit.py'))
  parser.add_argument('--peer_args', default='torch 28 4')
  parser.add_argument('--timeout', type=float, default=300)
  parser.add_argument('--peer_only', action='store_true',
                      help='run the peer once and print its figure (benchmarks/run_gpu.sh speed '
                           'brackets its own runs with two of these)')
  parser.add_argument('--small', action='store_true',
                      help='CPU smoke test: train_step.py --small, the peer not run')
  args = parser.parse_args(own)
  if args.small:
    ours = run_ours(['--small', '--parts', '0', '--steps', '2', *ours_args], args.timeout)
    print(json.dumps(compare([ours['step_ms']], ours)))
    return
  if args.peer_only:
    peer = run_peer(args.peer, args.peer_args.split(), args.timeout)
    print(json.dumps({'benchmark': 'peer', 'peer_args': args.peer_args, **peer}))
    return
  peer_runs = [run_peer(args.peer, args.peer_args.split(), args.timeout)]
  ours = run_ours(ours_args, args.timeout)
  peer_runs.append(run_peer(args.peer, args.peer_args.split(), args.timeout))
  record = compare([r['step_ms'] for r in peer_runs], ours)
  record['peer_lines'] = [r['line'] for r in peer_runs]
  print(json.dumps(record))


if __name__ == '__main__':
  main()
