"""launch/proof_run.sh's bookkeeping: watch, finish and packing, on run directories faked from
the files its steps leave behind (the steps themselves are the tested train and eval modes)."""
import json
import os
import shutil
import subprocess
import sys
import tarfile

import pytest

from tests.conftest import REPO

SCRIPT = os.path.join(REPO, 'launch', 'proof_run.sh')
RESULTS = os.path.join(REPO, 'benchmarks', 'proof_run_2026-11-26_14min')


def _proof_run(*args, timeout=60):
  env = dict(os.environ, PYTHON=sys.executable, PATH='/usr/bin:/bin')  # No nvidia-smi: 0 GPUs.
  return subprocess.run(['bash', SCRIPT, *map(str, args)], cwd=REPO, env=env, text=True,
                        capture_output=True, timeout=timeout, check=False)


def _step(run, name, mode, rc=None, log='step log\n'):
  (run / f'{name}.{mode}.log').write_text(log)
  if rc is not None:
    (run / f'{name}.{mode}.rc').write_text(f'{rc}\n')


def _evaluated(run, name):
  for mode in ('train', 'export', 'ship', 'eval'):
    _step(run, name, mode, rc=0)
  (run / name / 'eval').mkdir(parents=True)
  shutil.copy(os.path.join(RESULTS, f'results_{name}.json'), run / name / 'eval' / 'results.json')
  (run / name / 'eval' / 'report.md').write_text(f'# report of {name}\n')
  (run / name / 'metrics.jsonl').write_text('{"step": 100}\n')


def test_finish_compares_and_packs_two_evaluated_runs(tmp_path):
  run, out = tmp_path / 'run', tmp_path / 'out'
  run.mkdir()
  for name, matches in (('wvd', 3.0), ('rgb_only', 4.0)):
    _evaluated(run, name)
    (run / name / 'eval' / 'per_clip.jsonl').write_text(''.join(
        json.dumps({'clip': i, 'kpm/generated': matches + i % 2, 'kpm/ground_truth': 16.0}) + '\n'
        for i in range(8)))
  _packed(run)
  result = _proof_run('finish', run, out)
  assert result.returncode == 0, result.stdout + result.stderr
  comparison = (out / 'comparison.md').read_text()
  assert '| kpm/kpm_percent | 21.12 | 29.93 |' in comparison
  # Clip by clip: 3.5 / 16 against 4.5 / 16 matches, the same difference on every clip.
  assert '- eval: kpm: A 21.88, B 28.12, A - B -6.25 (95% paired bootstrap -6.25 .. -6.25) on 8 ' \
         'clips; higher for A on 0, for B on 8' in comparison, comparison
  assert '# report of wvd' in result.stdout
  with tarfile.open(out / 'eval_wvd.tgz') as archive:
    assert 'eval/results.json' in archive.getnames()
  with tarfile.open(out / 'logs.tgz') as archive:
    assert {'wvd.train.log', 'rgb_only.eval.log', 'wvd/metrics.jsonl'} <= set(archive.getnames())


def test_finish_of_an_unfinished_run_packs_the_logs_and_fails(tmp_path):
  run, out = tmp_path / 'run', tmp_path / 'out'
  run.mkdir()
  _evaluated(run, 'wvd')
  _step(run, 'rgb_only', 'train')  # Still training: a log, no exit status.
  result = _proof_run('finish', run, out)
  assert result.returncode == 1
  assert 'wvd: done' in result.stdout and 'rgb_only: running' in result.stdout
  assert not (out / 'comparison.md').exists()
  with tarfile.open(out / 'logs.tgz') as archive:
    assert 'rgb_only.train.log' in archive.getnames()


def test_watch_fails_fast_with_the_failed_step_log(tmp_path):
  run = tmp_path / 'run'
  run.mkdir()
  _evaluated(run, 'wvd')
  _step(run, 'rgb_only', 'train', rc=1, log='Traceback: out of memory\n')
  result = _proof_run('watch', run, 600, timeout=20)  # Would sleep if it missed the failure.
  assert result.returncode == 1
  assert 'rgb_only FAILED' in result.stdout and 'out of memory' in result.stdout


@pytest.mark.parametrize('done', [True, False])
def test_watch_returns_when_both_are_done_or_time_is_up(tmp_path, done):
  run = tmp_path / 'run'
  run.mkdir()
  _evaluated(run, 'wvd')
  if done:
    _evaluated(run, 'rgb_only')
  else:
    _step(run, 'rgb_only', 'eval')
    _step(run, 'rgb_only', 'train', rc=0)
  result = _proof_run('watch', run, 0, timeout=20)
  assert result.returncode == 0, result.stdout
  assert ('time is up' in result.stdout) != done


def test_unknown_phase_is_refused(tmp_path):
  result = _proof_run('begin', tmp_path)
  assert result.returncode == 2 and 'unknown phase begin' in result.stdout


def _packed(run, name='wvd'):
  """A packed tiny model where the ship step leaves it (RUN/NAME/shipped)."""
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from tests.conftest import tiny_config  # pylint: disable=import-outside-toplevel
  from wvd_jax.models import builder, shipped  # pylint: disable=import-outside-toplevel
  config = tiny_config()
  shipped.pack_params(config, nnx.to_pure_dict(nnx.state(builder.build_model(config))),
                      str(run / name / 'shipped'))


def _with_env(**env):
  env = dict(os.environ, PYTHON=sys.executable, PATH='/usr/bin:/bin', **env)

  def proof_run(*args):
    return subprocess.run(['bash', SCRIPT, *map(str, args)], cwd=REPO, env=env, text=True,
                          capture_output=True, timeout=60, check=False)
  return proof_run


def _variant(run, name, mode):
  _step(run, name, mode, rc=0)
  (run / name / mode).mkdir()
  shutil.copy(os.path.join(RESULTS, f'results_{name}.json'), run / name / mode / 'results.json')


def test_langevin_variants_are_steps_of_each_model(tmp_path):
  """PROOF_LANGEVIN adds eval_langevinK steps: a model is done only with them, and finish
  compares and packs every evaluation, and WVD's packed model as the shipped model."""
  run, out = tmp_path / 'run', tmp_path / 'out'
  run.mkdir()
  for name in ('wvd', 'rgb_only'):
    _evaluated(run, name)
  _packed(run)
  proof_run = _with_env(PROOF_LANGEVIN='1')
  result = proof_run('watch', run, 0)
  assert 'wvd: waiting' in result.stdout and 'time is up' in result.stdout  # No variant yet.
  for name in ('wvd', 'rgb_only'):
    _variant(run, name, 'eval_langevin1')
  result = proof_run('finish', run, out)
  assert result.returncode == 0, result.stdout + result.stderr
  header = (out / 'comparison.md').read_text().splitlines()[0]
  assert header == '| metric | wvd | wvd_langevin1 | rgb_only | rgb_only_langevin1 |'
  with tarfile.open(out / 'eval_wvd.tgz') as archive:
    assert {'eval/results.json', 'eval_langevin1/results.json'} <= set(archive.getnames())
  with tarfile.open(out / 'logs.tgz') as archive:
    assert 'wvd.eval_langevin1.log' in archive.getnames()
  assert (out / 'wvd_small' / 'manifest.json').is_file()


def test_wvd_alone_with_the_format_comparison(tmp_path):
  """PROOF_MODELS=wvd: RGB-only is neither waited for nor compared; PROOF_FORMAT_CLIPS adds the
  float32 / bf16 / int8 evaluations to WVD's steps."""
  run, out = tmp_path / 'run', tmp_path / 'out'
  run.mkdir()
  _evaluated(run, 'wvd')
  proof_run = _with_env(PROOF_MODELS='wvd', PROOF_FORMAT_CLIPS='16')
  result = proof_run('watch', run, 0)
  assert result.stdout.splitlines()[0] == 'wvd: waiting' and 'rgb_only' not in result.stdout
  for mode in ('eval_fp32', 'eval_bf16', 'eval_int8'):
    _variant(run, 'wvd', mode)
  result = proof_run('finish', run, out)
  assert result.returncode == 1  # Everything evaluated, but no packed model to ship.
  assert 'no packed WVD model yet' in result.stdout
  header = (out / 'comparison.md').read_text().splitlines()[0]
  assert header == '| metric | wvd | wvd_fp32 | wvd_bf16 | wvd_int8 |'
  _packed(run)
  assert proof_run('finish', run, out).returncode == 0
  assert (out / 'wvd_small' / 'manifest.json').is_file()


def test_ship_copies_the_packed_model_once_it_exists(tmp_path):
  run, out = tmp_path / 'run', tmp_path / 'out'
  (run / 'wvd').mkdir(parents=True)
  proof_run = _with_env()
  result = proof_run('ship', run, out)
  assert result.returncode == 1 and 'no packed WVD model yet' in result.stdout
  _packed(run)
  result = proof_run('ship', run, out)
  assert result.returncode == 0, result.stdout + result.stderr
  from wvd_jax.models import shipped  # pylint: disable=import-outside-toplevel
  manifest = shipped.read_manifest(str(out / 'wvd_small'))
  shipped.read_weights(str(out / 'wvd_small'), manifest)  # Checksums of the copy.


def test_ship_takes_the_first_wvd_variant_and_refuses_rgb_only_alone(tmp_path):
  run, out = tmp_path / 'run', tmp_path / 'out'
  result = _with_env(PROOF_MODELS='rgb_only')('ship', run, out)
  assert result.returncode == 1 and 'no WVD model in PROOF_MODELS' in result.stdout
  _packed(run, 'wvd_fast')
  result = _with_env(PROOF_MODELS='rgb_only wvd_fast wvd')('ship', run, out)
  assert result.returncode == 0 and "copied wvd_fast's" in result.stdout, result.stdout
  assert (out / 'wvd_small' / 'manifest.json').is_file()


def test_unknown_model_is_refused(tmp_path):
  result = _with_env(PROOF_MODELS='wvd rgb')('watch', tmp_path, 0)
  assert result.returncode == 2 and 'unknown model rgb in PROOF_MODELS' in result.stdout


def _fake_machine(tmp_path, gpus):
  """A PATH with an nvidia-smi listing `gpus` GPUs, and a python that only records each call's
  CUDA_VISIBLE_DEVICES and arguments (every step then succeeds at once)."""
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  smi = bin_dir / 'nvidia-smi'
  smi.write_text('#!/bin/sh\n' + ''.join(f'echo "GPU {i}: NVIDIA H200 (UUID: GPU-{i})"\n'
                                           for i in range(gpus)))
  python = bin_dir / 'python'
  python.write_text('#!/bin/sh\necho "gpu=${CUDA_VISIBLE_DEVICES-unset} $*" >> '
                    f'{tmp_path}/calls.txt\n')
  for tool in (smi, python):
    tool.chmod(0o755)
  env = dict(os.environ, PYTHON=str(python), PATH=f'{bin_dir}:/usr/bin:/bin')

  def proof_run(*args, **extra):
    return subprocess.run(['bash', SCRIPT, *map(str, args)], cwd=REPO, env=dict(env, **extra),
                          text=True, capture_output=True, timeout=60, check=False)
  return proof_run


def test_parallel_runs_each_model_on_its_own_gpu(tmp_path):
  run = tmp_path / 'run'
  proof_run = _fake_machine(tmp_path, gpus=2)
  result = proof_run('start', run, PROOF_PARALLEL='1', PROOF_MODELS='wvd_hd128 rgb_only')
  assert result.returncode == 0, result.stdout + result.stderr
  assert 'at the same time, one GPU each' in result.stdout
  result = proof_run('watch', run, 30, PROOF_PARALLEL='1', PROOF_MODELS='wvd_hd128 rgb_only')
  assert result.stdout.splitlines()[-2:] == ['wvd_hd128: done', 'rgb_only: done'], result.stdout
  calls = (tmp_path / 'calls.txt').read_text().splitlines()
  train = {line.split()[0]: line for line in calls if '--mode=train' in line}
  assert set(train) == {'gpu=0', 'gpu=1'}, calls  # One model a GPU.
  assert '--config.model.num_heads=3' in train['gpu=0'] and '--workdir=' in train['gpu=0']
  assert 'modalities=rgb' in train['gpu=1'] and 'num_heads' not in train['gpu=1']
  evals = [line for line in calls if '--mode=eval' in line]
  assert sorted(line.split()[0] for line in evals) == ['gpu=0', 'gpu=1']
  assert (run / 'sequence_wvd_hd128.log').exists() and (run / 'sequence_rgb_only.log').exists()


def test_parallel_needs_a_gpu_per_model(tmp_path):
  result = _fake_machine(tmp_path, gpus=1)('start', tmp_path / 'run', PROOF_PARALLEL='1')
  assert result.returncode == 2
  assert 'needs a GPU per model: 2 models, 1 GPU(s)' in result.stdout


def test_each_model_variant_trains_with_its_own_override(tmp_path):
  """One GPU, in turn: the variants' overrides reach their own train step and no other."""
  run = tmp_path / 'run'
  proof_run = _fake_machine(tmp_path, gpus=1)
  models = 'wvd wvd_xyz_shift2 wvd_hd128 wvd_w512 wvd_fast wvd_lean'
  assert proof_run('start', run, PROOF_MODELS=models).returncode == 0
  result = proof_run('watch', run, 30, PROOF_MODELS=models)
  assert result.stdout.splitlines()[-6:] == [f'{m}: done' for m in models.split()], result.stdout
  calls = (tmp_path / 'calls.txt').read_text().splitlines()
  train = {next(a.split('/')[-1] for a in line.split() if a.startswith('--workdir=')): line
           for line in calls if '--mode=train' in line}
  assert set(train) == set(models.split()), calls
  assert 'xyz_schedule_shift=2.0' in train['wvd_xyz_shift2']
  assert 'num_heads=3' in train['wvd_hd128']
  assert 'xyz_schedule_shift' not in train['wvd'] + train['wvd_hd128']
  assert 'num_heads' not in train['wvd'] + train['wvd_xyz_shift2']
  for override in ('width=512', 'depth=5', 'num_heads=4'):
    assert f'--config.model.{override}' in train['wvd_w512'].split()
  for override in ('width=512', 'depth=5', 'num_heads=4', 'residual_dtype=bfloat16',
                   'qk_norm=False'):
    assert f'--config.model.{override}' in train['wvd_fast'].split()
  assert 'qk_norm' not in train['wvd_w512'] + train['wvd']
  assert 'width' not in train['wvd'] + train['wvd_hd128']
  for override in ('residual_dtype=bfloat16', 'qk_norm=False'):
    assert f'--config.model.{override}' in train['wvd_lean'].split()
  assert not any(k in train['wvd_lean'] for k in ('width', 'depth', 'num_heads'))


def test_finish_of_rgb_only_alone_prints_its_own_report(tmp_path):
  run = tmp_path / 'run'
  run.mkdir()
  _evaluated(run, 'rgb_only')
  result = _with_env(PROOF_MODELS='rgb_only')('finish', run)
  assert result.returncode == 0, result.stdout + result.stderr
  assert '# report of rgb_only' in result.stdout and 'No such file' not in result.stderr
  assert 'paired by clip' not in (run / 'comparison.md').read_text()  # No WVD to pair with.


def test_start_stops_at_once_when_a_package_is_missing(tmp_path):
  """Before rendering or training: a lent GPU without trimesh once lost an evaluation's report."""
  python = tmp_path / 'python'
  python.write_text(f'#!/bin/sh\nexec {sys.executable} -S "$@"\n')  # -S: no site-packages.
  python.chmod(0o755)
  result = subprocess.run(['bash', SCRIPT, 'start', str(tmp_path / 'run')], cwd=REPO,
                          env=dict(os.environ, PYTHON=str(python), PATH='/usr/bin:/bin'),
                          text=True, capture_output=True, timeout=60, check=False)
  assert result.returncode != 0
  assert 'missing Python packages: grain' in result.stderr and 'trimesh' in result.stderr
  assert not (tmp_path / 'run' / 'data').exists()
