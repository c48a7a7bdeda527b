"""Max-norm: keep each weight's norm at most a bound (shrink only).

The proof that a new method is one module: :func:`max_norm` is
:func:`lawn_optax.constrain_norms_after` with its own rule,
:func:`shrink_scale` (CONTRIBUTING.md).

Example:
  >>> import jax.numpy as jnp, optax, lawn_optax as lo
  >>> tx = lo.max_norm(optax.adam(1e-2), max_value=3.0, mask={'w': True})
  >>> sorted(tx.init({'w': jnp.ones((2, 2))}))
  ['base', 'max_norm']
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from lawn_optax import _tree
from lawn_optax._constraint import Retraction
from lawn_optax.numerics import DEFAULT_EPS
from lawn_optax.projection import constrain_norms_after

# max_norm is re-exported as lawn_optax.max_norm.
__all__ = ["shrink_scale"]


def shrink_scale(target: jax.Array, norm: jax.Array,
                 eps: float = DEFAULT_EPS) -> jax.Array:
  """The max-norm rule: ``target / norm`` where ``norm > target``, else 1.

  Example:
    >>> import jax.numpy as jnp, lawn_optax as lo
    >>> lo.maxnorm.shrink_scale(jnp.array(2.0), jnp.array([1.0, 4.0])).tolist()
    [1.0, 0.5]
  """
  del eps  # a norm above a positive bound is never near zero
  over = (target > 0) & (norm > target)
  return jnp.where(over, target / jnp.where(over, norm, 1.0), 1.0)


def max_norm(
    base_tx: optax.GradientTransformation,
    *,
    max_value: Any,
    mask: _tree.MaskOrFn,
    granularity: _tree.Granularity = "unit",
    unit_axis: int | None = None,
    retraction: Retraction = "exact",
) -> optax.GradientTransformationExtraArgs:
  """Max-norm regularisation on any optax optimizer: after each update, a
  masked weight (per output unit by default, as Keras' ``MaxNorm``) whose
  norm exceeds ``max_value`` is scaled back to it; the others are left as
  the base optimizer moved them.

  It is :func:`lawn_optax.constrain_norms_after` with the rule
  :func:`shrink_scale` (state keys ``"base"``, ``"max_norm"``). Make it the
  last transform of a chain: anything after it changes the update it
  rescaled.

  Args:
    base_tx: the optimizer.
    max_value: the bound, a positive float or a pytree (prefix of the mask)
      of floats or arrays broadcastable to the norms' shape.
    mask: which weights are bounded (see :mod:`lawn_optax.masks`).
    granularity: ``"unit"`` (one norm per output unit) or ``"tensor"``.
    unit_axis: the output axis for ``granularity="unit"`` (last for Flax).
    retraction: ``"exact"`` (the norm after the update), ``"lazy"`` or
      ``"projection"`` (then :func:`lawn_optax.project_norms` shrinks the
      weights after ``optax.apply_updates``).

  Returns:
    An ``optax.GradientTransformationExtraArgs``; ``update`` needs params.

  Example:
    >>> import jax.numpy as jnp, optax, lawn_optax as lo
    >>> params = {'w': jnp.array([[3.0, 0.1], [4.0, 0.1]])}
    >>> tx = lo.max_norm(optax.sgd(0.0), max_value=2.0, mask={'w': True})
    >>> u, _ = tx.update({'w': jnp.zeros((2, 2))}, tx.init(params), params)
    >>> norms = jnp.linalg.norm(optax.apply_updates(params, u)['w'], axis=0)
    >>> [round(float(n), 4) for n in norms]   # unit 0 shrunk, unit 1 left
    [2.0, 0.1414]

  References:
    Srivastava et al., `Dropout: A Simple Way to Prevent Neural Networks
    from Overfitting <https://jmlr.org/papers/v15/srivastava14a.html>`_,
    2014 (max-norm regularisation).
  """
  return constrain_norms_after(
      [("base", base_tx)], "max_norm", mask, target=max_value,
      granularity=granularity, unit_axis=unit_axis, retraction=retraction,
      rule=shrink_scale)
