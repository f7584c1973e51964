"""Post-optimization (paper eq. 3): cameras and depth from XYZ images.

Given XYZ images X (N, H, W, 3) (world points per pixel, any world frame), find per view a pose
(cam_to_world), intrinsics K (fx = fy = f, principal point fixed, by default the image centre)
and per-pixel depth d minimizing the re-projection loss sum_pixels w * rho(||x - P^-1(d r)||).

Depth elimination: with camera-frame point c = R x + t and pixel ray r = K^-1 [u, v, 1]^T,
||x - P^-1(d r)|| = ||c - d r|| and the best depth is d* = max(0, r.c / |r|^2), in closed form.
So only rotation (axis-angle increment on the initial rotation), camera centre and log-focal are
optimized, and d* is exact per pixel. The optimizer is optax's L-BFGS (zoom line search) in a
lax.while_loop inside one jit: at most `num_iters` iterations per stage, stopping early once
two iterations bring no improvement (at the float32 floor a line search can only fail).
rho is quadratic below `robust_delta` and robust above: a pseudo-Huber (linear tails) for a
first L-BFGS stage from the closed form, then a Cauchy penalty (redescending tails; its scale
set from the first stage's median residual) so that outliers lose their pull on the cameras.

Closed-form initialization, all vectorized over views (vmap), each candidate scored with the
same loss and the best kept per view:
  * Hartley-normalized weighted DLT of the 3x4 projection, RQ-decomposed into K, R, t
    (det R = +1, positive depth), with a few IRLS reweightings for robustness;
  * for (near-)planar views, where that DLT is degenerate: plane homography, focal from
    Zhang's two constraints (square pixels, known principal point) and planar PnP;
  * for a clip canonicalized to frame 0's camera (`canonical=True`): frame 0 is the identity
    and the focal comes from Weiszfeld on frame 0's camera-frame point map;
  * with a focal fixed: calibrated linear PnP (DLT on normalized rays + polar projection onto
    SO(3)) and planar PnP.
Everything runs in an internal similarity-normalized world (mean 0, RMS radius 1) for
conditioning, and is mapped back exactly.

Conventions: OpenCV camera axes, cam_to_world poses, pixel centres at +0.5 (see cameras.py).
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from wvd_jax.geometry import _xp
from wvd_jax.geometry import cameras
from wvd_jax.geometry import rotations

_TINY = 1e-12
MIN_POINTS = 6  # the 3x4 DLT needs 6 correspondences (planar PnP 4)


class PostOptResult(NamedTuple):
  """Per view: depth (N, H, W) z-depth (0 where no valid point or behind the camera);
  K (N, 3, 3); cam_to_world (N, 4, 4); xyz (N, H, W, 3) re-projected points P^-1(d* r), i.e.
  the input snapped onto the recovered cameras' rays (0 where mask is False);
  mask (N, H, W) pixels with a valid, weighted input point in front of the camera;
  residual (N,) weighted mean ||x - P^-1(d* r)|| in world units; ok (N,) False where a view
  had too few valid points or the solve failed (its outputs are then finite placeholders:
  identity pose, default focal, zero depth); iterations (2,) L-BFGS iterations run by the
  two refinement stages (pseudo-Huber, Cauchy)."""
  depth: jax.Array
  K: jax.Array
  cam_to_world: jax.Array
  xyz: jax.Array
  mask: jax.Array
  residual: jax.Array
  ok: jax.Array
  iterations: jax.Array


# ----------------------------------------------------------------------------------------------
# Closed-form pieces (single view; vmap them).


def _homogeneous(x):
  return jnp.concatenate([x, jnp.ones_like(x[..., :1])], -1)


def _safe_div(a, b):
  return a / jnp.where(jnp.abs(b) > _TINY, b, _TINY)


def _hartley(x, w):
  """Similarity T (D+1, D+1) moving the weighted centroid of x (M, D) to 0 and the mean
  distance to sqrt(D); returns (T, T^-1)."""
  d = x.shape[-1]
  sw = jnp.maximum(w.sum(), _TINY)
  mu = (w[:, None] * x).sum(0) / sw
  dist = (w * jnp.linalg.norm(x - mu, axis=-1)).sum() / sw
  s = np.sqrt(d) / jnp.maximum(dist, _TINY)
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
    coef = (vec[:, 1:] * grad[:, None]).sum(0) / jnp.maximum(lam[1:] - lam[0], _TINY * lam[-1])
    g = g - (vec[:, 1:] * coef).sum(-1)
    g = g / jnp.linalg.norm(g)
  g = g.reshape(3, src.shape[-1] + 1)
  g = _xp.matmul(_xp.matmul(td_inv, g), ts)
  return g / jnp.maximum(jnp.linalg.norm(g), _TINY)


def _dlt(src, dst, w, irls_iters: int):
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
  w = jnp.where(z > _TINY, weights, 0.0)
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
  return decompose_projection(_dlt(points, uv, weights, irls_iters))


def _plane_frame(points, w, iters: int = 3):
  """Dominant plane of points (M, 3) with weights (M,): centroid mu (3,), orthonormal E (3, 3)
  (columns: two in-plane axes, then the normal) and in-plane coordinates (M, 2). Weighted PCA,
  re-weighted by 1 / distance to the plane a few times (IRLS) so off-plane outliers and a
  second, smaller surface do not tilt it."""
  def fit(wk):
    sw = jnp.maximum(wk.sum(), _TINY)
    mu = (wk[:, None] * points).sum(0) / sw
    x = points - mu
    cov = (wk[:, None, None] * x[:, :, None] * x[:, None, :]).sum(0) / sw
    lam, vec = jnp.linalg.eigh(cov)
    return mu, vec, lam

  def reweight(_, carry):
    mu, vec, lam = carry
    dist = jnp.abs(((points - mu) * vec[:, 0]).sum(-1))
    floor = 1e-3 * jnp.sqrt(jnp.maximum(lam[2], _TINY))  # relative to the plane's extent
    return fit(w / jnp.maximum(dist, floor))

  mu, vec, _ = jax.lax.fori_loop(0, iters, reweight, fit(w))
  e1, e2 = vec[:, 2], vec[:, 1]
  e = jnp.stack([e1, e2, jnp.cross(e1, e2)], 1)
  x = points - mu
  return mu, e, jnp.stack([(x * e1).sum(-1), (x * e2).sum(-1)], -1)


def _focal_from_homography(h):
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
  return jnp.where(inv_f2 > 0, jax.lax.rsqrt(jnp.maximum(inv_f2, _TINY)), jnp.nan)


@functools.partial(jax.jit, static_argnames=('irls_iters',))
def planar_focal(points, uv, weights, principal_point, irls_iters: int = 4):
  """Focal of a square-pixel camera with known principal point from a view of a plane
  (points (M, 3) near a plane, uv (M, 2), weights (M,)); NaN when unobservable."""
  _, _, ab = _plane_frame(points, weights)
  return _focal_from_homography(_dlt(ab, uv - principal_point, weights, irls_iters))


def _pose_from_projection(p, K):
  """(R, t) world_to_cam from a projection P ~ K [R | t] with K known: K^-1 P ~ lambda [R | t],
  sign fixed for positive depth (det > 0), R the polar projection onto SO(3)."""
  g = _xp.matmul(cameras.invert_intrinsics(K), p)
  g = g * jnp.where(_det3(g[:, :3]) < 0, -1.0, 1.0).astype(g.dtype)
  lam = jnp.linalg.norm(g[:, :3]) / np.sqrt(3.0)  # |lambda R|_F = sqrt(3) lambda
  return _polar(g[:, :3]), g[:, 3] / lam


def _pose_from_homography(h, K, mu, e):
  """(R, t) world_to_cam from a plane-to-image homography H ~ K [R e1, R e2, R mu + t]
  (plane frame mu, E from `_plane_frame`) with K known."""
  g = _xp.matmul(cameras.invert_intrinsics(K), h)
  g = g * jnp.where(g[2, 2] < 0, -1.0, 1.0).astype(g.dtype)  # plane centroid in front
  lam = (jnp.linalg.norm(g[:, 0]) + jnp.linalg.norm(g[:, 1])) / 2
  q1, q2 = g[:, 0] / lam, g[:, 1] / lam
  re = _polar(jnp.stack([q1, q2, jnp.cross(q1, q2)], 1))  # = R @ E
  rot = _xp.matmul(re, e.T)
  return rot, g[:, 2] / lam - _xp.matvec(rot, mu)


@functools.partial(jax.jit, static_argnames=('irls_iters',))
def pnp_linear(points, uv, weights, K, irls_iters: int = 4):
  """Calibrated linear PnP (>= 6 non-planar points): the DLT of P, then K^-1 P projected onto
  [R | t]. (The Hartley-normalized DLT is invariant to the similarity K^-1 of the image when
  fx = fy, so this equals a DLT on normalized image points.) Returns (R, t), world_to_cam."""
  return _pose_from_projection(_dlt(points, uv, weights, irls_iters), K)


@functools.partial(jax.jit, static_argnames=('irls_iters',))
def pnp_planar(points, uv, weights, K, irls_iters: int = 4):
  """Calibrated PnP for (near-)planar points (>= 4) via the plane homography in the points'
  PCA frame. Returns (R, t), world_to_cam."""
  mu, e, ab = _plane_frame(points, weights)
  return _pose_from_homography(_dlt(ab, uv, weights, irls_iters), K, mu, e)


# ----------------------------------------------------------------------------------------------
# The loss with depth eliminated.


def _ray_residuals(rot, center, focal, points, offsets):
  """rot (3, 3) world_to_cam rotation, center (3,) camera centre, focal scalar, points (M, 3),
  offsets (M, 2) = pixel - principal point -> (e (M, 3) = c - d* r, d* (M,), r (M, 3))."""
  c = _xp.matvec(rot, points - center)
  r = jnp.concatenate([offsets / focal, jnp.ones_like(offsets[:, :1])], -1)
  d = jnp.maximum((r * c).sum(-1) / (r * r).sum(-1), 0.0)
  return c - d[:, None] * r, d, r


def _robust(e, delta, cauchy=False):
  """Robust penalty of residual vectors e (..., 3); both branches ~ |e|^2 / (2 delta) near 0.
  Pseudo-Huber (convex, linear tails) or Cauchy (redescending: far outliers lose influence)."""
  e2 = (e * e).sum(-1)
  return jnp.where(cauchy, delta / 2 * jnp.log1p(e2 / (delta * delta)),
                   jnp.sqrt(e2 + delta * delta) - delta)


def _view_loss(rot, center, focal, points, offsets, w, delta, cauchy=False):
  e, _, _ = _ray_residuals(rot, center, focal, points, offsets)
  val = (w * _robust(e, delta, cauchy)).sum() / jnp.maximum(w.sum(), _TINY)
  ok = jnp.all(jnp.isfinite(rot)) & jnp.all(jnp.isfinite(center)) & jnp.isfinite(focal) & (
      focal > 0)
  return jnp.where(ok & jnp.isfinite(val), val, jnp.inf)


def _best(losses, *cands):
  """Per view, the candidate (axis 0 of each array in cands) with the lowest loss."""
  i = jnp.argmin(losses, axis=0)
  pick = lambda c: jnp.take_along_axis(c, i.reshape((1, -1) + (1,) * (c.ndim - 2)), 0)[0]
  return (jnp.min(losses, axis=0),) + tuple(pick(c) for c in cands)


# ----------------------------------------------------------------------------------------------
# The solver.


class _Prepared(NamedTuple):
  """Masked, internally normalized inputs (x_world = mu + s * xn)."""
  xyz: jax.Array  # (n, m, 3) world points, 0 where unused
  xn: jax.Array  # (n, m, 3) normalized points
  wts: jax.Array  # (n, m) weights, 0 where unused
  enough: jax.Array  # (n,) enough valid points
  mu: jax.Array  # (3,)
  s: jax.Array  # ()
  pix: jax.Array  # (m, 2) pixel centres
  pp: jax.Array  # (n, 2) principal points
  offsets: jax.Array  # (n, m, 2) pixel - principal point


def _prepare(xyz, weights, mask, principal_point) -> _Prepared:
  n, h, w, _ = xyz.shape
  m = h * w
  dtype = jnp.result_type(xyz.dtype, jnp.float32)
  xyz = xyz.astype(dtype).reshape(n, m, 3)
  weights = weights.reshape(n, m).astype(dtype)
  used = mask.reshape(n, m) & jnp.all(jnp.isfinite(xyz), -1) & jnp.isfinite(weights) & (
      weights > 0)
  wts = jnp.where(used, weights, 0.0)
  xyz = jnp.where(used[..., None], xyz, 0.0)
  # Similarity normalization for conditioning: weighted mean 0, RMS radius 1.
  sw = jnp.maximum(wts.sum(), _TINY)
  mu = (wts[..., None] * xyz).sum((0, 1)) / sw
  s = jnp.sqrt((wts * ((xyz - mu) ** 2).sum(-1)).sum() / sw)
  s = jnp.where(s > _TINY, s, 1.0)
  xn = jnp.where(used[..., None], (xyz - mu) / s, 0.0)
  pix = jnp.asarray(cameras.pixel_centers(h, w), dtype).reshape(m, 2)
  pp = jnp.broadcast_to(principal_point.astype(dtype), (n, 2))
  return _Prepared(xyz, xn, wts, used.sum(-1) >= MIN_POINTS, mu, s, pix, pp,
                   pix[None] - pp[:, None])


def _initialize(prep: _Prepared, focal_init, shared_focal, canonical, robust_delta,
                irls_iters: int, init_points: int, default_focal: float):
  """Closed-form initial (R0 (n, 3, 3) world_to_cam rotation, centre (n, 3) normalized world,
  focal (n,)), from a subset of valid pixels per view."""
  n, m, _ = prep.xn.shape
  dtype = prep.xn.dtype
  pp, mu, s = prep.pp, prep.mu, prep.s
  # A random subset of pixels, valid ones first (top_k of validity + uniform noise).
  k = min(init_points, m)
  score = (prep.wts > 0) + jax.random.uniform(jax.random.PRNGKey(0), (n, m), dtype)
  sub = jax.lax.top_k(score, k)[1]
  take = lambda a: jnp.take_along_axis(a, sub.reshape(sub.shape + (1,) * (a.ndim - 2)), 1)
  xs, ws, uvs, offs = take(prep.xn), take(prep.wts), jnp.take(prep.pix, sub, axis=0), take(
      prep.offsets)
  eye = jnp.broadcast_to(jnp.eye(3, dtype=dtype), (n, 3, 3))
  frame0_identity_center = jnp.broadcast_to(-mu / s, (n, 3))  # world origin = camera 0

  def loss_of(rot, center, focal):  # (c, n, ...) candidates -> (c, n) losses
    f = lambda r, c, fo, x, o, ww: _view_loss(r, c, fo, x, o, ww, robust_delta)
    return jax.vmap(jax.vmap(f), in_axes=(0, 0, 0, None, None, None))(
        rot, center, focal, xs, offs, ws)

  # Two robust DLTs per view: P (world -> pixels; degenerate for planar views) and H (plane
  # -> pixels relative to the principal point; meaningful for near-planar views). Every
  # candidate below derives from them; the loss picks per view.
  p_dlt = jax.vmap(lambda x, u, ww: _dlt(x, u, ww, irls_iters))(xs, uvs, ws)
  mu_pl, e_pl, ab = jax.vmap(_plane_frame)(xs, ws)
  h_pl = jax.vmap(lambda a, u, ww, p: _dlt(a, u - p, ww, irls_iters))(ab, uvs, ws, pp)
  center_of = lambda r, t: -_xp.matvec(jnp.swapaxes(r, -1, -2), t)

  def safe_k(f, c):
    f = jnp.where(jnp.isfinite(f) & (f > 0), f, 1.0)
    return cameras.make_intrinsics(f, f, c[:, 0], c[:, 1])

  # 1. Focal per view: from the DLT's K, from the plane homography, and (frame 0 of a
  # canonical clip) from Weiszfeld; each with its own pose, scored by the loss.
  k_dlt, r_dlt, t_dlt = jax.vmap(decompose_projection)(p_dlt)
  f_dlt = (k_dlt[:, 0, 0] + k_dlt[:, 1, 1]) / 2
  f_plane = jax.vmap(_focal_from_homography)(h_pl)
  r_pl, t_pl = jax.vmap(_pose_from_homography)(h_pl, safe_k(f_plane, 0 * pp), mu_pl, e_pl)
  # World = frame 0's camera: Weiszfeld on frame 0's (un-normalized) camera-frame points.
  f_w = weiszfeld_focal(take(prep.xyz)[0], uvs[0], ws[0], pp[0])
  f_w_cand = jnp.where((jnp.arange(n) == 0) & canonical, f_w, jnp.nan)
  losses = loss_of(jnp.stack([r_dlt, r_pl, eye]),
                   jnp.stack([center_of(r_dlt, t_dlt), center_of(r_pl, t_pl),
                              frame0_identity_center]),
                   jnp.stack([f_dlt, f_plane, f_w_cand]))
  f_best = _best(losses, jnp.stack([f_dlt, f_plane, f_w_cand]))[1]
  f_med = jnp.nanmedian(jnp.where(prep.enough & jnp.isfinite(losses.min(0)), f_best, jnp.nan))
  f_shared = jnp.where(canonical, f_w, f_med)
  f0 = jnp.where(shared_focal, f_shared, f_best)
  f0 = jnp.where(jnp.isfinite(focal_init) & (focal_init > 0), focal_init.astype(dtype), f0)
  f0 = jnp.where(jnp.isfinite(f0) & (f0 > 0), f0, default_focal)

  # 2. Pose per view with the focal fixed: calibrated PnP from P, planar PnP from H, the
  # DLT's own pose, and the identity (frame 0 of a canonical clip).
  r_lin, t_lin = jax.vmap(_pose_from_projection)(p_dlt, safe_k(f0, pp))
  r_pp, t_pp = jax.vmap(_pose_from_homography)(h_pl, safe_k(f0, 0 * pp), mu_pl, e_pl)
  rots = jnp.stack([r_lin, r_pp, r_dlt, eye])
  cents = jnp.stack([center_of(r_lin, t_lin), center_of(r_pp, t_pp), center_of(r_dlt, t_dlt),
                     frame0_identity_center])
  losses = loss_of(rots, cents, jnp.broadcast_to(f0, rots.shape[:2]))
  losses = losses.at[3].set(jnp.where((jnp.arange(n) == 0) & canonical, losses[3], jnp.inf))
  _, r0, c0 = _best(losses, rots, cents)
  r0 = jnp.where(jnp.all(jnp.isfinite(r0), (-1, -2), keepdims=True), r0, eye)
  c0 = jnp.where(jnp.all(jnp.isfinite(c0), -1, keepdims=True), c0, 0.0)
  return r0, c0, f0


def _refine(prep: _Prepared, r0, c0, f0, shared_focal, optimize_focal, robust_delta, cauchy,
            num_iters):
  """L-BFGS on all pixels over (rotation increment omega (n, 3), centre (n, 3), log focal
  (n,)); returns the best (rotation, centre, focal) seen and the iteration count."""
  n = r0.shape[0]

  def unpack(params):
    rot = _xp.matmul(rotations.axis_angle_to_rotation(params['omega']), r0)
    logf = jnp.where(shared_focal, jnp.mean(params['log_f']), params['log_f'])
    logf = jnp.where(optimize_focal, logf, jax.lax.stop_gradient(logf))
    return rot, params['center'], jnp.exp(logf)

  def total_loss(params):
    rot, center, focal = unpack(params)
    per_view = jax.vmap(lambda r, c, f, x, o, ww: _view_loss(
        r, c, f, x, o, ww, robust_delta, cauchy))(rot, center, focal, prep.xn, prep.offsets,
                                                  prep.wts)
    return jnp.sum(jnp.where(prep.enough, per_view, 0.0))

  params = dict(omega=jnp.zeros((n, 3), r0.dtype), center=c0, log_f=jnp.log(f0))
  opt = optax.lbfgs(linesearch=optax.scale_by_zoom_linesearch(
      max_linesearch_steps=12, initial_guess_strategy='one'))
  value_and_grad = optax.value_and_grad_from_state(total_loss)

  def cond(carry):
    return (carry[0] < num_iters) & (carry[-1] < 2)

  def body(carry):
    # Tracks the best parameters seen; stops after 2 iterations without improvement (at the
    # float32 floor the line search can only fail, so running on is wasted time).
    i, params, state, best, best_val, stall = carry
    val, grad = value_and_grad(params, state=state)
    better = val < best_val - 1e-7 * jnp.abs(best_val)
    best = jax.tree.map(lambda b, p: jnp.where(val < best_val, p, b), best, params)
    best_val = jnp.minimum(val, best_val)
    stall = jnp.where(better, 0, stall + 1)
    updates, state = opt.update(grad, state, params, value=val, grad=grad, value_fn=total_loss)
    params = optax.apply_updates(params, updates)
    params = jax.tree.map(lambda p, b: jnp.where(jnp.isfinite(p), p, b), params, best)
    return i + 1, params, state, best, best_val, stall

  init_val = total_loss(params)
  carry = (jnp.zeros((), jnp.int32), params, opt.init(params), params,
           jnp.where(jnp.isfinite(init_val), init_val, jnp.inf), jnp.zeros((), jnp.int32))
  its, params_end, _, best, best_val, _ = jax.lax.while_loop(cond, body, carry)
  end_val = total_loss(params_end)
  best = jax.tree.map(lambda b, p: jnp.where(end_val < best_val, p, b), best, params_end)
  return unpack(best), its


def _finalize(prep: _Prepared, rot, center, focal, shape, default_focal) -> PostOptResult:
  """World-unit outputs: camera point c = s * c_n, centre = mu + s * centre_n, depth = s * d*."""
  n, h, w = shape
  eye = jnp.eye(3, dtype=rot.dtype)
  e, d, r = jax.vmap(_ray_residuals)(rot, center, focal, prep.xn, prep.offsets)
  dist = jnp.linalg.norm(e, axis=-1) * prep.s
  residual = (prep.wts * dist).sum(-1) / jnp.maximum(prep.wts.sum(-1), _TINY)
  ok = prep.enough & jnp.all(jnp.isfinite(rot), (-1, -2)) & jnp.all(
      jnp.isfinite(center), -1) & jnp.isfinite(focal) & (focal > 0) & jnp.isfinite(residual)
  out_mask = (prep.wts > 0) & (d > 0) & ok[:, None]
  rot = jnp.where(ok[:, None, None], rot, eye)
  center_w = jnp.where(ok[:, None], prep.mu + prep.s * center, 0.0)
  focal = jnp.where(ok, focal, default_focal)
  depth = jnp.where(out_mask, d * prep.s, 0.0)
  cam_to_world = cameras.make_pose(jnp.swapaxes(rot, -1, -2), center_w)
  K = cameras.make_intrinsics(focal, focal, prep.pp[:, 0], prep.pp[:, 1])
  world = cameras.transform_points(cam_to_world[:, None], depth[..., None] * r)
  world = jnp.where(out_mask[..., None], world, 0.0)
  return PostOptResult(
      depth=depth.reshape(n, h, w), K=K, cam_to_world=cam_to_world,
      xyz=world.reshape(n, h, w, 3), mask=out_mask.reshape(n, h, w),
      residual=jnp.where(ok, residual, jnp.inf), ok=ok, iterations=jnp.zeros((2,), jnp.int32))


@functools.partial(jax.jit, static_argnames=('num_iters', 'irls_iters', 'init_points'))
def post_optimize_jit(xyz, weights, mask, principal_point, focal_init, shared_focal=True,
                      canonical=False, optimize_focal=True, robust_delta=1e-3, *,
                      num_iters: int = 100, irls_iters: int = 4,
                      init_points: int = 4096) -> PostOptResult:
  """Jitted core of `post_optimize` (see there): xyz (N, H, W, 3), weights (N, H, W), mask
  (N, H, W) bool, principal_point (2,) or (N, 2), focal_init (N,) (NaN or <= 0: estimate).
  The flags and robust_delta are traced values (one compilation serves every mode); only the
  iteration counts and init_points are static. Data problems are masked and flagged (`ok`),
  never raised."""
  n, h, w, _ = xyz.shape
  default_focal = float(max(h, w))  # ~53 degree field of view, for unsolvable views
  prep = _prepare(xyz, weights, mask, principal_point)
  r0, c0, f0 = _initialize(prep, focal_init, shared_focal, canonical, robust_delta, irls_iters,
                           init_points, default_focal)

  def stage(carry, xs):
    cauchy, max_iters = xs
    # Stage 1: pseudo-Huber from the closed form. Stage 2: Cauchy with a scale set from the
    # stage-1 residuals, so that points far off (outliers) stop pulling the cameras.
    rot, center, focal = carry
    e = jax.vmap(_ray_residuals)(rot, center, focal, prep.xn, prep.offsets)[0]
    res = jnp.where(prep.wts > 0, jnp.linalg.norm(e, axis=-1), jnp.nan)
    delta = jnp.where(cauchy, jnp.maximum(robust_delta, 3.0 * jnp.nanmedian(res)), robust_delta)
    delta = jnp.where(jnp.isfinite(delta), delta, robust_delta)
    return _refine(prep, rot, center, focal, shared_focal, optimize_focal, delta, cauchy,
                   max_iters)

  stage_iters = jnp.array([num_iters, num_iters])  # traced: room for per-stage budgets
  (rot, center, focal), iterations = jax.lax.scan(
      stage, (r0, c0, f0), (jnp.array([False, True]), stage_iters))
  return _finalize(prep, rot, center, focal, (n, h, w), default_focal)._replace(
      iterations=iterations)


def post_optimize(xyz, weights=None, mask=None, *, principal_point=None, focal=None,
                  shared_focal: bool = True, canonical: bool = False,
                  optimize_focal: bool = True, num_iters: int = 100, irls_iters: int = 4,
                  init_points: int = 4096, robust_delta: float = 1e-3,
                  check: bool = True) -> PostOptResult:
  """Recovers cameras and depth from XYZ images (paper eq. 3).

  Args:
    xyz: (N, H, W, 3) world points per pixel (any world frame, any units).
    weights: (N, H, W) confidence >= 0 (None: ones). Low weight = less trusted point.
    mask: (N, H, W) bool, pixels to use (None: all). Non-finite points must be masked out
      (`check` raises otherwise).
    principal_point: (2,) or (N, 2) pixels; None = image centre (W / 2, H / 2).
    focal: known focal (scalar or (N,)) to start from (and keep, if not optimize_focal).
    shared_focal: one focal for all views (a video) or one per view.
    canonical: the world frame is frame 0's camera frame (a canonicalized clip). Then frame 0
      also gets the identity / Weiszfeld-focal initialization. The points must not be shifted
      (undo the [-1, 1] normalization's centre first; its scale does not matter).
    optimize_focal: refine the focal (else it stays at its initial value).
    num_iters: maximum L-BFGS iterations (each may evaluate the loss a few times); the loop
      stops earlier once two iterations bring no improvement (converged to float32).
    irls_iters: robust reweightings of each closed-form DLT.
    init_points: pixels per view used by the closed-form initialization.
    robust_delta: pseudo-Huber threshold, as a fraction of the scene's RMS radius.
    check: validate values with numpy (NaNs at used pixels, empty views, bad focal) and raise
      ValueError; shapes are always validated. Set False inside other jitted code.
  Returns:
    PostOptResult (see its docstring); `ok` flags views that could not be solved.
  """
  if np.ndim(xyz) != 4 or np.shape(xyz)[-1] != 3:
    raise ValueError(f'xyz must be (N, H, W, 3), got {np.shape(xyz)}')
  n, h, w, _ = np.shape(xyz)
  if n == 0 or h == 0 or w == 0:
    raise ValueError(f'xyz is empty: {np.shape(xyz)}')
  weights = jnp.ones((n, h, w), jnp.float32) if weights is None else weights
  mask = jnp.ones((n, h, w), bool) if mask is None else mask
  for name, a in (('weights', weights), ('mask', mask)):
    if np.shape(a) != (n, h, w):
      raise ValueError(f'{name} must be (N, H, W) = {(n, h, w)}, got {np.shape(a)}')
  if principal_point is None:
    principal_point = np.array([w / 2.0, h / 2.0], np.float32)
  if np.shape(principal_point) not in ((2,), (n, 2)):
    raise ValueError(f'principal_point must be (2,) or (N, 2), got {np.shape(principal_point)}')
  if focal is None:
    focal = np.full((n,), np.nan, np.float32)
  if np.ndim(focal) > 1 or np.size(focal) not in (1, n):
    raise ValueError(f'focal must be a scalar or (N,) = ({n},), got shape {np.shape(focal)}')
  focal = jnp.broadcast_to(jnp.asarray(focal, jnp.float32), (n,))
  if not optimize_focal and np.any(np.isnan(np.asarray(focal))):
    raise ValueError('optimize_focal=False needs a focal')
  if check:
    f = np.asarray(focal)
    if np.any(~np.isnan(f) & ~(f > 0)) or np.any(np.isinf(f)):
      raise ValueError(f'focal must be positive and finite, got {f}')
    m = np.asarray(mask, bool) & (np.asarray(weights) > 0)
    if np.any(np.asarray(weights) < 0) or not np.all(np.isfinite(np.asarray(weights))):
      raise ValueError('weights must be finite and >= 0')
    bad = m & ~np.all(np.isfinite(np.asarray(xyz)), -1)
    if bad.any():
      raise ValueError(f'xyz has {int(bad.sum())} non-finite points at used pixels; mask them')
    counts = m.reshape(n, -1).sum(-1)
    if np.any(counts < MIN_POINTS):
      raise ValueError(f'views {np.nonzero(counts < MIN_POINTS)[0].tolist()} have fewer than '
                       f'{MIN_POINTS} valid pixels (empty mask?)')
  return post_optimize_jit(
      jnp.asarray(xyz), jnp.asarray(weights), jnp.asarray(mask, bool),
      jnp.asarray(principal_point, jnp.float32), focal, jnp.asarray(shared_focal, bool),
      jnp.asarray(canonical, bool), jnp.asarray(optimize_focal, bool),
      jnp.asarray(robust_delta, jnp.float32), num_iters=num_iters, irls_iters=irls_iters,
      init_points=init_points)
