"""The paper's Table 1 metrics that need pretrained networks: FID, Frame Consistency (FC) and
KPM counted by LoFTR, each from user-supplied weights named in the config.

  eval.fid_inception_weights  pytorch-fid's Inception-v3 (networks/inception.py)  -> 'fid'
  eval.clip_weights           a CLIP ViT image encoder (networks/clip.py)         -> 'fc'
  eval.loftr_weights          kornia's LoFTR (networks/loftr.py)                  -> 'kpm_loftr'

A metric whose key is empty is skipped, with the reason in the report; a weights file that cannot
be used stops the eval before any generation with a one-line UserError naming the key.

What is scored, on the videos generated from frame 0 (the ``consistency`` task; paper Table 1,
single image to 3D), per clip with S samples of N frames:
  FID    Inception features of the generated frames 1..N-1 of every sample against those of the
         true frames 1..N-1 (frame 0 is the given image in both), pooled over the split: one FID.
  FC     mean cosine similarity of the CLIP image embeddings of consecutive frames, x 100,
         averaged over samples and clips; the true clips' FC is the reference.
  KPM    LoFTR matches between frame 0 and each later frame, generated as % of true (as the SIFT
         KPM of consistency.py).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from wvd_jax import errors
from wvd_jax.evaluation import consistency, fid, frame_consistency
from wvd_jax.evaluation.networks import clip, inception, loftr

# metric -> (config key under config.eval, what the file is).
WEIGHT_KEYS = {'fid': ('fid_inception_weights', "pytorch-fid's Inception-v3"),
               'fc': ('clip_weights', 'CLIP image encoder'),
               'kpm_loftr': ('loftr_weights', 'LoFTR matcher')}


def _inception_features(path: str) -> Callable:
  return fid.InceptionFeatures(inception.load(path))


def _clip_embedder(path: str) -> Callable:
  return frame_consistency.ClipEmbedder(*clip.load(path))


def _loftr_counter(path: str) -> Callable:
  matcher = consistency.LoftrMatcher(loftr.load(path),
                                     fixed_encoding=loftr.fixed_position_encoding(path))
  return matcher.video_matches


# metric -> loader: weights path -> the network as a callable (see LearnedMetrics).
LOADERS = {'fid': _inception_features, 'fc': _clip_embedder, 'kpm_loftr': _loftr_counter}


@dataclasses.dataclass
class LearnedMetrics:
  """The loaded networks (None when skipped) and, per skipped metric, why.

  inception, clip: images (M, H, W, 3) in [-1, 1] -> (M, D) features / embeddings;
  matcher: a video (N, H, W, 3) in [-1, 1] -> mean matches of frame 0 with each later frame."""
  inception: Callable | None = None
  clip: Callable | None = None
  matcher: Callable | None = None
  skipped: dict[str, str] = dataclasses.field(default_factory=dict)


def load(eval_config, tasks) -> LearnedMetrics:
  """The networks whose weights the config names; the others are listed as skipped.

  Raises UserError (one line, naming the config key) for a weights file that cannot be used."""
  out = LearnedMetrics()
  if 'consistency' not in tasks:
    out.skipped = {m: "the 'consistency' task (its generated videos) is not in eval.tasks"
                   for m in WEIGHT_KEYS}
    return out
  networks = {}
  for metric, (key, what) in WEIGHT_KEYS.items():
    path = eval_config[key]
    if not path:
      out.skipped[metric] = f'no {what} weights (set config.eval.{key})'
      continue
    try:
      networks[metric] = LOADERS[metric](path)
    except errors.UserError as e:
      raise errors.UserError(f'config.eval.{key}: {e}') from None
  out.inception, out.clip = networks.get('fid'), networks.get('fc')
  out.matcher = networks.get('kpm_loftr')
  return out


def clip_scores(learned: LearnedMetrics, true_rgb, generated_rgb) -> tuple[dict, dict]:
  """One clip's learned scores and the features that are pooled over the split.

  Args:
    true_rgb: (N, H, W, 3) the clip's frames in [-1, 1]; generated_rgb: (S, N, H, W, 3).
  Returns:
    scores: {'fc/generated': mean FC of the S videos, 'fc/ground_truth': the clip's FC,
      'kpm_loftr/generated': mean LoFTR matches (frame 0 vs later frames) of the S videos,
      'kpm_loftr/ground_truth': the clip's};
    features: {'fid/generated': (S (N - 1), 2048), 'fid/ground_truth': (N - 1, 2048)} float32;
    each for the metrics whose networks are loaded.
  """
  scores, features = {}, {}
  true_rgb, generated_rgb = np.asarray(true_rgb), np.asarray(generated_rgb)
  if learned.inception is not None:
    later = generated_rgb[:, 1:].reshape((-1,) + generated_rgb.shape[2:])
    features['fid/generated'] = learned.inception(later).astype(np.float32)
    features['fid/ground_truth'] = learned.inception(true_rgb[1:]).astype(np.float32)
  if learned.clip is not None:
    for key, videos in (('generated', generated_rgb), ('ground_truth', true_rgb[None])):
      embeds = learned.clip(videos.reshape((-1,) + videos.shape[2:]))
      embeds = embeds.reshape(videos.shape[:2] + embeds.shape[1:])
      scores[f'fc/{key}'] = float(np.mean([frame_consistency.frame_consistency(e)
                                           for e in embeds]))
  if learned.matcher is not None:
    scores['kpm_loftr/generated'] = float(np.mean([learned.matcher(v) for v in generated_rgb]))
    scores['kpm_loftr/ground_truth'] = float(learned.matcher(true_rgb))
  return scores, features


def aggregate(per_clip_scores: list[dict], per_clip_features: list[dict]) -> dict:
  """Pooled learned metrics over the split's clips (``clip_scores`` of each)."""
  out = {}
  rows = [c for c in per_clip_features if 'fid/generated' in c]
  if rows:
    generated = np.concatenate([c['fid/generated'] for c in rows])
    truth = np.concatenate([c['fid/ground_truth'] for c in rows])
    if min(len(generated), len(truth)) >= 2:
      out['fid'] = {'fid': fid.fid_from_features(generated, truth),
                    'num_generated': int(len(generated)), 'num_true': int(len(truth))}
  rows = [c for c in per_clip_scores if 'fc/generated' in c]
  if rows:
    out['fc'] = {f'fc_{k}': float(np.mean([c[f'fc/{k}'] for c in rows]))
                 for k in ('generated', 'ground_truth')}
  rows = [c for c in per_clip_scores if 'kpm_loftr/generated' in c]
  if rows:
    out['kpm_loftr'] = consistency.kpm_summary([c['kpm_loftr/generated'] for c in rows],
                                               [c['kpm_loftr/ground_truth'] for c in rows])
  return out
