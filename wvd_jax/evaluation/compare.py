"""Side-by-side table of several evaluation runs (e.g. WVD and its RGB-only ablation).

  python -m wvd_jax.evaluation.compare wvd=RUN_A/eval/results.json \
      rgb_only=RUN_B/eval/results.json [--output=table.md]

Rows are the pooled metrics present in any run (section/metric), columns the runs; a metric a
run lacks (an RGB-only model has no depth or cameras) shows as '–'.
"""
from __future__ import annotations

import json
import sys

from wvd_jax import errors, files
from wvd_jax.evaluation import report


def load_results(path: str) -> dict:
  try:
    with open(path) as f:
      results = json.load(f)
  except FileNotFoundError as e:
    raise errors.UserError(f'no evaluation results at {path} (run --mode=eval first)') from e
  except json.JSONDecodeError as e:
    raise errors.UserError(f'{path} is not valid JSON: {e}') from e
  if 'metrics' not in results:
    raise errors.UserError(f'{path} has no "metrics": not a results.json of --mode=eval')
  return results


def table(runs: dict[str, dict]) -> str:
  """Markdown table of the runs' pooled metrics ({name: results.json contents})."""
  rows = []
  for results in runs.values():
    for section, values in results['metrics'].items():
      for key, value in values.items():
        if isinstance(value, (int, float)) and (section, key) not in rows:
          rows.append((section, key))
  names = list(runs)
  lines = ['| metric | ' + ' | '.join(names) + ' |', '|---' * (len(names) + 1) + '|']
  for section, key in rows:
    cells = [report.format_value(runs[n]['metrics'].get(section, {}).get(key)) for n in names]
    lines.append(f'| {section}/{key} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def main(argv: list[str]) -> int:
  """argv: NAME=results.json ... [--output=table.md]. (No absl flags: this module is imported
  by other programs, whose flags would clash.)"""
  output = [a.split('=', 1)[1] for a in argv if a.startswith('--output=')]
  pairs = [a for a in argv if not a.startswith('--output=')]
  if not pairs or any('=' not in p or p.startswith('-') for p in pairs):
    print('usage: python -m wvd_jax.evaluation.compare NAME=results.json ... [--output=F.md]',
          file=sys.stderr)
    return 2
  try:
    runs = {name: load_results(path) for name, path in (p.split('=', 1) for p in pairs)}
  except errors.UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  text = table(runs)
  if output:
    with files.atomic_write(output[-1], 'w') as f:
      f.write(text)
  else:
    sys.stdout.write(text)
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
