"""Evaluation of WVD: metrics (pure numpy, float64) and the protocol / runner that applies them.

The metric modules follow the published protocols (DUSt3R/MonST3R depth evaluation, Robust MVD,
VGGSfM pose metrics, 4DiM key-point matches): ``depth_metrics``
(scale-aligned depth errors of the monocular and video-depth benchmarks), ``pose_metrics``
(relative rotation / translation errors over frame pairs, RRA / RTA / mAA, Umeyama Sim(3)
alignment, ATE of trajectories), ``image_metrics`` (PSNR / SSIM of views in [-1, 1]) and
``consistency`` (SIFT key-point matches behind KPM, and the agreement of generated XYZ and RGB
across frames). Conventions are the project's: OpenCV camera axes (x right, y down, z forward),
``cam_to_world`` 4x4 poses, pixel-unit 3x3 intrinsics, pixel (col, row) centred at
(col + 0.5, row + 0.5), channels-last images with RGB in [-1, 1] and bool (..., H, W) masks.
"""
