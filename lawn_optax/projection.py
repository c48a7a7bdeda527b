"""The shared primitive: keep the norms of selected weights at a target.

LAWN, FixNorm and WRS are all :func:`constrain_norms` with different settings
(where the targets come from, from which step and how often it acts), plus the
optional :func:`project_to_tangent` of the gradient. All norm arithmetic is in
float32 whatever the parameter dtype; the phase gate is one tree-level
conditional (only the taken branch runs) and the guards inside are
branch-free, so one compiled step serves the whole run. The settings and
their seams live in :mod:`lawn_optax._constraint`, the gates in
:mod:`lawn_optax._gating`. One engine applies the rule, two ways: the chain
(:func:`constrain_norms`, emitting the additive update optax expects) and the
projection after ``optax.apply_updates`` (:func:`project_norms`); both read
the rule, the targets and the phase from the same seam and state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from lawn_optax import _constraint, _docs, _gating, _tree
from lawn_optax._constraint import (
    RETRACTIONS,
    NormConstraintState,
    NormProjectionState,
    Retraction,
    Rule,
)
from lawn_optax.autofreeze import AutoFreeze
from lawn_optax.numerics import DEFAULT_EPS, radial_coefficient

__all__ = ["RETRACTIONS", "NormConstraintState", "NormProjectionState",
           "TangentProjectionState", "constrain_norms", "constrain_norms_after",
           "project_norms", "project_to_tangent"]


@_docs.shared
def constrain_norms(
    mask: _tree.MaskOrFn,
    *,
    target: Any = None,
    start_step: _tree.Step = 0,
    period: _tree.Step = 1,
    granularity: _tree.Granularity = "tensor",
    unit_axis: int | None = None,
    eps: float = DEFAULT_EPS,
    retraction: Retraction = "exact",
    rule: Rule | None = None,
    auto_freeze: AutoFreeze | None = None,
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
  gate that buffer is written on inactive steps too. An update transform sees
  only ``u``, so it cannot avoid the buffer: the projection path
  (``retraction="projection"``, then :func:`project_norms` after
  ``optax.apply_updates``) is the way without it.

  ``retraction="lazy"`` divides by the norm of the weight as it is, before
  this step's update, instead of waiting for ``||w + u||``:
  ``w_new = c (w + u) / ||w||``. The norm needs only ``w`` (a reduction over
  the params, no temporary), and the rescale is one elementwise pass that
  XLA fuses with the base update and ``apply_updates``. The new norm then
  deviates from ``c`` by at most the relative size of one update,
  ``| ||w_new|| - c | <= c ||u|| / ||w||``, and the next step corrects it:
  errors do not accumulate. No extra state.

  [last-transform]

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
    retraction: ``"exact"`` (default), ``"lazy"`` (see above) or
      ``"projection"``: the update passes through untouched and the state
      (a :class:`NormProjectionState`) tells :func:`project_norms`, called
      after ``optax.apply_updates``, what to rescale.
    rule: ``(target, norm, eps) -> k``, the factor each masked weight is
      rescaled by (``w_new = k (w + u)``, with ``norm`` as the retraction
      mode says); default :func:`lawn_optax.numerics.retraction_scale`,
      onto the sphere of norm ``target``.
    auto_freeze: an :class:`lawn_optax.AutoFreeze` rule that may also start
      the constraint (the first active step is then the rule's decision or
      ``start_step``, whichever comes first; it stays active after).

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
  c = _constraint.make(mask, target, start_step, period, granularity,
                       unit_axis, eps, retraction, rule, auto_freeze)
  return optax.GradientTransformationExtraArgs(c.init, c.update)



@_docs.shared
def constrain_norms_after(
    steps: Sequence[tuple[str, optax.GradientTransformation]],
    name: str,
    mask: _tree.MaskOrFn,
    *,
    target: Any = None,
    start_step: _tree.Step = 0,
    period: _tree.Step = 1,
    granularity: _tree.Granularity = "tensor",
    unit_axis: int | None = None,
    eps: float = DEFAULT_EPS,
    retraction: Retraction = "exact",
    rule: Rule | None = None,
    auto_freeze: AutoFreeze | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""``optax.named_chain(*steps, (name, constrain_norms(mask, ...)))``,
  with its state checked.

  The form :func:`lawn`, :func:`weight_rescaling` and :func:`max_norm` are
  built in: the base optimizer's steps, then the constraint, each keyed by
  its name in the state (so ``state['lawn']`` is the constraint's state). The
  update is the chain's, nothing else: the same engine as
  :func:`constrain_norms` in any chain, bit for bit (tested with Adam,
  SGD-momentum, LAMB and clipped AdamW, per tensor, per unit, periodic and
  with a traced start). A state of another shape (a swapped or foreign state)
  raises an error naming the keys expected.

  Cost: see :func:`constrain_norms` (the exact retraction stores the update
  once and reads it twice, in both phases when gated). The cheaper route, no
  update-sized temporary, is ``retraction="projection"`` with
  :func:`project_norms` after ``optax.apply_updates``
  (``benchmarks/results/overhead.md``).

  [last-transform]

  Args:
    steps: ``(name, transformation)`` pairs of the base chain.
    name: the constraint's name in the state.
    mask: as in :func:`constrain_norms`; so are ``target``, ``start_step``,
      ``period``, ``granularity``, ``unit_axis``, ``eps``, ``retraction``,
      ``rule`` and ``auto_freeze``.

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
  c = _constraint.make(mask, target, start_step, period, granularity,
                       unit_axis, eps, retraction, rule, auto_freeze)
  steps = list(steps)
  names = [n for n, _ in steps]
  if name in names or len(set(names)) != len(names):
    raise ValueError(f"constrain_norms_after: the names of steps {names} and "
                     f"name {name!r} must all differ (they key the state).")
  chain = optax.named_chain(
      *steps, (name, optax.GradientTransformationExtraArgs(c.init, c.update)))
  return _tree.check_chain_state(chain, names + [name])


def _projections(state: Any, took_step: Any = True) -> list:
  """Every :class:`NormProjectionState` in ``state`` with whether the step
  it records was really taken: ``optax.MultiSteps`` keeps its inner state on
  accumulation steps (``mini_step != 0`` after them) and
  ``optax.apply_if_finite`` on rejected ones (``last_finite`` False); the
  weights did not move then, so they are not projected again."""
  if isinstance(state, NormProjectionState):
    return [(state, took_step)]
  if isinstance(state, optax.MultiStepsState):
    return _projections(state.inner_opt_state,
                        took_step & (state.mini_step == 0))
  if isinstance(state, optax.ApplyIfFiniteState):
    return _projections(state.inner_state,
                        took_step & jnp.asarray(state.last_finite, bool))
  children = jax.tree_util.tree_flatten(state, is_leaf=lambda x: x is not state)[0]
  if len(children) == 1 and children[0] is state:  # a leaf
    return []
  return [found for child in children
          for found in _projections(child, took_step)]


def project_norms(params: Any, opt_state: Any) -> Any:
  r"""Puts the constrained weights back on their norms, after
  ``optax.apply_updates``: the projection path of every norm method.

  The optimizer is built with ``retraction="projection"`` (``lawn``,
  ``lawn_adam`` / ``_sgd`` / ``_lamb``, ``fixnorm``, ``weight_rescaling``,
  ``max_norm``, ``constrain_norms``): its update is then the base
  optimizer's alone, plus the bookkeeping (the step count, the freeze step,
  the targets captured from the weights before the update, as the chain
  captures them). This function applies the method's rule to the new
  weights, in ``optax.projections``' idiom:

  .. math:: w \leftarrow k\, w, \qquad k = \mathrm{rule}(c, \|w\|)

  (LAWN, FixNorm, WRS: ``k = c / ||w||``; max-norm: ``min(1, c / ||w||)``),
  per tensor or per unit, on the steps where the method acts; the other
  steps and the unconstrained leaves come back bit for bit. The norm is of
  the weights as they are, so it holds to the rounding of the norm itself
  (the chain's additive update ``u' = k (w + u) - w`` is rounded again when
  ``apply_updates`` adds it back). It reads the new weights twice (the norm,
  then the rescale) and writes them once: inside a jitted step with donated
  params, XLA writes ``apply_updates`` and the rescale into the parameter
  buffer in place, as a hand-written ``w <- c w / ||w||`` does (no
  parameter-sized temporary: tested with XLA's memory analysis); the
  chain's exact retraction needs the update and the old weights for its
  norm before it can emit anything. Targets captured at a freeze step
  (LAWN, FixNorm) cost one more read of the weights per step: the update
  takes their norm on every step, with no branch, and keeps it on the
  capture step (a conditional that read the weights would make XLA:CPU
  copy them instead), as a hand-written LAWN with a ``where`` does
  (``benchmarks/results/overhead.md``: ``peer-capture``).

  Both norms are taken from the squares of the weights as they are, the
  arithmetic of a hand-written ``jnp.linalg.norm`` (XLA:CPU reduces them at
  twice the speed of squares scaled per element), so they are exact for
  norms from about 1e-15 to 1.8e19, float32's range of squares, per tensor
  or unit. Beyond it a norm reads NaN and the weights turn NaN from the
  freeze on, loudly, never silently unconstrained or rescaled by a wrong
  norm (the free phase leaves them bit for bit); the chain, whose squares
  are scaled by the target, holds any magnitude. A weight whose every entry
  is below about 1e-19 (its squares flush to zero) reads as norm 0 and is
  left where its update put it, as the rule treats a norm below
  ``norm_eps``.

  When to use which: the chain (the default) composes like any optax
  transform, holds norms of any magnitude, and code that only calls
  ``update`` and ``apply_updates`` needs nothing else; the projection
  holds the norms more tightly, and costs what a hand-written projection
  costs.

  Under ``optax.MultiSteps`` (accumulation steps) and
  ``optax.apply_if_finite`` (rejected steps) the weights did not move, and
  they come back bit for bit: the projection reads those wrappers' states.

  Args:
    params: the parameters after ``optax.apply_updates`` (the tree the
      optimizer updates; nnx ``Param`` state is accepted).
    opt_state: the optimizer's state (any nesting: ``chain``, ``masked``,
      ``inject_hyperparams``, ``MultiSteps``, ``apply_if_finite``); every
      :class:`NormProjectionState` in it is applied, in order.

  Returns:
    ``params`` with the constrained weights rescaled.

  Raises:
    ValueError: ``opt_state`` holds no constraint built with
      ``retraction="projection"``, or ``params`` is not the tree it was
      built for (the message names the paths).

  Example:
    >>> import jax, jax.numpy as jnp, optax, lawn_optax as lo
    >>> tx = lo.lawn_adam(0.1, free_steps=1, mask={'w': True},
    ...                   retraction='projection')
    >>> params = {'w': jnp.array([3.0, 4.0])}
    >>> state = tx.init(params)
    >>> @jax.jit
    ... def step(params, state, grads):
    ...   updates, state = tx.update(grads, state, params)
    ...   params = optax.apply_updates(params, updates)
    ...   return lo.project_norms(params, state), state
    >>> for _ in range(3):
    ...   params, state = step(params, state, {'w': jnp.array([1.0, -2.0])})
    >>> round(float(jnp.linalg.norm(params['w'])), 5)   # frozen at step 1
    5.02195

  References:
    ``optax.projections`` (projection_l2_sphere, projection_l2_ball): the
    same idiom, a function applied to the parameters after the update.
  """
  # nnx.Optimizer holds its state in Variables: the arrays inside count.
  found = _projections(_tree.unwrap_variables(opt_state))
  if not found:
    kinds = sorted({type(s).__name__ for s in jax.tree.leaves(
        opt_state, is_leaf=lambda x: isinstance(x, tuple) and hasattr(
            x, "_fields"))})
    raise ValueError(
        "project_norms: opt_state holds no norm constraint built with "
        "retraction='projection' (it holds "
        f"{', '.join(kinds) or 'no named state'}). Build the optimizer with "
        "it, e.g. lo.lawn_adam(..., retraction='projection'); an optimizer "
        "built with the default retraction already holds the norms in its "
        "update and needs no projection.")
  for i, (s, took_step) in enumerate(found):
    params = _constraint.project(params, s, f"norm constraint {i}",
                                 took_step)
  return params


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
    start_step: _tree.Step = 0,
    granularity: _tree.Granularity = "tensor",
    unit_axis: int | None = None,
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
  unit_axis = _tree.resolve_axis(unit_axis)

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
    active = (None if _gating.always_active(start_step, 1) else
              _gating.active(state.count, start_step, 1))
    coefs = _gating.gate(
        active,
        lambda ops: [radial_coefficient(wi, gi, granularity, unit_axis)
                     for wi, gi in zip(*ops)],
        lambda ops: [jnp.zeros(_constraint._norm_shape(wi, granularity, unit_axis),
                               jnp.float32) for wi in ops[0]], (ws, gs))
    if active is None:
      active = _gating.active(state.count, start_step, 1)
    projected = []
    for wi, gi, c in zip(ws, gs, coefs):
      dtype = _gating.compute_dtype(gi)
      radial = jnp.where(active, -c.astype(dtype) * wi.astype(dtype), -0.0)
      projected.append((gi.astype(dtype) + radial).astype(gi.dtype))
    return (jax.tree.unflatten(g_def, _gating.with_leaves(g, idx, projected)),
            TangentProjectionState(count=optax.safe_increment(state.count)))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
