"""One norm constraint, validated (private): what every method builds on.

:class:`Constraint` holds the settings of a :func:`lawn_optax.constrain_norms`
and the two seams a new method plugs into:

* the **rule** ``(target, norm, eps) -> k``: the factor the weight is
  rescaled by, ``w_new = k (w + u)`` (:func:`lawn_optax.numerics.
  retraction_scale` onto the sphere; a max-norm only shrinks);
* the **retraction mode** (:data:`Retraction`): which norm the rule sees,
  ``||w + u||`` (``"exact"``) or ``||w||`` (``"lazy"``); or ``"projection"``:
  the update passes through and :func:`project` rescales the weights after
  ``optax.apply_updates``, by the norm of the new weights.

Every path (the exact and the lazy chain, the projection) computes ``k`` through
:meth:`Constraint.scale` and the norm through :meth:`Constraint.norm`,
nowhere else.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

from lawn_optax import _gating, _tree, autofreeze
from lawn_optax.numerics import (
    direct_norm,
    leaf_norm,
    norm_of_sum,
    rescaled_update,
    retraction_scale,
)

Retraction = Literal["exact", "lazy", "projection"]
RETRACTIONS: tuple[Retraction, ...] = ("exact", "lazy", "projection")
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


@dataclasses.dataclass(frozen=True)
class NormProjectionState:
  """State of a norm constraint built with ``retraction="projection"``:
  the chain's bookkeeping, and what :func:`lawn_optax.project_norms` needs.

  Attributes:
    constraint: the :class:`NormConstraintState` (count, targets, freeze
      step), kept exactly as the chain keeps it.
    active: bool ``[]``, whether the step just taken acts (the projection
      rescales only then; LAWN's free phase and WRS between periods are
      left untouched).
    rule, granularity, unit_axis, eps: the constraint's settings, static
      (pytree metadata, not leaves): the projection applies the same rule
      to the same norms as the chain would.

  Example:
    >>> import jax.numpy as jnp, lawn_optax as lo
    >>> tx = lo.constrain_norms({'w': True}, retraction='projection')
    >>> state = tx.init({'w': jnp.ones(3)})
    >>> bool(state.active), state.granularity
    (False, 'tensor')
  """
  constraint: NormConstraintState
  active: Any  # bool []
  rule: Rule
  granularity: _tree.Granularity
  unit_axis: int
  eps: float


jax.tree_util.register_dataclass(
    NormProjectionState, data_fields=["constraint", "active"],
    meta_fields=["rule", "granularity", "unit_axis", "eps"])


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
    lazy, the squares taken relative to the target ``t`` (exact at any
    magnitude); the projection's ``||w||`` from the squares of ``w`` itself
    (:func:`lawn_optax.numerics.direct_norm`: a hand-written projection's
    arithmetic, NaN for a norm beyond float32's range of squares)."""
    if self.retraction == "projection":
      return direct_norm(w, self.granularity, self.unit_axis)
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

  def init(self, params: Any) -> NormConstraintState | NormProjectionState:
    sel = _tree.select(self.mask, params, granularity=self.granularity,
                       unit_axis=self.unit_axis)
    leaves = sel.flatten(params, "params")
    given = ([None] * len(leaves) if self.target is None else
             _tree.broadcast_prefix(self.target, params, what="target"))
    targets = sel.map(
        lambda w, t, path: _initial_target(t, w, path, self.granularity,
                                           self.unit_axis),
        leaves, given, sel.paths)
    state = NormConstraintState(
        count=jnp.zeros([], jnp.int32), targets=sel.unflatten(targets),
        frozen_at=jnp.full([], -1, jnp.int32),
        trigger=() if self.auto is None else autofreeze.init())
    if self.retraction != "projection":
      return state
    return NormProjectionState(state, jnp.zeros([], bool), self.rule,
                               self.granularity, self.unit_axis, self.eps)

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
  def update(self, updates: Any, state: Any,
             params: Any = None, **extra_args: Any) -> tuple[Any, Any]:
    del extra_args
    if self.retraction == "projection":
      return self._bookkeeping(updates, state, params)
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

  def _bookkeeping(self, updates: Any, state: Any, params: Any
                   ) -> tuple[Any, NormProjectionState]:
    """The projection mode's update: the phase, the targets (captured from
    the weights before the update, as the chain does) and the step counter;
    the update itself passes through, bit for bit.

    The capture is not behind a conditional, unlike the chain's: a
    ``lax.cond`` that reads the weights keeps XLA:CPU from writing
    ``apply_updates`` into the donated parameter buffer (one
    parameter-sized copy per step, seen in the memory analysis). So the
    norm is taken on every step, one reduction with no branch
    (:meth:`norm`), and kept on the capture step only."""
    if not isinstance(state, NormProjectionState):
      raise _tree.swapped_state_error(state, "a NormProjectionState")
    inner = state.constraint
    sel, idx, w, _, _ = self.select(updates, params)
    ws = [w[i] for i in idx]
    active, trigger = self.phase(inner, ws)
    t_all = sel.flatten(inner.targets, "state.targets")
    ts = [t_all[i] for i in idx]
    if self.target is None:
      first = inner.frozen_at < 0
      capture = first if active is None else active & first
      measured = [self.norm(x, None, t) for x, t in zip(ws, ts)]
      ts = [jnp.where(capture, n, t) for n, t in zip(measured, ts)]
      # The updates (bits unchanged) wait for the norms, so the weights are
      # read before apply_updates writes them in place.
      token = _gating.order_token(measured)
      u, u_def = jax.tree.flatten(updates, is_leaf=_tree.is_masked_node)
      updates = jax.tree.unflatten(u_def, _gating.with_leaves(
          u, idx, [_gating.after(u[i], token) for i in idx]))
    return updates, dataclasses.replace(
        state, constraint=self.new_state(inner, sel, idx, t_all, ts, active,
                                         trigger),
        active=jnp.ones([], bool) if active is None else active)


def project(params: Any, state: NormProjectionState, what: str,
            took_step: Any = True) -> Any:
  """``params`` with each constrained weight ``w`` replaced by ``k w``, ``k``
  the rule applied to ``||w||`` (the new weights' own norm), where the step
  just taken acts (and ``took_step``: a wrapper may have skipped it); bit
  for bit ``params`` elsewhere. ``what`` names the state in errors."""
  c = Constraint(None, None, 0, 1, state.granularity, state.unit_axis,
                 state.eps, "projection", state.rule)
  params = _tree.unwrap_variables(params)
  # The targets have the params' tree, or a prefix of it where a wrapper
  # (optax.masked) hid a whole subtree behind one MaskedNode.
  t_leaves, t_def = jax.tree.flatten(state.constraint.targets,
                                     is_leaf=_tree.is_masked_node)
  try:
    p_leaves = t_def.flatten_up_to(params)  # type: ignore[attr-defined]
  except (ValueError, TypeError) as e:
    t_paths = set(_tree.flatten_with_paths(state.constraint.targets)[0])
    p_paths = set(_tree.flatten_with_paths(params)[0])
    raise ValueError(
        f"project_norms: params do not match the tree {what} was built for "
        f"(paths only in its state: {sorted(t_paths - p_paths)[:5]}; only in "
        f"params: {sorted(p_paths - t_paths)[:5]}). Pass the params that the "
        "optimizer updates, after optax.apply_updates.") from e
  idx = [i for i, t in enumerate(t_leaves) if not _tree.is_masked_node(t)]
  ws, ts = [p_leaves[i] for i in idx], [t_leaves[i] for i in idx]
  # Not behind a conditional: its operand, the new weights, would have to
  # be written to a buffer first (XLA's memory analysis shows one
  # parameter-sized temporary), where ungated the norm's reduction and the
  # rescale both fuse with apply_updates, as in a hand-written projection.
  # The price: the norms are computed in LAWN's free phase too (k = 1 there).
  acts = jnp.asarray(state.active, bool) & took_step
  ks = [jnp.where(acts, _loud_scale(c, t, c.norm(w, None, t)), 1.0)
        for w, t in zip(ws, ts)]
  rescaled = []
  for w, k in zip(ws, ks):
    dtype = _gating.compute_dtype(w)
    rescaled.append((w.astype(dtype) * k.astype(dtype)).astype(w.dtype))
  return jax.tree.unflatten(t_def, _gating.with_leaves(p_leaves, idx,
                                                       rescaled))


def _loud_scale(c: Constraint, t: jax.Array, norm: jax.Array) -> jax.Array:
  """The rule's factor, NaN where the target or the norm is NaN (a norm
  out of :func:`direct_norm`'s range, now or at the capture): the weights
  then turn NaN, loudly, where the rule alone would leave them
  unconstrained."""
  return jnp.where(jnp.isnan(t) | jnp.isnan(norm), jnp.nan, c.scale(t, norm))


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
