"""Post-optimization (paper eq. 3): cameras and depth from XYZ images.

Given XYZ images X (N, H, W, 3) (world points per pixel, any world frame), find per view a pose
(cam_to_world), intrinsics K (fx = fy = f; the principal point fixed (by default the image
centre), or estimated per view or shared across views) and per-pixel depth d minimizing the
re-projection loss sum_pixels w * rho(||x - P^-1(d r)||).

Depth elimination: with camera-frame point c = R x + t and pixel ray r = K^-1 [u, v, 1]^T,
||x - P^-1(d r)|| = ||c - d r|| and the best depth is d* = max(0, r.c / |r|^2), in closed form.
So only rotation (axis-angle increment on the initial rotation), camera centre, log-focal and
(when asked) the principal point are optimized, and d* is exact per pixel. The optimizer is
optax's L-BFGS (zoom line search) in a lax.while_loop inside one jit: at most `num_iters`
iterations per stage, stopping early once two iterations bring no improvement (at the float32 floor a line search can only fail).
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
    SO(3)) and planar PnP;
  * an estimated principal point starts from the DLT's K (the median over views when shared).
Known cameras: a known K fixes focal, aspect fy / fx and principal point; known poses
(`pose_known`) are used as given and not optimized (the XYZ must be in their world already:
see geometry/anchoring.py). The closed forms live in camera_closed_form.py, the loss in
ray_loss.py.
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
from wvd_jax.geometry import camera_closed_form as closed_form
from wvd_jax.geometry import cameras
from wvd_jax.geometry import ray_loss
from wvd_jax.geometry import rotations

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




PRINCIPAL_POINT_MODES = ('fixed', 'shared', 'per_view')


class _Prepared(NamedTuple):
  """Masked, internally normalized inputs (x_world = mu + s * xn)."""
  xyz: jax.Array  # (n, m, 3) world points, 0 where unused
  xn: jax.Array  # (n, m, 3) normalized points
  wts: jax.Array  # (n, m) weights, 0 where unused
  enough: jax.Array  # (n,) enough valid points
  mu: jax.Array  # (3,)
  s: jax.Array  # ()
  pix: jax.Array  # (m, 2) pixel centres
  size: jax.Array  # () max(H, W): the principal point's parameter unit


def _prepare(xyz, weights, mask) -> _Prepared:
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
  sw = jnp.maximum(wts.sum(), closed_form.TINY)
  mu = (wts[..., None] * xyz).sum((0, 1)) / sw
  s = jnp.sqrt((wts * ((xyz - mu) ** 2).sum(-1)).sum() / sw)
  s = jnp.where(s > closed_form.TINY, s, 1.0)
  xn = jnp.where(used[..., None], (xyz - mu) / s, 0.0)
  pix = jnp.asarray(cameras.pixel_centers(h, w), dtype).reshape(m, 2)
  return _Prepared(xyz, xn, wts, used.sum(-1) >= MIN_POINTS, mu, s, pix,
                   jnp.asarray(max(h, w), dtype))


def _focals(f, aspect):
  """(n,) fx and (n,) fy / fx -> (n, 2) (fx, fy)."""
  return jnp.stack([f, f * aspect], -1)


def _initialize(prep: _Prepared, pp_given, focal_init, aspect, pose_init, pose_known,
                shared_focal, canonical, pp_mode, robust_delta, irls_iters: int,
                init_points: int, default_focal: float):
  """Closed-form initial (R0 (n, 3, 3) world_to_cam rotation, centre (n, 3) normalized world,
  focal (n,), principal point (n, 2)), from a subset of valid pixels per view."""
  n, m, _ = prep.xn.shape
  dtype = prep.xn.dtype
  mu, s = prep.mu, prep.s
  # A random subset of pixels, valid ones first (top_k of validity + uniform noise).
  k = min(init_points, m)
  score = (prep.wts > 0) + jax.random.uniform(jax.random.PRNGKey(0), (n, m), dtype)
  sub = jax.lax.top_k(score, k)[1]
  take = lambda a: jnp.take_along_axis(a, sub.reshape(sub.shape + (1,) * (a.ndim - 2)), 1)
  xs, ws, uvs = take(prep.xn), take(prep.wts), jnp.take(prep.pix, sub, axis=0)
  eye = jnp.broadcast_to(jnp.eye(3, dtype=dtype), (n, 3, 3))
  frame0_identity_center = jnp.broadcast_to(-mu / s, (n, 3))  # world origin = camera 0
  center_of = lambda r, t: -_xp.matvec(jnp.swapaxes(r, -1, -2), t)

  # The robust DLT of P (world -> pixels; degenerate for planar views) gives a principal point
  # when it is to be estimated (the given one where the DLT's is off the image's scale).
  p_dlt = jax.vmap(lambda x, u, ww: closed_form.dlt(x, u, ww, irls_iters))(xs, uvs, ws)
  k_dlt, r_dlt, t_dlt = jax.vmap(closed_form.decompose_projection)(p_dlt)
  pp_dlt = k_dlt[:, :2, 2]
  plausible = prep.enough & jnp.all(jnp.isfinite(pp_dlt), -1) & jnp.all(
      jnp.abs(pp_dlt - pp_given) < prep.size, -1)
  pp_view = jnp.where(plausible[:, None], pp_dlt, pp_given)
  pp_med = jnp.nanmedian(jnp.where(plausible[:, None], pp_dlt, jnp.nan), axis=0)
  pp_shared = jnp.where(jnp.isfinite(pp_med), pp_med, pp_given[0])
  pp = jnp.where(pp_mode == 2, pp_view, jnp.where(pp_mode == 1, pp_shared, pp_given))
  offs = uvs - pp[:, None]
  aspect_sub = aspect[:, None]

  def loss_of(rot, center, focal):  # (c, n, ...) candidates -> (c, n) losses
    f = lambda r, c, fo, x, o, ww, a: ray_loss.view_loss(r, c, jnp.stack([fo, fo * a]), x, o,
                                                         ww, robust_delta)
    return jax.vmap(jax.vmap(f), in_axes=(0, 0, 0, None, None, None, None))(
        rot, center, focal, xs, offs, ws, aspect)

  # The plane homography H (plane -> pixels relative to the principal point; meaningful for
  # near-planar views). Every candidate below derives from P or H; the loss picks per view.
  mu_pl, e_pl, ab = jax.vmap(closed_form.plane_frame)(xs, ws)
  h_pl = jax.vmap(lambda a, o, ww: closed_form.dlt(a, o, ww, irls_iters))(ab, offs, ws)

  def safe_k(f, c):
    f = jnp.where(jnp.isfinite(f) & (f > 0), f, 1.0)
    return cameras.make_intrinsics(f, f * aspect, c[:, 0], c[:, 1])

  # 1. Focal per view: from the DLT's K, from the plane homography, and (frame 0 of a
  # canonical clip) from Weiszfeld; each with its own pose, scored by the loss.
  f_dlt = (k_dlt[:, 0, 0] + k_dlt[:, 1, 1] / aspect) / 2
  f_plane = jax.vmap(closed_form.focal_from_homography)(h_pl)
  r_pl, t_pl = jax.vmap(closed_form.pose_from_homography)(h_pl, safe_k(f_plane, 0 * pp), mu_pl,
                                                          e_pl)
  # World = frame 0's camera: Weiszfeld on frame 0's (un-normalized) camera-frame points.
  f_w = closed_form.weiszfeld_focal(take(prep.xyz)[0], uvs[0], ws[0], pp[0])
  f_w_cand = jnp.where((jnp.arange(n) == 0) & canonical, f_w, jnp.nan)
  losses = loss_of(jnp.stack([r_dlt, r_pl, eye]),
                   jnp.stack([center_of(r_dlt, t_dlt), center_of(r_pl, t_pl),
                              frame0_identity_center]),
                   jnp.stack([f_dlt, f_plane, f_w_cand]))
  f_best = ray_loss.best_candidate(losses, jnp.stack([f_dlt, f_plane, f_w_cand]))[1]
  f_med = jnp.nanmedian(jnp.where(prep.enough & jnp.isfinite(losses.min(0)), f_best, jnp.nan))
  f_shared = jnp.where(canonical, f_w, f_med)
  f0 = jnp.where(shared_focal, f_shared, f_best)
  f0 = jnp.where(jnp.isfinite(focal_init) & (focal_init > 0), focal_init.astype(dtype), f0)
  f0 = jnp.where(jnp.isfinite(f0) & (f0 > 0), f0, default_focal)

  # 2. Pose per view with the focal fixed: calibrated PnP from P, planar PnP from H, the
  # DLT's own pose, and the identity (frame 0 of a canonical clip).
  r_lin, t_lin = jax.vmap(closed_form.pose_from_projection)(p_dlt, safe_k(f0, pp))
  r_pp, t_pp = jax.vmap(closed_form.pose_from_homography)(h_pl, safe_k(f0, 0 * pp), mu_pl, e_pl)
  rots = jnp.stack([r_lin, r_pp, r_dlt, eye])
  cents = jnp.stack([center_of(r_lin, t_lin), center_of(r_pp, t_pp), center_of(r_dlt, t_dlt),
                     frame0_identity_center])
  losses = loss_of(rots, cents, jnp.broadcast_to(f0, rots.shape[:2]))
  losses = losses.at[3].set(jnp.where((jnp.arange(n) == 0) & canonical, losses[3], jnp.inf))
  _, r0, c0 = ray_loss.best_candidate(losses, rots, cents)
  r0 = jnp.where(jnp.all(jnp.isfinite(r0), (-1, -2), keepdims=True), r0, eye)
  c0 = jnp.where(jnp.all(jnp.isfinite(c0), -1, keepdims=True), c0, 0.0)
  # Known poses replace the estimate (in the internal normalized world).
  r0 = jnp.where(pose_known[:, None, None], jnp.swapaxes(pose_init[:, :3, :3], -1, -2), r0)
  c0 = jnp.where(pose_known[:, None], (pose_init[:, :3, 3] - mu) / s, c0)
  return r0, c0, f0, pp


class _Free(NamedTuple):
  """What the refinement may change: traced flags, one compilation for every mode."""
  shared_focal: jax.Array  # () one focal for all views
  optimize_focal: jax.Array  # ()
  pp_mode: jax.Array  # () 0 fixed, 1 shared, 2 per view
  pose_known: jax.Array  # (n,) poses kept as given


def _unpacker(r0, pp0, size, free: _Free):
  """params -> (rotation (n, 3, 3), centre (n, 3), focal (n,), principal point (n, 2))."""
  def unpack(params):
    known = free.pose_known
    omega = jnp.where(known[:, None], 0.0, params['omega'])
    rot = _xp.matmul(rotations.axis_angle_to_rotation(omega), r0)
    center = jnp.where(known[:, None], jax.lax.stop_gradient(params['center']), params['center'])
    logf = jnp.where(free.shared_focal, jnp.mean(params['log_f']), params['log_f'])
    logf = jnp.where(free.optimize_focal, logf, jax.lax.stop_gradient(logf))
    dpp = params['pp']  # in units of the image size (conditioning)
    dpp = jnp.where(free.pp_mode == 1, jnp.mean(dpp, 0, keepdims=True), dpp)
    dpp = jnp.where(free.pp_mode == 0, jax.lax.stop_gradient(dpp), dpp)
    return rot, center, jnp.exp(logf), pp0 + dpp * size
  return unpack


def _refine(prep: _Prepared, r0, c0, f0, pp0, aspect, free: _Free, robust_delta, cauchy,
            num_iters):
  """L-BFGS on all pixels over (rotation increment omega (n, 3), centre (n, 3), log focal
  (n,), principal point offset (n, 2)); returns the best (rotation, centre, focal, principal
  point) seen and the iteration count."""
  n = r0.shape[0]
  unpack = _unpacker(r0, pp0, prep.size, free)

  def total_loss(params):
    rot, center, focal, pp = unpack(params)
    offsets = prep.pix[None] - pp[:, None]
    per_view = jax.vmap(lambda r, c, f, x, o, ww: ray_loss.view_loss(
        r, c, f, x, o, ww, robust_delta, cauchy))(rot, center, _focals(focal, aspect), prep.xn,
                                                  offsets, prep.wts)
    return jnp.sum(jnp.where(prep.enough, per_view, 0.0))

  params = dict(omega=jnp.zeros((n, 3), r0.dtype), center=c0, log_f=jnp.log(f0),
                pp=jnp.zeros((n, 2), r0.dtype))
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


def _finalize(prep: _Prepared, rot, center, focal, pp, aspect, shape,
              default_focal) -> PostOptResult:
  """World-unit outputs: camera point c = s * c_n, centre = mu + s * centre_n, depth = s * d*."""
  n, h, w = shape
  eye = jnp.eye(3, dtype=rot.dtype)
  offsets = prep.pix[None] - pp[:, None]
  e, d, r = jax.vmap(ray_loss.ray_residuals)(rot, center, _focals(focal, aspect), prep.xn,
                                             offsets)
  dist = jnp.linalg.norm(e, axis=-1) * prep.s
  residual = (prep.wts * dist).sum(-1) / jnp.maximum(prep.wts.sum(-1), closed_form.TINY)
  ok = prep.enough & jnp.all(jnp.isfinite(rot), (-1, -2)) & jnp.all(
      jnp.isfinite(center), -1) & jnp.isfinite(focal) & (focal > 0) & jnp.isfinite(
          residual) & jnp.all(jnp.isfinite(pp), -1)
  out_mask = (prep.wts > 0) & (d > 0) & ok[:, None]
  rot = jnp.where(ok[:, None, None], rot, eye)
  center_w = jnp.where(ok[:, None], prep.mu + prep.s * center, 0.0)
  focal = jnp.where(ok, focal, default_focal)
  pp = jnp.where(ok[:, None], pp, jnp.asarray([w / 2.0, h / 2.0], pp.dtype))
  depth = jnp.where(out_mask, d * prep.s, 0.0)
  cam_to_world = cameras.make_pose(jnp.swapaxes(rot, -1, -2), center_w)
  K = cameras.make_intrinsics(focal, focal * aspect, pp[:, 0], pp[:, 1])
  world = cameras.transform_points(cam_to_world[:, None], depth[..., None] * r)
  world = jnp.where(out_mask[..., None], world, 0.0)
  return PostOptResult(
      depth=depth.reshape(n, h, w), K=K, cam_to_world=cam_to_world,
      xyz=world.reshape(n, h, w, 3), mask=out_mask.reshape(n, h, w),
      residual=jnp.where(ok, residual, jnp.inf), ok=ok, iterations=jnp.zeros((2,), jnp.int32))


@functools.partial(jax.jit, static_argnames=('num_iters', 'irls_iters', 'init_points'))
def post_optimize_jit(xyz, weights, mask, principal_point, focal_init, aspect, pose_init,
                      pose_known, shared_focal=True, canonical=False, optimize_focal=True,
                      pp_mode=0, robust_delta=1e-3, *, num_iters: int = 100,
                      irls_iters: int = 4, init_points: int = 4096) -> PostOptResult:
  """Jitted core of `post_optimize` (see there): xyz (N, H, W, 3), weights (N, H, W), mask
  (N, H, W) bool, principal_point (N, 2) (the value when fixed, the fallback when estimated),
  focal_init (N,) (NaN or <= 0: estimate), aspect (N,) fy / fx, pose_init (N, 4, 4)
  cam_to_world used where pose_known (N,) bool. The flags, pp_mode (0 fixed, 1 shared,
  2 per view) and robust_delta are traced values (one compilation serves every mode); only
  the iteration counts and init_points are static. Data problems are masked and flagged
  (`ok`), never raised."""
  n, h, w, _ = xyz.shape
  default_focal = float(max(h, w))  # ~53 degree field of view, for unsolvable views
  prep = _prepare(xyz, weights, mask)
  dtype = prep.xn.dtype
  principal_point, aspect, pose_init = (principal_point.astype(dtype), aspect.astype(dtype),
                                        pose_init.astype(dtype))
  free = _Free(shared_focal, optimize_focal, pp_mode, pose_known)
  r0, c0, f0, pp0 = _initialize(prep, principal_point, focal_init, aspect, pose_init,
                                pose_known, shared_focal, canonical, pp_mode, robust_delta,
                                irls_iters, init_points, default_focal)

  def stage(carry, xs):
    cauchy, max_iters = xs
    # Stage 1: pseudo-Huber from the closed form. Stage 2: Cauchy with a scale set from the
    # stage-1 residuals, so that points far off (outliers) stop pulling the cameras.
    rot, center, focal, pp = carry
    offsets = prep.pix[None] - pp[:, None]
    e = jax.vmap(ray_loss.ray_residuals)(rot, center, _focals(focal, aspect), prep.xn,
                                         offsets)[0]
    res = jnp.where(prep.wts > 0, jnp.linalg.norm(e, axis=-1), jnp.nan)
    delta = jnp.where(cauchy, jnp.maximum(robust_delta, 3.0 * jnp.nanmedian(res)), robust_delta)
    delta = jnp.where(jnp.isfinite(delta), delta, robust_delta)
    (rot_n, center_n, focal_n, pp_n), its = _refine(prep, rot, center, focal, pp, aspect, free,
                                                    delta, cauchy, max_iters)
    return (rot_n, center_n, focal_n, pp_n), its

  stage_iters = jnp.array([num_iters, num_iters])  # traced: room for per-stage budgets
  (rot, center, focal, pp), iterations = jax.lax.scan(
      stage, (r0, c0, f0, pp0), (jnp.array([False, True]), stage_iters))
  return _finalize(prep, rot, center, focal, pp, aspect, (n, h, w), default_focal)._replace(
      iterations=iterations)


def post_optimize(xyz, weights=None, mask=None, *, principal_point=None, focal=None, K=None,
                  cam_to_world=None, pose_known=None, principal_point_mode: str = 'fixed',
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
    principal_point: (2,) or (N, 2) pixels; None = image centre (W / 2, H / 2). With
      principal_point_mode 'fixed' it is kept, else it is the fallback of the estimate.
    focal: known focal (scalar or (N,)) to start from (and keep, if not optimize_focal).
    K: known intrinsics (3, 3) or (N, 3, 3) (upper triangular, no skew): fixes focal, fy / fx
      and principal point (returned exactly); overrides focal and principal_point.
    cam_to_world: (N, 4, 4) known poses in the XYZ's world, used for the views flagged in
      pose_known (N,) bool (None: all of them); returned exactly for those views.
    principal_point_mode: 'fixed', 'shared' (one estimated for all views) or 'per_view'.
      'fixed' is the default: on generated XYZ, whose principal point is the image centre by
      training, estimating it only adds noise (measured in WORKSPACE.md).
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
  if principal_point_mode not in PRINCIPAL_POINT_MODES:
    raise ValueError(f'principal_point_mode must be one of {PRINCIPAL_POINT_MODES}, got '
                     f'{principal_point_mode!r}')
  pp_mode = PRINCIPAL_POINT_MODES.index(principal_point_mode)
  weights = jnp.ones((n, h, w), jnp.float32) if weights is None else weights
  mask = jnp.ones((n, h, w), bool) if mask is None else mask
  for name, a in (('weights', weights), ('mask', mask)):
    if np.shape(a) != (n, h, w):
      raise ValueError(f'{name} must be (N, H, W) = {(n, h, w)}, got {np.shape(a)}')
  aspect = np.ones((n,), np.float32)
  if K is not None:
    K = np.broadcast_to(np.asarray(K, np.float64), (n, 3, 3))
    cameras.check_pinhole(K)
    focal, aspect = K[:, 0, 0], K[:, 1, 1] / K[:, 0, 0]
    principal_point, optimize_focal, pp_mode = K[:, :2, 2], False, 0
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
  if cam_to_world is None:
    pose_init, pose_known = np.tile(np.eye(4, dtype=np.float32), (n, 1, 1)), np.zeros(n, bool)
  else:
    pose_init = np.asarray(cam_to_world, np.float64)
    if pose_init.shape != (n, 4, 4):
      raise ValueError(f'cam_to_world must be (N, 4, 4) = ({n}, 4, 4), got {pose_init.shape}')
    pose_known = np.ones(n, bool) if pose_known is None else np.asarray(pose_known, bool)
    cameras.check_rigid(pose_init[pose_known])
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
  res = post_optimize_jit(
      jnp.asarray(xyz), jnp.asarray(weights), jnp.asarray(mask, bool),
      jnp.broadcast_to(jnp.asarray(principal_point, jnp.float32), (n, 2)), focal,
      jnp.asarray(aspect, jnp.float32), jnp.asarray(pose_init, jnp.float32),
      jnp.asarray(pose_known, bool), jnp.asarray(shared_focal, bool),
      jnp.asarray(canonical, bool), jnp.asarray(optimize_focal, bool),
      jnp.asarray(pp_mode, jnp.int32), jnp.asarray(robust_delta, jnp.float32),
      num_iters=num_iters, irls_iters=irls_iters, init_points=init_points)
  # Known cameras come back exactly as given (the solve used them up to float32 rounding).
  if K is not None:
    res = res._replace(K=jnp.asarray(K, res.K.dtype))
  if np.any(pose_known):
    res = res._replace(cam_to_world=jnp.where(jnp.asarray(pose_known)[:, None, None],
                                              jnp.asarray(pose_init, res.cam_to_world.dtype),
                                              res.cam_to_world))
  return res
