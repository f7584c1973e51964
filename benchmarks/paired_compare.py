"""Two evaluations of the same test clips compared clip by clip, with a bootstrap interval.

Each `--mode=eval` writes per_clip.jsonl(.gz): one JSON object a clip with its 'clip' index and
per-clip metrics. This pairs two such files on their common clips and reports, for a metric,
both means, the mean difference (A - B) and its 95% interval from resampling clips (paired
bootstrap: the same clips for both models in each resample), and how many clips each wins.
For key-point matches ('kpm'), per-clip 'kpm/generated' are averaged and divided by the mean
of the same evaluation's 'kpm/ground_truth' (as the eval's KPM percentage is). Pose accuracies
('pose/rra@T', 'pose/rta@T', 'pose/maa@T', T in degrees) pool every frame pair of the clips
drawn, from the per-clip pair errors 'pose/rre' and 'pose/rte', as the eval does
(evaluation/pose_metrics.pose_accuracy: strict '<').

  python benchmarks/paired_compare.py A/per_clip.jsonl.gz B/per_clip.jsonl.gz --metric kpm
  python benchmarks/paired_compare.py A/... B/... --metric mono/abs_rel
  python benchmarks/paired_compare.py A/... B/... --metric pose/rra@5
"""
from __future__ import annotations

import argparse
import gzip
import json
import re

import numpy as np


def load_clips(path: str) -> dict[int, dict]:
  """{clip index: per-clip record} of a per_clip.jsonl or .jsonl.gz file."""
  opener = gzip.open if path.endswith('.gz') else open
  records = {}
  with opener(path, 'rt') as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f'{path}:{number}: not a JSON line ({e})') from None
      if 'clip' not in record:
        raise ValueError(f'{path}:{number}: no "clip" index in the record')
      records[int(record['clip'])] = record
  if not records:
    raise ValueError(f'{path}: no clips')
  return records


def _values(records: dict[int, dict], clips: list[int], key: str, path: str) -> np.ndarray:
  missing = [c for c in clips if key not in records[c]]
  if missing:
    raise ValueError(f'{path}: {len(missing)} clip(s) lack {key!r} (first: clip {missing[0]}); '
                     f'keys there: {sorted(records[missing[0]])}')
  return np.array([float(records[c][key]) for c in clips])


_POSE = re.compile(r'^pose/(rra|rta|maa)@(\d+(?:\.\d+)?)$')


def _pose_counts(records: dict[int, dict], clips: list[int], metric: str,
                 path: str) -> tuple[np.ndarray, np.ndarray]:
  """Per clip: (pairs within the threshold, pairs) for a pose accuracy; for mAA@T the count is
  the mean over k = 1..T of the pairs with max(rre, rte) < k."""
  kind, threshold = _POSE.match(metric).groups()
  threshold = float(threshold)
  rre = [np.asarray(r, np.float64) for r in _lists(records, clips, 'pose/rre', path)]
  rte = [np.asarray(r, np.float64) for r in _lists(records, clips, 'pose/rte', path)]
  if kind == 'maa':
    ks = np.arange(1, int(threshold) + 1, dtype=np.float64)
    within = [np.mean(np.maximum(r, t)[None, :] < ks[:, None], axis=0).sum()
              for r, t in zip(rre, rte)]
  else:
    within = [np.sum(e < threshold) for e in (rre if kind == 'rra' else rte)]
  return np.array(within, np.float64), np.array([len(r) for r in rre], np.float64)


def _lists(records, clips, key, path):
  missing = [c for c in clips if not isinstance(records[c].get(key), list)]
  if missing:
    raise ValueError(f'{path}: {len(missing)} clip(s) lack the list {key!r} (first: clip '
                     f'{missing[0]}): an evaluation without the pose task?')
  return [records[c][key] for c in clips]


def compare(a: dict[int, dict], b: dict[int, dict], metric: str, resamples: int = 10000,
            seed: int = 0, names: tuple[str, str] = ('A', 'B')) -> dict:
  """Paired comparison of ``metric`` on the clips both evaluations have."""
  clips = sorted(set(a) & set(b))
  if not clips:
    raise ValueError('the two evaluations share no clip index')
  kpm = metric == 'kpm'
  if _POSE.match(metric):  # Pooled over pairs: a ratio of sums.
    (va, sa), (vb, sb) = (_pose_counts(r, clips, metric, n) for r, n in zip((a, b), names))
  else:
    key = 'kpm/generated' if kpm else metric
    va, vb = _values(a, clips, key, names[0]), _values(b, clips, key, names[1])
    # KPM is a ratio of means, each evaluation's over its own count of the true clips' matches
    # (RANSAC makes that count differ slightly between runs).
    ones = np.ones(len(clips))
    sa = _values(a, clips, 'kpm/ground_truth', names[0]) if kpm else ones
    sb = _values(b, clips, 'kpm/ground_truth', names[1]) if kpm else ones
  summary = lambda v, s: float(v.mean() / s.mean() * (100.0 if kpm else 1.0))
  rng = np.random.default_rng(seed)
  picks = rng.integers(0, len(clips), size=(resamples, len(clips)))
  diffs = np.array([summary(va[p], sa[p]) - summary(vb[p], sb[p]) for p in picks])
  low, high = np.percentile(diffs, [2.5, 97.5])
  # Clip by clip only where both have something to divide by: a clip with no true matches (KPM)
  # or no camera pair (pose) counts in the means above but wins for neither model.
  defined = (sa > 0) & (sb > 0)
  ra = np.divide(va, sa, out=np.zeros_like(va), where=defined)
  rb = np.divide(vb, sb, out=np.zeros_like(vb), where=defined)
  return {'metric': metric, 'clips': len(clips), 'a': summary(va, sa), 'b': summary(vb, sb),
          'difference': summary(va, sa) - summary(vb, sb),
          'interval_95': [float(low), float(high)],
          'a_better_clips': int(np.sum(defined & (ra > rb))),
          'b_better_clips': int(np.sum(defined & (rb > ra))),
          'ties': int(np.sum(defined & (ra == rb))),
          'undefined_clips': int(np.sum(~defined))}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('a', help="model A's per_clip.jsonl(.gz)")
  parser.add_argument('b', help="model B's per_clip.jsonl(.gz)")
  parser.add_argument('--metric', default='kpm',
                      help="'kpm' (percent of the true clips' matches), 'pose/rra@T', "
                      "'pose/rta@T', 'pose/maa@T' (pooled over pairs) or a per-clip key")
  parser.add_argument('--resamples', type=int, default=10000)
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args(argv)
  result = compare(load_clips(args.a), load_clips(args.b), args.metric, args.resamples,
                   args.seed, names=(args.a, args.b))
  print(json.dumps(result))
  low, high = result['interval_95']
  print(f"{args.metric}: A {result['a']:.4g}, B {result['b']:.4g}, A - B {result['difference']:+.4g} "
        f"(95% paired bootstrap {low:+.4g} .. {high:+.4g}) on {result['clips']} clips; "
        f"higher for A on {result['a_better_clips']}, for B on {result['b_better_clips']}"
        + (f", {result['undefined_clips']} without a per-clip value" if result['undefined_clips']
           else ''))
  return result


if __name__ == '__main__':
  main()
