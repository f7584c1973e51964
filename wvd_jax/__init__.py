"""wvd_jax: World-consistent Video Diffusion in JAX/Flax.

A diffusion transformer over "6D videos" (RGB + XYZ frames) and the geometry around it.
Entry point: ``python -m wvd_jax.main --config=configs/demo.py --workdir=DIR``.
"""

__version__ = '0.1.0'

import jax as _jax

# The partitionable threefry (JAX's default since 0.5) costs ~10 s of XLA:CPU compile time for
# every jitted function that draws random numbers (measured here: 11.8 s vs 0.3 s for one
# jax.random.normal). The classic threefry gives sharding-independent values as well; it only
# generates noise less efficiently under sharding, which is negligible next to the model.
_jax.config.update('jax_threefry_partitionable', False)
