"""Helpers shared by the benchmarks: timing jitted calls, the device's matmul rate, XLA's cost and
memory analyses, device facts. Import JAX lazily (after a benchmark has set JAX_PLATFORMS).

Conventions: times are wall-clock seconds of calls dispatched back to back and synchronized once
at the end (async dispatch hides the Python overhead, as in a training loop); rates are in
TFLOP/s (1e12 FLOP/s); MFU is achieved model TFLOP/s over the measured dense matmul rate.
"""
from __future__ import annotations

import time
from typing import Any, Callable

from benchmarks import profile_attribution


def load_config_file(path: str, cpu: bool = True):
  """get_config() of an ml_collections config file; with ``cpu``, JAX on the CPU (unless
  JAX_PLATFORMS says otherwise) and absl logging at warnings (rendering logs every clip)."""
  import importlib.util
  import os
  if cpu:
    os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  from absl import logging
  logging.set_verbosity(logging.WARNING)
  spec = importlib.util.spec_from_file_location('config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def block(tree):
  import jax
  return jax.block_until_ready(tree)


def time_calls(fn: Callable, *args, iters: int = 10, warmup: int = 2,
               repeats: int = 3) -> dict:
  """Times ``fn(*args)``: first call (compile + run), then ``repeats`` blocks of ``iters`` calls.

  Returns {'first_call_s', 'mean_s' (per call, best block), 'block_means_s' (all blocks)}.
  """
  start = time.perf_counter()
  block(fn(*args))
  first = time.perf_counter() - start
  for _ in range(warmup):
    block(fn(*args))
  means = []
  for _ in range(repeats):
    start = time.perf_counter()
    out = None
    for _ in range(iters):
      out = fn(*args)
    block(out)
    means.append((time.perf_counter() - start) / iters)
  return {'first_call_s': first, 'mean_s': min(means), 'block_means_s': means}


def matmul_tflops(size: int | None = None, dtype: str = 'bfloat16', iters: int = 10,
                  repeats: int = 5) -> dict:
  """The device's dense matmul rate (wvd_jax.training.flops.measure_matmul_tflops) as a dict."""
  import jax
  import jax.numpy as jnp
  from wvd_jax.training import flops
  if size is None:
    size = 512 if jax.devices()[0].platform == 'cpu' else 8192
  tflops = flops.measure_matmul_tflops(size, jnp.dtype(dtype), iters=iters, repeats=repeats)
  return {'size': size, 'dtype': str(jnp.dtype(dtype)), 'tflops': tflops}


def xla_flops(compiled) -> float | None:
  """FLOPs of a compiled executable by XLA's cost analysis (None if unavailable).

  Custom calls (cuDNN attention) are typically counted as 0 by XLA, so this undercounts there.
  """
  try:
    analysis = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except  (backends may not implement it)
    return None
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else None
  if not analysis or 'flops' not in analysis:
    return None
  return float(analysis['flops'])


def memory_analysis(compiled) -> dict[str, Any] | None:
  """Per-device bytes XLA planned for arguments, outputs and temporaries (None if unavailable)."""
  try:
    m = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if m is None:
    return None
  return {k: int(getattr(m, k + '_size_in_bytes')) for k in ('argument', 'output', 'temp')
          if hasattr(m, k + '_size_in_bytes')}


def peak_memory_bytes() -> int | None:
  """Peak bytes in use on the first device so far in this process (GPU/TPU; None on CPU)."""
  import jax
  try:
    stats = jax.devices()[0].memory_stats()
  except Exception:  # pylint: disable=broad-except
    return None
  return int(stats['peak_bytes_in_use']) if stats and 'peak_bytes_in_use' in stats else None


def device_info() -> dict:
  import jax
  device = jax.devices()[0]
  return {'platform': device.platform, 'device_kind': device.device_kind,
          'device_count': jax.device_count(), 'jax_version': jax.__version__}


def add_model_args(p) -> None:
  """Flags that pick the DiT shape (default: configs/wvd_2b.py; a tiny one with --small)."""
  p.add_argument('--frames', type=int, default=None, help='default 8 (2 with --small)')
  p.add_argument('--latent_size', type=int, default=None, help='latent side, default 32 (8)')
  p.add_argument('--latent_channels', type=int, default=None, help='per modality, default 4')
  p.add_argument('--width', type=int, default=None)
  p.add_argument('--depth', type=int, default=None)
  p.add_argument('--num_heads', type=int, default=None)
  p.add_argument('--patch_size', type=int, default=None)
  p.add_argument('--dtype', choices=('bfloat16', 'float32'), default=None,
                 help='compute dtype (default bfloat16; float32 with --small)')
  p.add_argument('--attention', choices=('auto', 'xla', 'cudnn'), default='auto')
  p.add_argument('--fp8', action='store_true',
                 help='attention and MLP projections as FP8 matmuls (model.fp8)')
  p.add_argument('--norm_kernel', choices=('xla', 'pallas', 'pallas_interpret', 'auto'),
                 default='xla', help='the blocks\' norms (model.norm_kernel)')
  p.add_argument('--repeats', type=int, default=3, help='timed blocks; the best is reported')
  p.add_argument('--matmul_size', type=int, default=None, help='default 8192 (256 small)')


def dit_config(args, small_channels: int = 4, **overrides):
  """The DiTConfig that add_model_args' flags describe."""
  from wvd_jax.models import dit
  if args.small:
    shape = dict(width=64, depth=2, num_heads=4, patch_size=2)
  else:
    import configs.wvd_2b as wvd_2b
    m = wvd_2b.get_config().model
    shape = dict(width=m.width, depth=m.depth, num_heads=m.num_heads, patch_size=m.patch_size)
  for key in shape:
    if getattr(args, key) is not None:
      shape[key] = getattr(args, key)
  channels = args.latent_channels or (small_channels if args.small else 4)
  dtype = args.dtype or ('float32' if args.small else 'bfloat16')
  overrides.setdefault('fp8', bool(getattr(args, 'fp8', False)))
  overrides.setdefault('norm_kernel', dit.resolve_norm_kernel(getattr(args, 'norm_kernel', 'xla')))
  return dit.DiTConfig(in_channels=2 * channels, mlp_ratio=4.0, compute_dtype=dtype,
                       attention=args.attention, **shape, **overrides)


def perturbed_params(cfg, seed: int = 1):
  """A DiT's parameters (pure dict) with every entry perturbed by 0.02 N(0, 1).

  adaLN-zero starts with zero gates and a zero head, so every matmul would multiply zeros (which
  runs faster on GPUs than real work): perturb all parameters as training would.
  """
  import functools
  import jax
  from flax import nnx
  from wvd_jax.models import dit
  params = jax.jit(lambda: nnx.to_pure_dict(nnx.state(dit.DiT(cfg, rngs=nnx.Rngs(0)))))()

  @functools.partial(jax.jit, donate_argnums=0)
  def perturb(params, key):
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(tree, [l + 0.02 * jax.random.normal(k, l.shape, l.dtype)
                                     for l, k in zip(leaves, keys)])

  return block(perturb(params, jax.random.PRNGKey(seed)))


# Kernel-name patterns -> cost category, checked in order (XLA names its own GEMM fusions
# 'gemm_fusion_dot...'/'triton_gemm...', cuBLAS/cuBLASLt kernels 'sm90_xmma_gemm...'/'nvjet...').
KERNEL_CATEGORIES = (
    ('attention', ('cudnn', 'flash', 'fmha', 'attention', 'sdpa')),
    ('matmul', ('gemm', 'xmma', 'cutlass', 'cublas', 'nvjet', 'matmul', 'dot')),
    ('collective', ('nccl', 'all-reduce', 'all_reduce', 'all-gather', 'reduce-scatter')),
    ('copy/transpose', ('copy', 'transpose', 'memcpy', 'memset', 'dynamic-update-slice')),
    ('reduction fusion', ('reduce',)),
    ('elementwise fusion', ('fusion', 'loop_', 'convert', 'multiply', 'add')),
)


def kernel_category(name: str) -> str:
  lower = name.lower()
  for category, patterns in KERNEL_CATEGORIES:
    if any(p in lower for p in patterns):
      return category
  return 'other'


def profile_calls(fn, args, calls: int, trace_dir: str, carry: bool = False) -> dict:
  """Runs ``fn(*args)`` ``calls`` times under the JAX profiler; the device kernels' time by
  category and the largest kernels, in ms per call ('the profile's largest costs' in
  benchmarks/RESULTS.md). With ``carry``, fn returns (new first argument, ...) and may donate
  its first argument (a train step); the last first argument is returned under 'carry'. Kernels
  come from the trace's GPU stream lines (on CPU, the XLA thread lines: a smoke test only)."""
  import glob
  import gzip
  import json
  import os
  import jax
  args = list(args)

  def call():
    out = block(fn(*args))
    if carry:
      args[0] = out[0]

  call()
  hlo_text = _hlo_text(fn, args)
  os.makedirs(trace_dir, exist_ok=True)
  with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
    # Back to back, one sync at the end (as the trainer and the sampler run): the device's idle
    # time inside the span is then its own, not the host's wait between synced calls.
    for _ in range(calls):
      out = fn(*args)
      if carry:
        args[0] = out[0]
    block(out)
  paths = sorted(glob.glob(f'{trace_dir}/**/perfetto_trace.json.gz', recursive=True))
  with gzip.open(paths[-1]) as f:
    trace = json.load(f)
  events = trace['traceEvents'] if isinstance(trace, dict) else trace
  processes, threads = {}, {}
  for e in events:
    if e.get('ph') == 'M' and e.get('name') == 'process_name':
      processes[e['pid']] = e['args']['name']
    if e.get('ph') == 'M' and e.get('name') == 'thread_name':
      threads[(e['pid'], e['tid'])] = e['args']['name']
  gpu = {pid for pid, name in processes.items() if 'GPU' in name or 'gpu' in name}

  def is_kernel(e):
    line = threads.get((e['pid'], e.get('tid')), '')
    if gpu:
      return e['pid'] in gpu and line.startswith('Stream')
    return 'XLA' in line and 'Eigen' not in line

  kernels = [e for e in events if e.get('ph') == 'X' and is_kernel(e)]
  by_category, by_name = {}, {}
  for e in kernels:
    ms = e.get('dur', 0) / 1e3 / calls
    by_category[kernel_category(e['name'])] = by_category.get(kernel_category(e['name']), 0) + ms
    entry = by_name.setdefault(e['name'], [0.0, 0])
    entry[0] += ms
    entry[1] += 1
  total = sum(by_category.values())
  top = sorted(by_name.items(), key=lambda kv: -kv[1][0])[:12]
  return {
      'kernel_ms_per_call': round(total, 3),
      'by_category_ms': {k: round(v, 3) for k, v in
                         sorted(by_category.items(), key=lambda kv: -kv[1])},
      'top_kernels': [{'name': n[:120], 'ms': round(v[0], 3), 'launches': v[1] // calls}
                      for n, v in top],
      **device_timeline(kernels, calls),
      # Which lines of our code the time comes from (pass, file:line, primitive).
      **(profile_attribution.attribute(
          [(e['name'], e.get('args'), e.get('dur', 0) / 1e3 / calls) for e in kernels],
          hlo_text, calls) if hlo_text else {}),
      **({'carry': args[0]} if carry else {}),
  }


class GpuClockSampler:
  """Samples the GPU's SM clock, power and clock-limit reasons with ``nvidia-smi -lms`` while
  the ``with`` block runs (a kernel runs as fast as its clock: a short burst at boost clock can
  outrun the same work sustained under the power limit). ``summary()`` after the block: the
  clock (MHz) and power (W) as min / median / max, the temperature's max and the reasons
  (hex bit masks, nvidia-smi's clocks_event_reasons.active) with how often each was seen.
  Without nvidia-smi (CPU) it samples nothing and summary() is {}."""

  FIELDS = 'clocks.sm,power.draw,temperature.gpu,clocks_event_reasons.active'

  def __init__(self, interval_ms: int = 100, gpu: int = 0):
    self.interval_ms, self.gpu = interval_ms, gpu
    self._proc = self._file = None
    self.samples: list[tuple[float, float, float, str]] = []

  def __enter__(self):
    import shutil
    import subprocess
    import tempfile
    if shutil.which('nvidia-smi'):
      self._file = tempfile.TemporaryFile(mode='w+')
      self._proc = subprocess.Popen(
          ['nvidia-smi', f'--id={self.gpu}', f'--query-gpu={self.FIELDS}',
           '--format=csv,noheader,nounits', f'-lms={self.interval_ms}'],
          stdout=self._file, stderr=subprocess.DEVNULL)
    return self

  def __exit__(self, *exc):
    if self._proc is None:
      return
    self._proc.terminate()
    self._proc.wait()
    self._file.seek(0)
    self.samples = parse_clock_samples(self._file.read())
    self._file.close()

  def summary(self) -> dict:
    return summarize_clock_samples(self.samples)


def parse_clock_samples(text: str) -> list[tuple[float, float, float, str]]:
  """nvidia-smi CSV lines 'clock, power, temperature, reasons' -> tuples (lines that do not
  parse, e.g. '[N/A]' fields, are skipped)."""
  samples = []
  for line in text.splitlines():
    fields = [f.strip() for f in line.split(',')]
    if len(fields) != 4:
      continue
    try:
      samples.append((float(fields[0]), float(fields[1]), float(fields[2]), fields[3]))
    except ValueError:
      continue
  return samples


# NVML's clock event reason bits (nvmlClocksEventReason*), as nvidia-smi prints their mask.
CLOCK_EVENT_REASONS = {0x1: 'gpu_idle', 0x2: 'applications_clocks_setting',
                       0x4: 'sw_power_cap', 0x8: 'hw_slowdown', 0x10: 'sync_boost',
                       0x20: 'sw_thermal_slowdown', 0x40: 'hw_thermal_slowdown',
                       0x80: 'hw_power_brake_slowdown', 0x100: 'display_clock_setting'}


def clock_event_reason_names(mask: str) -> str:
  """'0x0000000000000004' -> 'sw_power_cap' ('+'-joined for several bits, 'none' for 0; a mask
  that is not hex is returned as it is)."""
  try:
    bits = int(mask, 16)
  except ValueError:
    return mask
  names = [name for bit, name in CLOCK_EVENT_REASONS.items() if bits & bit]
  unknown = bits & ~sum(CLOCK_EVENT_REASONS)
  if unknown:
    names.append(hex(unknown))
  return '+'.join(names) or 'none'


def summarize_clock_samples(samples) -> dict:
  import numpy as np
  if not samples:
    return {}
  clock, power, temp = (np.array([s[i] for s in samples]) for i in range(3))
  reasons: dict[str, int] = {}
  for s in samples:
    name = clock_event_reason_names(s[3])
    reasons[name] = reasons.get(name, 0) + 1
  span = lambda a: [float(a.min()), float(np.median(a)), float(a.max())]
  return {'samples': len(samples), 'sm_clock_mhz_min_median_max': span(clock),
          'power_w_min_median_max': span(power), 'temperature_c_max': float(temp.max()),
          'clock_event_reasons': reasons}


def sustained_calls(fn, args, seconds: float, chunk: int = 10) -> tuple[list[float], Any]:
  """Calls ``fn(*args)`` back to back for about ``seconds``, synchronizing every ``chunk``
  calls; fn returns (new first argument, ...) and may donate its first argument (a train step).
  Returns (ms per call of each chunk, the last first argument): a step that slows as the run
  goes on is held back by the clock, not by its kernels."""
  args = list(args)
  chunks = []
  end = time.perf_counter() + seconds
  while time.perf_counter() < end:
    start = time.perf_counter()
    for _ in range(chunk):
      out = fn(*args)
      args[0] = out[0]
    block(out)
    chunks.append(round((time.perf_counter() - start) / chunk * 1e3, 2))
  return chunks, args[0]


def sustained_matmul_tflops(seconds: float, size: int | None = None, dtype: str = 'bfloat16',
                            chunk: int = 50) -> dict:
  """The dense matmul rate (TFLOP/s) of chunks of ``chunk`` back-to-back (size x size) products
  run for about ``seconds``, with the GPU's clock and power sampled meanwhile: the rate the
  device holds, beside flops.measure_matmul_tflops's short best-of-5 burst (size: its default,
  8192 on accelerators, 512 on CPU)."""
  import jax
  import jax.numpy as jnp
  if size is None:
    size = 512 if jax.devices()[0].platform == 'cpu' else 8192
  key = jax.random.PRNGKey(0)
  a = jax.random.normal(key, (size, size), jnp.float32).astype(dtype)
  b = jax.random.normal(jax.random.fold_in(key, 1), (size, size), jnp.float32).astype(dtype)
  matmul = jax.jit(lambda x, y: x @ y)
  block(matmul(a, b))
  rates = []
  with GpuClockSampler() as clock:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
      start = time.perf_counter()
      for _ in range(chunk):
        out = matmul(a, b)
      block(out)
      rates.append(round(2.0 * size ** 3 * chunk / (time.perf_counter() - start) / 1e12, 1))
  return {'size': size, 'seconds': seconds, 'chunk_tflops': rates, 'gpu': clock.summary()}


def device_timeline(kernels: list[dict], calls: int, num_gaps: int = 8) -> dict:
  """Where the device waits: trace events {'ts', 'dur' (microseconds), 'name'} of ``calls``
  calls run back to back -> the span from the first kernel's start to the last one's end, the
  time no kernel ran inside it (kernels on several streams merged), both in ms per call, and the
  largest idle gaps with the kernels on either side, and how many gaps of each size (many short
  ones are launch latency; a few long ones, something the device waits on). Kernel time summed
  (kernel_ms_per_call) plus idle is the span. A step timed slower than a profile's span with
  little idle ran at a lower clock than the profile (GpuClockSampler)."""
  spans = sorted((e['ts'], e['ts'] + e.get('dur', 0), e['name']) for e in kernels)
  if not spans:
    return {}
  gaps, busy = [], 0.0
  start, end, last = spans[0]
  for s, e, name in spans[1:]:
    if s > end:
      busy += end - start
      gaps.append((s - end, last, name))
      start, end, last = s, e, name
    elif e > end:
      end, last = e, name
  busy += end - start
  span = max(e for _, e, _ in spans) - spans[0][0]
  gaps.sort(key=lambda g: -g[0])
  # Many short gaps (launch latency between kernels) call for fewer kernels; a few long ones
  # for finding what the device waits on.
  bounds = (5.0, 20.0, 100.0, float('inf'))
  histogram = {}
  for low, high in zip((0.0,) + bounds[:-1], bounds):
    sizes = [g for g, _, _ in gaps if low <= g < high]
    histogram[f'{low:g}-{high:g}us'] = {'gaps_per_call': round(len(sizes) / calls, 1),
                                        'ms_per_call': round(sum(sizes) / 1e3 / calls, 3)}
  return {
      'span_ms_per_call': round(span / 1e3 / calls, 3),
      'idle_ms_per_call': round((span - busy) / 1e3 / calls, 3),
      'kernels_per_call': round(len(spans) / calls, 1),
      'idle_gaps_per_call': len(gaps) // calls,
      'idle_gap_sizes': histogram,
      'largest_idle_gaps': [{'ms': round(g / 1e3, 3), 'after': a[:80], 'before': b[:80]}
                            for g, a, b in gaps[:num_gaps]],
  }


def _hlo_text(fn, args) -> str | None:
  """The optimized HLO of a compiled or jitted fn (for the profile's source attribution)."""
  try:
    if hasattr(fn, 'as_text'):
      return fn.as_text()
    if hasattr(fn, 'lower'):
      return fn.lower(*args).compile().as_text()
  except Exception as e:  # pylint: disable=broad-except
    print(f'profile: no HLO text for source attribution ({type(e).__name__}: {e})')
  return None
