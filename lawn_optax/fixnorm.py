"""FixNorm: no weight decay; fixed weight norms, final classifier included."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
import optax

from lawn_optax import _docs, _tree
from lawn_optax._constraint import Retraction
from lawn_optax.numerics import DEFAULT_EPS, leaf_norm
from lawn_optax.projection import constrain_norms


def _require_nonzero_init_norms(
    tx: optax.GradientTransformationExtraArgs, mask: _tree.MaskOrFn,
    granularity: _tree.Granularity, unit_axis: int, what: str
) -> optax.GradientTransformationExtraArgs:
  """Wraps ``tx`` so that ``init`` rejects a selected weight of norm zero."""

  def init_fn(params):
    sel = _tree.select(mask, params, granularity=granularity,
                       unit_axis=unit_axis, what=what)
    for path, w, f in zip(sel.paths, sel.flatten(params), sel.flags):
      if not f or isinstance(w, jax.core.Tracer):
        continue
      if np.any(np.asarray(leaf_norm(w, granularity, unit_axis)) == 0):
        raise ValueError(
            f"{what} weight '{path}' has norm zero at init (zero-initialised?):"
            " there is no norm to keep. Give the target explicitly"
            f"{' (classifier_norm=...)' if what == 'classifier_mask' else ' (radius=...)'}.")
    return tx.init(params)

  return optax.GradientTransformationExtraArgs(init_fn, tx.update)


@_docs.shared
def fixnorm(
    base_tx: optax.GradientTransformation,
    *,
    mask: _tree.MaskOrFn,
    classifier_mask: _tree.MaskOrFn | None = None,
    classifier_norm: Any = None,
    radius: Any = None,
    granularity: _tree.Granularity = "tensor",
    unit_axis: int | None = None,
    norm_eps: float = DEFAULT_EPS,
    retraction: Retraction = "exact",
) -> optax.GradientTransformationExtraArgs:
  r"""FixNorm: replace weight decay by fixed weight norms, from step 0 on.

  Kernels followed by a normalisation (``mask``) keep their norm at init (or
  ``radius``), which sets their effective learning rate directly (``η/r²``
  for SGD, ``η/r`` for Adam); the classifier (``classifier_mask``) keeps norm
  ``classifier_norm`` (α), an inverse softmax temperature that controls how
  close samples sit to the decision boundaries. Use no weight decay in
  ``base_tx``. Both constraints are :func:`~lawn_optax.constrain_norms`
  retractions after ``base_tx`` (state keys ``"base"``, ``"fixnorm"``,
  ``"classifier"``).

  [last-transform]

  Args:
    base_tx: the optimizer (SGD with momentum, Adam, ...), without decay.
    mask: the normalised-layer kernels.
    classifier_mask: the final classifier's kernel (optional).
    classifier_norm: α, a positive float (or pytree); ``None`` keeps the
      classifier's init norm (a zero-initialised head is then an error).
    radius: target norm(s) for ``mask``; ``None`` keeps the init norms.
    granularity: ``"tensor"`` or ``"unit"``.
    unit_axis: output axis for ``granularity="unit"`` (last axis for Flax).
    norm_eps: floor of the norm divided by in the retraction.
    retraction: ``"exact"``, ``"lazy"`` or ``"projection"`` (see
      :func:`lawn_optax.constrain_norms`).

  Returns:
    An ``optax.GradientTransformationExtraArgs``; ``update`` needs params.

  Example:
    >>> import jax.numpy as jnp, optax, lawn_optax as lo
    >>> params = {'conv': jnp.ones((3, 4)), 'head': jnp.ones((4, 2))}
    >>> tx = lo.fixnorm(optax.sgd(0.1, momentum=0.9), mask={'conv': True, 'head': False},
    ...                 classifier_mask={'conv': False, 'head': True}, classifier_norm=2.0)
    >>> state = tx.init(params)
    >>> u, state = tx.update(params, state, params)
    >>> new = optax.apply_updates(params, u)
    >>> round(float(jnp.linalg.norm(new['head'])), 5), round(float(jnp.linalg.norm(new['conv'])), 5)
    (2.0, 3.4641)

  References:
    Zhou, Sun, Zhong, `FixNorm: Dissecting Weight Decay for Training Deep
    Neural Networks <https://arxiv.org/abs/2103.15345>`_, 2021.
  """
  _tree.check_granularity(granularity)
  unit_axis = _tree.resolve_axis(unit_axis)
  common: dict[str, Any] = dict(granularity=granularity, unit_axis=unit_axis,
                                eps=norm_eps, retraction=retraction)
  body = constrain_norms(mask, target=radius, **common)
  if radius is None:
    body = _require_nonzero_init_norms(body, mask, granularity, unit_axis,
                                       "mask")
  steps = [("base", base_tx), ("fixnorm", body)]
  if classifier_mask is not None:
    head = constrain_norms(classifier_mask, target=classifier_norm, **common)
    if classifier_norm is None:
      head = _require_nonzero_init_norms(head, classifier_mask, granularity,
                                         unit_axis, "classifier_mask")
    steps.append(("classifier", head))
    return _disjoint(_tree.check_chain_state(optax.named_chain(*steps),
                                             [n for n, _ in steps]),
                     mask, classifier_mask)
  if classifier_norm is not None:
    raise ValueError("classifier_norm is given but classifier_mask is None.")
  return _tree.check_chain_state(optax.named_chain(*steps),
                                 [n for n, _ in steps])


def _disjoint(tx, mask, classifier_mask):
  def init_fn(params):
    a = _tree.broadcast_mask(mask, params)
    b = _tree.broadcast_mask(classifier_mask, params, "classifier_mask")
    paths, _, _ = _tree.flatten_with_paths(params)
    both = [p for p, x, y in zip(paths, a, b) if x and y]
    if both:
      raise ValueError(f"parameter '{both[0]}' is in both mask and "
                       "classifier_mask: it can keep only one norm.")
    return tx.init(params)
  return optax.GradientTransformationExtraArgs(init_fn, tx.update)


class Trial(NamedTuple):
  learning_rate: float
  classifier_norm: float
  score: float


def fixnorm_search(
    evaluate: Callable[[float, float], float],
    learning_rates: Sequence[float],
    classifier_norms: Sequence[float],
    *,
    default_classifier_norm: float | None = None,
) -> tuple[Trial, list[Trial]]:
  """FixNorm's quick hyper-parameter search: two 1-D sweeps, not a grid.

  With the weight norms fixed, the learning rate and the classifier norm α
  act almost independently (the first sets the effective step of the
  normalised layers, the second the logit scale), so a coordinate search
  finds a near-optimal pair in ``len(lrs) + len(alphas) - 1`` trials instead
  of ``len(lrs) * len(alphas)``:

  1. sweep ``learning_rates`` at α = ``default_classifier_norm`` (default:
     the middle of ``classifier_norms``);
  2. at the best learning rate, sweep the other ``classifier_norms``.

  Args:
    evaluate: ``(learning_rate, classifier_norm) -> validation score``
      (higher is better): trains a FixNorm model and scores it on a
      validation split carved from the training data.
    learning_rates: candidates, e.g. a log grid.
    classifier_norms: candidate α values, e.g. multiples of the init norm.
    default_classifier_norm: α used during the learning-rate sweep.

  Returns:
    ``(best trial, all trials in order)``.

  Example:
    >>> import lawn_optax as lo
    >>> score = lambda lr, a: -(lr - 0.1) ** 2 - (a - 4.0) ** 2
    >>> best, trials = lo.fixnorm_search(score, [0.01, 0.1, 1.0], [1.0, 2.0, 4.0, 8.0])
    >>> (best.learning_rate, best.classifier_norm, len(trials))
    (0.1, 4.0, 6)
  """
  if not learning_rates or not classifier_norms:
    raise ValueError("learning_rates and classifier_norms must be non-empty.")
  alpha0 = (default_classifier_norm if default_classifier_norm is not None
            else classifier_norms[(len(classifier_norms) - 1) // 2])
  trials = [Trial(lr, alpha0, float(evaluate(lr, alpha0)))
            for lr in learning_rates]
  best_lr = max(trials, key=lambda t: t.score).learning_rate
  trials += [Trial(best_lr, a, float(evaluate(best_lr, a)))
             for a in classifier_norms if a != alpha0]
  return max(trials, key=lambda t: t.score), trials
