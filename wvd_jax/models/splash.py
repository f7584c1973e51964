"""Full (non-causal) attention through the Pallas TPU splash-attention kernel.

On TPU the XLA attention materializes the (T, T) logits in HBM; the splash kernel streams them
through VMEM in blocks (flash attention), several times faster at the DiT's sequence lengths.
``interpret=True`` runs the same kernel in the Pallas interpreter (any backend; the tests
compare it with jax.nn.dot_product_attention on CPU).

Under a mesh context (training.sharding.use_mesh) the kernel runs per device through shard_map:
the batch split as the 'activation_batch' rule says, the heads as 'activation_heads'; a Pallas
kernel is not partitioned by XLA itself.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as kernels
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as masks

from wvd_jax.models import logical_axes

_BLOCKS = (512, 256, 128)


def _block(length: int) -> int:
  """The largest kernel block that divides the sequence (0: none does)."""
  return next((b for b in _BLOCKS if length % b == 0), 0)


def _local_attention(q, k, v, *, interpret: bool):
  """q, k, v (B, T, H, D) on one device -> (B, T, H, D)."""
  _, t, h, d = q.shape
  block = _block(t)
  sizes = kernels.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block,
                             block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block,
                             block_q_dq=block, block_kv_dq=block)
  mask = masks.MultiHeadMask([masks.FullMask((t, t)) for _ in range(h)])
  kernel = kernels.make_splash_mha_single_device(mask, block_sizes=sizes, interpret=interpret)
  heads_first = lambda x: jnp.swapaxes(x, 1, 2)  # The kernel takes (H, T, D) per example.
  out = jax.vmap(kernel)(heads_first(q * (d ** -0.5)).astype(q.dtype), heads_first(k),
                         heads_first(v))
  return heads_first(out)


def splash_attention(q, k, v, *, interpret: bool = False):
  """Softmax attention of q, k, v (B, T, H, D) -> (B, T, H, D), scaled by 1/sqrt(D).

  The kernel's blocks are multiples of 128 tokens: other sequence lengths (tiny test models)
  take XLA's attention."""
  if not _block(q.shape[1]):
    return jax.nn.dot_product_attention(q, k, v)
  local = functools.partial(_local_attention, interpret=interpret)
  spec = logical_axes.per_shard_spec(q.shape, logical_axes.HEADS)
  if spec is None:
    return local(q, k, v)
  return jax.shard_map(local, mesh=jax.sharding.get_abstract_mesh(), in_specs=(spec, spec, spec),
                       out_specs=spec, check_vma=False)(q, k, v)
