"""Writes tests/data/reference_networks.npz: the reference implementations' outputs on the seeded
random weights of reference_weights.py, for the parity tests of wvd_jax/evaluation/networks.

Needs torch, torchvision, pytorch-fid 0.3.0, transformers, kornia, open-clip-torch and scipy (not the project's
environment: run it where a CPU torch is installable, e.g. a Python 3.11 venv with the
``torch==2.13.0+cpu`` wheel), from the repository root:

  python tests/evaluation/make_reference_outputs.py tests/data/reference_networks.npz

Nothing is downloaded: pytorch-fid's weight download is replaced by the random state dict, which
goes through its own ``fid_inception_v3`` and ``InceptionV3`` code paths (strict load).
"""
import copy
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_weights  # noqa: E402  pylint: disable=wrong-import-position

# torchvision's CUDA-built C extension cannot load against a CPU torch; Inception3 itself is
# pure Python, so its operator registrations are skipped.
_register_fake = torch.library.register_fake
torch.library.register_fake = lambda *a, **k: (lambda f: f)
import torchvision  # noqa: E402,F401  pylint: disable=wrong-import-position,unused-import
torch.library.register_fake = _register_fake

# pylint: disable=wrong-import-position
import kornia  # noqa: E402
import transformers  # noqa: E402
from kornia.feature.loftr import loftr as kornia_loftr  # noqa: E402
from kornia.feature.loftr.utils import position_encoding  # noqa: E402
from open_clip import __version__ as open_clip_version  # noqa: E402
from open_clip import transformer as open_clip_transformer  # noqa: E402
from pytorch_fid import fid_score  # noqa: E402
from pytorch_fid import inception as fid_inception  # noqa: E402
# pylint: enable=wrong-import-position

CLIP_TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, image_size=32, patch_size=8, projection_dim=24,
                 hidden_act='quick_gelu', layer_norm_eps=1e-5)
# The vision configs of openai/clip-vit-base-patch32 and openai/clip-vit-large-patch14.
CLIP_REAL = {
    'vit_b32': dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                    num_attention_heads=12, image_size=224, patch_size=32, projection_dim=512,
                    hidden_act='quick_gelu', layer_norm_eps=1e-5),
    'vit_l14': dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                    num_attention_heads=16, image_size=224, patch_size=14, projection_dim=768,
                    hidden_act='quick_gelu', layer_norm_eps=1e-5)}


def _shapes(module) -> dict:
  return {k: list(v.shape) for k, v in module.state_dict().items()
          if not k.endswith('num_batches_tracked')}


def inception_outputs(out: dict):
  # The architecture fid_inception_v3 builds, to learn the tensor names and shapes.
  net = torchvision.models.inception_v3(num_classes=1008, aux_logits=False, weights=None,
                                        init_weights=False)
  for name, block in (('Mixed_5b', fid_inception.FIDInceptionA(192, 32)),
                      ('Mixed_5c', fid_inception.FIDInceptionA(256, 64)),
                      ('Mixed_5d', fid_inception.FIDInceptionA(288, 64)),
                      ('Mixed_6b', fid_inception.FIDInceptionC(768, 128)),
                      ('Mixed_6c', fid_inception.FIDInceptionC(768, 160)),
                      ('Mixed_6d', fid_inception.FIDInceptionC(768, 160)),
                      ('Mixed_6e', fid_inception.FIDInceptionC(768, 192)),
                      ('Mixed_7b', fid_inception.FIDInceptionE_1(1280)),
                      ('Mixed_7c', fid_inception.FIDInceptionE_2(2048))):
    setattr(net, name, block)
  shapes = _shapes(net)
  state = {k: torch.from_numpy(v) for k, v in reference_weights.state_dict(shapes).items()}
  fid_inception.load_state_dict_from_url = lambda *a, **k: state
  model = fid_inception.InceptionV3([3], resize_input=True, normalize_input=True).eval()
  images = reference_weights.images((2, 40, 40, 3), seed=1)
  with torch.no_grad():
    feats = model(torch.from_numpy(images).permute(0, 3, 1, 2))[0][:, :, 0, 0].numpy()
    small = torch.from_numpy(reference_weights.images((2, 20, 20, 3), seed=2)).permute(0, 3, 1, 2)
    up = torch.nn.functional.interpolate(small, size=(37, 37), mode='bilinear',
                                         align_corners=False)
    down = torch.nn.functional.interpolate(small, size=(13, 13), mode='bilinear',
                                           align_corners=False)
  out['inception/shapes'] = json.dumps(shapes)
  out['inception/images'] = images
  out['inception/features'] = feats
  out['resize/input'] = small.permute(0, 2, 3, 1).numpy()
  out['resize/up37'] = up.permute(0, 2, 3, 1).numpy()
  out['resize/down13'] = down.permute(0, 2, 3, 1).numpy()


def fid_outputs(out: dict):
  rng = np.random.default_rng(3)
  a = rng.normal(0, 1, (64, 12)) @ rng.normal(0, 1, (12, 12))
  b = rng.normal(0.3, 1, (80, 12)) @ rng.normal(0, 1, (12, 12))
  out['fid/a'], out['fid/b'] = a, b
  mu_a, sigma_a = a.mean(0), np.cov(a, rowvar=False)
  mu_b, sigma_b = b.mean(0), np.cov(b, rowvar=False)
  out['fid/value'] = np.float64(fid_score.calculate_frechet_distance(mu_a, sigma_a, mu_b, sigma_b))


def clip_outputs(out: dict):
  for act in ('quick_gelu', 'gelu'):
    config = transformers.CLIPVisionConfig(**dict(CLIP_TINY, hidden_act=act))
    model = transformers.CLIPVisionModelWithProjection(config).eval()
    shapes = _shapes(model)
    state = {k: torch.from_numpy(v)
             for k, v in reference_weights.state_dict(shapes, gain=1.0).items()}
    model.load_state_dict(state)
    plain = transformers.CLIPVisionModel(config).eval()
    plain.load_state_dict({k: v for k, v in state.items() if k.startswith('vision_model.')})
    pixels = (reference_weights.images((2, 32, 32, 3), seed=4) - 0.5) / 0.25
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2)
    with torch.no_grad():
      projected = model(pixel_values=x)
      pooled = plain(pixel_values=x)
    out[f'clip_{act}/config'] = json.dumps(config.to_dict())
    out[f'clip_{act}/shapes'] = json.dumps(shapes)
    out[f'clip_{act}/pixels'] = pixels
    out[f'clip_{act}/image_embeds'] = projected.image_embeds.numpy()
    out[f'clip_{act}/last_hidden_state'] = pooled.last_hidden_state.numpy()
    out[f'clip_{act}/pooler_output'] = pooled.pooler_output.numpy()
  # open_clip's own ViT (QuickGELU, as its '-quickgelu' and OpenAI models) on the same pixels.
  vit = open_clip_transformer.VisionTransformer(
      image_size=32, patch_size=8, width=64, layers=2, heads=4, mlp_ratio=2.0, output_dim=24,
      act_layer=open_clip_transformer.QuickGELU).eval()
  shapes = {f'visual.{k}': v for k, v in _shapes(vit).items()}
  state = reference_weights.state_dict(shapes, gain=1.0)
  vit.load_state_dict({k[len('visual.'):]: torch.from_numpy(v) for k, v in state.items()})
  with torch.no_grad():
    embeds = vit(torch.from_numpy(out['clip_quick_gelu/pixels']).permute(0, 3, 1, 2))
  out['open_clip/shapes'] = json.dumps(shapes)
  out['open_clip/image_embeds'] = embeds.numpy()
  for name, kwargs in CLIP_REAL.items():
    config = transformers.CLIPVisionConfig(**kwargs)
    with torch.device('meta'):
      model = transformers.CLIPVisionModelWithProjection(config)
    out[f'clip_{name}/config'] = json.dumps(config.to_dict())
    out[f'clip_{name}/shapes'] = json.dumps(_shapes(model))


def loftr_images(size: int = 96, shift: int = 16) -> tuple[np.ndarray, np.ndarray]:
  """Two (1, size, size) gray images in [0, 1]: one noise image seen shifted by ``shift``."""
  img = np.random.default_rng(5).uniform(0, 1, (1, size, size + shift)).astype(np.float32)
  return img[..., :size].copy(), img[..., shift:].copy()


def loftr_outputs(out: dict):
  config = copy.deepcopy(kornia_loftr.default_cfg)
  config['match_coarse']['thr'] = 0.0  # Random weights give low confidences: keep every mutual NN.
  model = kornia_loftr.LoFTR(pretrained=None, config=config)
  shapes = _shapes(model)
  model.load_state_dict({k: torch.from_numpy(v)
                         for k, v in reference_weights.state_dict(shapes).items()}, strict=False)
  model.eval()
  image0, image1 = (torch.from_numpy(x)[:, None] for x in loftr_images())
  captured = {}
  model.coarse_matching.register_forward_hook(lambda m, args, o: captured.update(args[2]))
  with torch.no_grad():
    features0, features1 = model.extract_features(image0), model.extract_features(image1)
    matches = model({'image0': image0, 'image1': image1})
    flat = [f['coarse'].permute(0, 2, 3, 1).reshape(1, -1, 256) for f in (features0, features1)]
    coarse0, coarse1 = model.loftr_coarse(*flat)
    # The fine stage on chosen coarse pairs (cell i of image 0 with cell j of image 1).
    i_ids, j_ids = torch.tensor([0, 13, 50, 77, 143]), torch.tensor([5, 13, 60, 70, 140])
    data = {'stride_c': 8, 'stride_f': 2, 'b_ids': torch.zeros(5, dtype=torch.long),
            'i_ids': i_ids, 'j_ids': j_ids, 'hw0_c': (12, 12), 'hw1_c': (12, 12),
            'mconf': torch.ones(5),
            'mkpts0_c': torch.stack([i_ids % 12, i_ids // 12], 1).float() * 8,
            'mkpts1_c': torch.stack([j_ids % 12, j_ids // 12], 1).float() * 8}
    fine0, fine1 = model.fine_preprocess(features0['fine'], features1['fine'], coarse0, coarse1,
                                         data)
    fine0, fine1 = model.loftr_fine(fine0, fine1)
    model.fine_matching(fine0, fine1, data)
    # The coarse selection rule on a planted confidence matrix (8 x 8 cells against 8 x 10).
    rng = np.random.default_rng(6)
    conf = rng.uniform(0, 0.1, (1, 64, 80)).astype(np.float32)
    for i, j in ((18, 21), (19, 33), (27, 35), (36, 44), (45, 52), (9, 1), (26, 23)):
      conf[0, i, j] = 0.5
    conf[0, 37, 44] = 0.6  # Takes column 44 from row 36: not mutual.
    conf[0, 42, 30] = 0.15  # Under the 0.2 threshold.
    selected = kornia_loftr.CoarseMatching(kornia_loftr.default_cfg['match_coarse']).eval(
    ).get_coarse_match(torch.from_numpy(conf), {'hw0_c': (8, 8), 'hw1_c': (8, 10),
                                                'stride_c': 8})
  out['loftr/shapes'] = json.dumps(shapes)
  out['loftr/fine0_every4'] = features0['fine'].permute(0, 2, 3, 1).numpy()[:, ::4, ::4]
  out['loftr/coarse_transformed0'] = coarse0.numpy()
  out['loftr/conf_matrix'] = captured['conf_matrix'].numpy()
  for key in ('keypoints0', 'keypoints1', 'confidence'):
    out[f'loftr/{key}'] = matches[key].numpy()
  out['loftr/fine_i'], out['loftr/fine_j'] = i_ids.numpy(), j_ids.numpy()
  out['loftr/fine_keypoints1'] = data['mkpts1_f'].numpy()
  out['loftr/fine_expectation'] = data['expec_f'].numpy()
  out['loftr/planted_conf'] = conf
  for key in ('i_ids', 'j_ids', 'mconf', 'mkpts0_c', 'mkpts1_c'):
    out[f'loftr/planted_{key}'] = selected[key].numpy()
  # End to end on weights under which matches exist (reference_weights.py says why).
  model.load_state_dict({k: torch.from_numpy(v) for k, v in
                         reference_weights.loftr_matching_state_dict(shapes).items()},
                        strict=False)
  with torch.no_grad():
    matches = model({'image0': image0, 'image1': image1})
  for key in ('keypoints0', 'keypoints1', 'confidence'):
    out[f'loftr/matching_{key}'] = matches[key].numpy()
  out['loftr/pe_fixed'] = position_encoding.PositionEncodingSine(256, temp_bug_fix=True).pe[
      0, :, :12, :12].permute(1, 2, 0).numpy()


def main(path: str):
  out = {}
  inception_outputs(out)
  fid_outputs(out)
  clip_outputs(out)
  loftr_outputs(out)
  out['versions'] = json.dumps({'torch': torch.__version__,
                                'torchvision': torchvision.__version__,
                                'transformers': transformers.__version__,
                                'kornia': kornia.__version__,
                                'open_clip': open_clip_version,
                                'pytorch_fid': '0.3.0'})
  np.savez_compressed(path, **{k: np.asarray(v) for k, v in out.items()})
  print('wrote', path, {k: np.asarray(v).shape for k, v in out.items()})


if __name__ == '__main__':
  main(sys.argv[1])
