"""Geometry core: cameras, XYZ normalization (paper eq. 1's N), rasterizer (eq. 1's R),
re-projection memory for camera control, post-optimization (eq. 3) and exports (PLY, COLMAP).

Conventions everywhere: OpenCV camera frame (x right, y down, z forward); poses are 4x4
``cam_to_world`` (``world_to_cam`` the inverse); K is 3x3 in pixels; pixel (u, v) has its centre at
(col + 0.5, row + 0.5); images are (..., H, W, C); masks are bool (..., H, W).
Imports none of the other wvd_jax packages.
"""
