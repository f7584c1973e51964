"""The JAX LoFTR against kornia's LoFTR on random weights: backbone maps, position encodings,
coarse transformer and confidences, the coarse selection rule, the fine stage, end-to-end
matches; and unusable weight files."""
import jax
import numpy as np
import pytest
from safetensors import numpy as safetensors_numpy

from tests.evaluation import reference_data, reference_weights
from wvd_jax import errors
from wvd_jax.evaluation import consistency
from wvd_jax.evaluation.networks import loftr


def close(got, want, rtol=1e-4):
  want = np.asarray(want)
  scale = np.abs(want).max() if want.size else 0.0
  np.testing.assert_allclose(np.asarray(got), want, rtol=rtol, atol=rtol * max(scale, 1e-6))


@pytest.fixture(scope='module')
def params():
  state = reference_weights.state_dict(reference_data.shapes('loftr/shapes'))
  # The original checkpoints carry a 'matcher.' prefix and BatchNorm counters: both accepted.
  state = {f'matcher.{k}': v for k, v in state.items()}
  state['matcher.backbone.bn1.num_batches_tracked'] = np.zeros((), np.float32)
  return loftr.convert(state)


def images():
  img = np.random.default_rng(5).uniform(0, 1, (1, 96, 112)).astype(np.float32)
  return img[..., :96], img[..., 16:]


def test_architecture_is_kornias():
  assert loftr.torch_shapes() == reference_data.shapes('loftr/shapes')


def test_position_encodings():
  ref = reference_data.load()
  close(loftr.position_encoding(12, 12, fixed=True), ref['loftr/pe_fixed'], 1e-6)
  # kornia's default (the trained models' 'bug'): d_k = exp(-2k), so channel 4k = sin(x e^-2k).
  pe = loftr.position_encoding(3, 5, fixed=False)
  np.testing.assert_allclose(pe[1, 4, 8], np.sin(5 * np.exp(-4.0)), rtol=1e-6)
  np.testing.assert_allclose(pe[2, 0, 11], np.cos(3 * np.exp(-4.0)), rtol=1e-6)


@pytest.fixture(scope='module')
def transformed(params):
  """features() of the test pair: transformed coarse features, fine maps, coarse grid."""
  return jax.jit(loftr.features, static_argnums=3)(params, *images(), False)


def test_dense_match_matches_kornia(params, transformed):
  ref = reference_data.load()
  (coarse0, _), (fine0, _), grid = transformed
  assert grid == (12, 12)
  close(fine0[0, ::4, ::4], ref['loftr/fine0_every4'][0])
  close(coarse0, ref['loftr/coarse_transformed0'], 1e-3)
  dense = loftr.match(params, *images(), fixed_encoding=False, threshold=0.0)
  close(dense['conf_matrix'], ref['loftr/conf_matrix'], 1e-3)
  got = loftr.select(dense)
  assert len(got['confidence']) == len(ref['loftr/confidence'])  # 0 on these random weights.
  for key in ('keypoints0', 'keypoints1', 'confidence'):
    close(got[key], ref[f'loftr/{key}'])


def test_matches_end_to_end_match_kornia():
  """On weights under which matches exist (64 here), every match, its confidence and its
  fine-stage key point in image 1."""
  ref = reference_data.load()
  state = reference_weights.loftr_matching_state_dict(reference_data.shapes('loftr/shapes'))
  got = loftr.select(loftr.match(loftr.convert(state), *images(), fixed_encoding=False,
                                 threshold=0.0))
  assert len(ref['loftr/matching_confidence']) == 64
  for key in ('keypoints0', 'keypoints1', 'confidence'):
    close(got[key], ref[f'loftr/matching_{key}'], 1e-4)


def test_coarse_selection_rule_matches_kornia():
  ref = reference_data.load()
  mask, j, conf = loftr.coarse_matches(ref['loftr/planted_conf'], (8, 8), (8, 10))
  i_ids = np.flatnonzero(np.asarray(mask[0]))
  np.testing.assert_array_equal(i_ids, ref['loftr/planted_i_ids'])
  np.testing.assert_array_equal(np.asarray(j[0])[i_ids], ref['loftr/planted_j_ids'])
  np.testing.assert_array_equal(np.asarray(conf[0])[i_ids], ref['loftr/planted_mconf'])
  close(loftr.cell_points(i_ids, 8), ref['loftr/planted_mkpts0_c'], 1e-7)
  close(loftr.cell_points(np.asarray(j[0])[i_ids], 10), ref['loftr/planted_mkpts1_c'], 1e-7)


def test_fine_stage_matches_kornia(params, transformed):
  ref = reference_data.load()
  (coarse0, coarse1), (fine0, fine1), _ = transformed
  i_ids, j_ids = ref['loftr/fine_i'], ref['loftr/fine_j']
  offset, expectation = jax.jit(loftr.fine_offsets)(params, fine0[0], fine1[0], coarse0[0],
                                                    coarse1[0], i_ids, j_ids)
  close(expectation, ref['loftr/fine_expectation'], 1e-3)
  close(loftr.cell_points(j_ids, 12) + offset, ref['loftr/fine_keypoints1'], 1e-5)


def test_unusable_loftr_weights_give_one_line_user_errors(tmp_path):
  inception_like = tmp_path / 'inception.safetensors'
  inception_like.write_bytes(safetensors_numpy.save(
      {'Conv2d_1a_3x3.conv.weight': np.zeros((32, 3, 3, 3), np.float32)}))
  sinkhorn = tmp_path / 'sinkhorn.safetensors'
  state = reference_weights.state_dict(reference_data.shapes('loftr/shapes'))
  state['coarse_matching.bin_score'] = np.ones((), np.float32)
  sinkhorn.write_bytes(safetensors_numpy.save(state))
  for path, text in ((inception_like, 'tensors are missing'),
                     (sinkhorn, "unexpected tensors 'coarse_matching.bin_score'"),
                     (tmp_path / 'loftr_outdoor.ckpt', 'not found')):
    with pytest.raises(errors.UserError, match=text) as info:
      loftr.load(path)
    assert '\n' not in str(info.value)
  assert loftr.fixed_position_encoding('/w/loftr_indoor_ds_new.ckpt')
  assert not loftr.fixed_position_encoding('/w/loftr_outdoor.ckpt')


def test_matcher_counts_loftr_matches_of_frame_0_with_each_later_frame(params, monkeypatch):
  gray0, gray1 = images()
  video = np.repeat(np.stack([gray0[0], gray1[0]])[..., None], 3, axis=-1) * 2.0 - 1.0
  matcher = consistency.LoftrMatcher(params, upscale=1, threshold=0.0)
  # The real network (the same compile as test_dense_match_matches_kornia): its match count.
  want = len(loftr.select(loftr.match(params, gray0, gray1, fixed_encoding=False,
                                          threshold=0.0))['confidence'])
  assert matcher.video_matches(video) == want
  # The pairing, gray conversion and upscaling, with a stand-in for the network.
  calls = []

  def fake_match(_, a, b, *, fixed_encoding, threshold):
    calls.append((np.asarray(a), np.asarray(b), fixed_encoding, threshold))
    return {'mask': np.arange(len(a) * 4).reshape(len(a), 4) % 3 == 0}

  monkeypatch.setattr(loftr, 'match', fake_match)
  rgb = np.random.default_rng(0).uniform(-1, 1, (3, 8, 8, 3)).astype(np.float32)
  counts = consistency.LoftrMatcher(params, upscale=2).video_matches(rgb)
  a, b, fixed, threshold = calls[0]
  assert a.shape == b.shape == (2, 16, 16) and not fixed and threshold == 0.2
  np.testing.assert_array_equal(a[0], a[1])  # Frame 0 against frames 1 and 2.
  gray = ((rgb + 1) / 2) @ np.float32([0.299, 0.587, 0.114])
  np.testing.assert_allclose(b[1, ::2, ::2].mean(), gray[2].mean(), atol=0.05)
  assert counts == np.mean([2, 1])  # Rows [0..3] and [4..7] of the mask: 2 and 1 multiples of 3.
  with pytest.raises(ValueError, match='multiples of 8'):
    consistency.LoftrMatcher(params, upscale=1).video_matches(rgb[:, :6, :6])
