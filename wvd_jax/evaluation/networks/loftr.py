"""LoFTR (Sun et al. 2021), the detector-free matcher, as pure JAX functions: kornia's LoFTR in
inference mode (kornia/feature/loftr: default config, dual-softmax coarse matching, linear
attention), with the weights kornia distributes (``loftr_outdoor.ckpt``, ``loftr_indoor.ckpt``,
``loftr_indoor_ds_new.ckpt``).

Pipeline for a pair of gray images (H, W multiples of 8) in [0, 1]:
  backbone   ResNet-FPN 8/2: 7x7/2 conv, three stages of two BasicBlocks (128, 196, 256 channels,
             strides 1, 2, 2), FPN with align_corners bilinear x2 upsampling -> coarse (H/8, 256)
             and fine (H/2, 128) maps; BatchNorm (eps 1e-5) folded into the convs at load time.
  position   sine encoding added to the coarse map: channels 4k..4k+3 = sin/cos(x d_k),
             sin/cos(y d_k), x, y = 1-based cell column / row, d_k = exp(-2k ln(10^4) / 128);
             kornia's 'outdoor' and 'indoor' models were trained with LoFTR's original bug,
             d_k = exp(-2k) (``temp_bug_fix`` False), 'indoor_new' with the fix.
  coarse     4 x (self, cross) LoFTR encoder layers (8 heads, linear attention elu + 1).
  matching   dual softmax of <f0, f1> / 256^0.5 / 0.1; cell i of image 0 matches cell j = argmax
             of its row when the pair is a mutual maximum, above the threshold (0.2) and 2 cells
             from both borders; key points at 8 * (column, row) of the cells.
  fine       5 x 5 windows of the fine maps around the matched cells (stride 4), merged with the
             coarse features, 1 x (self, cross) layer; image 1's point moves by the expectation of
             the soft-argmax heatmap, at most 4 pixels along each axis.
Key points are (x, y) in pixels with pixel centres at +0.5, the project's convention (kornia's
docstring: the pretrained models put pixel (x, y)'s centre at (x + 0.5, y + 0.5)).

Everything runs densely with static shapes (the fine stage for every cell of image 0 with its row
maximum as partner), so one compile serves every pair of one size; ``select`` keeps the matches.
"""
from __future__ import annotations

import functools
import math
import os
import re

import jax
import jax.numpy as jnp
import numpy as np

from wvd_jax.evaluation.networks import layers, weights

WHAT = "kornia's LoFTR weights (loftr_outdoor.ckpt, loftr_indoor.ckpt or loftr_indoor_ds_new.ckpt)"
HINT = ("give one of the LoFTR checkpoints kornia distributes (or its .safetensors conversion) "
        'as eval.loftr_weights')
INITIAL_DIM, BLOCK_DIMS = 128, (128, 196, 256)
COARSE_DIM, FINE_DIM, HEADS = 256, 128, 8
COARSE_LAYERS, FINE_LAYERS = ('self', 'cross') * 4, ('self', 'cross')
STRIDE_COARSE, STRIDE_FINE, WINDOW = 8, 2, 5
THRESHOLD, BORDER, TEMPERATURE = 0.2, 2, 0.1
BN_EPS, LN_EPS, ATTENTION_EPS = 1e-5, 1e-5, 1e-6


def _conv_specs() -> dict[str, tuple]:
  """Backbone conv name -> (cin, cout, kernel, stride, padding, its BatchNorm or None)."""
  specs = {'conv1': (1, INITIAL_DIM, 7, 2, 3, 'bn1')}
  cin = INITIAL_DIM
  for stage, (dim, stride) in enumerate(zip(BLOCK_DIMS, (1, 2, 2)), start=1):
    for block in (0, 1):
      p, s = f'layer{stage}.{block}', stride if block == 0 else 1
      specs[f'{p}.conv1'] = (cin, dim, 3, s, 1, f'{p}.bn1')
      specs[f'{p}.conv2'] = (dim, dim, 3, 1, 1, f'{p}.bn2')
      if s != 1:
        specs[f'{p}.downsample.0'] = (cin, dim, 1, s, 0, f'{p}.downsample.1')
      cin = dim
  d1, d2, d3 = BLOCK_DIMS
  specs.update({'layer3_outconv': (d3, d3, 1, 1, 0, None),
                'layer2_outconv': (d2, d3, 1, 1, 0, None),
                'layer2_outconv2.0': (d3, d3, 3, 1, 1, 'layer2_outconv2.1'),
                'layer2_outconv2.3': (d3, d2, 3, 1, 1, None),
                'layer1_outconv': (d1, d2, 1, 1, 0, None),
                'layer1_outconv2.0': (d2, d2, 3, 1, 1, 'layer1_outconv2.1'),
                'layer1_outconv2.3': (d2, d1, 3, 1, 1, None)})
  return specs


CONV_SPECS = _conv_specs()


def torch_shapes() -> dict[str, tuple[int, ...]]:
  """The tensors of kornia's LoFTR (default config): name -> PyTorch shape."""
  out = {}
  for name, (cin, cout, k, _, _, bn) in CONV_SPECS.items():
    out[f'backbone.{name}.weight'] = (cout, cin, k, k)
    if bn:
      for leaf in ('weight', 'bias', 'running_mean', 'running_var'):
        out[f'backbone.{bn}.{leaf}'] = (cout,)
  for module, d, count in (('loftr_coarse', COARSE_DIM, len(COARSE_LAYERS)),
                           ('loftr_fine', FINE_DIM, len(FINE_LAYERS))):
    for i in range(count):
      p = f'{module}.layers.{i}'
      for proj in ('q_proj', 'k_proj', 'v_proj', 'merge'):
        out[f'{p}.{proj}.weight'] = (d, d)
      out[f'{p}.mlp.0.weight'] = (2 * d, 2 * d)
      out[f'{p}.mlp.2.weight'] = (d, 2 * d)
      for norm in ('norm1', 'norm2'):
        out[f'{p}.{norm}.weight'] = (d,)
        out[f'{p}.{norm}.bias'] = (d,)
  out.update({'fine_preprocess.down_proj.weight': (FINE_DIM, COARSE_DIM),
              'fine_preprocess.down_proj.bias': (FINE_DIM,),
              'fine_preprocess.merge_feat.weight': (FINE_DIM, 2 * FINE_DIM),
              'fine_preprocess.merge_feat.bias': (FINE_DIM,)})
  return out


def convert(tensors, path: str = '<tensors>') -> dict[str, jax.Array]:
  """A kornia LoFTR state dict (optionally with the ``matcher.`` prefix of the original
  checkpoints) -> params: backbone convs with BatchNorm folded in (HWIO kernel, bias), linear
  kernels as (in, out)."""
  tensors = {re.sub(r'^matcher\.', '', k): v for k, v in tensors.items()}
  optional = {k for k in tensors if k.endswith('num_batches_tracked')}
  weights.check_tensors(path, WHAT, tensors, torch_shapes(), optional, HINT)
  params = {}
  for name, (*_, bn) in CONV_SPECS.items():
    params[f'backbone.{name}.kernel'], params[f'backbone.{name}.bias'] = layers.fold_batch_norm(
        tensors, f'backbone.{name}', bn and f'backbone.{bn}', BN_EPS)
  for name in torch_shapes():
    if not name.startswith('backbone.'):
      value = np.asarray(tensors[name], np.float64)
      params[name] = weights.linear_kernel(value) if value.ndim == 2 else value
  return {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}


def load(path: str | os.PathLike) -> dict[str, jax.Array]:
  """Reads and converts a LoFTR weights file (.ckpt / .pth with torch, or .safetensors)."""
  return convert(weights.read_state_dict(path), os.fspath(path))


def fixed_position_encoding(path: str | os.PathLike) -> bool:
  """kornia's ``temp_bug_fix`` for a checkpoint: only 'indoor_new' (loftr_indoor_ds_new.ckpt)
  was trained with the fixed encoding; the file holds no such flag, so its name tells."""
  return 'new' in os.path.basename(os.fspath(path)).lower()


# ----------------------------------------------------------------------------------- backbone

def _conv(params, name, x):
  _, _, _, stride, pad, _ = CONV_SPECS[name]
  return layers.conv(x, params[f'backbone.{name}.kernel'], params[f'backbone.{name}.bias'], stride,
                     (pad, pad))


def _block(params, prefix, x):
  y = _conv(params, f'{prefix}.conv2', jax.nn.relu(_conv(params, f'{prefix}.conv1', x)))
  if f'{prefix}.downsample.0' in CONV_SPECS:
    x = _conv(params, f'{prefix}.downsample.0', x)
  return jax.nn.relu(x + y)


def _upsample2(x):
  """x2 bilinear upsampling with align_corners=True (B, h, w, C) -> (B, 2h, 2w, C)."""
  def matrix(n):
    src = np.arange(2 * n) * ((n - 1) / (2 * n - 1)) if n > 1 else np.zeros(2 * n)
    low = np.floor(src).astype(int)
    high = np.minimum(low + 1, n - 1)
    frac = src - low
    m = np.zeros((2 * n, n))
    np.add.at(m, (np.arange(2 * n), low), 1 - frac)
    np.add.at(m, (np.arange(2 * n), high), frac)
    return jnp.asarray(m, jnp.float32)
  x = jnp.einsum('oh,bhwc->bowc', matrix(x.shape[1]), x, precision=layers.PRECISION)
  return jnp.einsum('ow,bhwc->bhoc', matrix(x.shape[2]), x, precision=layers.PRECISION)


def backbone(params, images):
  """(B, H, W, 1) gray in [0, 1] -> (coarse (B, H/8, W/8, 256), fine (B, H/2, W/2, 128))."""
  x1 = jax.nn.relu(_conv(params, 'conv1', images))
  stages = []
  for stage in (1, 2, 3):
    for block in (0, 1):
      x1 = _block(params, f'layer{stage}.{block}', x1)
    stages.append(x1)
  x1, x2, x3 = stages
  leaky = lambda y: jax.nn.leaky_relu(y, 0.01)
  x3_out = _conv(params, 'layer3_outconv', x3)
  x2_out = _conv(params, 'layer2_outconv', x2)
  x2_out = x2_out + _upsample2(x3_out)[:, :x2_out.shape[1], :x2_out.shape[2]]
  x2_out = _conv(params, 'layer2_outconv2.3', leaky(_conv(params, 'layer2_outconv2.0', x2_out)))
  x1_out = _conv(params, 'layer1_outconv', x1)
  x1_out = x1_out + _upsample2(x2_out)[:, :x1_out.shape[1], :x1_out.shape[2]]
  x1_out = _conv(params, 'layer1_outconv2.3', leaky(_conv(params, 'layer1_outconv2.0', x1_out)))
  return x3_out, x1_out


def position_encoding(height: int, width: int, fixed: bool) -> np.ndarray:
  """(height, width, 256) float32 sine encoding of the coarse cells (module docstring)."""
  half = COARSE_DIM // 2
  factor = -math.log(10000.0) / half if fixed else (-math.log(10000.0) / COARSE_DIM) // 2
  div = np.exp(np.arange(0, half, 2, dtype=np.float32) * np.float32(factor))
  x = np.arange(1, width + 1, dtype=np.float32)[None, :, None] * div
  y = np.arange(1, height + 1, dtype=np.float32)[:, None, None] * div
  pe = np.zeros((height, width, COARSE_DIM), np.float32)
  pe[..., 0::4], pe[..., 1::4] = np.sin(x), np.cos(x)
  pe[..., 2::4], pe[..., 3::4] = np.sin(y), np.cos(y)
  return pe


# -------------------------------------------------------------------------------- transformer

def _dot(x, kernel):
  return jnp.dot(x, kernel, precision=layers.PRECISION)


def _encoder_layer(params, p, x, source):
  """LoFTREncoderLayer: linear attention of x over source, merge, norm, MLP on [x, message]."""
  b, l, d = x.shape
  s = source.shape[1]
  split = lambda y, n: y.reshape(b, n, HEADS, d // HEADS)
  q = jax.nn.elu(split(_dot(x, params[f'{p}.q_proj.weight']), l)) + 1
  k = jax.nn.elu(split(_dot(source, params[f'{p}.k_proj.weight']), s)) + 1
  v = split(_dot(source, params[f'{p}.v_proj.weight']), s) / s
  kv = jnp.einsum('nshd,nshv->nhdv', k, v, precision=layers.PRECISION)
  z = 1.0 / (jnp.einsum('nlhd,nhd->nlh', q, k.sum(axis=1), precision=layers.PRECISION)
             + ATTENTION_EPS)
  message = jnp.einsum('nlhd,nhdv->nlhv', q, kv, precision=layers.PRECISION) * z[..., None] * s
  message = _dot(message.reshape(b, l, d), params[f'{p}.merge.weight'])
  message = layers.layer_norm(params, f'{p}.norm1', message, LN_EPS)
  message = jax.nn.relu(_dot(jnp.concatenate([x, message], axis=-1), params[f'{p}.mlp.0.weight']))
  message = layers.layer_norm(params, f'{p}.norm2', _dot(message, params[f'{p}.mlp.2.weight']),
                              LN_EPS)
  return x + message


def transformer(params, module: str, names, feat0, feat1):
  """LocalFeatureTransformer: (B, L, C) and (B, S, C) -> the same, updated in kornia's order
  (in a 'cross' layer image 1 attends to the already updated image 0)."""
  for i, name in enumerate(names):
    p = f'{module}.layers.{i}'
    if name == 'self':
      feat0, feat1 = _encoder_layer(params, p, feat0, feat0), _encoder_layer(params, p, feat1,
                                                                              feat1)
    else:
      feat0 = _encoder_layer(params, p, feat0, feat1)
      feat1 = _encoder_layer(params, p, feat1, feat0)
  return feat0, feat1


# ----------------------------------------------------------------------------------- matching

def confidence_matrix(coarse0, coarse1):
  """Dual softmax of (B, L, C) x (B, S, C) features -> (B, L, S)."""
  scale = coarse0.shape[-1] ** -0.5
  sim = jnp.einsum('nlc,nsc->nls', coarse0 * scale, coarse1 * scale,
                   precision=layers.PRECISION) / TEMPERATURE
  return jax.nn.softmax(sim, axis=2) * jax.nn.softmax(sim, axis=1)


def _inside(h, w, border):
  rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing='ij')
  keep = (rows >= border) & (cols >= border) & (rows < h - border) & (cols < w - border)
  return jnp.asarray(keep.reshape(-1))


def coarse_matches(conf, hw0: tuple[int, int], hw1: tuple[int, int],
                   threshold: float = THRESHOLD, border: int = BORDER):
  """Mutual row / column maxima of (B, L, S) above the threshold, off the borders.

  Returns (mask (B, L) bool, j (B, L) int: the partner of each cell i of image 0, confidence
  (B, L))."""
  row_max, j = jnp.max(conf, axis=2), jnp.argmax(conf, axis=2)
  col_max = jnp.max(conf, axis=1)
  mutual = jnp.take_along_axis(col_max, j, axis=1) == row_max
  mask = (row_max > max(threshold, 0.0)) & mutual & _inside(*hw0, border)[None]
  mask &= _inside(*hw1, border)[j]
  return mask, j, row_max


def cell_points(ids, width: int):
  """(x, y) = 8 * (column, row) of flattened coarse cell indices."""
  return jnp.stack([ids % width, ids // width], axis=-1).astype(jnp.float32) * STRIDE_COARSE


def _windows(fine, ids):
  """5 x 5 windows (M, 25, C) of (H_f, W_f, C) around coarse cells ``ids`` (M,), zero padded."""
  pad, stride = WINDOW // 2, STRIDE_COARSE // STRIDE_FINE
  padded = jnp.pad(fine, ((pad, pad), (pad, pad), (0, 0)))
  w_out = (fine.shape[1] + 2 * pad - WINDOW) // stride + 1  # The coarse width, as kornia's.
  offsets = jnp.arange(WINDOW)
  rows = (ids // w_out * stride)[:, None] + offsets
  cols = (ids % w_out * stride)[:, None] + offsets
  return padded[rows[:, :, None], cols[:, None, :]].reshape(ids.shape[0], WINDOW * WINDOW, -1)


def fine_offsets(params, fine0, fine1, coarse0, coarse1, i_ids, j_ids):
  """The fine stage of one image pair for coarse pairs (i_ids, j_ids) (M,).

  Args:
    fine0, fine1: (H/2, W/2, 128) fine maps; coarse0, coarse1: (L, 256) transformed features.
  Returns:
    (offset (M, 2) in pixels to add to image 1's coarse points, expectation (M, 3): the
    normalized soft-argmax (x, y) in [-1, 1] and the summed standard deviation, kornia's expec_f).
  """
  w0, w1 = _windows(fine0, i_ids), _windows(fine1, j_ids)
  m = i_ids.shape[0]
  coarse = jnp.concatenate([coarse0[i_ids], coarse1[j_ids]], axis=0)
  coarse = _dot(coarse, params['fine_preprocess.down_proj.weight']) + params[
      'fine_preprocess.down_proj.bias']
  merged = jnp.concatenate([jnp.concatenate([w0, w1], axis=0),
                            jnp.repeat(coarse[:, None], WINDOW * WINDOW, axis=1)], axis=-1)
  merged = _dot(merged, params['fine_preprocess.merge_feat.weight']) + params[
      'fine_preprocess.merge_feat.bias']
  f0, f1 = transformer(params, 'loftr_fine', FINE_LAYERS, merged[:m], merged[m:])
  centre = f0[:, WINDOW * WINDOW // 2]
  sim = jnp.einsum('mc,mrc->mr', centre, f1, precision=layers.PRECISION) / math.sqrt(f0.shape[-1])
  heat = jax.nn.softmax(sim, axis=1)
  grid = np.linspace(-1.0, 1.0, WINDOW, dtype=np.float32)
  gx = jnp.asarray(np.tile(grid, WINDOW))       # x varies along a window row (row-major).
  gy = jnp.asarray(np.repeat(grid, WINDOW))
  expect = lambda g: jnp.dot(heat, g, precision=layers.PRECISION)
  coords = jnp.stack([expect(gx), expect(gy)], axis=-1)
  var = jnp.stack([expect(gx ** 2), expect(gy ** 2)], axis=-1) - coords ** 2
  std = jnp.sum(jnp.sqrt(jnp.where(var > 1e-10, var, 1e-10)), axis=-1)
  offset = coords * (WINDOW // 2) * STRIDE_FINE
  return offset, jnp.concatenate([coords, std[:, None]], axis=-1)


def features(params, gray0, gray1, fixed_encoding: bool):
  """(B, H, W) gray pairs -> transformed coarse features (B, L, 256) of both images, fine maps
  (B, H/2, W/2, 128) of both, and the coarse grid (H/8, W/8)."""
  b = gray0.shape[0]
  coarse, fine = backbone(params, jnp.concatenate([gray0, gray1])[..., None])
  hc, wc = coarse.shape[1:3]
  coarse = (coarse + position_encoding(hc, wc, fixed_encoding)).reshape(2 * b, hc * wc, -1)
  coarse0, coarse1 = transformer(params, 'loftr_coarse', COARSE_LAYERS, coarse[:b], coarse[b:])
  return (coarse0, coarse1), (fine[:b], fine[b:]), (hc, wc)


@functools.partial(jax.jit, static_argnames=('fixed_encoding', 'threshold'))
def match(params, gray0, gray1, *, fixed_encoding: bool = False, threshold: float = THRESHOLD):
  """Dense LoFTR matching of image pairs.

  Args:
    gray0, gray1: (B, H, W) gray images in [0, 1] (kornia's input), H and W multiples of 8.
  Returns:
    {'mask': (B, L) bool, the matched cells of image 0 (L = H/8 * W/8, row-major);
     'keypoints0', 'keypoints1': (B, L, 2) (x, y) pixels; 'confidence': (B, L);
     'conf_matrix': (B, L, L)}; only entries under ``mask`` are matches (``select``).
  """
  (coarse0, coarse1), (fine0, fine1), (hc, wc) = features(params, gray0, gray1, fixed_encoding)
  conf = confidence_matrix(coarse0, coarse1)
  mask, j, confidence = coarse_matches(conf, (hc, wc), (hc, wc), threshold)
  i = jnp.arange(hc * wc)
  offsets, _ = jax.vmap(lambda f0, f1, c0, c1, jj: fine_offsets(params, f0, f1, c0, c1, i, jj))(
      fine0, fine1, coarse0, coarse1, j)
  return {'mask': mask, 'keypoints0': jnp.broadcast_to(cell_points(i, wc), mask.shape + (2,)),
          'keypoints1': cell_points(j, wc) + offsets, 'confidence': confidence,
          'conf_matrix': conf}


def select(dense: dict, pair: int = 0) -> dict[str, np.ndarray]:
  """The matches of one pair of ``match``'s output: keypoints0, keypoints1 (M, 2), confidence
  (M,), in kornia's order (row-major over image 0's cells)."""
  mask = np.asarray(dense['mask'][pair])
  return {k: np.asarray(dense[k][pair])[mask] for k in ('keypoints0', 'keypoints1', 'confidence')}
