"""Norm numerics shared by every method: float32 norms, the retraction, the
tangent projection, a guarded division.

Pure functions of arrays (no state, no trees but :func:`norms`): the
transforms in :mod:`lawn_optax.projection` are built from them.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from lawn_optax import _gating, _tree

__all__ = ["DEFAULT_EPS", "direct_norm", "leaf_norm", "norm_of_sum", "norms",
           "radial_coefficient", "rescaled_update", "retract",
           "retraction_scale", "safe_div", "sum_squares", "sum_squares_of_sum",
           "tangent"]

# Below this norm (of the weight the retraction would rescale) a direction is
# too poorly defined to hold: the retraction then passes the update through
# unchanged, as for an unconstrained weight, rather than rescaling by a
# factor of up to target / eps. norm_eps=0 holds any positive norm exactly.
DEFAULT_EPS = 1e-12


def _reduce_axes(ndim: int, granularity: str, unit_axis: int):
  if granularity == "tensor":
    return None
  return tuple(a for a in range(ndim) if a != unit_axis % ndim)


def safe_div(num: jax.Array, den: jax.Array, fallback: float) -> jax.Array:
  """``num / den`` where ``den > 0``, else ``fallback`` (no NaN/Inf, and no
  NaN gradient through the masked branch)."""
  ok = den > 0
  return jnp.where(ok, num / jnp.where(ok, den, 1.0), fallback)


def _unit(scale: Any) -> Any:
  """A positive power of two at most ``scale`` and above half of it, where
  ``scale`` is positive and finite, else 1 (no derivative flows through it:
  the norm's value does not depend on it). Scaling by a power of two is
  exact, so the squares of ``x / s`` are those of ``x`` shifted in exponent
  (a scaled norm has the unscaled one's bits wherever both are in range),
  and ``x / s`` is computed as ``x * (1 / s)``: a multiply, not a division
  per element. Clamped to float32's normal range, so ``1 / s`` is too."""
  if scale is None:
    return None
  scale = jax.lax.stop_gradient(jnp.asarray(scale, jnp.float32))
  ok = (scale > 0) & jnp.isfinite(scale)
  _, e = jnp.frexp(jnp.where(ok, scale, 1.0))
  return jnp.ldexp(jnp.ones_like(scale), jnp.clip(e - 1, -125, 125))


def sum_squares(x: jax.Array, granularity: _tree.Granularity = "tensor",
                unit_axis: int = -1, scale: Any = None) -> jax.Array:
  """Float32 sum of squares of ``x / scale`` per tensor (shape ``()``) or per
  unit (keepdims); ``scale`` (broadcastable to the result) keeps the squares
  of very large or small weights in range."""
  x = x.astype(jnp.float32)
  axes = _reduce_axes(x.ndim, granularity, unit_axis)
  s = _unit(scale)
  if s is not None:
    x = x * (1.0 / s)
  return jnp.sum(x * x, axis=axes, keepdims=axes is not None)


def leaf_norm(x: jax.Array, granularity: _tree.Granularity = "tensor",
              unit_axis: int = -1, scale: Any = None) -> jax.Array:
  """Float32 L2 norm of one array, per tensor or per output unit.

  Per unit, every axis but ``unit_axis`` is reduced, with ``keepdims`` so the
  result broadcasts against ``x`` (for a Flax ``Dense`` kernel ``(in, out)``
  the norms have shape ``(1, out)``). Exact for every finite array, however
  large or small: a float32 sum of squares overflows above a norm of ~1e19
  and loses tiny values below ~1e-19, so out of that range (or given
  ``scale``, a close estimate of the norm: the frozen one) the squares are
  of ``x / scale``, ``scale`` the largest magnitude otherwise (a second
  reduction, only then). Its derivative at ``x = 0`` is 0
  (:func:`_norm_from_squares`).
  """
  if scale is not None:
    return _unit(scale) * _norm_from_squares(
        sum_squares(x, granularity, unit_axis, scale))
  ss = sum_squares(x, granularity, unit_axis)

  def rescaled(x):
    m, x = _max_abs_then(x, granularity, unit_axis)
    return _unit(m) * _norm_from_squares(
        sum_squares(x, granularity, unit_axis, m))

  return _gating.cond(_in_range(ss), lambda _: _norm_from_squares(ss),
                       rescaled, x)


# A float32 sum of squares above this is exact enough (its largest terms did
# not underflow); below it, or not finite, the norm is recomputed rescaled.
_SMALLEST_SQUARES = 1e-30


def _in_range_each(ss: jax.Array) -> jax.Array:
  return jnp.isfinite(ss) & (ss > _SMALLEST_SQUARES)


def _in_range(ss: jax.Array) -> jax.Array:
  return jnp.all(_in_range_each(ss))


def direct_norm(x: jax.Array, granularity: _tree.Granularity = "tensor",
                unit_axis: int = -1) -> jax.Array:
  """Float32 norm of ``x`` from its own squares: one reduction, no scale and
  no conditional, the arithmetic of a hand-written ``jnp.linalg.norm``
  (XLA:CPU's fast path for a sum of squares; a multiply by a scale per
  element runs at half its speed, and a ``lax.cond`` that reads donated
  weights makes XLA:CPU keep a parameter-sized copy of them). The
  projection path's norm (``retraction="projection"``).

  It has :func:`leaf_norm`'s bits wherever the squares are in float32's
  range (a norm from about 1e-15 to 1.8e19, per tensor or unit); out of it
  the norm is NaN, never a confident wrong value. An all-zero ``x`` has
  norm 0, and so does one whose every square underflows (every ``|x|``
  below about 1e-19, as XLA flushes denormals), which the rule then treats
  as the chain treats a norm at most ``norm_eps``.
  """
  ss = sum_squares(x, granularity, unit_axis)
  return jnp.where(_in_range_each(ss) | (ss == 0), _norm_from_squares(ss),
                   jnp.nan)


def _max_abs_then(x: jax.Array, granularity: str, unit_axis: int
                  ) -> tuple[jax.Array, jax.Array]:
  """The largest magnitude (float32, per tensor or unit) and ``x`` to read
  again after it: the barrier keeps XLA from sharing one float32 copy of a
  bf16 ``x`` between the two reductions (a parameter-sized temporary)."""
  axes = _reduce_axes(x.ndim, granularity, unit_axis)
  m = jnp.max(jnp.abs(x.astype(jnp.float32)), axis=axes,
              keepdims=axes is not None, initial=0.0)
  return jax.lax.optimization_barrier((m, x))


def _norm_from_squares(ss: jax.Array) -> jax.Array:
  """``sqrt(ss)``, with derivative 0 where ``ss == 0`` (``optax.safe_norm``'s
  convention) rather than NaN; NaN and Inf propagate. Every norm here comes
  from it."""
  zero = ss == 0
  return jnp.where(zero, 0.0, jnp.sqrt(jnp.where(zero, 1.0, ss)))


def norms(tree: Any, granularity: _tree.Granularity = "tensor", unit_axis: int = -1) -> Any:
  """Float32 norms of every leaf of ``tree`` (see :func:`leaf_norm`).

  Example:
    >>> import jax.numpy as jnp
    >>> from lawn_optax import numerics
    >>> n = numerics.norms({'w': jnp.array([[3.0, 0.0], [4.0, 1.0]])}, 'unit')
    >>> n['w'].tolist()
    [[5.0, 1.0]]
  """
  _tree.check_granularity(granularity)
  return jax.tree.map(lambda x: leaf_norm(x, granularity, unit_axis),
                      _tree.unwrap_variables(tree))


def retract(w: jax.Array, u: jax.Array, target: jax.Array,
            granularity: _tree.Granularity = "tensor", unit_axis: int = -1,
            eps: float = DEFAULT_EPS) -> jax.Array:
  """The update ``u'`` such that ``w + u'`` has norm ``target``.

  ``u' = k u + (k - 1) w`` with ``k = target / ||w + u||`` in float32, cast
  back to ``u.dtype`` (the same point as ``k (w + u) - w``, written so that
  ``w + u`` is never materialised: one reduction over ``w`` and ``u``, then
  one elementwise pass). The squares are of ``(w + u) / target``, so no
  norm overflows. Where ``target`` is 0, or ``||w + u|| <= eps``, the update
  is ``u`` unchanged (:func:`retraction_scale`).
  """
  norm = norm_of_sum(w, u, granularity, unit_axis, scale=target)
  return rescaled_update(w, u, retraction_scale(target, norm, eps))


def retraction_scale(target: jax.Array, norm: jax.Array,
                     eps: float = DEFAULT_EPS) -> jax.Array:
  """``target / norm``, or 1 where ``target`` is 0 (a weight with nothing
  frozen is left unconstrained), where ``norm <= eps`` (no direction to
  hold: the weight is left where its update puts it, never collapsed) and
  where the ratio would overflow; a NaN norm gives 1 (the NaN in the
  update reaches the weight, as with any optax optimizer)."""
  ok = (target > 0) & (norm > eps)
  k = jnp.where(ok, target / jnp.where(ok, norm, 1.0), 1.0)
  return jnp.where(jnp.isfinite(k), k, 1.0)


def sum_squares_of_sum(w: jax.Array, u: jax.Array, granularity: _tree.Granularity = "tensor",
                       unit_axis: int = -1, scale: Any = None) -> jax.Array:
  """Float32 ``||(w + u) / scale||^2`` per tensor or unit, one fused
  reduction (``scale`` as in :func:`sum_squares`)."""
  axes = _reduce_axes(w.ndim, granularity, unit_axis)
  v = w.astype(jnp.float32) + u.astype(jnp.float32)
  s = _unit(scale)
  if s is not None:
    v = v * (1.0 / s)
  return jnp.sum(v * v, axis=axes, keepdims=axes is not None)


def norm_of_sum(w: jax.Array, u: jax.Array, granularity: _tree.Granularity = "tensor",
                unit_axis: int = -1, scale: Any = None) -> jax.Array:
  """Float32 ``||w + u||`` per tensor or unit (``w + u`` never materialised),
  with :func:`leaf_norm`'s derivative at zero. ``scale``: a close estimate
  of the norm (the frozen one) that keeps the squares in range."""
  s = _unit(scale)
  n = _norm_from_squares(sum_squares_of_sum(w, u, granularity, unit_axis, s))
  return n if s is None else s * n


def radial_coefficient(w: jax.Array, g: jax.Array, granularity: _tree.Granularity = "tensor",
                       unit_axis: int = -1) -> jax.Array:
  """Float32 ``<g, w> / ||w||^2`` per tensor or unit (0 where ``w == 0``);
  as ``<g, w/m> / (m ||w/m||^2)``, ``m`` the largest ``|w|``, where
  ``||w||^2`` is out of float32's range (:func:`leaf_norm`)."""
  axes = _reduce_axes(w.ndim, granularity, unit_axis)

  def coefficient(ops, m=None):
    w, g = ops
    w32, g32 = w.astype(jnp.float32), g.astype(jnp.float32)
    if m is not None:
      w32 = w32 * (1.0 / m)
    inner = jnp.sum(w32 * g32, axis=axes, keepdims=axes is not None)
    ss = jnp.sum(w32 * w32, axis=axes, keepdims=axes is not None)
    return inner, ss

  inner, ss = coefficient((w, g))

  def rescaled(ops):
    m, w = _max_abs_then(ops[0], granularity, unit_axis)
    m = _unit(m)
    inner, ss = coefficient((w, ops[1]), m)
    return safe_div(inner, m * ss, 0.0)

  return _gating.cond(_in_range(ss), lambda _: safe_div(inner, ss, 0.0),
                       rescaled, (w, g))


def tangent(w: jax.Array, g: jax.Array, granularity: _tree.Granularity = "tensor",
            unit_axis: int = -1) -> jax.Array:
  """``g - (<g, w> / ||w||^2) w`` per tensor or unit; ``g`` where ``w == 0``."""
  coef = radial_coefficient(w, g, granularity, unit_axis)
  return (g.astype(jnp.float32) - coef * w.astype(jnp.float32)).astype(g.dtype)


def rescaled_update(w: jax.Array, u: jax.Array, k: jax.Array) -> jax.Array:
  """``k u + (k - 1) w`` in float32, cast to ``u.dtype``: the update that
  moves ``w`` to ``k (w + u)`` (``u`` itself where ``k == 1``)."""
  w32, u32 = w.astype(jnp.float32), u.astype(jnp.float32)
  return (k * u32 + (k - 1.0) * w32).astype(u.dtype)
