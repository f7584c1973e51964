"""FID: the JAX FID Inception-v3 against pytorch-fid's on random weights, the Fréchet distance
against closed forms and pytorch-fid's calculate_frechet_distance, and weight-file errors."""
import numpy as np
import pytest
from safetensors import numpy as safetensors_numpy

from tests.evaluation import reference_data, reference_weights
from wvd_jax import errors
from wvd_jax.evaluation import fid
from wvd_jax.evaluation.networks import inception, weights


@pytest.fixture(scope='module')
def inception_file(tmp_path_factory):
  """pytorch-fid-format random weights (with fc and num_batches_tracked, as the real file)."""
  tensors = reference_weights.state_dict(reference_data.shapes('inception/shapes'))
  tensors['Conv2d_1a_3x3.bn.num_batches_tracked'] = np.zeros((), np.float32)
  path = tmp_path_factory.mktemp('fid') / 'pt_inception.safetensors'
  path.write_bytes(safetensors_numpy.save(tensors))
  return path


def test_architecture_is_pytorch_fids():
  assert inception.torch_shapes() == {
      k: v for k, v in reference_data.shapes('inception/shapes').items()
      if not k.startswith('fc.')}


def test_features_match_pytorch_fid(inception_file):
  ref = reference_data.load()
  params = inception.load(inception_file)
  got = np.asarray(fid.InceptionFeatures(params, batch_size=2)(ref['inception/images'] * 2.0 - 1.0))
  want = ref['inception/features']
  assert got.shape == (2, inception.FEATURES)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_resize_matches_torch_interpolate():
  ref = reference_data.load()
  for size, key in ((37, 'resize/up37'), (13, 'resize/down13')):
    got = np.asarray(inception.resize_bilinear(ref['resize/input'], size))
    np.testing.assert_allclose(got, ref[key], atol=2e-6)


def test_frechet_distance_of_diagonal_gaussians():
  rng = np.random.default_rng(0)
  mu_a, mu_b = rng.normal(size=5), rng.normal(size=5)
  var_a, var_b = rng.uniform(0.1, 3, 5), rng.uniform(0.1, 3, 5)
  # Commuting (diagonal) covariances: Tr(S_a + S_b - 2 sqrt(S_a S_b)) = sum (sqrt a - sqrt b)^2.
  want = np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2)
  assert fid.frechet_distance(mu_a, np.diag(var_a), mu_b, np.diag(var_b)) == pytest.approx(
      want, rel=1e-12)
  # Rotating both Gaussians by one orthogonal matrix leaves the distance unchanged.
  q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
  assert fid.frechet_distance(q @ mu_a, q @ np.diag(var_a) @ q.T, q @ mu_b,
                              q @ np.diag(var_b) @ q.T) == pytest.approx(want, rel=1e-10)
  sigma = q @ np.diag(var_a) @ q.T
  assert fid.frechet_distance(mu_a, sigma, mu_a, sigma) == pytest.approx(0.0, abs=1e-10)


def test_fid_matches_pytorch_fid_on_the_same_features():
  ref = reference_data.load()
  assert fid.fid_from_features(ref['fid/a'], ref['fid/b']) == pytest.approx(
      float(ref['fid/value']), rel=1e-9)


def test_statistics_rejects_a_single_sample():
  with pytest.raises(ValueError, match='M >= 2'):
    fid.statistics(np.zeros((1, 4)))


def test_wrong_weights_give_one_line_user_errors(tmp_path, inception_file):
  clip_like = tmp_path / 'clip.safetensors'
  clip_like.write_bytes(safetensors_numpy.save(
      {'vision_model.embeddings.class_embedding': np.zeros(4, np.float32)}))
  broken = reference_weights.state_dict(reference_data.shapes('inception/shapes'))
  broken['Mixed_7c.branch_pool.conv.weight'] = np.zeros((192, 2048, 3, 3), np.float32)
  wrong_shape = tmp_path / 'wrong_shape.safetensors'
  wrong_shape.write_bytes(safetensors_numpy.save(broken))
  garbage = tmp_path / 'garbage.safetensors'
  garbage.write_bytes(b'not a safetensors file')
  pickle_file = tmp_path / 'pt_inception.pth'
  pickle_file.write_bytes(b'PK\x03\x04 pretend zip of pickles')
  cases = {clip_like: 'tensors are missing', wrong_shape: "'Mixed_7c.branch_pool.conv.weight' "
           'has shape', garbage: 'not a readable .safetensors', tmp_path / 'none.pth': 'not found',
           pickle_file: 'torch'}
  for path, text in cases.items():
    with pytest.raises(errors.UserError, match=text) as info:
      inception.load(path)
    assert '\n' not in str(info.value) and str(path) in str(info.value)
