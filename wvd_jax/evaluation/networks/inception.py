"""pytorch-fid's FID Inception-v3 (TF's 2015-12-05 graph) as a pure JAX function: pool3 features.

The network is torchvision's Inception3 with pytorch-fid's patches (pytorch_fid/inception.py:
``fid_inception_v3``): the avg-pool branches of Mixed_5b-d, 6b-e and 7b do not count padding
(``count_include_pad=False``) and Mixed_7c's pool branch is a 3x3 max pool. Every conv is a
BasicConv2d: conv without bias, BatchNorm (eps 1e-3, running statistics), ReLU. Here each
BatchNorm is folded into its conv at load time (in float64), so a conv carries a kernel and a
bias.

Weights: the state dict pytorch-fid loads, ``pt_inception-2015-12-05-6726825d.pth`` (a pickle-
based torch file: read with ``torch.load(weights_only=True)`` when torch is installed, or convert
it once to .safetensors, see networks/weights.py), or the same tensors as .safetensors. Its
``fc.*`` (1008-way classifier) and ``*.num_batches_tracked`` entries are accepted and unused.

Preprocessing as pytorch-fid's InceptionV3(resize_input=True, normalize_input=True): images in
[0, 1], bilinear resize to 299 x 299 (F.interpolate, align_corners=False: half-pixel centres and
no antialiasing, which ``resize_bilinear`` reproduces), then 2x - 1.
"""
from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from wvd_jax.evaluation.networks import layers, weights

INPUT_SIZE = 299
FEATURES = 2048
BN_EPS = 1e-3
WHAT = "pytorch-fid's FID Inception-v3 weights (pt_inception-2015-12-05-6726825d.pth)"
HINT = ('give the pt_inception-2015-12-05-6726825d.pth state dict of pytorch-fid (or its '
        '.safetensors conversion) as eval.fid_inception_weights')


def _conv(cin, cout, kernel, stride=1, padding=0):
  kernel = (kernel, kernel) if isinstance(kernel, int) else kernel
  padding = (padding, padding) if isinstance(padding, int) else padding
  return dict(cin=cin, cout=cout, kernel=kernel, stride=stride, padding=padding)


def _block_a(cin, pool):
  return {'branch1x1': _conv(cin, 64, 1), 'branch5x5_1': _conv(cin, 48, 1),
          'branch5x5_2': _conv(48, 64, 5, padding=2), 'branch3x3dbl_1': _conv(cin, 64, 1),
          'branch3x3dbl_2': _conv(64, 96, 3, padding=1),
          'branch3x3dbl_3': _conv(96, 96, 3, padding=1), 'branch_pool': _conv(cin, pool, 1)}


def _block_b(cin):
  return {'branch3x3': _conv(cin, 384, 3, stride=2), 'branch3x3dbl_1': _conv(cin, 64, 1),
          'branch3x3dbl_2': _conv(64, 96, 3, padding=1),
          'branch3x3dbl_3': _conv(96, 96, 3, stride=2)}


def _block_c(cin, c7):
  row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
  return {'branch1x1': _conv(cin, 192, 1), 'branch7x7_1': _conv(cin, c7, 1),
          'branch7x7_2': _conv(c7, c7, **row), 'branch7x7_3': _conv(c7, 192, **col),
          'branch7x7dbl_1': _conv(cin, c7, 1), 'branch7x7dbl_2': _conv(c7, c7, **col),
          'branch7x7dbl_3': _conv(c7, c7, **row), 'branch7x7dbl_4': _conv(c7, c7, **col),
          'branch7x7dbl_5': _conv(c7, 192, **row), 'branch_pool': _conv(cin, 192, 1)}


def _block_d(cin):
  return {'branch3x3_1': _conv(cin, 192, 1), 'branch3x3_2': _conv(192, 320, 3, stride=2),
          'branch7x7x3_1': _conv(cin, 192, 1),
          'branch7x7x3_2': _conv(192, 192, kernel=(1, 7), padding=(0, 3)),
          'branch7x7x3_3': _conv(192, 192, kernel=(7, 1), padding=(3, 0)),
          'branch7x7x3_4': _conv(192, 192, 3, stride=2)}


def _block_e(cin):
  row, col = dict(kernel=(1, 3), padding=(0, 1)), dict(kernel=(3, 1), padding=(1, 0))
  return {'branch1x1': _conv(cin, 320, 1), 'branch3x3_1': _conv(cin, 384, 1),
          'branch3x3_2a': _conv(384, 384, **row), 'branch3x3_2b': _conv(384, 384, **col),
          'branch3x3dbl_1': _conv(cin, 448, 1), 'branch3x3dbl_2': _conv(448, 384, 3, padding=1),
          'branch3x3dbl_3a': _conv(384, 384, **row), 'branch3x3dbl_3b': _conv(384, 384, **col),
          'branch_pool': _conv(cin, 192, 1)}


@functools.cache
def conv_specs() -> dict[str, dict]:
  """BasicConv2d name (torchvision's module path) -> cin, cout, kernel, stride, padding."""
  specs = {'Conv2d_1a_3x3': _conv(3, 32, 3, stride=2), 'Conv2d_2a_3x3': _conv(32, 32, 3),
           'Conv2d_2b_3x3': _conv(32, 64, 3, padding=1), 'Conv2d_3b_1x1': _conv(64, 80, 1),
           'Conv2d_4a_3x3': _conv(80, 192, 3)}
  blocks = {'Mixed_5b': _block_a(192, 32), 'Mixed_5c': _block_a(256, 64),
            'Mixed_5d': _block_a(288, 64), 'Mixed_6a': _block_b(288),
            'Mixed_6b': _block_c(768, 128), 'Mixed_6c': _block_c(768, 160),
            'Mixed_6d': _block_c(768, 160), 'Mixed_6e': _block_c(768, 192),
            'Mixed_7a': _block_d(768), 'Mixed_7b': _block_e(1280), 'Mixed_7c': _block_e(2048)}
  for block, convs in blocks.items():
    specs.update({f'{block}.{name}': spec for name, spec in convs.items()})
  return specs


def torch_shapes() -> dict[str, tuple[int, ...]]:
  """The tensors the weights file must hold: name -> PyTorch shape."""
  out = {}
  for name, s in conv_specs().items():
    out[f'{name}.conv.weight'] = (s['cout'], s['cin'], *s['kernel'])
    for leaf in ('weight', 'bias', 'running_mean', 'running_var'):
      out[f'{name}.bn.{leaf}'] = (s['cout'],)
  return out


def _optional_names() -> set[str]:
  return {'fc.weight', 'fc.bias'} | {f'{n}.bn.num_batches_tracked' for n in conv_specs()}


def convert(tensors, path: str = '<tensors>') -> dict[str, dict[str, jax.Array]]:
  """A pytorch-fid state dict -> {conv name: {'kernel': HWIO, 'bias': (cout,)}}, BN folded in:
  kernel * gamma / sqrt(var + eps) and beta - mean * gamma / sqrt(var + eps)."""
  weights.check_tensors(path, WHAT, tensors, torch_shapes(), _optional_names(), HINT)
  params = {}
  for name in conv_specs():
    kernel, bias = layers.fold_batch_norm(tensors, f'{name}.conv', f'{name}.bn', BN_EPS)
    params[name] = {'kernel': jnp.asarray(kernel, jnp.float32),
                    'bias': jnp.asarray(bias, jnp.float32)}
  return params


def load(path: str | os.PathLike) -> dict[str, dict[str, jax.Array]]:
  """Reads and converts a weights file (see the module docstring for the formats)."""
  return convert(weights.read_state_dict(path), os.fspath(path))


# ---------------------------------------------------------------------------------- forward

def _basic_conv(params, name: str, x):
  s = conv_specs()[name]
  return jax.nn.relu(layers.conv(x, params[name]['kernel'], params[name]['bias'], s['stride'],
                                 s['padding']))


def _max_pool(x, stride: int, padding: int = 0):
  pad = ((0, 0), (padding, padding), (padding, padding), (0, 0))
  return lax.reduce_window(x, -jnp.inf, lax.max, (1, 3, 3, 1), (1, stride, stride, 1), pad)


def _avg_pool_valid_only(x):
  """3x3, stride 1, padding 1 average over the in-image pixels only (count_include_pad=False)."""
  pad = ((0, 0), (1, 1), (1, 1), (0, 0))
  total = lax.reduce_window(x, 0.0, lax.add, (1, 3, 3, 1), (1, 1, 1, 1), pad)
  count = lax.reduce_window(jnp.ones(x.shape[1:3], x.dtype), 0.0, lax.add, (3, 3), (1, 1),
                            ((1, 1), (1, 1)))
  return total / count[None, :, :, None]


def _mixed_a(p, name, x):
  c = lambda branch, y: _basic_conv(p, f'{name}.{branch}', y)
  b5 = c('branch5x5_2', c('branch5x5_1', x))
  b3 = c('branch3x3dbl_3', c('branch3x3dbl_2', c('branch3x3dbl_1', x)))
  return jnp.concatenate([c('branch1x1', x), b5, b3, c('branch_pool', _avg_pool_valid_only(x))],
                         axis=-1)


def _mixed_b(p, name, x):
  c = lambda branch, y: _basic_conv(p, f'{name}.{branch}', y)
  b3 = c('branch3x3dbl_3', c('branch3x3dbl_2', c('branch3x3dbl_1', x)))
  return jnp.concatenate([c('branch3x3', x), b3, _max_pool(x, 2)], axis=-1)


def _mixed_c(p, name, x):
  c = lambda branch, y: _basic_conv(p, f'{name}.{branch}', y)
  b7 = c('branch7x7_3', c('branch7x7_2', c('branch7x7_1', x)))
  bd = x
  for i in range(1, 6):
    bd = c(f'branch7x7dbl_{i}', bd)
  return jnp.concatenate([c('branch1x1', x), b7, bd, c('branch_pool', _avg_pool_valid_only(x))],
                         axis=-1)


def _mixed_d(p, name, x):
  c = lambda branch, y: _basic_conv(p, f'{name}.{branch}', y)
  b3 = c('branch3x3_2', c('branch3x3_1', x))
  b7 = x
  for i in range(1, 5):
    b7 = c(f'branch7x7x3_{i}', b7)
  return jnp.concatenate([b3, b7, _max_pool(x, 2)], axis=-1)


def _mixed_e(p, name, x, max_pool_branch: bool):
  c = lambda branch, y: _basic_conv(p, f'{name}.{branch}', y)
  b3 = c('branch3x3_1', x)
  b3 = jnp.concatenate([c('branch3x3_2a', b3), c('branch3x3_2b', b3)], axis=-1)
  bd = c('branch3x3dbl_2', c('branch3x3dbl_1', x))
  bd = jnp.concatenate([c('branch3x3dbl_3a', bd), c('branch3x3dbl_3b', bd)], axis=-1)
  pooled = _max_pool(x, 1, padding=1) if max_pool_branch else _avg_pool_valid_only(x)
  return jnp.concatenate([c('branch1x1', x), b3, bd, c('branch_pool', pooled)], axis=-1)


def resize_bilinear(images, size: int):
  """(B, H, W, C) -> (B, size, size, C) as torch's F.interpolate(mode='bilinear',
  align_corners=False): half-pixel centres, edge clamping, no antialiasing when shrinking."""
  return jax.image.resize(images, (images.shape[0], size, size, images.shape[-1]),
                          method='bilinear', antialias=False)


def features(params, images, *, resize: bool = True):
  """pool3 features of pytorch-fid's InceptionV3 (its block 3, the 2048-d average pool).

  Args:
    params: ``load``/``convert``'s output.
    images: (B, H, W, 3) RGB float in [0, 1], channels last. H, W >= 75 when resize is False.
    resize: bilinear resize to 299 x 299 first (pytorch-fid's default; FID needs it).
  Returns:
    (B, 2048) float32.
  """
  x = jnp.asarray(images, jnp.float32)
  if resize:
    x = resize_bilinear(x, INPUT_SIZE)
  x = 2.0 * x - 1.0
  for name in ('Conv2d_1a_3x3', 'Conv2d_2a_3x3', 'Conv2d_2b_3x3'):
    x = _basic_conv(params, name, x)
  x = _max_pool(x, 2)
  x = _basic_conv(params, 'Conv2d_4a_3x3', _basic_conv(params, 'Conv2d_3b_1x1', x))
  x = _max_pool(x, 2)
  for name in ('Mixed_5b', 'Mixed_5c', 'Mixed_5d'):
    x = _mixed_a(params, name, x)
  x = _mixed_b(params, 'Mixed_6a', x)
  for name in ('Mixed_6b', 'Mixed_6c', 'Mixed_6d', 'Mixed_6e'):
    x = _mixed_c(params, name, x)
  x = _mixed_d(params, 'Mixed_7a', x)
  x = _mixed_e(params, 'Mixed_7b', x, max_pool_branch=False)
  x = _mixed_e(params, 'Mixed_7c', x, max_pool_branch=True)
  return jnp.mean(x, axis=(1, 2))
