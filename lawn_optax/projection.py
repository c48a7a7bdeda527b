"""The shared primitive: keep the norms of selected weights at a target.

LAWN, FixNorm and WRS are all :func:`constrain_norms` with different settings
(where the targets come from, from which step and how often it acts), plus the
optional :func:`project_to_tangent` of the gradient. All norm arithmetic is in
float32 whatever the parameter dtype; the phase gate is one tree-level
conditional (only the taken branch runs) and the guards inside are
branch-free, so one compiled step serves the whole run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lawn_optax import _tree
from lawn_optax.numerics import (
  DEFAULT_EPS,
  leaf_norm,
  norm_of_sum,
  radial_coefficient,
  rescaled_update,
  retract,
  retraction_scale,
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


def _always_active(start_step: Any, period: Any) -> bool:
  """Statically every step: ``start_step=0`` and ``period=1`` as ints."""
  return (_is_static_int(start_step) and start_step == 0
          and _is_static_int(period) and period == 1)


def _compute_dtype(x: jax.Array) -> Any:
  """float32 at least; float64 stays float64 (identities stay exact)."""
  return jnp.float64 if x.dtype == jnp.float64 else jnp.float32


def _with(leaves: list, idx: list, values: list) -> list:
  """``leaves`` with ``leaves[idx[j]]`` replaced by ``values[j]``."""
  out = list(leaves)
  for i, v in zip(idx, values):
    out[i] = v
  return out


def _branch(pred: jax.Array, act: Any, skip: Any, operands: Any) -> Any:
  """``lax.cond(pred, act, skip, operands)`` that stays a branch in XLA.

  XLA's conditional simplifier replaces a two-way conditional whose branches
  hold only elementwise ops and reductions by both branches computed and a
  ``select`` (XLA:GPU does, seen on an H200 with jax 0.11.2: LAWN's free
  phase then paid for the norms it skips). It leaves a branch that holds any
  other op; an optimization barrier on ``act``'s result is such an op and
  costs nothing."""
  barrier = lambda ops: jax.lax.optimization_barrier(act(ops))
  return jax.lax.cond(pred, barrier, skip, operands)


def _gate(count: jax.Array, start_step: Any, period: Any, act: Any, skip: Any,
          operands: Any) -> Any:
  """``act(operands)`` on active steps, ``skip(operands)`` otherwise, as one
  tree-level conditional (only the taken branch runs: :func:`_branch`); no
  gate at all when every step is active (static ``start_step=0``,
  ``period=1``)."""
  if _always_active(start_step, period):
    return act(operands)
  return _branch(_active(count, start_step, period), act, skip, operands)


class _Constraint(NamedTuple):
  """The validated settings of one :func:`constrain_norms`."""
  mask: Any
  target: Any
  start_step: Any
  period: Any
  granularity: str
  unit_axis: int
  eps: float
  lazy: bool

  @property
  def always_active(self) -> bool:
    return _always_active(self.start_step, self.period)

  def norm_of(self, x: jax.Array) -> jax.Array:
    return leaf_norm(x, self.granularity, self.unit_axis)

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
    return NormConstraintState(count=jnp.zeros([], jnp.int32),
                               targets=sel.unflatten(targets))

  def select(self, updates: Any, params: Any):
    """Selection, masked indices, params and update leaves, treedef."""
    sel, w, u, u_def = _tree.select_update(
        self.mask, updates, params, granularity=self.granularity,
        unit_axis=self.unit_axis)
    return sel, [i for i, f in enumerate(sel.flags) if f], w, u, u_def

  def targets(self, state: NormConstraintState, sel: Any, idx: list,
              ws: list) -> tuple[list, list]:
    """All target leaves and the masked ones, captured on ``start_step``."""
    t_all = sel.flatten(state.targets, "state.targets")
    ts = [t_all[i] for i in idx]
    if self.target is None:
      ts = _branch(state.count == jnp.asarray(self.start_step, jnp.int32),
                   lambda ws: [self.norm_of(x) for x in ws], lambda _: ts, ws)
    return t_all, ts

  def scale(self, t: jax.Array, norm: jax.Array) -> jax.Array:
    return retraction_scale(t, norm, self.eps)

  def gate(self, count: jax.Array, act: Any, skip: Any, operands: Any) -> Any:
    return _gate(count, self.start_step, self.period, act, skip, operands)

  def new_state(self, state: NormConstraintState, sel: Any, idx: list,
                t_all: list, ts: list) -> NormConstraintState:
    return NormConstraintState(count=optax.safe_increment(state.count),
                               targets=sel.unflatten(_with(t_all, idx, ts)))

  def update(self, updates: Any, state: NormConstraintState,
             params: Any = None, **extra_args: Any) -> tuple[Any, Any]:
    del extra_args
    sel, idx, w, u, u_def = self.select(updates, params)
    ws, us = [w[i] for i in idx], [u[i] for i in idx]
    t_all, ts = self.targets(state, sel, idx, ws)
    count = state.count
    if self.lazy:
      # The reductions read only the params (no temporary) and sit behind a
      # gate with scalar outputs; the rescale (k = 1 when inactive) fuses
      # with the base update and apply_updates.
      ns = self.gate(count, lambda ws: [self.norm_of(x) for x in ws],
                     lambda ws: [jnp.ones_like(t) for t in ts], ws)
      active = _active(count, self.start_step, self.period)
      ks = [jnp.where(active, self.scale(t, n), 1.0) for t, n in zip(ts, ns)]
      new_us = [rescaled_update(wi, ui, k) for wi, ui, k in zip(ws, us, ks)]
    else:
      new_us = self.gate(
          count, lambda us: [retract(wi, ui, ti, self.granularity,
                                     self.unit_axis, self.eps)
                             for wi, ui, ti in zip(ws, us, ts)],
          lambda us: us, us)
    return (jax.tree.unflatten(u_def, _with(u, idx, new_us)),
            self.new_state(state, sel, idx, t_all, ts))


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
  conditional over the whole tree, kept a branch in XLA (a plain
  ``lax.cond`` of cheap ops may become a select there), so inactive steps
  (LAWN's free phase, WRS between periods) run the base update only; with a
  static ``start_step=0`` and ``period=1`` there is no gate.

  Cost (``retraction="exact"``): the norm ``||w + u||`` must be complete
  before any weight is written, so the incoming ``u`` is read twice: one
  fused reduction over ``w`` and ``u`` per tensor, then one elementwise pass
  ``u' = k u + (k-1) w`` that XLA fuses with ``optax.apply_updates`` (``w +
  u`` is never materialised; bf16 weights are read as bf16 and accumulated
  in float32). Because ``u`` has two readers, XLA writes it to one
  update-sized temporary buffer (tested with XLA's memory analysis); behind a
  gate that buffer is written on inactive steps too. This transform sees only
  ``u``, so it cannot avoid the buffer; :func:`constrain_norms_after` (used
  by :func:`lawn` and :func:`weight_rescaling`, which own their base
  optimizer) can, by recomputing the base update inside the gate.

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
  c = _constraint(mask, target, start_step, period, granularity, unit_axis,
                  eps, retraction)
  return optax.GradientTransformationExtraArgs(c.init, c.update)


def _constraint(mask, target, start_step, period, granularity, unit_axis,
                eps, retraction) -> _Constraint:
  _tree.check_granularity(granularity)
  _tree.check_step(start_step, "start_step")
  _tree.check_step(period, "period", minimum=1)
  if retraction not in RETRACTIONS:
    raise ValueError(f"retraction must be one of {RETRACTIONS}, got "
                     f"{retraction!r}.")
  return _Constraint(mask, target, start_step, period, granularity, unit_axis,
                     eps, retraction == "lazy")


# Primitives that make an update more than one elementwise pass (matrix
# products, factorisations, loops, reductions, collectives: recomputing it
# would repeat every pass) or that must not run twice (callbacks).
_NOT_RECOMPUTED = frozenset({
    "dot_general", "conv_general_dilated", "while", "scan", "fft", "eigh",
    "svd", "qr", "cholesky", "lu", "triangular_solve", "schur", "eig",
    "custom_linear_solve", "sort", "top_k", "argmax", "argmin",
    "pure_callback", "io_callback", "debug_callback", "callback",
    "custom_call"})


def _cheap_to_recompute(jaxpr: Any) -> bool:
  """Whether a jaxpr is elementwise (no reduction, product, loop or
  callback, recursively): one fused pass that is cheap to run twice."""
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if (name in _NOT_RECOMPUTED or "callback" in name or name.startswith(
        ("reduce_", "cum", "psum", "pmax", "pmin", "all_gather", "all_to_all",
         "ppermute", "pbroadcast"))):
      return False
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns") and not _cheap_to_recompute(inner):
          return False
  return True


def _rescaled_when(active: jax.Array, w: jax.Array, u: jax.Array,
                   k: jax.Array) -> jax.Array:
  """``k u + (k - 1) w`` when ``active``, else ``u`` bit for bit:
  ``1 * u + (-0.0)`` is ``u`` for every float, signed zero and infinities
  included; a NaN stays a NaN (XLA:GPU returns its own NaN payload).
  ``u`` is read once, so XLA fuses its producer here (a ``where`` between
  two expressions of ``u`` would make XLA write ``u`` to a buffer)."""
  dtype = _compute_dtype(u)
  w_, u_, k = w.astype(dtype), u.astype(dtype), k.astype(dtype)
  shift = jnp.where(active, (k - 1.0) * w_, -0.0)
  return (jnp.where(active, k, 1.0) * u_ + shift).astype(u.dtype)


@jax.custom_jvp
def _after(x: jax.Array, flag: jax.Array) -> jax.Array:
  """``x``, bit for bit, as a value that depends on the scalar ``flag``
  (always True): an integer OR of 0 on its bits, which XLA can neither fold
  nor move into the float arithmetic that reads ``x``. Differentiated as the
  identity in ``x`` (the bit path alone would carry no tangent)."""
  bits = jnp.dtype(f"uint{8 * x.dtype.itemsize}")
  zero = jnp.asarray(jnp.logical_not(flag), bits)
  return jax.lax.bitcast_convert_type(
      jax.lax.bitcast_convert_type(x, bits) | zero, x.dtype)


@_after.defjvp
def _after_jvp(primals, tangents):
  x, flag = primals
  return _after(x, flag), tangents[0]


def constrain_norms_after(
    steps: Sequence[tuple[str, optax.GradientTransformation]],
    name: str,
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
  r"""``optax.named_chain(*steps, (name, constrain_norms(mask, ...)))``,
  without an update-sized buffer when the constraint is gated.

  Same state and same results as that chain (up to float32 rounding: XLA
  fuses the base update differently); what differs is the work XLA is given.
  :func:`constrain_norms` reads the incoming update twice (for the norm, then
  for the rescale), so XLA writes it to a buffer, and behind a gate it does so
  on every step. Here the gate holds only the scalars ``||w + u||``: on an
  active step its branch runs the ``steps``' update once more, fused into a
  reduction over the gradient, their state and the params (nothing
  update-sized written); then the ``steps`` run once, and the rescale
  ``u' = k u + (k - 1) w`` fuses with them and with ``apply_updates``.

  Passes over parameter-sized memory, counted in the optimized HLO of
  ``lawn(optax.adam(...))`` with ``apply_updates``: inactive steps (LAWN's
  free phase, WRS between periods) are the base step alone, with no
  temporary buffer; active steps add one fused reduction that reads the base
  step's inputs (gradient, moments, params) and recomputes the update.
  Storing the update instead (the chain) writes it once and reads it twice,
  in both phases. Recomputing reads the base step's inputs twice and redoes
  its arithmetic: on a 2-core CPU it still wins, as XLA:CPU maps the stored
  update's temporary afresh on every call; on an H200 its constrained phase
  measured slower than the stored update without a gate (see
  ``benchmarks/results/overhead*.md``).

  The chain itself is returned where recomputing gains nothing or is not
  safe: the lazy retraction (it needs only ``||w||``), no gate (static
  ``start_step=0`` and ``period=1``: every step is active, so storing the
  update once is the cheaper way), and ``steps`` whose update is more than
  one elementwise pass (reductions as in LAMB, global-norm clipping or the
  tangent projection; matrix products; loops) or holds a callback: running
  those twice costs more than storing the update, or is not allowed
  (checked on the traced update).

  Args:
    steps: ``(name, transformation)`` pairs of the base chain.
    name: the constraint's name in the state.
    mask: as in :func:`constrain_norms`; so are ``target``, ``start_step``,
      ``period``, ``granularity``, ``unit_axis``, ``eps`` and ``retraction``.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with ``named_chain``'s
    state; ``update`` needs ``params``.

  Example:
    >>> import jax.numpy as jnp, optax, lawn_optax as lo
    >>> params = {'w': jnp.array([3.0, 4.0])}
    >>> tx = lo.constrain_norms_after([('base', optax.adam(0.1))], 'lawn',
    ...                               {'w': True}, start_step=1)
    >>> state = tx.init(params)
    >>> for _ in range(3):
    ...   u, state = tx.update({'w': jnp.array([1.0, -1.0])}, state, params)
    ...   params = optax.apply_updates(params, u)
    >>> round(float(jnp.linalg.norm(params['w'])), 4), sorted(state)
    (5.022, ['base', 'lawn'])
  """
  c = _constraint(mask, target, start_step, period, granularity, unit_axis,
                  eps, retraction)
  steps = list(steps)
  names = [n for n, _ in steps]
  if name in names or len(set(names)) != len(names):
    raise ValueError(f"constrain_norms_after: the names of steps {names} and "
                     f"name {name!r} must all differ (they key the state).")
  chain = optax.named_chain(
      *steps, (name, optax.GradientTransformationExtraArgs(c.init, c.update)))
  if c.lazy or c.always_active:
    return chain
  base = optax.named_chain(*steps)

  def update_fn(updates, state, params=None, **extra_args):
    base_state = {n: state[n] for n in names}
    base_update = lambda g, s: base.update(g, s, params, **extra_args)
    if not _cheap_to_recompute(
        jax.make_jaxpr(base_update)(updates, base_state).jaxpr):
      return chain.update(updates, state, params, **extra_args)
    c_state = state[name]
    sel, idx, w, _, _ = c.select(updates, params)
    ws = [w[i] for i in idx]
    t_all, ts = c.targets(c_state, sel, idx, ws)

    def norms(operands):
      g, s = operands
      u, _ = base_update(g, s)
      u = jax.tree.leaves(u, is_leaf=_tree.is_masked_node)
      ks = [c.scale(t, norm_of_sum(wi, u[i], c.granularity, c.unit_axis))
            for t, wi, i in zip(ts, ws, idx)]
      # Always True, but computed from this branch: selecting the gradient
      # on it (bits unchanged) orders the in-place writes of the base state
      # after the branch's reads of it; without it XLA copies the state.
      after = 0.0 * sum(jnp.sum(jnp.where(jnp.isfinite(k), k, 0.0))
                        for k in ks) == 0.0
      return ks, after

    skip = lambda operands: ([jnp.ones_like(t) for t in ts],
                             jnp.ones([], bool))
    active = _active(c_state.count, c.start_step, c.period)
    ks, after = _branch(active, norms, skip, (updates, base_state))
    g, g_def = jax.tree.flatten(updates, is_leaf=_tree.is_masked_node)
    updates = jax.tree.unflatten(
        g_def, _with(g, idx, [_after(g[i], after) for i in idx]))
    u, new_base_state = base_update(updates, base_state)
    u, u_def = jax.tree.flatten(u, is_leaf=_tree.is_masked_node)
    u = _with(u, idx, [_rescaled_when(active, wi, u[i], k)
                       for wi, i, k in zip(ws, idx, ks)])
    new_state = dict(new_base_state)
    new_state[name] = c.new_state(c_state, sel, idx, t_all, ts)
    return jax.tree.unflatten(u_def, u), type(state)(new_state)

  return optax.GradientTransformationExtraArgs(chain.init, update_fn)


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
    ws, gs = [w[i] for i in idx], [g[i] for i in idx]
    # The gate holds only the coefficients (reductions over w and g, both
    # already in memory); the projection is then one elementwise pass that
    # fuses with the base optimizer, and an identity on inactive steps.
    coefs = _gate(
        state.count, start_step, 1,
        lambda ops: [radial_coefficient(wi, gi, granularity, unit_axis)
                     for wi, gi in zip(*ops)],
        lambda ops: [jnp.zeros(_norm_shape(wi, granularity, unit_axis),
                               jnp.float32) for wi in ops[0]], (ws, gs))
    active = _active(state.count, start_step, 1)
    projected = []
    for wi, gi, c in zip(ws, gs, coefs):
      dtype = _compute_dtype(gi)
      radial = jnp.where(active, -c.astype(dtype) * wi.astype(dtype), -0.0)
      projected.append((gi.astype(dtype) + radial).astype(gi.dtype))
    return (jax.tree.unflatten(g_def, _with(g, idx, projected)),
            TangentProjectionState(count=optax.safe_increment(state.count)))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
