"""Every method of the library, built one way for every cross-cutting test.

The composition battery (tests/test_composition.py), the checkpoint script
(tests/scripts/checkpoint_check.py) and the sharding script
(tests/scripts/sharding_check.py) read :data:`METHODS`; a new method that
registers here is checked by all of them, and ``test_registry.py`` fails
for a public factory that no entry uses. A method whose factory takes
``retraction=`` registers with ``projection=True``: its projection-path
twin (``retraction="projection"`` plus ``lo.project_norms``) is derived and
checked by all of them too, and ``test_project_norms.py`` compares the two
paths' trajectories. Params are Flax-style
``{"Dense_i": {"kernel", "bias"}}`` trees; ``mask`` is their kernels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import optax

import lawn_optax as lo

FREE = 2  # LAWN's free steps: the scripts' 3 steps reach the constrained phase


class Method(NamedTuple):
  name: str
  # (learning_rate, mask[, retraction="exact"]) -> the transformation
  factory: Callable[..., optax.GradientTransformation]
  # invariant(params_before, params_after, state, step, rtol) raises if broken.
  invariant: Callable[[Any, Any, Any, int, float], None]
  learning_rate: float = 0.05
  uses: tuple[str, ...] = ()  # the public factories it exercises
  # Built with retraction="projection": every caller applies
  # lo.project_norms after optax.apply_updates (see apply()).
  projected: bool = False
  # The factory takes retraction=: its projection-path twin is derived
  # (projection_twin) and runs every check the method runs.
  projection: bool = False


def apply(method, params, updates, state):
  """``optax.apply_updates``, then :func:`lawn_optax.project_norms` for a
  method on the projection path: how every cross-cutting test steps."""
  new = optax.apply_updates(params, updates)
  return lo.project_norms(new, state) if method.projected else new


def kernels(params):
  return {k: {"kernel": True, "bias": False} for k in params}


def head(params):
  last = max(params, key=lambda k: int(k.split("_")[1]))
  return {k: {"kernel": k == last, "bias": False} for k in params}


def body(params):
  last = max(params, key=lambda k: int(k.split("_")[1]))
  return {k: {"kernel": k != last, "bias": False} for k in params}


def frozen_norms_held(granularity, rtol_floor=0.0):
  """After the freeze (``frozen_at``), the masked norms equal the frozen
  ones."""
  def invariant(before, after, state, step, rtol):
    if int(lo.frozen_at(state)) < 0:
      return
    got = lo.weight_norms(after, kernels, granularity)
    chex.assert_trees_all_close(got, lo.frozen_norms(state),
                                rtol=max(rtol, rtol_floor), atol=0)
  return invariant


def norms_equal_targets(granularity, every=1, mask=kernels):
  def invariant(before, after, state, step, rtol):
    if step % every:
      return
    got = lo.weight_norms(after, mask, granularity)
    chex.assert_trees_all_close(got, lo.frozen_norms(state), rtol=rtol, atol=0)
  return invariant


def below_max_norm(limit):
  def invariant(before, after, state, step, rtol):
    got = lo.weight_norms(after, kernels, "unit")
    for n in jax_leaves(got):
      assert float(n.max()) <= limit * (1 + rtol), float(n.max())
  return invariant


def finite(before, after, state, step, rtol):
  chex.assert_tree_all_finite(after)


def jax_leaves(tree):
  import jax
  return [x for x in jax.tree.leaves(tree,
                                     is_leaf=lambda x: isinstance(
                                         x, optax.MaskedNode))
          if not isinstance(x, optax.MaskedNode)]


_METHODS = [
    Method("lawn_adam",
           lambda learning_rate, mask, retraction="exact": lo.lawn_adam(
               learning_rate, free_steps=FREE, mask=mask,
               retraction=retraction),
           frozen_norms_held("tensor"), 1e-2, ("lawn_adam", "lawn",
                                               "constrain_norms_after"),
           projection=True),
    Method("lawn_sgd_unit_tangent",
           lambda learning_rate, mask, retraction="exact": lo.lawn_sgd(
               learning_rate, free_steps=FREE, mask=mask, momentum=0.9,
               nesterov=True, granularity="unit", tangent_projection=True,
               retraction=retraction),
           frozen_norms_held("unit"), 0.1, ("lawn_sgd", "project_to_tangent"),
           projection=True),
    Method("lawn_lamb", lambda learning_rate, mask: lo.lawn_lamb(
        learning_rate, free_steps=FREE, mask=mask),
           frozen_norms_held("tensor"), 1e-2, ("lawn_lamb",)),
    # The lazy retraction keeps each norm within one update's relative size
    # of its frozen value (bound tested in test_lawn.py): 2 % at this rate.
    Method("lawn_adam_lazy", lambda learning_rate, mask: lo.lawn_adam(
        learning_rate, free_steps=FREE, mask=mask, retraction="lazy"),
           frozen_norms_held("tensor", 2e-2), 1e-2, ("lawn_adam",)),
    # free_steps="auto" with a rule that decides within a few steps.
    Method("lawn_adam_auto", lambda learning_rate, mask: lo.lawn_adam(
        learning_rate, mask=mask,
        free_steps=lo.AutoFreeze(threshold=0.95, every=1)),
           frozen_norms_held("tensor"), 1e-2, ("lawn_adam", "AutoFreeze")),
    Method("constrain_norms", lambda learning_rate, mask: optax.chain(
        optax.sgd(learning_rate, momentum=0.9), lo.constrain_norms(mask)),
           norms_equal_targets("tensor"), 0.1, ("constrain_norms",)),
    Method("fixnorm",
           lambda learning_rate, mask, retraction="exact": lo.fixnorm(
               optax.sgd(learning_rate, momentum=0.9), mask=body,
               classifier_mask=head, classifier_norm=2.0,
               retraction=retraction),
           norms_equal_targets("tensor"), 0.1, ("fixnorm",), projection=True),
    Method("wrs",
           lambda learning_rate, mask, retraction="exact": lo.weight_rescaling(
               optax.adam(learning_rate), mask=mask, period=2,
               retraction=retraction),
           norms_equal_targets("unit", every=2), 1e-2,
           ("weight_rescaling",), projection=True),
    Method("max_norm",
           lambda learning_rate, mask, retraction="exact": lo.max_norm(
               optax.adam(learning_rate), max_value=1.0, mask=mask,
               retraction=retraction),
           below_max_norm(1.0), 0.05, ("max_norm",), projection=True),
    Method("cblr_secant", lambda learning_rate, mask: lo.cblr(
        learning_rate, mask=mask, max_scale=10.0),
           finite, 0.05, ("cblr", "scale_by_curvature_lr",
                          "scale_by_secant_curvature")),
    Method("mclr", lambda learning_rate, mask: lo.mclr(
        learning_rate, mask=mask), finite, 0.05, ("mclr",)),
    Method("lars", lambda learning_rate, mask: lo.paper_lars(
        learning_rate, weight_decay=1e-3, trust_coefficient=0.01, mask=mask),
           finite, 1.0, ("paper_lars", "scale_by_grad_weight_ratio")),
]


def projection_twin(method: Method) -> Method:
  """``method`` on the projection path: built with
  ``retraction="projection"``, stepped with ``lo.project_norms``; the same
  invariant."""
  base = method.factory

  # (learning_rate, mask) exactly: inject_hyperparams reads the signature.
  def factory(learning_rate, mask):
    return base(learning_rate, mask, retraction="projection")

  return method._replace(name=method.name + "_projection", factory=factory,
                         uses=method.uses + ("project_norms",),
                         projected=True, projection=False)


# Every method, then the projection path of those that hold norms.
METHODS = _METHODS + [projection_twin(m) for m in _METHODS if m.projection]


# Public factories no cross-cutting test builds on purpose, and why.
EXEMPT = {
    "lars": "deprecated alias of paper_lars",
    "scale_by_hutchinson_curvature": "needs update(..., obj_fn=...); tested "
                                     "in test_curvature.py",
    "fixnorm_search": "a search loop, not a transformation",
    "batch_size_schedule": "a schedule for optax.MultiSteps",
}

BY_NAME = {m.name: m for m in METHODS}
