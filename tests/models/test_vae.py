"""Tests of the NNX port of diffusers' AutoencoderKL, its weight converter and VAEAutoencoder.

The golden files in tests/data/vae_golden/ come from diffusers' PyTorch AutoencoderKL with random
weights (tests/data/make_vae_golden.py; torch is not needed here). Relative error is measured as
max |ours - reference| / max |reference| over the whole array.
"""
from __future__ import annotations

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import save_file

from wvd_jax import errors
from wvd_jax.models import vae as vae_lib
from wvd_jax.models import vae_autoencoder
from wvd_jax.models import vae_convert

# A weights file or its config.json that does not fit (a UserError), or a bad AutoencoderKLConfig.
BAD_WEIGHTS = (errors.UserError, ValueError)

GOLDEN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'data',
                          'vae_golden')
WEIGHTS = os.path.join(GOLDEN_DIR, vae_convert.WEIGHTS_NAME)
REL_TOL = 1e-4


def jitted(module, method: str):
  """module.method under plain jax.jit (eager NNX runs op by op and is slow on CPU)."""
  graphdef, state = nnx.split(module)
  fn = jax.jit(lambda st, *a: getattr(nnx.merge(graphdef, st), method)(*a))
  return lambda *a: fn(state, *a)


def rel_err(a, ref) -> float:
  a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
  assert a.shape == ref.shape, (a.shape, ref.shape)
  return float(np.abs(a - ref).max() / np.abs(ref).max())


@pytest.fixture(scope='module')
def golden():
  return dict(np.load(os.path.join(GOLDEN_DIR, 'golden.npz')))


@pytest.fixture(scope='module')
def tensors():
  return vae_convert.read_safetensors(WEIGHTS)


@pytest.fixture(scope='module')
def config():
  return vae_convert.read_config(GOLDEN_DIR)


@pytest.fixture(scope='module')
def model():
  return vae_convert.load_vae(GOLDEN_DIR, dtype=jnp.float32)


@pytest.fixture(scope='module')
def outputs(model, golden):
  """The golden model's outputs, through AutoencoderKL and through VAEAutoencoder.

  One jitted function for all (XLA merges the duplicate encoder/decoder work): compiling is
  most of this file's run time.
  """
  ae = vae_autoencoder.VAEAutoencoder(model)
  graphdef, state = nnx.split(ae)

  @jax.jit
  def run(state, image, latent):
    ae = nnx.merge(graphdef, state)
    mean, logvar = ae.vae.encode(image)
    return dict(mean=mean, logvar=logvar, decoded=ae.vae.decode(latent),
                ae_latents=ae.encode(image.reshape((1,) + image.shape)),  # (B, N, H, W, 3).
                ae_images=ae.decode((latent * 0.18215)[:, None]))

  with jax.default_matmul_precision('highest'):
    return run(state, jnp.asarray(golden['image']), jnp.asarray(golden['latent']))


# ---------------------------------------------------------------------- parity with diffusers

def test_encoder_matches_diffusers(outputs, golden):
  mean, logvar = outputs['mean'], outputs['logvar']
  assert mean.dtype == jnp.float32 and logvar.dtype == jnp.float32
  assert rel_err(mean, golden['mean']) < REL_TOL
  assert rel_err(logvar, golden['logvar']) < REL_TOL


def test_decoder_matches_diffusers(outputs, golden):
  assert outputs['decoded'].dtype == jnp.float32
  assert rel_err(outputs['decoded'], golden['decoded']) < REL_TOL


def test_bfloat16_compute_is_close(golden):
  model = vae_convert.load_vae(GOLDEN_DIR, dtype=jnp.bfloat16)
  assert model.decoder.conv_in.kernel.get_value().dtype == jnp.float32  # Params stay f32.
  decoded = jitted(model, 'decode')(jnp.asarray(golden['latent']))
  assert decoded.dtype == jnp.float32
  assert rel_err(decoded, golden['decoded']) < 5e-2


# ------------------------------------------------------------------------------- converter

def test_config_read_from_config_json(config):
  assert config.block_out_channels == (16, 32, 32)
  assert config.layers_per_block == 1
  assert config.norm_num_groups == 8
  assert config.latent_channels == 4
  assert config.downsample_factor == 4
  assert config.scaling_factor == pytest.approx(0.18215)
  assert config.shift_factor is None


def test_layouts_are_transposed(tensors, config):
  state = vae_convert.load_diffusers_vae(WEIGHTS, config)
  conv = state['encoder']['conv_in']['kernel'].get_value()
  np.testing.assert_array_equal(conv, tensors['encoder.conv_in.weight'].transpose(2, 3, 1, 0))
  attn = state['decoder']['mid_block']['attentions'][0]
  np.testing.assert_array_equal(attn['to_out']['kernel'].get_value(),
                                tensors['decoder.mid_block.attentions.0.to_out.0.weight'].T)
  np.testing.assert_array_equal(attn['group_norm']['scale'].get_value(),
                                tensors['decoder.mid_block.attentions.0.group_norm.weight'])
  down = state['encoder']['down_blocks'][0]['downsamplers'][0]['conv']['kernel'].get_value()
  assert down.shape == (3, 3, 16, 16)


def test_legacy_attention_names_and_1x1_conv_layout(tensors, config):
  reference = vae_convert.convert_state_dict(tensors, config)
  legacy = {}
  for name, arr in tensors.items():
    for new, old in (('to_q', 'query'), ('to_k', 'key'), ('to_v', 'value'),
                     ('to_out.0', 'proj_attn')):
      if f'.attentions.0.{new}.' in name:
        name = name.replace(f'.{new}.', f'.{old}.')
        if name.endswith('weight') and old in ('query', 'proj_attn'):
          arr = arr[:, :, None, None]  # Stored as a 1x1 conv.
    legacy[name] = arr
  assert 'encoder.mid_block.attentions.0.proj_attn.weight' in legacy
  converted = vae_convert.convert_state_dict(legacy, config)
  for (pa, va), (pb, vb) in zip(nnx.to_flat_state(converted), nnx.to_flat_state(reference)):
    assert pa == pb
    np.testing.assert_array_equal(va.get_value(), vb.get_value())


def test_missing_tensor_is_named(tensors, config):
  broken = dict(tensors)
  del broken['decoder.up_blocks.1.resnets.0.conv2.bias']
  with pytest.raises(BAD_WEIGHTS, match=r"missing.*'decoder\.up_blocks\.1\.resnets\.0\.conv2\.bias'"):
    vae_convert.convert_state_dict(broken, config)


def test_unexpected_tensor_is_named(tensors, config):
  broken = dict(tensors)
  broken['encoder.mid_block.extra.weight'] = np.zeros(3, np.float32)
  with pytest.raises(BAD_WEIGHTS, match=r"unexpected.*'encoder\.mid_block\.extra\.weight'"):
    vae_convert.convert_state_dict(broken, config)


def test_wrong_shape_is_named(tensors, config):
  broken = dict(tensors)
  broken['encoder.down_blocks.1.resnets.0.conv_shortcut.weight'] = np.zeros((32, 8, 1, 1),
                                                                             np.float32)
  with pytest.raises(BAD_WEIGHTS, match=r"'encoder\.down_blocks\.1\.resnets\.0\.conv_shortcut"
                                       r"\.weight' has shape \(32, 8, 1, 1\).*\(32, 16, 1, 1\)"):
    vae_convert.convert_state_dict(broken, config)


def test_errors_through_a_file(tensors, tmp_path):
  shutil.copy(os.path.join(GOLDEN_DIR, 'config.json'), tmp_path / 'config.json')
  broken = {k: v for k, v in tensors.items() if k != 'quant_conv.weight'}
  save_file(broken, str(tmp_path / vae_convert.WEIGHTS_NAME))
  with pytest.raises(BAD_WEIGHTS, match=r"'quant_conv\.weight'"):
    vae_convert.load_diffusers_vae(tmp_path)
  with pytest.raises(BAD_WEIGHTS, match='not found'):
    vae_convert.load_diffusers_vae(tmp_path / 'nope.safetensors')


def test_duplicate_and_ldm_names_are_rejected(tensors, config):
  dup = dict(tensors)
  dup['encoder.mid_block.attentions.0.query.weight'] = tensors[
      'encoder.mid_block.attentions.0.to_q.weight']
  with pytest.raises(BAD_WEIGHTS, match=r"'encoder\.mid_block\.attentions\.0\.query\.weight'"):
    vae_convert.convert_state_dict(dup, config)
  with pytest.raises(BAD_WEIGHTS, match='CompVis/LDM'):
    vae_convert.convert_state_dict({'encoder.down.0.block.0.norm1.weight': np.ones(16)}, config)


def test_wrong_config_gives_unexpected_or_missing(tensors, config):
  no_attn = vae_lib.AutoencoderKLConfig(**{**config.__dict__, 'mid_block_add_attention': False})
  with pytest.raises(BAD_WEIGHTS, match=r"unexpected.*attentions\.0"):
    vae_convert.convert_state_dict(tensors, no_attn)


def test_bf16_and_f16_tensors_are_read():
  got = vae_convert.read_safetensors(os.path.join(GOLDEN_DIR, 'bf16_sample.safetensors'))
  want = np.load(os.path.join(GOLDEN_DIR, 'bf16_sample.npz'))
  assert got['a_bf16'].shape == (3, 5) and got['b_f16'].dtype == np.float16
  np.testing.assert_array_equal(got['a_bf16'].astype(np.float32), want['a_bf16'])
  np.testing.assert_array_equal(got['b_f16'].astype(np.float32), want['b_f16'])


def test_config_validation(tmp_path):
  with pytest.raises(BAD_WEIGHTS, match='mid_block_type'):
    vae_lib.AutoencoderKLConfig.from_diffusers_dict({'mid_block_type': 'x'})
  with pytest.raises(BAD_WEIGHTS, match='AttnDownEncoderBlock2D'):
    vae_lib.AutoencoderKLConfig.from_diffusers_dict(
        {'down_block_types': ['AttnDownEncoderBlock2D'], 'up_block_types': ['UpDecoderBlock2D']})
  with pytest.raises(BAD_WEIGHTS, match='norm_num_groups'):
    vae_lib.AutoencoderKLConfig(block_out_channels=(128, 256, 500, 512))
  with pytest.raises(BAD_WEIGHTS, match='AutoencoderTiny'):
    vae_lib.AutoencoderKLConfig.from_diffusers_dict({'_class_name': 'AutoencoderTiny'})
  (tmp_path / 'config.json').write_text(json.dumps({'_class_name': 'AutoencoderKL'}))
  assert vae_convert.read_config(tmp_path).block_out_channels == (64,)  # diffusers' default.


def test_sd_config_parameter_count():
  flat = nnx.to_flat_state(vae_convert.abstract_params(vae_lib.sd_config()))
  assert sum(int(np.prod(v.get_value().shape)) for _, v in flat) == 83_653_863
  assert vae_lib.sd_config().downsample_factor == 8


# --------------------------------------------------------------------------- VAEAutoencoder

def test_autoencoder_interface_on_golden_model(model, outputs, golden):
  ae = vae_autoencoder.VAEAutoencoder(model)
  assert ae.latent_channels == 4 and ae.downsample == 4
  assert ae.scaling_factor == pytest.approx(0.18215) and ae.shift_factor == 0.0
  latents = outputs['ae_latents']
  assert latents.shape == (1, 2, 8, 8, 4) and latents.dtype == jnp.float32
  assert rel_err(latents[0], golden['mean'] * 0.18215) < REL_TOL
  images = outputs['ae_images']
  assert images.shape == (2, 1, 32, 32, 3) and images.dtype == jnp.float32
  assert rel_err(images[:, 0], golden['decoded']) < REL_TOL


class _StubVAE:
  """Stands in for AutoencoderKL to test VAEAutoencoder's arithmetic exactly (and fast)."""
  config = vae_lib.AutoencoderKLConfig(**{**vae_lib.tiny_config().__dict__,
                                          'scaling_factor': 1.5, 'shift_factor': 0.25})

  def encode(self, images):
    mean = jnp.tile(images[:, ::2, ::2, :1], (1, 1, 1, 4)) + jnp.arange(4.0)
    return mean, jnp.full_like(mean, -2.0)

  def decode(self, z):
    return jnp.repeat(jnp.repeat(z[..., :3], 2, axis=1), 2, axis=2)


def test_autoencoder_scaling_shift_and_sampling():
  ae = vae_autoencoder.VAEAutoencoder(_StubVAE())
  assert ae.latent_channels == 4 and ae.downsample == 2

  @jax.jit  # One compilation instead of many eager ops.
  def run(x, rng):
    mean, logvar = _StubVAE().encode(x.reshape(6, 8, 8, 3))
    eps = jax.random.normal(rng, mean.shape)
    latents = ae.encode(x)
    return dict(mean=mean, logvar=logvar, eps=eps, latents=latents, sample=ae.encode(x, rng),
                posterior=ae.encode_posterior(x), decoded=ae.decode(latents),
                stub_decoded=_StubVAE().decode(mean))

  x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 8, 8, 3)).astype(np.float32)
  # An 'rbg' key: threefry's XLA compilation alone takes seconds on a small CPU.
  r = run(x, jax.random.key(3, impl='rbg'))
  assert r['latents'].shape == (2, 3, 4, 4, 4)
  np.testing.assert_allclose(r['latents'].reshape(6, 4, 4, 4), (r['mean'] - 0.25) * 1.5,
                             rtol=1e-6)
  np.testing.assert_allclose(
      r['sample'].reshape(6, 4, 4, 4),
      (r['mean'] + np.exp(0.5 * r['logvar']) * r['eps'] - 0.25) * 1.5, rtol=1e-5, atol=1e-6)
  assert not np.allclose(r['sample'], r['latents'])
  # The scaled posterior (cached latents): the mean is encode's, the std exp(logvar / 2) * 1.5.
  np.testing.assert_array_equal(r['posterior'][0], r['latents'])
  np.testing.assert_allclose(r['posterior'][1].reshape(6, 4, 4, 4),
                             np.exp(0.5 * r['logvar']) * 1.5, rtol=1e-6)
  # decode: z = latents / 1.5 + 0.25 = mean, then the stub's decoder.
  assert r['decoded'].shape == (2, 3, 8, 8, 3)
  np.testing.assert_allclose(r['decoded'].reshape(6, 8, 8, 3), r['stub_decoded'], rtol=1e-6,
                             atol=1e-6)


def test_jitted_encode_decode():
  ae = vae_autoencoder.VAEAutoencoder(_StubVAE())
  encode, decode = vae_autoencoder.jitted_encode_decode(ae)
  x = np.random.default_rng(1).uniform(-1, 1, (1, 2, 4, 4, 3)).astype(np.float32)
  np.testing.assert_allclose(encode(x), ae.encode(x), rtol=1e-6)
  np.testing.assert_allclose(encode(x, jax.random.key(0, impl='rbg')),
                             ae.encode(x, jax.random.key(0, impl='rbg')), rtol=1e-6)
  z = np.ones((1, 2, 2, 4), np.float32)
  np.testing.assert_allclose(decode(z), ae.decode(z), rtol=1e-6)


def test_autoencoder_rejects_bad_inputs(model):
  ae = vae_autoencoder.VAEAutoencoder(model)
  with pytest.raises(ValueError, match='multiples of 4'):
    ae.encode(jnp.zeros((1, 30, 32, 3)))
  with pytest.raises(ValueError, match=r'\(\.\.\., H, W, 3\)'):
    ae.encode(jnp.zeros((1, 32, 32, 4)))
  with pytest.raises(ValueError, match='latents'):
    ae.decode(jnp.zeros((1, 8, 8, 3)))
  wide = vae_lib.AutoencoderKLConfig(**{**vae_lib.tiny_config().__dict__, 'in_channels': 6})
  with pytest.raises(ValueError, match='3-channel'):
    vae_autoencoder.VAEAutoencoder(vae_lib.init_autoencoder_kl(wide))


def test_random_init_runs():
  ae = vae_autoencoder.VAEAutoencoder.random_init(vae_lib.tiny_config(), seed=1)
  kernel = ae.vae.encoder.conv_in.kernel.get_value()
  assert kernel.shape == (3, 3, 3, 16) and 0 < float(jnp.abs(kernel).max()) <= 1 / np.sqrt(27)
  assert float(ae.vae.encoder.conv_norm_out.scale.get_value().min()) == 1.0


def test_from_project_config():
  from wvd_jax import config_lib
  config = config_lib.base_config()
  config.autoencoder.kind = 'sd_vae'
  config.autoencoder.latent_channels = 4
  config.autoencoder.downsample = 4  # The golden VAE downsamples by 4 (SD's by 8).
  with pytest.raises(BAD_WEIGHTS, match='autoencoder.weights'):
    vae_autoencoder.from_config(config)
  config.autoencoder.weights = GOLDEN_DIR
  ae = vae_autoencoder.from_config(config)
  assert ae.latent_channels == 4 and ae.downsample == 4 and ae.vae.dtype == jnp.float32
  config.autoencoder.downsample = 8
  with pytest.raises(BAD_WEIGHTS, match='downsample=8'):
    vae_autoencoder.from_config(config)
