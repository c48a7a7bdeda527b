"""LAWN: Logit Attenuating Weight Normalization, on any optax optimizer."""

from __future__ import annotations

from typing import Any

import optax

from lawn_optax import _tree
from lawn_optax.numerics import DEFAULT_EPS
from lawn_optax.projection import constrain_norms_after, project_to_tangent


def lawn(
    base_tx: optax.GradientTransformation,
    *,
    free_steps: Any,
    mask: _tree.MaskOrFn,
    granularity: str = "tensor",
    tangent_projection: bool = False,
    unit_axis: int = -1,
    norm_eps: float = DEFAULT_EPS,
    retraction: str = "exact",
) -> optax.GradientTransformationExtraArgs:
  r"""Stacks LAWN onto ``base_tx``: train freely, then freeze weight norms.

  Steps ``0 .. free_steps - 1`` are ``base_tx``'s steps (the same
  arithmetic on the same inputs; XLA may round the last bit differently, as
  between any two differently fused programs). At
  step ``free_steps`` the norm of every masked weight is frozen at its current
  value, and from then on each update is retracted so that every masked norm
  stays at its frozen value:

  .. math:: u' = c \frac{w + u}{\|w + u\|} - w

  Unmasked leaves always get ``base_tx``'s update unchanged (``False`` in the
  mask means *not constrained*, not frozen). LAWN uses no weight decay: give
  ``base_tx`` none. ``free_steps=0`` freezes the initial norms.

  With ``tangent_projection=True`` the gradient of each masked weight also
  loses its radial component before ``base_tx`` sees it, from step
  ``free_steps`` on, so momentum and Adam moments only accumulate directions
  that the constraint keeps.

  Defaults chosen by measurement (the paper is silent; MNIST-1D MLP, 3 seeds,
  batch 32 / 512 / 4000, ``benchmarks/results/generalization_mnist1d*.json``):
  retraction only vs tangent + retraction gave LAWN-Adam 81.4 / 77.1 / 74.5
  vs 80.1 / 77.0 / 74.6 % test accuracy and LAWN-SGDm 81.1 / 76.9 / 66.1 vs
  80.7 / 77.0 / 66.1 %, no gain for ~20-30 % more update time, so
  ``tangent_projection=False``. Per tensor vs per unit gave 81.4 / 77.1 / 74.5
  vs 80.4 / 77.3 / 74.2 (Adam) and 81.1 / 76.9 / 66.1 vs 81.3 / 76.4 / 65.8
  (SGDm): equal within the seed spread, so ``granularity="tensor"``, the
  paper's "weight norms of layers", with one scalar of state per weight.

  The result is :func:`lawn_optax.constrain_norms_after`: the state and
  results of ``optax.named_chain(("base", base_tx), ("lawn",
  constrain_norms(...)))``, with ``("tangent", ...)`` first when projecting,
  so ``state["base"]`` is the base optimizer's state and
  ``state["lawn"].targets`` the frozen norms (see also
  :func:`lawn_optax.frozen_norms`). With ``free_steps > 0`` (or traced) the
  free phase runs ``base_tx``'s step alone, and the constrained phase
  recomputes ``base_tx``'s update inside the gate for the norm rather than
  storing it (see there for the passes, and for when the plain chain is used
  instead); to store the update, build that chain yourself.

  Weights whose norm is exactly zero at the freeze step (e.g. a zero-initialised
  head with ``free_steps=0``) have nothing to freeze: they stay unconstrained,
  their frozen norm reads 0, and no NaN or Inf arises.

  Args:
    base_tx: any optax transformation (Adam, SGD, LAMB, a chain, ...).
    free_steps: number of unconstrained steps (>= 0). May be a traced int
      under ``optax.inject_hyperparams``.
    mask: pytree of bools with the params' structure (or a prefix), or a
      callable ``params -> mask``: the weights of the final homogeneous
      sub-network (see :mod:`lawn_optax.masks`).
    granularity: ``"tensor"`` (one Frobenius norm per weight, the paper's
      "weight norms of layers") or ``"unit"`` (one norm per output unit).
    tangent_projection: project gradients onto the tangent space of the norm
      sphere before ``base_tx`` (from ``free_steps`` on).
    unit_axis: output axis for ``granularity="unit"`` (last axis for Flax).
    norm_eps: floor of the norm divided by in the retraction (named apart
      from an optimizer's ``eps``).
    retraction: ``"exact"`` (default: norms held exactly) or ``"lazy"``
      (one fused pass dividing by the norm before the update; the norm is
      off by at most one update's relative size; see
      :func:`lawn_optax.constrain_norms`). Measured on a 24M-parameter MLP
      (2-core CPU, ``benchmarks/results/overhead.json``): LAWN-Adam's
      update+apply costs 1.93x Adam's with ``"exact"`` and 1.01x with
      ``"lazy"`` in the constrained phase (full train step 1.14x vs 1.02x),
      and the free phase is Adam's step in both. On MNIST-1D at the
      protocol's LAWN-Adam choices the test accuracy difference lazy - exact
      was +0.02 [-0.96, +1.00] points at batch 64 and -0.31 [-0.78, +0.16]
      at 2048 (5 seeds, paired;
      ``benchmarks/results/retraction_mnist1d.json``): no difference found,
      but exact stays the default because it keeps the norms LAWN freezes.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.

  Example:
    >>> import jax, jax.numpy as jnp, optax, lawn_optax as lo
    >>> params = {'kernel': jnp.ones((3, 2)), 'bias': jnp.zeros(2)}
    >>> tx = lo.lawn(optax.adam(0.1), free_steps=2,
    ...              mask={'kernel': True, 'bias': False})
    >>> state = tx.init(params)
    >>> for _ in range(5):
    ...   grads = jax.tree.map(jnp.ones_like, params)
    ...   updates, state = tx.update(grads, state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> frozen = lo.frozen_norms(state)['kernel']
    >>> bool(jnp.allclose(jnp.linalg.norm(params['kernel']), frozen))
    True

  References:
    Gupta et al., `LAWN: Logit Attenuating Weight Normalization
    <https://arxiv.org/abs/2108.05839>`_, 2021.
  """
  _tree.check_step(free_steps, "free_steps")
  _tree.check_granularity(granularity)
  common = dict(start_step=free_steps, granularity=granularity,
                unit_axis=unit_axis)
  steps = [("base", base_tx)]
  if tangent_projection:
    steps.insert(0, ("tangent", project_to_tangent(mask, **common)))
  return constrain_norms_after(steps, "lawn", mask, eps=norm_eps,
                               retraction=retraction, **common)


def lawn_adam(
    learning_rate: optax.ScalarOrSchedule,
    *,
    free_steps: Any,
    mask: _tree.MaskOrFn,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    nesterov: bool = False,
    granularity: str = "tensor",
    tangent_projection: bool = False,
    unit_axis: int = -1,
    retraction: str = "exact",
) -> optax.GradientTransformationExtraArgs:
  """LAWN on ``optax.adam`` (no weight decay).

  Args:
    learning_rate: a float or an optax schedule.
    free_steps: see :func:`lawn`; so are ``mask``, ``granularity``,
      ``tangent_projection``, ``unit_axis`` and ``retraction``.
    b1, b2, eps, eps_root, nesterov: as in ``optax.adam``.

  Returns:
    ``lawn(optax.adam(...), ...)``.

  Example:
    >>> import jax.numpy as jnp, lawn_optax as lo
    >>> tx = lo.lawn_adam(1e-3, free_steps=100, mask={'w': True})
    >>> state = tx.init({'w': jnp.ones((4, 4))})
    >>> sorted(state)
    ['base', 'lawn']

  References:
    Gupta et al., LAWN, arXiv:2108.05839; Kingma & Ba, Adam, 2014.
  """
  base = optax.adam(learning_rate, b1=b1, b2=b2, eps=eps, eps_root=eps_root,
                    nesterov=nesterov)
  return lawn(base, free_steps=free_steps, mask=mask, granularity=granularity,
              tangent_projection=tangent_projection, unit_axis=unit_axis,
              retraction=retraction)


def lawn_sgd(
    learning_rate: optax.ScalarOrSchedule,
    *,
    free_steps: Any,
    mask: _tree.MaskOrFn,
    momentum: float | None = None,
    nesterov: bool = False,
    granularity: str = "tensor",
    tangent_projection: bool = False,
    unit_axis: int = -1,
    retraction: str = "exact",
) -> optax.GradientTransformationExtraArgs:
  """LAWN on ``optax.sgd`` (heavy-ball or Nesterov momentum, no weight decay).

  Args:
    learning_rate: a float or an optax schedule.
    free_steps: see :func:`lawn`; so are ``mask``, ``granularity``,
      ``tangent_projection``, ``unit_axis`` and ``retraction``.
    momentum, nesterov: as in ``optax.sgd``.

  Returns:
    ``lawn(optax.sgd(...), ...)``.

  Example:
    >>> import jax.numpy as jnp, lawn_optax as lo
    >>> tx = lo.lawn_sgd(0.1, free_steps=10, mask={'w': True}, momentum=0.9)
    >>> params = {'w': jnp.ones((2, 2))}
    >>> u, _ = tx.update({'w': jnp.ones((2, 2))}, tx.init(params), params)
    >>> u['w'].tolist()
    [[-0.10000000149011612, -0.10000000149011612], [-0.10000000149011612, -0.10000000149011612]]

  References:
    Gupta et al., LAWN, arXiv:2108.05839.
  """
  base = optax.sgd(learning_rate, momentum=momentum, nesterov=nesterov)
  return lawn(base, free_steps=free_steps, mask=mask, granularity=granularity,
              tangent_projection=tangent_projection, unit_axis=unit_axis,
              retraction=retraction)


def lawn_lamb(
    learning_rate: optax.ScalarOrSchedule,
    *,
    free_steps: Any,
    mask: _tree.MaskOrFn,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    eps_root: float = 0.0,
    granularity: str = "tensor",
    tangent_projection: bool = False,
    unit_axis: int = -1,
    retraction: str = "exact",
) -> optax.GradientTransformationExtraArgs:
  """LAWN on ``optax.lamb`` with its weight decay at 0 (LAWN replaces it).

  Args:
    learning_rate: a float or an optax schedule.
    free_steps: see :func:`lawn`; so are ``mask``, ``granularity``,
      ``tangent_projection``, ``unit_axis`` and ``retraction``.
    b1, b2, eps, eps_root: as in ``optax.lamb``.

  Returns:
    ``lawn(optax.lamb(..., weight_decay=0.0), ...)``.

  Example:
    >>> import jax.numpy as jnp, lawn_optax as lo
    >>> tx = lo.lawn_lamb(1e-3, free_steps=0, mask=lambda p: {'w': True})
    >>> _ = tx.init({'w': jnp.ones(3)})

  References:
    Gupta et al., LAWN, arXiv:2108.05839; You et al., LAMB, arXiv:1904.00962.
  """
  base = optax.lamb(learning_rate, b1=b1, b2=b2, eps=eps, eps_root=eps_root,
                    weight_decay=0.0)
  return lawn(base, free_steps=free_steps, mask=mask, granularity=granularity,
              tangent_projection=tangent_projection, unit_axis=unit_axis,
              retraction=retraction)
