"""Norm numerics shared by every method: float32 norms, the retraction, the
tangent projection, a guarded division.

Pure functions of arrays (no state, no trees but :func:`norms`): the
transforms in :mod:`lawn_optax.projection` are built from them.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from lawn_optax import _tree

__all__ = ["DEFAULT_EPS", "leaf_norm", "norm_of_sum", "norms",
           "radial_coefficient", "rescaled_update", "retract",
           "retraction_scale", "safe_div", "sum_squares", "sum_squares_of_sum",
           "tangent"]

# Below this norm a direction is undefined; the retraction then leaves the
# weight where it is rather than dividing by ~0.
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


def sum_squares(x: jax.Array, granularity: str = "tensor",
                unit_axis: int = -1) -> jax.Array:
  """Float32 sum of squares per tensor (shape ``()``) or per unit (keepdims)."""
  x = x.astype(jnp.float32)
  axes = _reduce_axes(x.ndim, granularity, unit_axis)
  return jnp.sum(x * x, axis=axes, keepdims=axes is not None)


def leaf_norm(x: jax.Array, granularity: str = "tensor",
              unit_axis: int = -1) -> jax.Array:
  """Float32 L2 norm of one array, per tensor or per output unit.

  Per unit, every axis but ``unit_axis`` is reduced, with ``keepdims`` so the
  result broadcasts against ``x`` (for a Flax ``Dense`` kernel ``(in, out)``
  the norms have shape ``(1, out)``). Its derivative at ``x = 0`` is 0
  (:func:`_norm_from_squares`).
  """
  return _norm_from_squares(sum_squares(x, granularity, unit_axis))


def _norm_from_squares(ss: jax.Array) -> jax.Array:
  """``sqrt(ss)``, with derivative 0 where ``ss == 0`` (``optax.safe_norm``'s
  convention) rather than NaN; NaN and Inf propagate. Every norm here comes
  from it."""
  zero = ss == 0
  return jnp.where(zero, 0.0, jnp.sqrt(jnp.where(zero, 1.0, ss)))


def norms(tree: Any, granularity: str = "tensor", unit_axis: int = -1) -> Any:
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
            granularity: str = "tensor", unit_axis: int = -1,
            eps: float = DEFAULT_EPS) -> jax.Array:
  """The update ``u'`` such that ``w + u'`` has norm ``target``.

  ``u' = k u + (k - 1) w`` with ``k = target / max(||w + u||, eps)`` in
  float32, cast back to ``u.dtype`` (the same point as ``k (w + u) - w``,
  written so that ``w + u`` is never materialised: one reduction over ``w``
  and ``u``, then one elementwise pass). Where ``target`` is 0 the update is
  ``u`` unchanged (a weight whose frozen norm is zero is left unconstrained
  rather than pinned at 0).
  """
  norm = norm_of_sum(w, u, granularity, unit_axis)
  return rescaled_update(w, u, retraction_scale(target, norm, eps))


def retraction_scale(target: jax.Array, norm: jax.Array,
                     eps: float = DEFAULT_EPS) -> jax.Array:
  """``target / max(norm, eps)``, or 1 where ``target`` is 0 (a weight
  with nothing frozen is left unconstrained)."""
  return jnp.where(target > 0, target / jnp.maximum(norm, eps), 1.0)


def sum_squares_of_sum(w: jax.Array, u: jax.Array, granularity: str = "tensor",
                       unit_axis: int = -1) -> jax.Array:
  """Float32 ``||w + u||^2`` per tensor or unit, one fused reduction."""
  axes = _reduce_axes(w.ndim, granularity, unit_axis)
  v = w.astype(jnp.float32) + u.astype(jnp.float32)
  return jnp.sum(v * v, axis=axes, keepdims=axes is not None)


def norm_of_sum(w: jax.Array, u: jax.Array, granularity: str = "tensor",
                unit_axis: int = -1) -> jax.Array:
  """Float32 ``||w + u||`` per tensor or unit (``w + u`` never materialised),
  with :func:`leaf_norm`'s derivative at zero."""
  return _norm_from_squares(sum_squares_of_sum(w, u, granularity, unit_axis))


def radial_coefficient(w: jax.Array, g: jax.Array, granularity: str = "tensor",
                       unit_axis: int = -1) -> jax.Array:
  """Float32 ``<g, w> / ||w||^2`` per tensor or unit (0 where ``w == 0``)."""
  w32, g32 = w.astype(jnp.float32), g.astype(jnp.float32)
  axes = _reduce_axes(w.ndim, granularity, unit_axis)
  inner = jnp.sum(w32 * g32, axis=axes, keepdims=axes is not None)
  return safe_div(inner, sum_squares(w32, granularity, unit_axis), 0.0)


def tangent(w: jax.Array, g: jax.Array, granularity: str = "tensor",
            unit_axis: int = -1) -> jax.Array:
  """``g - (<g, w> / ||w||^2) w`` per tensor or unit; ``g`` where ``w == 0``."""
  coef = radial_coefficient(w, g, granularity, unit_axis)
  return (g.astype(jnp.float32) - coef * w.astype(jnp.float32)).astype(g.dtype)


def rescaled_update(w: jax.Array, u: jax.Array, k: jax.Array) -> jax.Array:
  """``k u + (k - 1) w`` in float32, cast to ``u.dtype``: the update that
  moves ``w`` to ``k (w + u)`` (``u`` itself where ``k == 1``)."""
  w32, u32 = w.astype(jnp.float32), u.astype(jnp.float32)
  return (k * u32 + (k - 1.0) * w32).astype(u.dtype)
