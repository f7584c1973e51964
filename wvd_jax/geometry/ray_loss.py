"""The post-optimization loss (paper eq. 3) with depth eliminated in closed form.

With camera-frame point c = R (x - centre) and pixel ray r = ((u - cx) / fx, (v - cy) / fy, 1),
||x - P^-1(d r)|| = ||c - d r|| and the best depth is d* = max(0, r.c / |r|^2), exact per
pixel, so only the cameras are optimized. rho is quadratic below `delta` and robust above:
pseudo-Huber (linear tails) or Cauchy (redescending tails).
"""
from __future__ import annotations

import jax.numpy as jnp

from wvd_jax.geometry import _xp
from wvd_jax.geometry import camera_closed_form as closed_form


def ray_residuals(rot, center, focal, points, offsets):
  """rot (3, 3) world_to_cam rotation, center (3,) camera centre, focal scalar or (2,)
  (fx, fy), points (M, 3), offsets (M, 2) = pixel - principal point
  -> (e (M, 3) = c - d* r, d* (M,), r (M, 3))."""
  c = _xp.matvec(rot, points - center)
  r = jnp.concatenate([offsets / focal, jnp.ones_like(offsets[:, :1])], -1)
  d = jnp.maximum((r * c).sum(-1) / (r * r).sum(-1), 0.0)
  return c - d[:, None] * r, d, r


def robust_penalty(e, delta, cauchy=False):
  """Robust penalty of residual vectors e (..., 3); both branches ~ |e|^2 / (2 delta) near 0.
  Pseudo-Huber (convex, linear tails) or Cauchy (redescending: far outliers lose influence)."""
  e2 = (e * e).sum(-1)
  return jnp.where(cauchy, delta / 2 * jnp.log1p(e2 / (delta * delta)),
                   jnp.sqrt(e2 + delta * delta) - delta)


def view_loss(rot, center, focal, points, offsets, w, delta, cauchy=False):
  e, _, _ = ray_residuals(rot, center, focal, points, offsets)
  val = (w * robust_penalty(e, delta, cauchy)).sum() / jnp.maximum(w.sum(), closed_form.TINY)
  ok = jnp.all(jnp.isfinite(rot)) & jnp.all(jnp.isfinite(center)) & jnp.all(
      jnp.isfinite(focal)) & jnp.all(focal > 0)
  return jnp.where(ok & jnp.isfinite(val), val, jnp.inf)


def best_candidate(losses, *cands):
  """Per view, the candidate (axis 0 of each array in cands) with the lowest loss."""
  i = jnp.argmin(losses, axis=0)
  pick = lambda c: jnp.take_along_axis(c, i.reshape((1, -1) + (1,) * (c.ndim - 2)), 0)[0]
  return (jnp.min(losses, axis=0),) + tuple(pick(c) for c in cands)
