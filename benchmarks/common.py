"""Helpers shared by the benchmarks: timing jitted calls, the device's matmul rate, XLA's cost and
memory analyses, device facts. Import JAX lazily (after a benchmark has set JAX_PLATFORMS).

Conventions: times are wall-clock seconds of calls dispatched back to back and synchronized once
at the end (async dispatch hides the Python overhead, as in a training loop); rates are in
TFLOP/s (1e12 FLOP/s); MFU is achieved model TFLOP/s over the measured dense matmul rate.
"""
from __future__ import annotations

import time
from typing import Any, Callable


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
