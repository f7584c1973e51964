"""The CLIP ViT image encoder (Radford et al. 2021) as a pure JAX function: image embeddings.

Follows transformers' CLIPVisionModel / CLIPVisionModelWithProjection (modeling_clip.py):
patch conv (stride = patch, no bias) -> [class token; patches] + learned positions ->
``pre_layrnorm`` -> L pre-norm blocks (multi-head attention with q scaled by head_dim^-1/2,
MLP fc1 -> activation -> fc2) -> ``last_hidden_state``; ``post_layernorm`` of the class token is
the pooled output, and ``visual_projection`` (no bias) of it the image embedding.

Weights (nothing is downloaded; see ``load``):
  * Hugging Face format: a model directory (``config.json`` + ``model.safetensors`` or
    ``pytorch_model.bin``) or a weights file (with an optional ``config.json`` beside it) of
    CLIPModel, CLIPVisionModel(WithProjection): tensors ``vision_model.*`` and
    ``visual_projection.weight`` (text tower tensors are ignored). The architecture (width,
    depth, patch, image size, MLP width, projection) is read from the tensors' shapes; heads,
    activation and LayerNorm eps from config.json (``vision_config`` of a CLIPConfig), else
    head_dim 64, quick_gelu, 1e-5 (the values of openai/clip-vit-base-patch32 and
    clip-vit-large-patch14).
  * open_clip format: a state dict with ``visual.*`` tensors (``conv1``, ``class_embedding``,
    ``positional_embedding``, ``ln_pre``, ``transformer.resblocks.i.{ln_1, attn.in_proj_*,
    attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj}``, ``ln_post``, ``proj``), mapped onto the same
    names (in_proj split into q, k, v; ``proj`` (D, E) transposed). open_clip files do not record
    the activation: it comes from ``open_clip_config.json`` beside the file (``model_cfg.
    quick_gelu``), else GELU, open_clip's default for its model configs without '-quickgelu'.

Preprocessing (CLIPImageProcessor of the OpenAI checkpoints): RGB in [0, 1] resized to the
config's image size (bicubic; frames are square, so the centre crop is the whole frame), then
normalized with OPENAI_MEAN / OPENAI_STD (openai/CLIP clip.py ``_transform``).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from wvd_jax import errors
from wvd_jax.evaluation.networks import layers, weights

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
HEAD_DIM = 64  # Of every OpenAI and open_clip ViT (open_clip's vision_cfg.head_width default).
WHAT = 'a CLIP ViT image encoder (Hugging Face or open_clip format)'
HINT = ('give a CLIP ViT checkpoint (e.g. openai/clip-vit-base-patch32: its directory or '
        'model.safetensors) as eval.clip_weights')
HF_WEIGHT_FILES = ('model.safetensors', 'pytorch_model.bin')
_IGNORED = re.compile(r'^(text_model\.|text_projection\.|logit_scale$|'
                      r'vision_model\.embeddings\.position_ids$)')


@dataclasses.dataclass(frozen=True)
class ClipVisionConfig:
  """The vision tower's architecture (the keys of transformers' CLIPVisionConfig)."""
  hidden_size: int
  intermediate_size: int
  num_hidden_layers: int
  num_attention_heads: int
  image_size: int
  patch_size: int
  projection_dim: int  # 0: no visual_projection (the pooled output is the embedding).
  hidden_act: str = 'quick_gelu'
  layer_norm_eps: float = 1e-5

  @property
  def num_positions(self) -> int:
    return (self.image_size // self.patch_size) ** 2 + 1


def torch_shapes(c: ClipVisionConfig) -> dict[str, tuple[int, ...]]:
  """The Hugging Face tensors of the vision tower: name -> PyTorch shape."""
  d, m = c.hidden_size, c.intermediate_size
  out = {'vision_model.embeddings.class_embedding': (d,),
         'vision_model.embeddings.patch_embedding.weight': (d, 3, c.patch_size, c.patch_size),
         'vision_model.embeddings.position_embedding.weight': (c.num_positions, d)}
  for norm in ('pre_layrnorm', 'post_layernorm'):
    out.update({f'vision_model.{norm}.weight': (d,), f'vision_model.{norm}.bias': (d,)})
  for i in range(c.num_hidden_layers):
    p = f'vision_model.encoder.layers.{i}.'
    for proj in ('q_proj', 'k_proj', 'v_proj', 'out_proj'):
      out.update({f'{p}self_attn.{proj}.weight': (d, d), f'{p}self_attn.{proj}.bias': (d,)})
    for norm in ('layer_norm1', 'layer_norm2'):
      out.update({f'{p}{norm}.weight': (d,), f'{p}{norm}.bias': (d,)})
    out.update({f'{p}mlp.fc1.weight': (m, d), f'{p}mlp.fc1.bias': (m,),
                f'{p}mlp.fc2.weight': (d, m), f'{p}mlp.fc2.bias': (d,)})
  if c.projection_dim:
    out['visual_projection.weight'] = (c.projection_dim, d)
  return out


# ------------------------------------------------------------------------------ file formats

def _from_open_clip(tensors: dict) -> dict:
  """open_clip ``visual.*`` names -> Hugging Face names (module docstring)."""
  out = {}
  simple = {'conv1.weight': 'embeddings.patch_embedding.weight',
            'class_embedding': 'embeddings.class_embedding',
            'positional_embedding': 'embeddings.position_embedding.weight',
            'ln_pre.weight': 'pre_layrnorm.weight', 'ln_pre.bias': 'pre_layrnorm.bias',
            'ln_post.weight': 'post_layernorm.weight', 'ln_post.bias': 'post_layernorm.bias'}
  block = {'ln_1': 'layer_norm1', 'ln_2': 'layer_norm2', 'attn.out_proj': 'self_attn.out_proj',
           'mlp.c_fc': 'mlp.fc1', 'mlp.c_proj': 'mlp.fc2'}
  for name, value in tensors.items():
    if not name.startswith('visual.'):
      continue  # The text tower, logit_scale.
    rest = name[len('visual.'):]
    # nn.MultiheadAttention names its packed q/k/v projection attn.in_proj_{weight,bias}.
    m = re.match(r'^transformer\.resblocks\.(\d+)\.(.+)[._](weight|bias)$', rest)
    if rest == 'proj':
      out['visual_projection.weight'] = np.asarray(value).T
    elif rest in simple:
      out[f'vision_model.{simple[rest]}'] = value
    elif m and m[2] == 'attn.in_proj':
      prefix = f'vision_model.encoder.layers.{m[1]}.self_attn'
      for proj, part in zip(('q_proj', 'k_proj', 'v_proj'), np.split(np.asarray(value), 3)):
        out[f'{prefix}.{proj}.{m[3]}'] = part
    elif m and m[2] in block:
      out[f'vision_model.encoder.layers.{m[1]}.{block[m[2]]}.{m[3]}'] = value
    else:
      out[f'visual.{rest}'] = value  # Unknown: reported as unexpected.
  return out


def _read_json(path: str) -> dict:
  try:
    with open(path) as f:
      d = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise errors.UserError(f'{path} is not a readable JSON file: {e}') from None
  if not isinstance(d, dict):
    raise errors.UserError(f'{path} does not hold a JSON object')
  return d


def _resolve(path: str) -> tuple[str, str | None]:
  """(weights file, its directory's config file or None) of a directory or a file."""
  if os.path.isdir(path):
    for name in HF_WEIGHT_FILES:
      if os.path.isfile(os.path.join(path, name)):
        config = os.path.join(path, 'config.json')
        return os.path.join(path, name), config if os.path.isfile(config) else None
    raise errors.UserError(f'{path}: no {" or ".join(HF_WEIGHT_FILES)} in the directory; '
                           f'{HINT}')
  directory = os.path.dirname(os.path.abspath(path))
  for name in ('config.json', 'open_clip_config.json'):
    if os.path.isfile(os.path.join(directory, name)):
      return path, os.path.join(directory, name)
  return path, None


def _settings(config_path: str | None, open_clip: bool) -> dict:
  """num_attention_heads / hidden_act / layer_norm_eps from a config file, when it has them."""
  if config_path is None:
    if open_clip:
      logging.warning('open_clip weights without open_clip_config.json: assuming GELU (models '
                      "whose open_clip name ends in '-quickgelu' need QuickGELU: add the file)")
      return {'hidden_act': 'gelu'}
    return {}
  d = _read_json(config_path)
  if 'model_cfg' in d:  # open_clip_config.json
    cfg = d['model_cfg'] if isinstance(d['model_cfg'], dict) else {}
    vision = cfg.get('vision_cfg', {}) if isinstance(cfg.get('vision_cfg', {}), dict) else {}
    out = {'hidden_act': 'quick_gelu' if cfg.get('quick_gelu') else 'gelu'}
    if 'head_width' in vision and 'width' in vision:
      out['num_attention_heads'] = int(vision['width']) // int(vision['head_width'])
    return out
  vision = d.get('vision_config', d)
  if not isinstance(vision, dict):
    raise errors.UserError(f'{config_path}: vision_config is not a JSON object')
  return {k: vision[k] for k in ('num_attention_heads', 'hidden_act', 'layer_norm_eps',
                                 'hidden_size', 'patch_size', 'image_size') if k in vision}


def _config_from_tensors(path: str, tensors: dict, settings: dict) -> ClipVisionConfig:
  need = ('vision_model.embeddings.patch_embedding.weight',
          'vision_model.embeddings.position_embedding.weight')
  if any(n not in tensors for n in need):
    raise errors.UserError(f'{path} is not {WHAT}: no tensor {need[0]!r} (nor open_clip\'s '
                           f"'visual.conv1.weight'); {HINT}")
  patch = np.shape(tensors[need[0]])
  positions = np.shape(tensors[need[1]])
  depth = 1 + max([int(m[1]) for m in (re.match(r'^vision_model\.encoder\.layers\.(\d+)\.', n)
                                       for n in tensors) if m], default=-1)
  fc1 = np.shape(tensors.get('vision_model.encoder.layers.0.mlp.fc1.weight', (0, 0)))
  grid = int(round(np.sqrt(max(positions[0] - 1, 0))))
  if len(patch) != 4 or patch[2] != patch[3] or grid * grid + 1 != positions[0] or not depth:
    raise errors.UserError(f'{path} is not {WHAT}: patch embedding {patch} and {positions[0]} '
                           f'positions are not a square ViT; {HINT}')
  hidden = int(patch[0])
  try:
    config = ClipVisionConfig(
        hidden_size=hidden, intermediate_size=int(fc1[0]), num_hidden_layers=depth,
        num_attention_heads=int(settings.get('num_attention_heads', max(hidden // HEAD_DIM, 1))),
        image_size=grid * int(patch[2]), patch_size=int(patch[2]),
        projection_dim=int(np.shape(tensors['visual_projection.weight'])[0])
        if 'visual_projection.weight' in tensors else 0,
        hidden_act=str(settings.get('hidden_act', 'quick_gelu')),
        layer_norm_eps=float(settings.get('layer_norm_eps', 1e-5)))
    stated = {k: int(settings[k]) for k in ('hidden_size', 'patch_size', 'image_size')
              if k in settings}
  except (TypeError, ValueError) as e:
    raise errors.UserError(f'{path}: its config has a value of the wrong type ({e})') from None
  if config.num_attention_heads < 1:
    raise errors.UserError(f'{path}: num_attention_heads must be >= 1, got '
                           f'{config.num_attention_heads}')
  for key in stated:
    if stated[key] != getattr(config, key):
      raise errors.UserError(f'{path}: its config says {key} {settings[key]} but the tensors '
                             f'have {getattr(config, key)}; give the matching config.json')
  if config.hidden_act not in _ACTIVATIONS:
    raise errors.UserError(f'{path}: hidden_act {config.hidden_act!r} is not one of '
                           f'{sorted(_ACTIVATIONS)}')
  if hidden % config.num_attention_heads:
    raise errors.UserError(f'{path}: width {hidden} is not divisible by '
                           f'{config.num_attention_heads} heads')
  return config


def convert(tensors: dict, path: str = '<tensors>', settings: dict | None = None
            ) -> tuple[ClipVisionConfig, dict[str, jax.Array]]:
  """A Hugging Face or open_clip state dict -> (config, params in lax layouts)."""
  settings = dict(settings or {})
  if any(n.startswith('visual.') for n in tensors):
    tensors = _from_open_clip(tensors)
  tensors = {n: v for n, v in tensors.items() if not _IGNORED.match(n)}
  config = _config_from_tensors(path, tensors, settings)
  weights.check_tensors(path, WHAT, tensors, torch_shapes(config), hint=HINT)
  params = {}
  for name, value in tensors.items():
    short = name.removeprefix('vision_model.')
    value = np.asarray(value, np.float32)
    if short == 'embeddings.patch_embedding.weight':
      value = weights.conv_kernel(value)
    elif value.ndim == 2 and short != 'embeddings.position_embedding.weight':
      value = weights.linear_kernel(value)
    params[short] = jnp.asarray(np.ascontiguousarray(value))
  return config, params


def load(path: str | os.PathLike) -> tuple[ClipVisionConfig, dict[str, jax.Array]]:
  """Reads a CLIP checkpoint (module docstring) -> (config, params)."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise errors.UserError(f'CLIP weights not found: {path}')
  weights_path, config_path = _resolve(path)
  tensors = weights.read_state_dict(weights_path)
  open_clip = any(n.startswith('visual.') for n in tensors)
  return convert(tensors, weights_path, _settings(config_path, open_clip))


# ---------------------------------------------------------------------------------- forward

_ACTIVATIONS = {'quick_gelu': lambda x: x * jax.nn.sigmoid(1.702 * x),
                'gelu': lambda x: jax.nn.gelu(x, approximate=False)}


def _linear(params, name, x):
  return jnp.dot(x, params[f'{name}.weight'], precision=layers.PRECISION) + params[f'{name}.bias']


def _attention(params, prefix, x, heads):
  b, t, d = x.shape
  split = lambda y: y.reshape(b, t, heads, d // heads)
  q = split(_linear(params, f'{prefix}.q_proj', x)) * (d // heads) ** -0.5
  k = split(_linear(params, f'{prefix}.k_proj', x))
  v = split(_linear(params, f'{prefix}.v_proj', x))
  attn = jax.nn.softmax(jnp.einsum('bqhd,bkhd->bhqk', q, k, precision=layers.PRECISION), axis=-1)
  out = jnp.einsum('bhqk,bkhd->bqhd', attn, v, precision=layers.PRECISION).reshape(b, t, d)
  return _linear(params, f'{prefix}.out_proj', out)


def encode(config: ClipVisionConfig, params, pixels) -> dict[str, jax.Array]:
  """The vision tower on normalized pixels.

  Args:
    pixels: (B, S, S, 3) normalized as ``preprocess`` does, S = config.image_size.
  Returns:
    {'last_hidden_state': (B, 1 + (S / patch)^2, D), 'pooler_output': (B, D),
     'image_embeds': (B, E) (the pooled output when there is no projection)}.
  """
  c = config
  x = layers.conv(jnp.asarray(pixels, jnp.float32), params['embeddings.patch_embedding.weight'],
                  0.0, c.patch_size, (0, 0))
  b = x.shape[0]
  x = x.reshape(b, -1, c.hidden_size)
  cls = jnp.broadcast_to(params['embeddings.class_embedding'], (b, 1, c.hidden_size))
  x = jnp.concatenate([cls, x], axis=1) + params['embeddings.position_embedding.weight']
  x = layers.layer_norm(params, 'pre_layrnorm', x, c.layer_norm_eps)
  act = _ACTIVATIONS[c.hidden_act]
  for i in range(c.num_hidden_layers):
    p = f'encoder.layers.{i}'
    x = x + _attention(params, f'{p}.self_attn',
                       layers.layer_norm(params, f'{p}.layer_norm1', x, c.layer_norm_eps),
                       c.num_attention_heads)
    h = act(_linear(params, f'{p}.mlp.fc1',
                    layers.layer_norm(params, f'{p}.layer_norm2', x, c.layer_norm_eps)))
    x = x + _linear(params, f'{p}.mlp.fc2', h)
  pooled = layers.layer_norm(params, 'post_layernorm', x[:, 0], c.layer_norm_eps)
  embeds = (jnp.dot(pooled, params['visual_projection.weight'], precision=layers.PRECISION)
            if c.projection_dim else pooled)
  return {'last_hidden_state': x, 'pooler_output': pooled, 'image_embeds': embeds}


def preprocess(config: ClipVisionConfig, images):
  """(B, H, W, 3) RGB in [0, 1] -> (B, S, S, 3) normalized pixels (bicubic resize to S)."""
  images = jnp.asarray(images, jnp.float32)
  s = config.image_size
  if images.shape[1:3] != (s, s):
    images = jax.image.resize(images, (images.shape[0], s, s, 3), method='bicubic')
  return (images - jnp.asarray(OPENAI_MEAN)) / jnp.asarray(OPENAI_STD)


@functools.partial(jax.jit, static_argnums=0)
def image_embeddings(config: ClipVisionConfig, params, images):
  """(B, H, W, 3) RGB in [0, 1] -> (B, E) image embeddings (not normalized)."""
  return encode(config, params, preprocess(config, images))['image_embeds']
