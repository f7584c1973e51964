"""Pose accuracy by camera motion, and the worst clips, from an eval's per_clip.jsonl.

Every frame pair's true relative rotation angle is the identity-camera baseline's rotation error
(``pose_baseline/rre``), so the pairs can be binned by how far the cameras truly moved. Prints
a markdown table: pairs, RRA@5/@15 and RTA@15 per bin, then the clips with the largest median
rotation error and monocular AbsRel.

  python benchmarks/pose_bins.py RUN/wvd/eval/per_clip.jsonl [--bins 0,5,10,20,30,180]
"""
from __future__ import annotations

import argparse
import gzip
import json

import numpy as np


def load(path):
  opener = gzip.open if path.endswith('.gz') else open
  with opener(path, 'rt') as f:
    return [json.loads(line) for line in f]


def motion_table(clips, edges) -> str:
  rre = np.concatenate([np.asarray(c['pose/rre'], float) for c in clips])
  rte = np.concatenate([np.asarray(c['pose/rte'], float) for c in clips])
  motion = np.concatenate([np.asarray(c['pose_baseline/rre'], float) for c in clips])
  lines = ['| true rotation (deg) | pairs | RRA@5 | RRA@15 | RTA@15 | median rot. error |',
           '|---|---|---|---|---|---|']
  for lo, hi in zip(edges[:-1], edges[1:]):
    sel = (motion >= lo) & (motion < hi)
    if not sel.any():
      continue
    lines.append(f'| {lo:g}-{hi:g} | {int(sel.sum())} | {np.mean(rre[sel] < 5):.3f} | '
                 f'{np.mean(rre[sel] < 15):.3f} | {np.mean(rte[sel] < 15):.3f} | '
                 f'{np.median(rre[sel]):.1f} |')
  return '\n'.join(lines)


def worst_clips(clips, count) -> str:
  lines = ['| clip | median rot. error (deg) | median true rotation | mono AbsRel | constant |',
           '|---|---|---|---|---|']
  order = sorted(clips, key=lambda c: -float(np.median(c['pose/rre'])))[:count]
  for c in order:
    lines.append(f"| {c['clip']} | {np.median(c['pose/rre']):.1f} | "
                 f"{np.median(c['pose_baseline/rre']):.1f} | {c['mono/abs_rel']:.3f} | "
                 f"{c['mono_baseline/abs_rel']:.3f} |")
  return '\n'.join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('per_clip')
  parser.add_argument('--bins', default='0,5,10,20,30,180')
  parser.add_argument('--worst', type=int, default=5)
  args = parser.parse_args()
  clips = [c for c in load(args.per_clip) if 'pose/rre' in c]
  edges = [float(e) for e in args.bins.split(',')]
  print(motion_table(clips, edges))
  print()
  print(worst_clips(clips, args.worst))


if __name__ == '__main__':
  main()
