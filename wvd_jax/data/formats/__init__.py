"""Readers of public dataset layouts for ``wvd_jax.data.convert`` (see common.py's contract)."""
from wvd_jax.data.formats import co3d, colmap, re10k, scannetpp

FORMATS = {'colmap': colmap, 'co3d': co3d, 're10k': re10k, 'scannetpp': scannetpp}
