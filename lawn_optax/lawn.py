"""LAWN: Logit Attenuating Weight Normalization, on any optax optimizer."""

from __future__ import annotations

import inspect
from typing import Any, Literal

import jax
import optax

from lawn_optax import _docs, _tree
from lawn_optax._constraint import Retraction
from lawn_optax.autofreeze import AutoFreeze
from lawn_optax.numerics import DEFAULT_EPS
from lawn_optax.projection import constrain_norms_after, project_to_tangent

# An int, an int32 scalar (traced under inject_hyperparams), "auto", or the
# auto rule's settings.
FreeSteps = int | jax.Array | Literal["auto"] | AutoFreeze


@_docs.shared
def lawn(
    base_tx: optax.GradientTransformation,
    *,
    free_steps: FreeSteps,
    mask: _tree.MaskOrFn,
    granularity: _tree.Granularity = "tensor",
    tangent_projection: bool = False,
    unit_axis: int | None = None,
    norm_eps: float = DEFAULT_EPS,
    retraction: Retraction = "exact",
) -> optax.GradientTransformationExtraArgs:
  r"""Stacks LAWN onto ``base_tx``: train freely, then freeze weight norms.

  Steps ``0 .. free_steps - 1`` are ``base_tx``'s steps (the same
  arithmetic on the same inputs; XLA may round the last bit differently, as
  between any two differently fused programs). At
  step ``free_steps`` the norm of every masked weight is frozen at its current
  value, and from then on each update is retracted so that every masked norm
  stays at its frozen value:

  .. math:: u' = c \frac{w + u}{\|w + u\|} - w

  Unmasked leaves always get ``base_tx``'s update unchanged (``False`` in
  the mask means *not constrained*, not frozen). ``free_steps=0`` freezes
  the initial norms; ``free_steps="auto"`` lets training decide
  (:mod:`lawn_optax.autofreeze`: the freeze comes when the constrained
  weights' norm stops growing fast; :func:`lawn_optax.frozen_at` says when).
  Steps are real updates: under ``optax.MultiSteps`` a step is an update
  that applies the accumulated gradient, not a micro-batch.

  Weight decay: LAWN replaces decay on the constrained weights. Decay that
  ``base_tx`` applies to them acts as usual before the freeze; after it,
  the retraction restores the frozen norm, so the decay no longer shrinks
  those weights (it only enlarges the step's relative size slightly). To
  decay the other weights only (LAWN-AdamW in the benchmarks), give
  ``base_tx`` a decay mask that excludes the constrained ones, e.g.
  ``optax.adamw(lr, mask=lambda p: not_constrained(p))``.

  With ``tangent_projection=True`` the gradient of each masked weight also
  loses its radial component before ``base_tx`` sees it, from step
  ``free_steps`` on, so momentum and Adam moments only accumulate directions
  that the constraint keeps.

  The defaults (``tangent_projection=False``, ``granularity="tensor"``,
  ``retraction="exact"``) were chosen by measurement; the measurements, and
  what each option costs per step on each device, are on the docs' results
  page (generated from ``benchmarks/results``), not here.

  The result is :func:`lawn_optax.constrain_norms_after`: the state and
  results of ``optax.named_chain(("base", base_tx), ("lawn",
  constrain_norms(...)))``, with ``("tangent", ...)`` first when projecting,
  so ``state["base"]`` is the base optimizer's state and
  ``state["lawn"].targets`` the frozen norms (see also
  :func:`lawn_optax.frozen_norms`). With a gate (``free_steps > 0``, traced
  or ``"auto"``) the free phase passes ``base_tx``'s update through; the
  retraction's reductions run only in the constrained phase.

  [last-transform]

  Weights whose norm is exactly zero at the freeze step (e.g. a zero-initialised
  head with ``free_steps=0``) have nothing to freeze: they stay unconstrained,
  their frozen norm reads 0, and no NaN or Inf arises.

  Args:
    base_tx: any optax transformation (Adam, SGD, LAMB, a chain, ...).
    free_steps: number of unconstrained updates (>= 0; a traced int under
      ``optax.inject_hyperparams``, which may change during the run: the
      norms are frozen on the first constrained step), ``"auto"``, or a
      :class:`lawn_optax.AutoFreeze` (the rule's settings).
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
      :func:`lawn_optax.constrain_norms`), or ``"projection"`` (the update
      is the base optimizer's; call :func:`lawn_optax.project_norms` after
      ``optax.apply_updates``: the cheapest, see there).

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
  start, auto = _free_steps(free_steps)
  _tree.check_granularity(granularity)
  unit_axis = _tree.resolve_axis(unit_axis)
  common = dict(start_step=start, granularity=granularity,
                unit_axis=unit_axis)
  steps = [("base", base_tx)]
  if tangent_projection:
    if auto is not None:
      raise ValueError(
          "tangent_projection=True needs a numeric free_steps: the tangent "
          "projection acts before the base optimizer, before the "
          "free_steps='auto' rule has decided.")
    steps.insert(0, ("tangent", project_to_tangent(mask, **common)))
  return constrain_norms_after(steps, "lawn", mask, eps=norm_eps,
                               retraction=retraction, auto_freeze=auto,
                               **common)


def _lawn_args(namespace: dict[str, Any]) -> dict[str, Any]:
  """The keyword arguments of :func:`lawn` taken from a wrapper's
  ``locals()``: every one is forwarded (tests/test_api.py checks that each
  wrapper has them all, with ``lawn``'s defaults)."""
  return {k: namespace[k] for k in inspect.signature(lawn).parameters
          if k != "base_tx"}


def _free_steps(free_steps: Any) -> tuple[Any, AutoFreeze | None]:
  """(the step that freezes at the latest, the auto rule or None)."""
  if isinstance(free_steps, str):
    if free_steps != "auto":
      raise ValueError(f"free_steps must be an integer, 'auto' or a "
                       f"lawn_optax.AutoFreeze, got {free_steps!r}.")
    free_steps = AutoFreeze()
  if isinstance(free_steps, AutoFreeze):
    latest = free_steps.latest
    if latest is None:
      return _tree.INT32_MAX, free_steps
    _tree.check_step(latest, "AutoFreeze.latest")
    return latest, free_steps
  _tree.check_step(free_steps, "free_steps")
  return free_steps, None


@_docs.shared
def lawn_adam(
    learning_rate: optax.ScalarOrSchedule,
    *,
    free_steps: FreeSteps,
    mask: _tree.MaskOrFn,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    nesterov: bool = False,
    granularity: _tree.Granularity = "tensor",
    tangent_projection: bool = False,
    unit_axis: int | None = None,
    norm_eps: float = DEFAULT_EPS,
    retraction: Retraction = "exact",
) -> optax.GradientTransformationExtraArgs:
  """LAWN on ``optax.adam`` (no weight decay).

  [lawn-wrapper]

  [last-transform]

  Args:
    learning_rate: a float or an optax schedule.
    free_steps: as in :func:`lawn`; so are ``mask``, ``granularity``,
      ``tangent_projection``, ``unit_axis``, ``norm_eps`` and
      ``retraction``.
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
  return lawn(base, **_lawn_args(locals()))


@_docs.shared
def lawn_sgd(
    learning_rate: optax.ScalarOrSchedule,
    *,
    free_steps: FreeSteps,
    mask: _tree.MaskOrFn,
    momentum: float | None = None,
    nesterov: bool = False,
    granularity: _tree.Granularity = "tensor",
    tangent_projection: bool = False,
    unit_axis: int | None = None,
    norm_eps: float = DEFAULT_EPS,
    retraction: Retraction = "exact",
) -> optax.GradientTransformationExtraArgs:
  """LAWN on ``optax.sgd`` (heavy-ball or Nesterov momentum, no weight decay).

  [lawn-wrapper]

  [last-transform]

  Args:
    learning_rate: a float or an optax schedule.
    free_steps: as in :func:`lawn`; so are ``mask``, ``granularity``,
      ``tangent_projection``, ``unit_axis``, ``norm_eps`` and
      ``retraction``.
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
  return lawn(base, **_lawn_args(locals()))


@_docs.shared
def lawn_lamb(
    learning_rate: optax.ScalarOrSchedule,
    *,
    free_steps: FreeSteps,
    mask: _tree.MaskOrFn,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    eps_root: float = 0.0,
    granularity: _tree.Granularity = "tensor",
    tangent_projection: bool = False,
    unit_axis: int | None = None,
    norm_eps: float = DEFAULT_EPS,
    retraction: Retraction = "exact",
) -> optax.GradientTransformationExtraArgs:
  """LAWN on ``optax.lamb`` with its weight decay at 0 (LAWN replaces it).

  [lawn-wrapper]

  [last-transform]

  Args:
    learning_rate: a float or an optax schedule.
    free_steps: as in :func:`lawn`; so are ``mask``, ``granularity``,
      ``tangent_projection``, ``unit_axis``, ``norm_eps`` and
      ``retraction``.
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
  return lawn(base, **_lawn_args(locals()))
