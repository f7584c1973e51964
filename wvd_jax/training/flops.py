"""FLOP accounting for MFU: the compiled step's FLOPs and the device's measured matmul rate.

MFU here is (model FLOPs of one train step, counted analytically) x (steps per second) /
(the dense bf16 matmul rate measured on this device), the convention of DESIGN.md's measured
table (80.8 TFLOP a step for the 2B shape at batch 4), so figures compare against the PyTorch peer.
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp


def dit_forward_flops(cfg, batch: int, num_tokens: int) -> float:
  """Model FLOPs of one DiT forward pass (matmuls and attention; elementwise work not counted).

  cfg: a models.dit.DiTConfig. Per token: patch embedding, per block qkv (3w^2), output (w^2)
  and MLP (2wm), the head; per sample: timestep MLP and adaLN modulations; attention: QK^T and
  AV, 2 * 2 T^2 w per block. Each multiply-add counts 2 FLOPs.
  """
  w, depth = cfg.width, cfg.depth
  hidden = int(cfg.width * cfg.mlp_ratio)
  patch = cfg.patch_size ** 2 * cfg.in_channels
  per_token = depth * (4 * w * w + 2 * w * hidden) + 2 * patch * w
  per_sample = 256 * w + w * w + depth * 6 * w * w + 2 * w * w
  attention = depth * 4 * num_tokens ** 2 * w
  return float(batch) * (2.0 * (num_tokens * per_token + per_sample) + attention)


def dit_train_step_flops(cfg, batch: int, num_tokens: int) -> float:
  """Forward + backward (3x forward), the usual MFU convention (remat recompute not counted)."""
  return 3.0 * dit_forward_flops(cfg, batch, num_tokens)


def measure_matmul_tflops(size: int | None = None, dtype=jnp.bfloat16, iters: int = 10,
                          repeats: int = 5) -> float:
  """Dense (size x size) @ (size x size) rate (TFLOP/s) of the default device.

  Best of ``repeats`` blocks of ``iters`` back-to-back products (dispatch amortized). Default
  size 8192 on accelerators (saturates an H100), 512 on CPU (a quick estimate). Inputs are random
  normal: all-zero inputs draw less power and can run faster than real work.
  """
  device = jax.devices()[0]
  if size is None:
    size = 512 if device.platform == 'cpu' else 8192
  key = jax.random.PRNGKey(0)
  a = jax.random.normal(key, (size, size), jnp.float32).astype(dtype)
  b = jax.random.normal(jax.random.fold_in(key, 1), (size, size), jnp.float32).astype(dtype)
  matmul = jax.jit(lambda x, y: x @ y)
  matmul(a, b).block_until_ready()
  best = float('inf')
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(iters):
      out = matmul(a, b)
    out.block_until_ready()
    best = min(best, (time.perf_counter() - start) / iters)
  return 2.0 * size ** 3 / best / 1e12
