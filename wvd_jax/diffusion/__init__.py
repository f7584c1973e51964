"""Diffusion: noise schedule, parameterizations, training objective and samplers."""
