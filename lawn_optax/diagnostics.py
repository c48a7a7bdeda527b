"""Read norms out of params and optimizer states."""

from __future__ import annotations

import warnings
from typing import Any

import jax

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


def weight_norms(params: Any, mask: _tree.MaskOrFn | None = None,
                 granularity: str = "tensor", unit_axis: int = -1) -> Any:
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
  sel = _tree.select(True if mask is None else mask, params,
                     granularity=granularity, unit_axis=unit_axis,
                     what="mask")
  leaves = sel.flatten(params, "params")
  return sel.unflatten(
      sel.map(lambda w: leaf_norm(w, granularity, unit_axis), leaves))


def norms(tree: Any, granularity: str = "tensor", unit_axis: int = -1) -> Any:
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
