"""Makes the golden files that tests/models/test_vae.py checks the NNX VAE port against.

Needs torch and diffusers, which the project venv does NOT have (the tests do not need them).
Run it from a separate venv:

  python3 -m venv /tmp/golden-venv
  /tmp/golden-venv/bin/pip install torch==2.13.0 diffusers safetensors numpy
  /tmp/golden-venv/bin/python tests/data/make_vae_golden.py

It builds diffusers' PyTorch ``AutoencoderKL`` with random weights (seeded) in a small
configuration: 3 blocks of widths (16, 32, 32) (downsampling 4, a conv shortcut where 16 -> 32),
layers_per_block 1, norm_num_groups 8 (2 and 4 channels per group), 4 latent channels and
mid-block attention. GroupNorm affine parameters are randomized too, so that a swapped scale/bias
or a wrong group layout shows. It writes, under tests/data/vae_golden/:

  config.json, diffusion_pytorch_model.safetensors   the model, via diffusers' save_pretrained
  golden.npz   channels-last float32 arrays (reference computed in float64 from the float32
               weights):
                 image   (2, 32, 32, 3) in [-1, 1]     encoder input
                 mean    (2, 8, 8, 4)                  posterior mean   (latent_dist.mean)
                 logvar  (2, 8, 8, 4)                  posterior logvar (latent_dist.logvar)
                 latent  (2, 8, 8, 4)                  decoder input (unscaled latent)
                 decoded (2, 32, 32, 3)                decoder output  (vae.decode(latent).sample)
  bf16_sample.safetensors + bf16_sample.npz   two small tensors stored by torch as bfloat16 and
               float16, with their exact float32 values, to test the reader's dtype handling.
"""
from __future__ import annotations

import json
import os
import tempfile

import numpy as np
import torch
from diffusers import AutoencoderKL
from safetensors.torch import save_file

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'vae_golden')
CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=['DownEncoderBlock2D'] * 3,
    up_block_types=['UpDecoderBlock2D'] * 3,
    block_out_channels=[16, 32, 32],
    layers_per_block=1,
    act_fn='silu',
    latent_channels=4,
    norm_num_groups=8,
    sample_size=32,
    scaling_factor=0.18215,
    mid_block_add_attention=True,
)
BATCH, SIZE = 2, 32


def _nhwc(t: torch.Tensor) -> np.ndarray:
  return t.permute(0, 2, 3, 1).contiguous().to(torch.float32).numpy()


def _replace_into(tmp_dir: str, names: list[str]) -> None:
  os.makedirs(OUT_DIR, exist_ok=True)
  for name in names:
    src = os.path.join(tmp_dir, name)
    os.chmod(src, 0o644)
    os.replace(src, os.path.join(OUT_DIR, name))


def main() -> None:
  torch.manual_seed(0)
  vae = AutoencoderKL(**CONFIG).eval()
  with torch.no_grad():
    for name, p in vae.named_parameters():
      if 'norm' in name:  # GroupNorm affine: default is weight 1, bias 0.
        p.copy_(1.0 + 0.2 * torch.randn_like(p) if name.endswith('weight')
                else 0.2 * torch.randn_like(p))
      elif name.endswith('bias'):
        p.copy_(0.1 * torch.randn_like(p))

  gen = torch.Generator().manual_seed(1)
  image = torch.rand(BATCH, 3, SIZE, SIZE, generator=gen) * 2 - 1
  latent_hw = SIZE // 2 ** (len(CONFIG['block_out_channels']) - 1)
  latent = torch.randn(BATCH, CONFIG['latent_channels'], latent_hw, latent_hw, generator=gen)

  tmp = tempfile.mkdtemp(dir=os.path.dirname(OUT_DIR))
  vae.save_pretrained(tmp, safe_serialization=True)

  # Reference outputs in float64 from the (float32) saved weights.
  ref = AutoencoderKL.from_pretrained(tmp).eval().double()
  with torch.no_grad():
    dist = ref.encode(image.double()).latent_dist
    decoded = ref.decode(latent.double()).sample
  np.savez(os.path.join(tmp, 'golden.npz'), image=_nhwc(image), mean=_nhwc(dist.mean),
           logvar=_nhwc(dist.logvar), latent=_nhwc(latent), decoded=_nhwc(decoded))

  a = torch.randn(3, 5, generator=gen).to(torch.bfloat16)
  b = torch.randn(4, generator=gen).to(torch.float16)
  save_file({'a_bf16': a, 'b_f16': b}, os.path.join(tmp, 'bf16_sample.safetensors'))
  np.savez(os.path.join(tmp, 'bf16_sample.npz'), a_bf16=a.float().numpy(),
           b_f16=b.float().numpy())

  # diffusers adds _class_name/_diffusers_version/...; keep its config.json as written.
  with open(os.path.join(tmp, 'config.json')) as f:
    written = json.load(f)
  assert written['block_out_channels'] == CONFIG['block_out_channels'], written

  names = ['config.json', 'diffusion_pytorch_model.safetensors', 'golden.npz',
           'bf16_sample.safetensors', 'bf16_sample.npz']
  _replace_into(tmp, names)
  os.rmdir(tmp)
  total = sum(os.path.getsize(os.path.join(OUT_DIR, n)) for n in names)
  print(f'wrote {names} to {OUT_DIR} ({total / 1e6:.2f} MB); '
        f'|mean| max {np.abs(_nhwc(dist.mean)).max():.3f}, '
        f'|decoded| max {np.abs(_nhwc(decoded)).max():.3f}')


if __name__ == '__main__':
  main()
