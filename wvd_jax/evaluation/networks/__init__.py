"""Pretrained networks behind the learned metrics, as pure JAX functions over converted weights.

``inception`` (pytorch-fid's FID Inception-v3, for FID) and ``clip`` (the CLIP ViT image encoder,
for Frame Consistency) take user-supplied PyTorch-layout weights read by ``weights``;
``loftr`` wraps kornia's LoFTR matcher (PyTorch, an optional extra) for the learned KPM.
"""
