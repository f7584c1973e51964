"""Models: the WVD diffusion transformer and the autoencoders it runs in."""
from flax import nnx

# Parameters carry logical axis names; training/sharding.py turns them into shardings and
# initializes under jit with those out_shardings. Flax's eager sharding would instead need a mesh
# at every construction (tests, eval_shape), so it is off.
nnx.use_eager_sharding(False)
