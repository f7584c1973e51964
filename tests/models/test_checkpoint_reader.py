"""checkpoint_reader's architecture check: the keys that shape the parameters must agree."""
import pytest

from tests.conftest import tiny_config
from wvd_jax import errors
from wvd_jax.models import checkpoint_reader


def test_mlp_bias_and_qk_norm_are_architecture_keys_with_old_defaults():
  """A checkpoint without MLP biases does not load into a model with them; a stored config from
  before the keys existed counts as having both."""
  config, stored = tiny_config(), tiny_config()
  stored.model.mlp_bias = False
  with pytest.raises(errors.UserError, match='model.mlp_bias: config True vs checkpoint False'):
    checkpoint_reader.check_architecture(config, stored, 'ckpt')
  old = tiny_config()
  del old.model['mlp_bias'], old.model['qk_norm']
  checkpoint_reader.check_architecture(config, old, 'ckpt')
  config.model.qk_norm = False
  with pytest.raises(errors.UserError, match='model.qk_norm: config False vs checkpoint True'):
    checkpoint_reader.check_architecture(config, old, 'ckpt')
