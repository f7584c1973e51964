"""Datasets: the embedded synthetic 3D world, its TFDS / ArrayRecord storage, the grain pipeline.

  textures.py         photographs (scikit-image's bundled samples) and procedural patterns, mipmapped
  scenes.py           seeded rooms and object-centric scenes of analytic primitives
  trajectories.py     camera paths (walks, pans, dollies, orbits, hand-held jitter), never in solids
  renderer.py         jitted JAX ray caster: RGB, z-depth, surface ids
  synthetic_world.py  clip i of a split = f(seed, split, i): scene + cameras + render
  clips.py            raw clips: stored fields, XYZ / mask derived from depth
  storage.py          the TFDS builder (ArrayRecord shards, built on first use) and ClipSource
  transforms.py       frame selection, crop / resize with exact K, canonicalization
  pipeline.py         make_dataset / load_split / canonicalize_clip (grain)
"""
