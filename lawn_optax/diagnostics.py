"""Read norms out of params and optimizer states."""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lawn_optax import _tree
from lawn_optax.numerics import leaf_norm
from lawn_optax.projection import NormConstraintState


def _is_constraint(x: Any) -> bool:
  return isinstance(x, NormConstraintState)


def frozen_norms(opt_state: Any) -> Any:
  """The target norms held in a (possibly nested) optimizer state, or None.

  Looks through ``chain`` / ``named_chain`` / ``masked`` /
  ``inject_hyperparams`` / ``MultiSteps`` / ``apply_if_finite`` states (any
  pytree) for :class:`~lawn_optax.NormConstraintState`. With one such state its
  ``targets`` are returned: the params' tree with float32 norms on constrained
  leaves and ``optax.MaskedNode`` elsewhere. Several states over the same
  params (FixNorm's body and classifier) are merged leaf by leaf, the first
  state winning where both constrain a leaf. Before LAWN's freeze step the
  targets read 0.

  Args:
    opt_state: any optimizer state.

  Returns:
    The targets tree, a tuple of trees if the states' trees differ, or None if
    the state holds no norm constraint.

  Example:
    >>> import jax.numpy as jnp, optax, lawn_optax as lo
    >>> tx = lo.lawn(optax.sgd(0.1), free_steps=0, mask={'w': True})
    >>> params = {'w': jnp.array([3.0, 4.0])}
    >>> _, state = tx.update({'w': jnp.zeros(2)}, tx.init(params), params)
    >>> float(lo.frozen_norms(state)['w'])
    5.0
  """
  found = [s.targets for s in jax.tree.leaves(opt_state, is_leaf=_is_constraint)
           if _is_constraint(s)]
  if not found:
    return None
  flat = [jax.tree.flatten(t, is_leaf=_tree.is_masked_node) for t in found]
  if any(d != flat[0][1] for _, d in flat):  # type: ignore[operator]
    return tuple(found)
  merged = [next((x for x in xs if not _tree.is_masked_node(x)), xs[0])
            for xs in zip(*(leaves for leaves, _ in flat))]
  return jax.tree.unflatten(flat[0][1], merged)


def frozen_at(opt_state: Any) -> jax.Array | None:
  """The step on which the norm constraint in ``opt_state`` first acted
  (LAWN: the freeze step), -1 before it, or None if the state holds no norm
  constraint. With several constraints (FixNorm's body and classifier), the
  earliest.

  Example:
    >>> import jax.numpy as jnp, optax, lawn_optax as lo
    >>> tx = lo.lawn_sgd(0.1, free_steps=1, mask={'w': True})
    >>> params = {'w': jnp.array([3.0, 4.0])}
    >>> state = tx.init(params)
    >>> int(lo.frozen_at(state))
    -1
    >>> for _ in range(2):
    ...   _, state = tx.update({'w': jnp.ones(2)}, state, params)
    >>> int(lo.frozen_at(state))
    1
  """
  found = [s.frozen_at for s in
           jax.tree.leaves(opt_state, is_leaf=_is_constraint)
           if _is_constraint(s)]
  if not found:
    return None
  steps = jnp.stack(found)
  return jnp.where(jnp.all(steps < 0), -1,
                   jnp.min(jnp.where(steps < 0, jnp.iinfo(jnp.int32).max,
                                     steps)))


class NormReport(NamedTuple):
  """What :func:`check_norms` found: the relative drift ``|‖w‖ - c| / c``
  of every constrained leaf with a frozen norm ``c`` (path -> largest drift
  over its units), the largest, and whether it is within ``rtol``.

  Example:
    >>> import lawn_optax as lo
    >>> r = lo.NormReport({'Dense_0/kernel': 2e-7}, 2e-7, 1e-4)
    >>> r.ok
    True
    >>> r
    NormReport: largest drift 2e-07 (within rtol=0.0001)
      Dense_0/kernel  2e-07
  """
  drift: dict[str, float]
  max_drift: float
  rtol: float

  @property
  def ok(self) -> bool:
    return self.max_drift <= self.rtol

  def __repr__(self) -> str:
    if not self.drift:
      return "NormReport: no frozen norm yet"
    head = (f"NormReport: largest drift {self.max_drift:.3g} "
            f"({'within' if self.ok else 'above'} rtol={self.rtol:g})")
    width = max(map(len, self.drift))
    rows = [f"  {p:<{width}}  {d:.3g}{'' if d <= self.rtol else '  <- drifted'}"
            for p, d in self.drift.items()]
    if not self.ok:
      rows.append("  A transform after the norm constraint (clipping, "
                  "scaling, another optimizer) changes the updates it "
                  "retracted: put the constraint last in the chain.")
    return "\n".join([head] + rows)


def check_norms(params: Any, opt_state: Any, *, rtol: float = 1e-4
                ) -> NormReport:
  """Compares the norms of ``params`` with the frozen norms in ``opt_state``.

  LAWN, FixNorm and WRS retract the update they receive so that the weight
  lands on its frozen norm; a transform placed *after* them in a chain
  (``optax.clip_by_global_norm``, a scaling, a second optimizer) changes
  that update and the norm drifts, silently. Call this now and then (it is
  eager: one norm per constrained leaf) to see it. Leaves without a frozen
  norm yet (before LAWN's freeze, or a zero norm) are skipped; WRS
  constrains only every ``period`` steps, so check it right after one.

  Args:
    params: the params after ``optax.apply_updates``.
    opt_state: the optimizer state (any nesting).
    rtol: the relative drift tolerated (float32 rounding is ~1e-7 per step).

  Returns:
    A :class:`NormReport` (``.ok``, ``.max_drift``, ``.drift`` per path).

  Example:
    >>> import jax.numpy as jnp, optax, lawn_optax as lo
    >>> params = {'w': jnp.array([3.0, 4.0])}
    >>> tx = optax.chain(lo.lawn_sgd(1.0, free_steps=0, mask={'w': True}),
    ...                  optax.scale(0.5))   # wrong: after the constraint
    >>> u, state = tx.update({'w': jnp.ones(2)}, tx.init(params), params)
    >>> lo.check_norms(optax.apply_updates(params, u), state).ok
    False
  """
  targets = frozen_norms(opt_state)
  if targets is None:
    raise ValueError("opt_state holds no norm constraint (LAWN, FixNorm, "
                     "WRS or constrain_norms).")
  trees = targets if isinstance(targets, tuple) else (targets,)
  p_paths, p_leaves, _ = _tree.flatten_with_paths(params)
  table = dict(zip(p_paths, p_leaves))
  drift: dict[str, float] = {}
  for tree in trees:
    paths, leaves, _ = _tree.flatten_with_paths(tree)
    for path, t in zip(paths, leaves):
      if _tree.is_masked_node(t) or path not in table:
        continue
      t = np.asarray(t, np.float64)
      w = np.asarray(table[path], np.float64)
      axes = tuple(a for a in range(w.ndim) if t.ndim and t.shape[a] == 1)
      n = np.sqrt(np.sum(w * w, axis=axes if t.ndim else None,
                         keepdims=bool(t.ndim)))
      held = t > 0
      if np.any(held):
        drift[path] = float(np.max(np.abs(n - t)[held] / t[held]))
  return NormReport(drift, max(drift.values(), default=0.0), rtol)


def weight_norms(params: Any, mask: _tree.MaskOrFn | None = None,
                 granularity: _tree.Granularity = "tensor", unit_axis: int = -1) -> Any:
  """Float32 norms of the (masked) weights, for logging and plots.

  Args:
    params: a params pytree (linen dict, ``nnx.State``, ...).
    mask: as in :func:`lawn_optax.lawn`; ``None`` norms every leaf.
    granularity: ``"tensor"`` or ``"unit"`` (per output unit, keepdims).
    unit_axis: the output axis for ``granularity="unit"``.

  Returns:
    The params' tree with norms on selected leaves and ``optax.MaskedNode``
    elsewhere.

  Example:
    >>> import jax.numpy as jnp, lawn_optax as lo
    >>> n = lo.weight_norms({'a': jnp.array([3.0, 4.0]), 'b': jnp.ones(2)},
    ...                     {'a': True, 'b': False})
    >>> float(n['a'])
    5.0
  """
  unit_axis = _tree.resolve_axis(unit_axis)
  sel = _tree.select(True if mask is None else mask, params,
                     granularity=granularity, unit_axis=unit_axis,
                     what="mask")
  leaves = sel.flatten(params, "params")
  return sel.unflatten(
      sel.map(lambda w: leaf_norm(w, granularity, unit_axis), leaves))


def norms(tree: Any, granularity: _tree.Granularity = "tensor", unit_axis: int = -1) -> Any:
  """Deprecated: :func:`weight_norms` with no mask (one norms function).

  Example:
    >>> import warnings, jax.numpy as jnp, lawn_optax as lo
    >>> with warnings.catch_warnings():
    ...   warnings.simplefilter("ignore")
    ...   n = lo.norms({'w': jnp.array([[3.0, 0.0], [4.0, 1.0]])}, 'unit')
    >>> n['w'].tolist()
    [[5.0, 1.0]]
  """
  warnings.warn("lawn_optax.norms is deprecated: use weight_norms(tree, "
                "granularity=...).", DeprecationWarning, stacklevel=2)
  return weight_norms(tree, None, granularity, unit_axis)
