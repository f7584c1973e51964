"""benchmarks/profile_attribution.py: profiled kernels -> the source lines that made them."""
import inspect
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from benchmarks import common, profile_attribution

# A GPU-style module: the fusion's kernel is named with '_' where HLO has '.', the cuBLAS call
# is found through the trace event's hlo_op argument, and the stack tables print each parent
# as id + 1 (as XLA's printer does), a root frame naming itself.
GPU_HLO = '''HloModule jit_step

FileNames
1 "/site-packages/flax/nnx/nn/normalization.py"
2 "/repo/wvd_jax/models/dit.py"
3 "/repo/wvd_jax/training/optimizer.py"

FunctionNames
1 "_normalize"
2 "Block.__call__"
3 "update"

FileLocations
1 {file_name_id=2 function_name_id=2 line=120 end_line=120 column=4 end_column=30}
2 {file_name_id=1 function_name_id=1 line=171 end_line=171 column=8 end_column=32}
3 {file_name_id=3 function_name_id=3 line=81 end_line=81 column=2 end_column=9}

StackFrames
1 {file_location_id=1 parent_frame_id=1}
2 {file_location_id=2 parent_frame_id=2}
3 {file_location_id=3 parent_frame_id=3}

ENTRY %main {
  %input_add_reduce_fusion.31 = f32[] fusion(%p), kind=kInput, calls=%c, metadata={op_name="jit(step)/transpose(jvp(DiT))/reduce_sum" stack_frame_id=2}
  %custom-call.7 = (bf16[8,8]{1,0}, s8[0]{0}) custom-call(%a, %b), custom_call_target="__cublas$gemm", metadata={op_name="jit(step)/jvp(DiT)/dot_general" stack_frame_id=1}
  ROOT %loop_select_fusion = f32[8] fusion(%q), kind=kLoop, calls=%d, metadata={op_name="jit(step)/select_n" stack_frame_id=3}
}
'''


def test_gpu_kernel_names_map_to_our_source_lines():
  sources = profile_attribution.HloSources(GPU_HLO)
  assert sources.lookup(['input_add_reduce_fusion_31']) == (
      'bwd wvd_jax/models/dit.py:120 Block.__call__ via _normalize [reduce_sum]')
  assert sources.lookup(['', 'loop_select_fusion']) == (
      'fwd wvd_jax/training/optimizer.py:81 update [select_n]')
  # A library kernel's name is not in the module; its hlo_op argument is.
  assert sources.lookup(['custom-call.7', 'nvjet_sm90_tst_128x128']) == (
      'fwd wvd_jax/models/dit.py:120 Block.__call__ [dot_general]')
  assert sources.lookup(['nvjet_sm90_tst_128x128']) is None


def test_attribute_sums_time_by_source_and_counts_the_rest():
  kernels = [('input_add_reduce_fusion_31', {}, 2.0), ('input_add_reduce_fusion_31', {}, 1.0),
             ('loop_select_fusion', None, 0.5), ('nvjet_x', {'hlo_op': 'custom-call.7'}, 4.0),
             ('memcpy', {}, 0.25)]
  out = profile_attribution.attribute(kernels, GPU_HLO, calls=1)
  assert [r['ms'] for r in out['by_source']] == [4.0, 3.0, 0.5]
  assert out['by_source'][1]['launches'] == 2
  assert out['attributed_ms'] == 7.5 and out['unattributed_ms'] == 0.25


def _layer(w, x):
  h = jnp.tanh(x @ w)
  scale = jnp.sqrt(jnp.mean(h * h) + 1.0)
  return scale * jnp.sum(h)


def test_a_compiled_module_names_the_lines_of_this_file():
  lines, first = inspect.getsourcelines(_layer)
  sqrt_line = first + next(i for i, l in enumerate(lines) if 'jnp.sqrt' in l)
  # A size that follows the function's line: the tests' persistent compilation cache keys on the
  # program without its source metadata, so an edit above _layer would otherwise hand back an
  # executable that names the old lines.
  w, x = jnp.ones((first, 16)) * 0.1, jnp.ones((4, first))
  step = jax.jit(jax.value_and_grad(_layer)).lower(w, x).compile()
  sources = profile_attribution.HloSources(step.as_text())
  labels = {sources.describe(*entry) for entry in sources._instructions.values()}  # pylint: disable=protected-access
  here = 'tests/launch/test_profile_attribution.py'
  assert any(l.startswith('fwd') and f'{here}:{sqrt_line} _layer' in l for l in labels), labels
  assert any(l.startswith('bwd') and here in l for l in labels), labels


def test_profile_calls_reports_sources_on_cpu(tmp_path):
  w, x = jnp.ones((64, 64)) * 0.1, jnp.ones((32, 64))
  step = jax.jit(jax.value_and_grad(_layer)).lower(w, x).compile()
  profile = common.profile_calls(step, (w, x), 2, str(tmp_path))
  assert {'by_source', 'attributed_ms', 'unattributed_ms'} <= set(profile)
  assert profile['attributed_ms'] + profile['unattributed_ms'] == pytest.approx(
      profile['kernel_ms_per_call'], abs=0.01)
  assert all(r['source'].split()[0] in ('fwd', 'bwd') for r in profile['by_source'])
  assert profile['span_ms_per_call'] >= profile['idle_ms_per_call'] >= 0


def test_the_sampler_benchmark_attributes_the_forward_and_the_loop(tmp_path):
  from benchmarks import sampler_bench  # pylint: disable=import-outside-toplevel
  result = sampler_bench.main(['--small', '--langevin', '0', '--repeats', '1',
                               '--profile', str(tmp_path)])
  for name in ('forward_profile', 'sampler_profile'):
    profile = result[name]
    assert profile['kernel_ms_per_call'] > 0 and 'by_source' in profile, name
  sources = [r['source'] for r in result['forward_profile']['by_source']]
  assert any('wvd_jax/models/' in s for s in sources), sources
  # What generate.py prepares equals the plain network on CPU (the GPU run checks a tolerance).
  assert result['loop_parity']['pass'] and result['loop_parity']['max_rel_diff'] <= 1e-6


def test_device_timeline_merges_streams_and_finds_the_idle_gaps():
  """Two streams overlapping, then a 30 us hole, then a 5 us one: the span, the idle time and
  the gaps with their neighbours are exact."""
  kernels = [dict(ts=0, dur=100, name='gemm'), dict(ts=50, dur=80, name='attn'),  # to 130
             dict(ts=160, dur=40, name='norm'),                                   # hole of 30
             dict(ts=205, dur=95, name='gelu')]                                   # hole of 5
  timeline = common.device_timeline(kernels, calls=1)
  assert timeline['span_ms_per_call'] == pytest.approx(0.300)
  assert timeline['idle_ms_per_call'] == pytest.approx(0.035)
  assert timeline['idle_gaps_per_call'] == 2
  assert timeline['largest_idle_gaps'][0] == {'ms': 0.03, 'after': 'attn', 'before': 'norm'}
  assert timeline['largest_idle_gaps'][1] == {'ms': 0.005, 'after': 'norm', 'before': 'gelu'}
  assert timeline['kernels_per_call'] == 4
  sizes = timeline['idle_gap_sizes']
  assert sizes['5-20us'] == {'gaps_per_call': 1, 'ms_per_call': 0.005}
  assert sizes['20-100us'] == {'gaps_per_call': 1, 'ms_per_call': 0.03}
  assert sizes['0-5us']['gaps_per_call'] == sizes['100-infus']['gaps_per_call'] == 0
  halves = common.device_timeline(kernels, calls=2)
  assert halves['span_ms_per_call'] == pytest.approx(0.150)
  assert common.device_timeline([], calls=1) == {}


def test_clock_samples_parse_and_summarize():
  """nvidia-smi's CSV (clock MHz, power W, temperature C, reasons) -> min / median / max and the
  reasons counted; '[N/A]' lines are skipped."""
  text = ('1980, 650.5, 60, 0x0000000000000000\n'
          '1755, 699.9, 63, 0x0000000000000004\n'
          '[N/A], [N/A], 61, [N/A]\n'
          '1830, 690.0, 62, 0x0000000000000004\n')
  samples = common.parse_clock_samples(text)
  assert len(samples) == 3
  summary = common.summarize_clock_samples(samples)
  assert summary['sm_clock_mhz_min_median_max'] == [1755.0, 1830.0, 1980.0]
  assert summary['power_w_min_median_max'] == [650.5, 690.0, 699.9]
  assert summary['temperature_c_max'] == 63.0
  assert summary['clock_event_reasons'] == {'none': 1, 'sw_power_cap': 2}
  assert common.clock_event_reason_names('0x0000000000000044') == 'sw_power_cap+hw_thermal_slowdown'
  assert common.clock_event_reason_names('0x1000') == '0x1000'
  assert common.clock_event_reason_names('[N/A]') == '[N/A]'
  assert common.summarize_clock_samples([]) == {}


def test_sustained_calls_carry_the_donated_argument():
  """Chunks of back-to-back calls, each fed the previous call's first output."""
  step = jax.jit(lambda x, y: (x + y, jnp.sum(x)), donate_argnums=(0,))
  chunks, last = common.sustained_calls(step, (jnp.zeros(4), jnp.ones(4)), seconds=0.05, chunk=3)
  assert chunks and all(ms > 0 for ms in chunks)
  assert float(last[0]) == 3 * len(chunks)
  with common.GpuClockSampler() as clock:  # No nvidia-smi on CPU: nothing sampled.
    pass
  assert isinstance(clock.summary(), dict)


def test_the_train_step_benchmark_sustains_then_profiles_warm(tmp_path):
  """benchmarks/train_step.py on CPU at the tiny size: the timed step, the sustained chunks and
  matmul rate (no clock samples without nvidia-smi) and the profile taken after them."""
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  result = subprocess.run(
      [sys.executable, 'benchmarks/train_step.py', '--config', 'small', '--small', '--parts', '0',
       '--steps', '1', '--sustain_s', '0.2', '--profile', str(tmp_path / 'trace')],
      cwd=root, capture_output=True, text=True, timeout=300,
      env={**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': root})
  assert result.returncode == 0, result.stderr[-2000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report['step_ms'] > 0 and report['mfu'] > 0
  sustained = report['sustained']
  assert sustained['chunk_ms'] and min(sustained['chunk_ms']) > 0
  assert sustained['matmul']['chunk_tflops'] and sustained['gpu'] == {}
  assert report['profile']['kernel_ms_per_call'] > 0 and 'idle_gap_sizes' in report['profile']
