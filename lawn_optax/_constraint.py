"""One norm constraint, validated (private): what every method builds on.

:class:`Constraint` holds the settings of a :func:`lawn_optax.constrain_norms`
and the two seams a new method plugs into:

* the **rule** ``(target, norm, eps) -> k``: the factor the weight is
  rescaled by, ``w_new = k (w + u)`` (:func:`lawn_optax.numerics.
  retraction_scale` onto the sphere; a max-norm only shrinks);
* the **retraction mode** (:data:`Retraction`): which norm the rule sees,
  ``||w + u||`` (``"exact"``) or ``||w||`` (``"lazy"``).

Every path (the stored chain, the lazy pass, the recomputed update of
:mod:`lawn_optax._recompute`) computes ``k`` through :meth:`Constraint.scale`
and the norm through :meth:`Constraint.norm`, nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

from lawn_optax import _gating, _tree, autofreeze
from lawn_optax.numerics import (
    leaf_norm,
    norm_of_sum,
    rescaled_update,
    retraction_scale,
)

Retraction = Literal["exact", "lazy"]
RETRACTIONS: tuple[Retraction, ...] = ("exact", "lazy")
# (target, norm, eps) -> the rescale factor k.
Rule = Callable[[jax.Array, jax.Array, float], jax.Array]


class NormConstraintState(NamedTuple):
  """State of :func:`lawn_optax.constrain_norms`.

  Attributes:
    count: int32 ``[]``, number of updates seen.
    targets: the params' tree; float32 target norms on constrained leaves
      (shape ``[]`` per tensor, keepdims per unit), ``optax.MaskedNode``
      elsewhere. Captured targets are 0 until the capture step.
    frozen_at: int32 ``[]``, the step on which the constraint first acted
      (and captured its targets), -1 before (:func:`lawn_optax.frozen_at`).
    trigger: ``free_steps="auto"``'s memory
      (:class:`lawn_optax.autofreeze.AutoFreezeState`), ``()`` otherwise.

  Example:
    >>> import jax.numpy as jnp, lawn_optax as lo
    >>> tx = lo.constrain_norms({'w': True, 'b': False}, granularity='unit')
    >>> state = tx.init({'w': jnp.ones((3, 2)), 'b': jnp.ones(2)})
    >>> state.targets['w'].shape, type(state.targets['b']).__name__
    ((1, 2), 'MaskedNode')
  """
  count: Any  # int32 []; Any: jax.Array renders as a private path in docs
  targets: Any
  frozen_at: Any  # int32 []
  trigger: Any = ()


def _norm_shape(leaf: Any, granularity: _tree.Granularity, unit_axis: int
                ) -> tuple:
  return jax.eval_shape(lambda x: leaf_norm(x, granularity, unit_axis),
                        leaf).shape


def _initial_target(value: Any, leaf: Any, path: str,
                    granularity: _tree.Granularity,
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


class Constraint(NamedTuple):
  """The validated settings of one norm constraint (see the module doc)."""
  mask: Any
  target: Any
  start_step: Any
  period: Any
  granularity: _tree.Granularity
  unit_axis: int
  eps: float
  retraction: Retraction
  rule: Rule = retraction_scale
  auto: autofreeze.AutoFreeze | None = None

  @property
  def always_active(self) -> bool:
    return self.auto is None and _gating.always_active(self.start_step,
                                                       self.period)

  # -- the seams -------------------------------------------------------------
  def scale(self, t: jax.Array, norm: jax.Array) -> jax.Array:
    """The rescale factor of one leaf (the rule)."""
    return self.rule(t, norm, self.eps)

  def norm(self, w: jax.Array, u: jax.Array | None, t: jax.Array
           ) -> jax.Array:
    """The norm the rule sees (the mode): ``||w + u||`` exact, ``||w||``
    lazy; the squares taken relative to the target ``t``."""
    if self.retraction == "lazy" or u is None:
      return leaf_norm(w, self.granularity, self.unit_axis, t)
    return norm_of_sum(w, u, self.granularity, self.unit_axis, scale=t)

  # -- phase and state -------------------------------------------------------
  def phase(self, state: NormConstraintState, ws: list
            ) -> tuple[jax.Array | None, Any]:
    """Whether this step acts (``None`` when statically every step), and
    the auto-freeze rule's new memory."""
    if self.always_active:
      return None, state.trigger
    on = _gating.active(state.count, self.start_step, self.period)
    if self.auto is None:
      return on, state.trigger
    held = on | (state.frozen_at >= 0)
    fired, trigger = autofreeze.decide(self.auto, state.trigger, ws,
                                       state.count, held)
    return held | fired, trigger

  def init(self, params: Any) -> NormConstraintState:
    sel = _tree.select(self.mask, params, granularity=self.granularity,
                       unit_axis=self.unit_axis)
    leaves = sel.flatten(params, "params")
    given = ([None] * len(leaves) if self.target is None else
             _tree.broadcast_prefix(self.target, params, what="target"))
    targets = sel.map(
        lambda w, t, path: _initial_target(t, w, path, self.granularity,
                                           self.unit_axis),
        leaves, given, sel.paths)
    return NormConstraintState(
        count=jnp.zeros([], jnp.int32), targets=sel.unflatten(targets),
        frozen_at=jnp.full([], -1, jnp.int32),
        trigger=() if self.auto is None else autofreeze.init())

  def select(self, updates: Any, params: Any):
    """Selection, masked indices, params and update leaves, treedef."""
    sel, w, u, u_def = _tree.select_update(
        self.mask, updates, params, granularity=self.granularity,
        unit_axis=self.unit_axis)
    return sel, [i for i, f in enumerate(sel.flags) if f], w, u, u_def

  def targets(self, state: NormConstraintState, sel: Any, idx: list,
              ws: list, active: jax.Array | None) -> tuple[list, list]:
    """All target leaves and the masked ones, captured on the first active
    step (whatever ``start_step`` was then: under
    ``optax.inject_hyperparams`` it may change during the run)."""
    t_all = sel.flatten(state.targets, "state.targets")
    ts = [t_all[i] for i in idx]
    if self.target is None:
      first = state.frozen_at < 0
      ts = _gating.branch(first if active is None else active & first,
                          lambda ws: [leaf_norm(x, self.granularity,
                                                self.unit_axis) for x in ws],
                          lambda _: ts, ws)
    return t_all, ts

  def new_state(self, state: NormConstraintState, sel: Any, idx: list,
                t_all: list, ts: list, active: jax.Array | None,
                trigger: Any) -> NormConstraintState:
    first = state.frozen_at < 0
    first = first if active is None else first & active
    return NormConstraintState(
        count=optax.safe_increment(state.count),
        targets=sel.unflatten(_gating.with_leaves(t_all, idx, ts)),
        frozen_at=jnp.where(first, state.count, state.frozen_at),
        trigger=trigger)

  # -- the stored-update paths -----------------------------------------------
  def update(self, updates: Any, state: NormConstraintState,
             params: Any = None, **extra_args: Any) -> tuple[Any, Any]:
    del extra_args
    if not isinstance(state, NormConstraintState):
      raise _tree.swapped_state_error(state, "a NormConstraintState")
    sel, idx, w, u, u_def = self.select(updates, params)
    ws, us = [w[i] for i in idx], [u[i] for i in idx]
    active, trigger = self.phase(state, ws)
    t_all, ts = self.targets(state, sel, idx, ws, active)
    if self.retraction == "lazy":
      # The reductions read only the params (no temporary) and sit behind a
      # gate with scalar outputs; the rescale (k = 1 when inactive) fuses
      # with the base update and apply_updates.
      ns = _gating.gate(
          active, lambda ws: [self.norm(x, None, t) for x, t in zip(ws, ts)],
          lambda ws: [jnp.ones_like(t) for t in ts], ws)
      ks = [self.scale(t, n) if active is None else
            jnp.where(active, self.scale(t, n), 1.0) for t, n in zip(ts, ns)]
      new_us = [rescaled_update(wi, ui, k) for wi, ui, k in zip(ws, us, ks)]
    else:
      new_us = _gating.gate(
          active, lambda us: [rescaled_update(wi, ui, self.scale(
              ti, self.norm(wi, ui, ti))) for wi, ui, ti in zip(ws, us, ts)],
          lambda us: us, us)
    return (jax.tree.unflatten(u_def, _gating.with_leaves(u, idx, new_us)),
            self.new_state(state, sel, idx, t_all, ts, active, trigger))


def make(mask: Any, target: Any, start_step: Any, period: Any,
         granularity: _tree.Granularity, unit_axis: Any, eps: float,
         retraction: str,
         rule: Rule | None = None,
         auto: autofreeze.AutoFreeze | None = None) -> Constraint:
  """A validated :class:`Constraint` (errors name the bad argument)."""
  _tree.check_granularity(granularity)
  _tree.check_step(start_step, "start_step")
  _tree.check_step(period, "period", minimum=1)
  if retraction not in RETRACTIONS:
    raise ValueError(f"retraction must be one of {RETRACTIONS}, got "
                     f"{retraction!r}.")
  if auto is not None:
    auto = autofreeze.validate(auto)
  return Constraint(mask, target, start_step, period, granularity,
                    _tree.resolve_axis(unit_axis), eps, retraction,
                    rule or retraction_scale, auto)
