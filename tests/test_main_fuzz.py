"""CLI fuzz: malformed flags, config files, inputs, camera paths and checkpoints for every mode.

Each must end with exit status 2 and one line `error: ...` on stderr naming the problem, with no
traceback (unless --verbose), and leave nothing half-written. The cases run in one subprocess
(tests/main_fuzz_worker.py calls main.cli in-process, one JAX start-up); two more run as real
`python -m wvd_jax.main` processes to prove the real exit path.
"""
import json
import os
import subprocess
import sys
import time

from tests.conftest import REPO
from wvd_jax import config_lib


def _problems(case: dict) -> list[str]:
  """What is wrong with how one malformed command line ended (empty: it ended well)."""
  problems = []
  lines = [l for l in case['stderr'].splitlines() if l.strip()]
  if case['status'] != 2:
    problems.append(f'exit status {case["status"]}')
  if 'Traceback' in case['stderr']:
    problems.append('traceback')
  if not lines or not lines[-1].startswith('error: '):
    problems.append(f'last stderr line {lines[-1:]}')
  if sum(l.startswith('error: ') for l in lines) != 1:
    problems.append('not exactly one error line')
  if 'wrote ' in case['stdout']:
    problems.append('claims to have written')
  return problems


def test_cli_fuzz_every_mode(tmp_path):
  start = time.time()
  results_path = str(tmp_path / 'results.json')
  proc = subprocess.run([sys.executable, '-m', 'tests.main_fuzz_worker', str(tmp_path),
                         results_path], cwd=REPO, capture_output=True, text=True, timeout=400)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(results_path) as f:
    stored = json.load(f)
  results, fixtures = stored['results'], stored['fixtures']
  cases = [r for r in results if r['name'] != 'verbose']
  failed = {c['name']: _problems(c) for c in cases if _problems(c)}
  for c in cases:
    print(f'{c["status"]} {c["name"]}: {c["stderr"].strip().splitlines()[-1][:150]}')
  print(f'CLI fuzz: {len(cases)} malformed command lines, {len(cases) - len(failed)} ended with '
        f'one error line and status 2, in {time.time() - start:.1f} s (one process)')
  assert not failed, failed
  assert len(cases) >= 30
  modes = {a.split('=', 1)[1] for c in cases for a in c['argv'] if a.startswith('--mode=')}
  assert set(config_lib.MODES) - {'train'} <= modes  # train is the default mode.
  verbose = results[-1]
  assert verbose['name'] == 'verbose' and verbose['status'] == 2
  assert 'Traceback' in verbose['stderr'] and 'UserError' in verbose['stderr']
  # Nothing half-written: no temporary files, no task output, the empty workdir still empty.
  leftovers = [os.path.join(root, n) for root, dirs, names in os.walk(tmp_path)
               for n in names + dirs if 'tmp' in n]
  assert not leftovers
  assert not os.path.exists(fixtures['out'])
  assert not os.listdir(fixtures['empty'])
  # The architecture check ran before orbax read anything, and named both values.
  by_name = {c['name']: c['stderr'] for c in cases}
  assert 'model.width: config 96 vs checkpoint 48' in by_name[
      'train on a checkpoint of another model']
  assert 'neither a preset (orbit, dolly, pan)' in by_name['unknown camera preset']


def test_real_processes_exit_cleanly(tmp_path):
  """Two true `python -m wvd_jax.main` runs: a config error and an unreadable image."""
  image = tmp_path / 'truncated.png'
  image.write_bytes(b'\x89PNG\r\n\x1a\n' + b'\x00' * 40)
  for extra, expected in ((['--config.foo=1'], 'unknown key (foo)'),
                          (['--mode=depth', f'--input={image}'], 'cannot read image')):
    proc = subprocess.run([sys.executable, '-m', 'wvd_jax.main', '--config=configs/demo.py',
                           f'--workdir={tmp_path}/w', *extra], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
    assert lines[-1].startswith('error: ') and expected in lines[-1], lines[-1]
  assert not os.path.exists(tmp_path / 'w')
