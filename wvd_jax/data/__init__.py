"""Datasets: the embedded synthetic world, its storage, and the grain input pipeline."""
