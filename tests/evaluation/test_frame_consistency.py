"""Frame Consistency: the JAX CLIP image encoder against transformers' CLIPVisionModel(With-
Projection) and open_clip's VisionTransformer on random weights (each in its own format), the
real ViT-B/32 and ViT-L/14 architectures, the FC formula, and unusable weight files."""
import json

import jax
import numpy as np
import pytest
from safetensors import numpy as safetensors_numpy

from tests.evaluation import reference_data, reference_weights
from wvd_jax import errors
from wvd_jax.evaluation import frame_consistency, learned
from wvd_jax.evaluation.networks import clip, weights

ACTIVATIONS = ('quick_gelu', 'gelu')


def random_state(act: str) -> dict:
  return reference_weights.state_dict(reference_data.shapes(f'clip_{act}/shapes'), gain=1.0)


def hf_checkpoint(directory, act: str, state=None):
  """A Hugging Face model directory: config.json (a CLIPConfig) and model.safetensors."""
  directory.mkdir(parents=True, exist_ok=True)
  vision = json.loads(str(reference_data.load()[f'clip_{act}/config']))
  (directory / 'config.json').write_text(json.dumps({'model_type': 'clip',
                                                     'vision_config': vision}))
  state = dict(random_state(act) if state is None else state)
  state['logit_scale'] = np.float32(2.6)[None]  # A full CLIPModel's text-side extras are ignored.
  (directory / 'model.safetensors').write_bytes(safetensors_numpy.save(state))
  return directory


def assert_matches_transformers(config, params, act):
  ref = reference_data.load()
  got = jax.jit(clip.encode, static_argnums=0)(config, params, ref[f'clip_{act}/pixels'])
  for key in ('last_hidden_state', 'pooler_output', 'image_embeds'):
    want = ref[f'clip_{act}/{key}']
    np.testing.assert_allclose(np.asarray(got[key]), want, rtol=1e-4,
                               atol=1e-4 * np.abs(want).max(), err_msg=key)


@pytest.mark.parametrize('act', ACTIVATIONS)
def test_hugging_face_checkpoint_matches_transformers(tmp_path, act):
  config, params = clip.load(hf_checkpoint(tmp_path / 'hf', act))
  assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads,
          config.patch_size, config.image_size, config.projection_dim,
          config.hidden_act) == (64, 2, 4, 8, 32, 24, act)
  assert_matches_transformers(config, params, act)


def test_open_clip_checkpoint_matches_open_clip(tmp_path):
  ref = reference_data.load()
  state = reference_weights.state_dict(reference_data.shapes('open_clip/shapes'), gain=1.0)
  state['logit_scale'] = np.float32(2.6)[None]  # A full open_clip CLIP's extras are ignored.
  state['text_projection'] = np.zeros((3, 3), np.float32)
  path = tmp_path / 'open_clip_model.safetensors'
  path.write_bytes(safetensors_numpy.save(state))
  (tmp_path / 'open_clip_config.json').write_text(json.dumps(
      {'model_cfg': {'embed_dim': 24, 'quick_gelu': True,
                     'vision_cfg': {'width': 64, 'head_width': 16, 'layers': 2}}}))
  config, params = clip.load(path)
  assert (config.hidden_act, config.num_attention_heads, config.projection_dim) == (
      'quick_gelu', 4, 24)
  got = jax.jit(clip.encode, static_argnums=0)(config, params, ref['clip_quick_gelu/pixels'])
  want = ref['open_clip/image_embeds']
  np.testing.assert_allclose(np.asarray(got['image_embeds']), want, rtol=1e-4,
                             atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize('name, embed_dim', [('vit_b32', 512), ('vit_l14', 768)])
def test_real_architectures_from_their_config(tmp_path, name, embed_dim):
  ref_config = json.loads(str(reference_data.load()[f'clip_{name}/config']))
  shapes = reference_data.shapes(f'clip_{name}/shapes')
  # Shape-only stand-ins (zero strides: no memory) for the real checkpoint's tensors.
  views = {k: np.broadcast_to(np.float32(0), v) for k, v in shapes.items()}
  settings = {k: ref_config[k] for k in ('num_attention_heads', 'hidden_act', 'layer_norm_eps')}
  config = clip._config_from_tensors('real', views, settings)  # pylint: disable=protected-access
  for key in ('hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads',
              'image_size', 'patch_size', 'projection_dim'):
    assert getattr(config, key) == ref_config[key], key
  assert clip.torch_shapes(config) == shapes  # The names and shapes transformers builds.
  weights.check_tensors('real', clip.WHAT, views, clip.torch_shapes(config))
  params = {k.removeprefix('vision_model.'): jax.ShapeDtypeStruct(
      np.shape(weights.conv_kernel(v) if v.ndim == 4 else
               v if 'position' in k or v.ndim == 1 else weights.linear_kernel(v)), np.float32)
            for k, v in views.items()}
  out = jax.eval_shape(clip.image_embeddings, config, params,
                       jax.ShapeDtypeStruct((2, 64, 64, 3), np.float32))
  assert out.shape == (2, embed_dim)


def test_frame_consistency_formula():
  same = np.tile([[1.0, 2.0, 3.0]], (4, 1))
  assert frame_consistency.frame_consistency(same) == pytest.approx(100.0)
  # Consecutive cosines 0 (orthogonal), 1/sqrt(2), then -1 (opposite): mean * 100.
  e = np.array([[1.0, 0, 0], [0, 2.0, 0], [0, 1.0, 1.0], [0, -3.0, -3.0]])
  assert frame_consistency.frame_consistency(e) == pytest.approx(
      100 * (0 + 2 ** -0.5 - 1) / 3)
  with pytest.raises(ValueError, match='N >= 2'):
    frame_consistency.frame_consistency(e[:1])


def test_embedder_scores_videos(tmp_path):
  config, params = clip.load(hf_checkpoint(tmp_path / 'hf', 'quick_gelu'))
  embedder = frame_consistency.ClipEmbedder(config, params, batch_size=4)
  rng = np.random.default_rng(0)
  videos = rng.uniform(-1, 1, (2, 3, 32, 32, 3)).astype(np.float32)
  embeds = embedder(videos.reshape(6, 32, 32, 3))
  direct = np.asarray(clip.image_embeddings(config, params, (videos.reshape(6, 32, 32, 3) + 1) / 2))
  np.testing.assert_allclose(embeds, direct, rtol=1e-5, atol=1e-6)
  metrics = learned.LearnedMetrics(clip=embedder)
  still = np.repeat(videos[1, :1], 3, axis=0)  # One frame repeated: FC 100.
  scores, features = learned.clip_scores(metrics, still, videos)
  want = np.mean([frame_consistency.frame_consistency(embeds[3 * s:3 * s + 3]) for s in (0, 1)])
  assert scores['fc/generated'] == pytest.approx(want, rel=1e-9)
  assert scores['fc/ground_truth'] == pytest.approx(100.0, abs=1e-4) and features == {}


def test_unusable_clip_weights_give_one_line_user_errors(tmp_path):
  state = random_state('quick_gelu')
  inception_like = tmp_path / 'inception.safetensors'
  inception_like.write_bytes(safetensors_numpy.save(
      {'Conv2d_1a_3x3.conv.weight': np.zeros((32, 3, 3, 3), np.float32)}))
  no_layer = {k: v for k, v in state.items() if '.layers.1.mlp.fc2.' not in k}
  wrong_width = dict(state)
  wrong_width['vision_model.encoder.layers.0.mlp.fc1.weight'] = np.zeros((100, 64), np.float32)
  bad_config = hf_checkpoint(tmp_path / 'bad_config', 'quick_gelu')
  (bad_config / 'config.json').write_text('{"vision_config": {"hidden_size": 768}}')
  bad_type = hf_checkpoint(tmp_path / 'bad_type', 'quick_gelu')
  (bad_type / 'config.json').write_text('{"vision_config": {"num_attention_heads": "many"}}')
  cases = {inception_like: 'no tensor',
           hf_checkpoint(tmp_path / 'missing', 'quick_gelu', no_layer): 'are missing',
           hf_checkpoint(tmp_path / 'wide', 'quick_gelu', wrong_width): 'has shape',
           bad_config: 'config says hidden_size 768', bad_type: 'wrong type',
           tmp_path / 'empty_dir': 'no model.safetensors',
           tmp_path / 'nothing.safetensors': 'not found'}
  (tmp_path / 'empty_dir').mkdir()
  for path, text in cases.items():
    with pytest.raises(errors.UserError, match=text) as info:
      clip.load(path)
    assert '\n' not in str(info.value)
