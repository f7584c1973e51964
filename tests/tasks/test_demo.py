"""`make demo` (wvd_jax/tasks/demo.py) and the shipped pretrained model.

test_shipped_model_beats_constant_depth is the issue's check on the model in the repository
(pretrained/wvd_small, or the directory named by WVD_SHIPPED_MODEL, e.g. a model packed from a
demo training for a test before one is shipped); it is skipped only when neither exists."""
import os

import jax
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from tests.conftest import REPO, tiny_config
from wvd_jax.evaluation import protocol
from wvd_jax.models import builder, shipped
from wvd_jax.tasks import api, demo

MODEL = os.environ.get('WVD_SHIPPED_MODEL') or os.path.join(REPO, demo.DEFAULT_MODEL)


@pytest.mark.skipif(not os.path.isdir(MODEL), reason=f'no shipped model at {MODEL}')
def test_shipped_model_beats_constant_depth():
  """Checksums verified, then monocular depth of a held-out synthetic image (the demo's
  settings) beats constant depth on its rendered truth (AbsRel after median scaling)."""
  manifest = shipped.read_manifest(MODEL)
  shipped.read_weights(MODEL, manifest)  # Every part's and the whole file's SHA-256.
  config = demo.demo_config(MODEL, steps=demo.STEPS, frames=demo.FRAMES)
  wvd = api.WVD.load(MODEL, config)
  clip = demo.held_out_clip(config, index=0)
  rec = wvd.monocular_depth(clip['rgb'][0].astype(np.float32) / 127.5 - 1.0)
  truth = clip['depth'][0]
  model, _ = protocol.depth_scores('mono', rec.depth[0], truth, truth > 0, 'median')
  constant, _ = protocol.depth_scores('constant', np.ones_like(truth), truth, truth > 0, 'median')
  print(f'{MODEL}: AbsRel {model["mono/abs_rel"]:.3f}, constant depth '
        f'{constant["constant/abs_rel"]:.3f}')
  assert model['mono/abs_rel'] < constant['constant/abs_rel']


def test_without_the_model_one_line(tmp_path, capsys):
  assert demo.main([f'--model={tmp_path}/missing', f'--output={tmp_path}/out']) == 2
  err = capsys.readouterr().err
  assert err.count('\n') == 1 and err.startswith('error: no pretrained model at')
  assert 'make demo-train' in err and not (tmp_path / 'out').exists()


def test_demo_writes_every_task(tmp_path):
  """The whole demo on a tiny shipped model (random weights: the files, not their quality)."""
  config = tiny_config()
  _, abstract = builder.abstract_model(config)
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda a: rng.normal(size=a.shape).astype(np.float32) * 0.05,
                        nnx.to_pure_dict(abstract))
  shipped.pack_params(config, params, str(tmp_path / 'model'))
  out = tmp_path / 'out'
  # The config's 4 frames: the compiled shapes of the other task tests (persistent cache).
  results = demo.run(str(tmp_path / 'model'), str(out), steps=1, frames=4, chunks=1)
  assert set(results) == {'synthetic', 'photo'}
  assert set(results['synthetic']) == {'image_to_3d', 'multiview', 'camera_control'}
  for name in ('synthetic', 'photo'):
    for png in ('depth/depth.png', 'image_to_3d/samples.png'):
      assert (out / name / png).is_file(), png
    assert min(Image.open(out / name / 'depth' / 'depth.png').size) >= 256
    assert (out / name / 'image_to_3d' / 'points.ply').read_bytes().startswith(b'ply')
    assert (out / name / 'camera_control' / 'video.mp4').stat().st_size > 0
    assert len(results[name]['camera_control'].frames) == 4  # The input and 1 chunk of 3.
  assert (out / 'synthetic' / 'depth' / 'truth.png').is_file()
  assert (out / 'synthetic' / 'multiview' / 'depth_1.png').is_file()
