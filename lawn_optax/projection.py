"""The shared primitive: keep the norms of selected weights at a target.

LAWN, FixNorm and WRS are all :func:`constrain_norms` with different settings
(where the targets come from, from which step and how often it acts), plus the
optional :func:`project_to_tangent` of the gradient. All norm arithmetic is in
float32 whatever the parameter dtype; the phase gate is one tree-level
``lax.cond`` (only the taken branch runs) and the guards inside are
branch-free, so one compiled step serves the whole run.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lawn_optax import _tree
from lawn_optax.numerics import (
  DEFAULT_EPS,
  leaf_norm,
  rescaled_update,
  retract,
  tangent,
)


def _active(count: jax.Array, start: Any, period: Any) -> jax.Array:
  start = jnp.asarray(start, jnp.int32)
  on = count >= start
  if isinstance(period, int) and period == 1:
    return on
  return on & ((count - start) % jnp.asarray(period, jnp.int32) == 0)


def _norm_shape(leaf: Any, granularity: str, unit_axis: int) -> tuple:
  return jax.eval_shape(lambda x: leaf_norm(x, granularity, unit_axis),
                        leaf).shape


def _initial_target(value: Any, leaf: Any, path: str, granularity: str,
                    unit_axis: int) -> jax.Array:
  """The state's target for one leaf: zeros to be captured, or ``value``."""
  shape = _norm_shape(leaf, granularity, unit_axis)
  if value is None:
    return jnp.zeros(shape, jnp.float32)
  arr = jnp.asarray(value, jnp.float32)
  if not isinstance(arr, jax.core.Tracer) and bool(jnp.any(arr <= 0)):
    raise ValueError(f"target norm for '{path}' must be > 0, got {value!r}.")
  try:
    return jnp.broadcast_to(arr, shape)
  except ValueError as e:
    raise ValueError(f"target norm for '{path}' has shape {arr.shape}, which "
                     f"does not broadcast to its norms' shape {shape}.") from e


class NormConstraintState(NamedTuple):
  """State of :func:`constrain_norms`.

  Attributes:
    count: int32 ``[]``, number of updates seen.
    targets: the params' tree; float32 target norms on constrained leaves
      (shape ``[]`` per tensor, keepdims per unit), ``optax.MaskedNode``
      elsewhere. Captured targets are 0 until the capture step.

  Example:
    >>> import jax.numpy as jnp, lawn_optax as lo
    >>> tx = lo.constrain_norms({'w': True, 'b': False}, granularity='unit')
    >>> state = tx.init({'w': jnp.ones((3, 2)), 'b': jnp.ones(2)})
    >>> state.targets['w'].shape, type(state.targets['b']).__name__
    ((1, 2), 'MaskedNode')
  """
  count: jax.Array  # type: ignore[assignment]  # optax-style field name
  targets: Any


RETRACTIONS = ("exact", "lazy")


def _is_static_int(x: Any) -> bool:
  return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _gate(count: jax.Array, start_step: Any, period: Any, act: Any, skip: Any,
          operands: Any) -> Any:
  """``act(operands)`` on active steps, ``skip(operands)`` otherwise, as one
  tree-level ``lax.cond`` (only the taken branch runs); no gate at all when
  every step is active (static ``start_step=0``, ``period=1``)."""
  if _is_static_int(start_step) and start_step == 0 and (
      _is_static_int(period) and period == 1):
    return act(operands)
  return jax.lax.cond(_active(count, start_step, period), act, skip, operands)


def constrain_norms(
    mask: _tree.MaskOrFn,
    *,
    target: Any = None,
    start_step: Any = 0,
    period: Any = 1,
    granularity: str = "tensor",
    unit_axis: int = -1,
    eps: float = DEFAULT_EPS,
    retraction: str = "exact",
) -> optax.GradientTransformationExtraArgs:
  r"""Retracts the masked weights onto spheres of fixed norm after each update.

  Placed after a base optimizer, it rewrites the incoming update ``u`` of every
  masked weight ``w`` so that ``||w + u'|| = target``:

  .. math:: u' = c \frac{w + u}{\max(\|w + u\|, \epsilon)} - w

  on steps ``start_step, start_step + period, ...``; on every other step and on
  unmasked leaves the update passes through bit-for-bit. The gate is one
  ``lax.cond`` over the whole tree, so inactive steps (LAWN's free phase,
  WRS between periods) run the base update only; with a static
  ``start_step=0`` and ``period=1`` there is no gate.

  Cost (``retraction="exact"``): the norm ``||w + u||`` must be complete
  before any weight is written, so the retraction is one fused reduction over
  ``w`` and ``u`` followed by one elementwise pass ``u' = k u + (k-1) w``
  (``w + u`` is never materialised; bf16 weights are read as bf16 and
  accumulated in float32), which XLA fuses with ``optax.apply_updates`` when
  both are jitted together: one extra read of ``w`` and ``u`` over the base
  step (see ``python -m benchmarks.overhead`` for XLA's byte counts).

  ``retraction="lazy"`` divides by the norm of the weight as it is, before
  this step's update, instead of waiting for ``||w + u||``:
  ``w_new = c (w + u) / ||w||``. The norm needs only ``w`` (a reduction over
  the params, no temporary), and the rescale is one elementwise pass that
  XLA fuses with the base update and ``apply_updates``. The new norm then
  deviates from ``c`` by at most the relative size of one update,
  ``| ||w_new|| - c | <= c ||u|| / ||w||``, and the next step corrects it:
  errors do not accumulate. No extra state.

  Args:
    mask: pytree of bools with the params' structure (or a prefix of it), a
      callable ``params -> mask``, or a Flax nnx filter. True leaves are
      constrained.
    target: ``None`` to freeze each masked norm at its value at ``start_step``
      (LAWN, FixNorm); otherwise a positive float, or a pytree (prefix of the
      mask) of floats / arrays broadcastable to the norms' shape (WRS, FixNorm
      radii).
    start_step: first step (0-based count of updates) on which to act; the
      capture step when ``target is None``. May be a traced int.
    period: act every ``period`` steps from ``start_step`` on.
    granularity: ``"tensor"`` (one Frobenius norm per leaf) or ``"unit"`` (one
      norm per slice along ``unit_axis``, the output axis of Flax kernels).
    unit_axis: the output axis for ``granularity="unit"``.
    eps: floor of the norm divided by (the retraction's epsilon, unrelated to
      an optimizer's ``eps``).
    retraction: ``"exact"`` (default) or ``"lazy"`` (see above).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose ``update`` needs
    ``params``. A weight whose captured norm is exactly zero (e.g. a
    zero-initialised layer with ``start_step=0``) is left unconstrained: its
    update passes through, and no NaN or Inf can arise.

  Example:
    >>> import jax.numpy as jnp, optax, lawn_optax as lo
    >>> params = {'w': jnp.array([3.0, 4.0])}
    >>> tx = optax.chain(optax.sgd(0.5), lo.constrain_norms({'w': True}))
    >>> state = tx.init(params)
    >>> u, state = tx.update({'w': jnp.array([1.0, 0.0])}, state, params)
    >>> float(jnp.linalg.norm(optax.apply_updates(params, u)['w']))
    5.0
  """
  _tree.check_granularity(granularity)
  _tree.check_step(start_step, "start_step")
  _tree.check_step(period, "period", minimum=1)
  if retraction not in RETRACTIONS:
    raise ValueError(f"retraction must be one of {RETRACTIONS}, got "
                     f"{retraction!r}.")
  lazy = retraction == "lazy"
  capture = target is None
  norm_of = lambda x: leaf_norm(x, granularity, unit_axis)

  def init_fn(params):
    sel = _tree.select(mask, params, granularity=granularity,
                       unit_axis=unit_axis)
    leaves = sel.flatten(params, "params")
    given = ([None] * len(leaves) if capture else
             _tree.broadcast_prefix(target, params, what="target"))
    targets = sel.map(
        lambda w, t, path: _initial_target(t, w, path, granularity, unit_axis),
        leaves, given, sel.paths)
    return NormConstraintState(count=jnp.zeros([], jnp.int32),
                               targets=sel.unflatten(targets))

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    sel, w, u, u_def = _tree.select_update(
        mask, updates, params, granularity=granularity, unit_axis=unit_axis)
    idx = [i for i, f in enumerate(sel.flags) if f]
    t_all = sel.flatten(state.targets, "state.targets")
    ws, us = [w[i] for i in idx], [u[i] for i in idx]
    count = state.count
    ts = [t_all[i] for i in idx]
    if capture:
      ts = jax.lax.cond(count == jnp.asarray(start_step, jnp.int32),
                        lambda: [norm_of(x) for x in ws], lambda: ts)
    if lazy:
      # The reductions read only the params (no temporary) and sit behind a
      # gate with scalar outputs; the rescale (k = 1 when inactive) fuses
      # with the base update and apply_updates.
      ns = _gate(count, start_step, period,
                 lambda ws: [norm_of(x) for x in ws],
                 lambda ws: [jnp.ones_like(t) for t in ts], ws)
      active = _active(count, start_step, period)
      ks = [jnp.where(active & (t > 0), t / jnp.maximum(n, eps), 1.0)
            for t, n in zip(ts, ns)]
      new_us = [rescaled_update(wi, ui, k) for wi, ui, k in zip(ws, us, ks)]
    else:
      new_us = _gate(count, start_step, period,
                     lambda us: [retract(wi, ui, ti, granularity, unit_axis,
                                         eps)
                                 for wi, ui, ti in zip(ws, us, ts)],
                     lambda us: us, us)
    new_u, new_t = list(u), list(t_all)
    for j, i in enumerate(idx):
      new_u[i], new_t[i] = new_us[j], ts[j]
    new_state = NormConstraintState(count=optax.safe_increment(count),
                                    targets=sel.unflatten(new_t))
    return jax.tree.unflatten(u_def, new_u), new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class TangentProjectionState(NamedTuple):
  """State of :func:`project_to_tangent`: ``count``, int32 ``[]``.

  Example:
    >>> import jax.numpy as jnp, lawn_optax as lo
    >>> lo.project_to_tangent(True).init({'w': jnp.ones(2)}).count.dtype
    dtype('int32')
  """
  count: jax.Array  # type: ignore[assignment]


def project_to_tangent(
    mask: _tree.MaskOrFn,
    *,
    start_step: Any = 0,
    granularity: str = "tensor",
    unit_axis: int = -1,
) -> optax.GradientTransformationExtraArgs:
  r"""Removes the radial component of the gradient of masked weights.

  .. math:: g' = g - \frac{\langle g, w \rangle}{\|w\|^2} w

  per tensor or per unit, from step ``start_step`` on. Put it *before* the
  base optimizer so momentum and Adam moments never accumulate the component
  that the norm constraint would discard anyway. Earlier steps, unmasked leaves
  and zero-norm weights pass through unchanged.

  Args:
    mask: as in :func:`constrain_norms`.
    start_step: first step on which to project (may be a traced int).
    granularity: ``"tensor"`` or ``"unit"``.
    unit_axis: the output axis for ``granularity="unit"``.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose ``update`` needs
    ``params``.

  Example:
    >>> import jax.numpy as jnp, lawn_optax as lo
    >>> params = {'w': jnp.array([1.0, 0.0])}
    >>> tx = lo.project_to_tangent({'w': True})
    >>> g, _ = tx.update({'w': jnp.array([2.0, 3.0])}, tx.init(params), params)
    >>> g['w'].tolist()
    [0.0, 3.0]
  """
  _tree.check_granularity(granularity)
  _tree.check_step(start_step, "start_step")

  def init_fn(params):
    _tree.select(mask, params, granularity=granularity, unit_axis=unit_axis)
    return TangentProjectionState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    sel, w, g, g_def = _tree.select_update(
        mask, updates, params, granularity=granularity, unit_axis=unit_axis)
    idx = [i for i, f in enumerate(sel.flags) if f]
    project = lambda gs: [tangent(w[i], gi, granularity, unit_axis)
                          for i, gi in zip(idx, gs)]
    gs = _gate(state.count, start_step, 1, project, lambda gs: gs,
               [g[i] for i in idx])
    new_g = list(g)
    for i, gi in zip(idx, gs):
      new_g[i] = gi
    return (jax.tree.unflatten(g_def, new_g),
            TangentProjectionState(count=optax.safe_increment(state.count)))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
