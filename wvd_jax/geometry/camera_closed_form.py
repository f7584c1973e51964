"""Closed-form cameras from (world point, pixel) pairs, the initialization of post-optimization.

  * Hartley-normalized weighted DLT of the 3x4 projection (REFERENCES.md "Cameras from point
    maps"), RQ-decomposed into K, R, t (det R = +1, positive depth), with IRLS reweightings;
  * for (near-)planar point sets, where that DLT is degenerate: the plane homography, the focal
    from Zhang's two constraints (square pixels, known principal point) and planar PnP;
  * the focal of a camera-frame point map by Weiszfeld (DUSt3R's estimator);
  * with K known: the pose from a projection or a homography, polar-projected onto SO(3).
Single view each (vmap them). Conventions: OpenCV camera axes, world_to_cam [R | t], pixel
centres at +0.5 (see cameras.py).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from wvd_jax.geometry import _xp
from wvd_jax.geometry import cameras

TINY = 1e-12


def _homogeneous(x):
  return jnp.concatenate([x, jnp.ones_like(x[..., :1])], -1)


def _safe_div(a, b):
  return a / jnp.where(jnp.abs(b) > TINY, b, TINY)


def _hartley(x, w):
  """Similarity T (D+1, D+1) moving the weighted centroid of x (M, D) to 0 and the mean
  distance to sqrt(D); returns (T, T^-1)."""
  d = x.shape[-1]
  sw = jnp.maximum(w.sum(), TINY)
  mu = (w[:, None] * x).sum(0) / sw
  dist = (w * jnp.linalg.norm(x - mu, axis=-1)).sum() / sw
  s = np.sqrt(d) / jnp.maximum(dist, TINY)
  eye = jnp.eye(d, dtype=x.dtype)
  t = jnp.concatenate([jnp.concatenate([s * eye, -s * mu[:, None]], 1),
                       jnp.eye(1, d + 1, d, dtype=x.dtype)], 0)
  t_inv = jnp.concatenate([jnp.concatenate([eye / s, mu[:, None]], 1),
                           jnp.eye(1, d + 1, d, dtype=x.dtype)], 0)
  return t, t_inv


def _dlt_once(src, dst, w):
  """Weighted DLT: G (3, D+1) with dst ~ G [src, 1], for src (M, D), dst (M, 2), w (M,) >= 0.

  Hartley-normalized; the null vector of the 2M x 3(D+1) system A comes from the small normal
  matrix plus two correction steps (below)."""
  ts, ts_inv = _hartley(src, w)
  td, td_inv = _hartley(dst, w)
  sh = _xp.matvec(ts, _homogeneous(src))
  dh = _xp.matvec(td, _homogeneous(dst))
  zeros = jnp.zeros_like(sh)
  sq = jnp.sqrt(w)[:, None]
  a = jnp.concatenate([jnp.concatenate([sh, zeros, -dh[:, :1] * sh], -1) * sq,
                       jnp.concatenate([zeros, sh, -dh[:, 1:2] * sh], -1) * sq], 0)
  ata = jnp.einsum('mi,mj->ij', a, a, precision=jax.lax.Precision.HIGHEST)
  lam, vec = jnp.linalg.eigh(ata)
  g = vec[:, 0]
  # Forming A^T A squares A's condition number, which float32 cannot afford (a QR of A would
  # not, but is slow on accelerators). Two corrections fix it: A g is computed from A itself
  # (accurate), and the step solves the tangent problem with the eigenpairs as preconditioner.
  for _ in range(2):
    res = (a * g).sum(-1)
    grad = (a * res[:, None]).sum(0)
    coef = (vec[:, 1:] * grad[:, None]).sum(0) / jnp.maximum(lam[1:] - lam[0], TINY * lam[-1])
    g = g - (vec[:, 1:] * coef).sum(-1)
    g = g / jnp.linalg.norm(g)
  g = g.reshape(3, src.shape[-1] + 1)
  g = _xp.matmul(_xp.matmul(td_inv, g), ts)
  return g / jnp.maximum(jnp.linalg.norm(g), TINY)


def dlt(src, dst, w, irls_iters: int):
  """`_dlt_once` plus IRLS reweighting by 1 / reprojection error (an L1-like fit). Invariant
  to similarity transforms of src and dst (Hartley normalization and relative thresholds)."""
  scale = _hartley(dst, w)[0][0, 0]  # sqrt 2 / typical dst spread

  def solve(_, carry):  # one traced copy of the solve for all rounds (compile time)
    _, wk = carry
    g = _dlt_once(src, dst, wk)
    proj = _xp.matvec(g, _homogeneous(src))
    err = jnp.linalg.norm(_safe_div(proj[:, :2], proj[:, 2:]) - dst, axis=-1) * scale
    return g, jnp.where(jnp.isfinite(err), w / jnp.maximum(err, 1e-4), 0.0)

  g0 = jnp.zeros((3, src.shape[-1] + 1), src.dtype)
  return jax.lax.fori_loop(0, irls_iters + 1, solve, (g0, w))[0]


def _det3(m):
  return (m[..., 0, :] * jnp.cross(m[..., 1, :], m[..., 2, :])).sum(-1)


def _inv3(m):
  """Closed-form 3x3 inverse (adjugate / det): elementwise, cheap to compile and run."""
  adj_t = jnp.stack([jnp.cross(m[..., 1, :], m[..., 2, :]), jnp.cross(m[..., 2, :], m[..., 0, :]),
                     jnp.cross(m[..., 0, :], m[..., 1, :])], -1)
  return adj_t / _det3(m)[..., None, None]


def _polar(m, iters: int = 12):
  """Nearest rotation to m (3, 3) with det(m) > 0: the orthogonal polar factor by scaled Newton
  iterations X <- (g X + X^-T / g) / 2 (quadratic convergence; no SVD, which compiles and runs
  slowly as a batched LAPACK/cuSOLVER call). Returns NaN for singular m (callers score
  candidates by loss, so such a candidate just loses)."""
  def step(_, x):
    xi = jnp.swapaxes(_inv3(x), -1, -2)
    g = jnp.sqrt(jnp.linalg.norm(xi) / jnp.linalg.norm(x))
    return (g * x + xi / g) / 2
  return jax.lax.fori_loop(0, iters, step, m)


@jax.jit
def decompose_projection(p):
  """RQ-decomposes a 3x4 projection P ~ K [R | t] (any scale and sign).

  Returns (K (3, 3) upper triangular with positive diagonal and K[2, 2] = 1, R (3, 3) with
  det +1, t (3,)), world_to_cam = [R | t]. The sign of P is fixed so det(P[:, :3]) > 0, which
  for a real camera also makes the observed points' depths positive. RQ by Gram-Schmidt on
  the rows of M = P[:, :3] from the last one (m_i = sum_j K_ij r_j)."""
  p = p * jnp.where(_det3(p[:, :3]) < 0, -1.0, 1.0).astype(p.dtype)
  m1, m2, m3 = p[0, :3], p[1, :3], p[2, :3]
  k22 = jnp.linalg.norm(m3)
  r3 = m3 / k22
  k12 = (m2 * r3).sum()
  v2 = m2 - k12 * r3
  k11 = jnp.linalg.norm(v2)
  r2 = v2 / k11
  k01, k02 = (m1 * r2).sum(), (m1 * r3).sum()
  v1 = m1 - k01 * r2 - k02 * r3
  k00 = jnp.linalg.norm(v1)
  r1 = v1 / k00
  zero = jnp.zeros_like(k00)
  kp = jnp.stack([jnp.stack([k00, k01, k02]), jnp.stack([zero, k11, k12]),
                  jnp.stack([zero, zero, k22])]) / k22
  t = _xp.matvec(cameras.invert_intrinsics(kp), p[:, 3] / k22)
  return kp, jnp.stack([r1, r2, r3]), t


@functools.partial(jax.jit, static_argnames=('iters',))
def weiszfeld_focal(cam_points, pixels, weights, principal_point, iters: int = 10):
  """Focal (scalar) of a camera-frame point map: argmin_f sum w ||p - f x~||, with
  p = pixel - principal point, x~ = (X / Z, Y / Z); Weiszfeld iterations from the L2 solution
  (DUSt3R's estimator). cam_points (M, 3), pixels (M, 2), weights (M,); points with Z <= 0
  are ignored. Works on canonicalized clips (frame 0's camera = world) only."""
  z = cam_points[:, 2]
  w = jnp.where(z > TINY, weights, 0.0)
  xt = _safe_div(cam_points[:, :2], z[:, None])
  p = pixels - principal_point
  xp_dot = (xt * p).sum(-1)
  xx = (xt * xt).sum(-1)
  f = _safe_div((w * xp_dot).sum(), (w * xx).sum())
  for _ in range(iters):
    r = jnp.linalg.norm(p - f * xt, axis=-1)
    wk = w / jnp.maximum(r, 1e-6)
    f = _safe_div((wk * xp_dot).sum(), (wk * xx).sum())
  return f


@functools.partial(jax.jit, static_argnames=('irls_iters',))
def dlt_camera(points, uv, weights, irls_iters: int = 4):
  """Uncalibrated camera from >= 6 (world point, pixel) pairs: points (M, 3), uv (M, 2),
  weights (M,). Returns (K (3, 3), R, t) with world_to_cam = [R | t]. Degenerate for planar
  point sets (see `planar_focal`, `pnp_planar`)."""
  return decompose_projection(dlt(points, uv, weights, irls_iters))


def plane_frame(points, w, iters: int = 3):
  """Dominant plane of points (M, 3) with weights (M,): centroid mu (3,), orthonormal E (3, 3)
  (columns: two in-plane axes, then the normal) and in-plane coordinates (M, 2). Weighted PCA,
  re-weighted by 1 / distance to the plane a few times (IRLS) so off-plane outliers and a
  second, smaller surface do not tilt it."""
  def fit(wk):
    sw = jnp.maximum(wk.sum(), TINY)
    mu = (wk[:, None] * points).sum(0) / sw
    x = points - mu
    cov = (wk[:, None, None] * x[:, :, None] * x[:, None, :]).sum(0) / sw
    lam, vec = jnp.linalg.eigh(cov)
    return mu, vec, lam

  def reweight(_, carry):
    mu, vec, lam = carry
    dist = jnp.abs(((points - mu) * vec[:, 0]).sum(-1))
    floor = 1e-3 * jnp.sqrt(jnp.maximum(lam[2], TINY))  # relative to the plane's extent
    return fit(w / jnp.maximum(dist, floor))

  mu, vec, _ = jax.lax.fori_loop(0, iters, reweight, fit(w))
  e1, e2 = vec[:, 2], vec[:, 1]
  e = jnp.stack([e1, e2, jnp.cross(e1, e2)], 1)
  x = points - mu
  return mu, e, jnp.stack([(x * e1).sum(-1), (x * e2).sum(-1)], -1)


def focal_from_homography(h):
  """Focal (NaN when unobservable, e.g. a fronto-parallel plane) from a plane-to-image
  homography H = K [r1 r2 t] in pixel coordinates relative to the principal point, square
  pixels: h1^T w h2 = 0 and h1^T w h1 = h2^T w h2 with w = K^-T K^-1 (Zhang), least squares
  in 1 / f^2."""
  h1, h2 = h[:, 0], h[:, 1]
  a1 = h1[0] * h2[0] + h1[1] * h2[1]
  b1 = h1[2] * h2[2]
  a2 = h1[0] ** 2 + h1[1] ** 2 - h2[0] ** 2 - h2[1] ** 2
  b2 = h1[2] ** 2 - h2[2] ** 2
  inv_f2 = -_safe_div(a1 * b1 + a2 * b2, a1 * a1 + a2 * a2)
  return jnp.where(inv_f2 > 0, jax.lax.rsqrt(jnp.maximum(inv_f2, TINY)), jnp.nan)


@functools.partial(jax.jit, static_argnames=('irls_iters',))
def planar_focal(points, uv, weights, principal_point, irls_iters: int = 4):
  """Focal of a square-pixel camera with known principal point from a view of a plane
  (points (M, 3) near a plane, uv (M, 2), weights (M,)); NaN when unobservable."""
  _, _, ab = plane_frame(points, weights)
  return focal_from_homography(dlt(ab, uv - principal_point, weights, irls_iters))


def pose_from_projection(p, K):
  """(R, t) world_to_cam from a projection P ~ K [R | t] with K known: K^-1 P ~ lambda [R | t],
  sign fixed for positive depth (det > 0), R the polar projection onto SO(3)."""
  g = _xp.matmul(cameras.invert_intrinsics(K), p)
  g = g * jnp.where(_det3(g[:, :3]) < 0, -1.0, 1.0).astype(g.dtype)
  lam = jnp.linalg.norm(g[:, :3]) / np.sqrt(3.0)  # |lambda R|_F = sqrt(3) lambda
  return _polar(g[:, :3]), g[:, 3] / lam


def pose_from_homography(h, K, mu, e):
  """(R, t) world_to_cam from a plane-to-image homography H ~ K [R e1, R e2, R mu + t]
  (plane frame mu, E from `plane_frame`) with K known."""
  g = _xp.matmul(cameras.invert_intrinsics(K), h)
  g = g * jnp.where(g[2, 2] < 0, -1.0, 1.0).astype(g.dtype)  # plane centroid in front
  lam = (jnp.linalg.norm(g[:, 0]) + jnp.linalg.norm(g[:, 1])) / 2
  q1, q2 = g[:, 0] / lam, g[:, 1] / lam
  re = _polar(jnp.stack([q1, q2, jnp.cross(q1, q2)], 1))  # = R @ E
  rot = _xp.matmul(re, e.T)
  return rot, g[:, 2] / lam - _xp.matvec(rot, mu)



@functools.partial(jax.jit, static_argnames=('irls_iters',))
def pnp_planar(points, uv, weights, K, irls_iters: int = 4):
  """Calibrated PnP for (near-)planar points (>= 4) via the plane homography in the points'
  PCA frame. Returns (R, t), world_to_cam."""
  mu, e, ab = plane_frame(points, weights)
  return pose_from_homography(dlt(ab, uv, weights, irls_iters), K, mu, e)
