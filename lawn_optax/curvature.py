"""CBLR / MCLR: per-layer learning rates from curvature estimates (LARS is one).

Each layer (params leaf) ``l`` gets the update scale
``trust_coefficient / c_l`` from a curvature estimate ``c_l``, one optax
transform per estimator (:func:`scale_by_grad_weight_ratio`,
:func:`scale_by_secant_curvature`, :func:`scale_by_hutchinson_curvature`;
:func:`scale_by_curvature_lr` for a :class:`CurvatureEstimator` of your
own). With ``c_l = (||g_l|| + β||w_l||) / ||w_l||`` (the first) this is
exactly LARS's local learning rate, the "special case" of the CBLR paper.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

from lawn_optax import _docs, _gating, _tree
from lawn_optax.numerics import leaf_norm, safe_div

REDUCTIONS = ("norm", "median")
Reduction = Literal["norm", "median"]


class CurvatureLRState(NamedTuple):
  """State of :func:`scale_by_curvature_lr`.

  Attributes:
    count: int32 ``[]``.
    curvature: float32 ``[]`` per scaled leaf (the smoothed estimate;
      ``MaskedNode`` elsewhere; NaN until the first estimate).
    estimator: the estimator's own state (:class:`SecantState`,
      :class:`HutchinsonState`, or ``optax.EmptyState()``).

  Example:
    >>> import jax.numpy as jnp, lawn_optax as lo
    >>> tx = lo.scale_by_secant_curvature()
    >>> p = {'w': jnp.ones(3)}
    >>> _, s = tx.update({'w': jnp.ones(3)}, tx.init(p), p)
    >>> int(s.count), bool(jnp.isnan(s.curvature['w']))  # no step yet to difference
    (1, True)
  """
  count: Any  # int32 []
  curvature: Any
  estimator: Any


class CurvatureEstimator(NamedTuple):
  """The protocol of a per-layer curvature estimate ``c_l``, for
  :func:`scale_by_curvature_lr`.

  ``init(params) -> state``; ``estimate(grads, state, params, count,
  **extra_args) -> (curvature, state)``, where ``curvature`` has the
  structure of ``params`` with one float32 ``[]`` per leaf (NaN where there
  is no estimate this step: the previous one is kept) and ``extra_args``
  are those ``update`` received. Every leaf is passed, those the ``mask``
  leaves out too (give them any scalar: an estimator must not fail on an
  empty or integer leaf); the transform reads the leaves its ``mask``
  selects (under ``jit`` XLA drops the rest).
  ``smoothed``: EMA the estimates (``ema_decay``); ``weight_decay`` (LARS's
  β) is added to the update as ``β w``.

  Example:
    >>> import jax, jax.numpy as jnp, optax, lawn_optax as lo
    >>> grad_norm = lo.CurvatureEstimator(       # c_l = ||g_l||
    ...     init=lambda params: optax.EmptyState(),
    ...     estimate=lambda g, state, params, count, **extra: (
    ...         jax.tree.map(jnp.linalg.norm, g), state))
    >>> tx = lo.scale_by_curvature_lr(grad_norm)
    >>> p = {'w': jnp.ones(2)}
    >>> tx.update({'w': jnp.array([0.0, 2.0])}, tx.init(p), p)[0]['w'].tolist()
    [0.0, 1.0]
  """
  init: Callable[[Any], Any]
  estimate: Callable[..., tuple[Any, Any]]
  smoothed: bool = True
  weight_decay: Any = 0.0


def _median(x):
  # NaN marks entries without an estimate (w_i == 0, Δw_i == 0); an empty
  # leaf (one the mask leaves out, say) has none at all.
  if x.size == 0:
    return jnp.full([], jnp.nan, jnp.float32)
  return jnp.nanmedian(x.ravel())


def _layer_estimate(num, den, reduction):
  """``||num|| / ||den||`` per layer, or the median of ``|num_i| / |den_i|``."""
  if reduction == "norm":
    return safe_div(leaf_norm(num), leaf_norm(den), jnp.nan)
  num, den = num.astype(jnp.float32), den.astype(jnp.float32)
  return _median(safe_div(jnp.abs(num), jnp.abs(den), jnp.nan))


def _check_reduction(reduction: str) -> None:
  if reduction not in REDUCTIONS:
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got "
                     f"{reduction!r}.")


def _grad_weight_ratio(reduction: Reduction,
                       weight_decay: Any) -> CurvatureEstimator:
  """``(||g|| + β||w||) / ||w||`` per layer: no state, no smoothing."""
  _check_reduction(reduction)

  def estimate(grads, state, params, count, **extra_args):
    del count, extra_args
    # LARS: (||g|| + β||w||) / ||w|| = ||g||/||w|| + β.
    return jax.tree.map(lambda g, w: _layer_estimate(g, w, reduction)
                        + weight_decay, grads, params), state

  return CurvatureEstimator(lambda params: optax.EmptyState(), estimate,
                            smoothed=False, weight_decay=weight_decay)


class SecantState(NamedTuple):
  """The secant estimator's memory: the previous gradients and params.

  Example:
    >>> import jax.numpy as jnp, lawn_optax as lo
    >>> lo.SecantState(prev_grads={'w': jnp.zeros(2)},
    ...                prev_params={'w': jnp.ones(2)}).prev_params['w'].tolist()
    [1.0, 1.0]
  """
  prev_grads: Any
  prev_params: Any


def _secant(reduction: Reduction) -> CurvatureEstimator:
  """``||g_t - g_{t-1}|| / ||w_t - w_{t-1}||`` per layer (NaN on the first
  step, which has no difference)."""
  _check_reduction(reduction)

  def init(params):
    return SecantState(optax.tree.zeros_like(params), params)

  def estimate(grads, state, params, count, **extra_args):
    del extra_args
    raw = jax.tree.map(lambda g, pg, w, pw: jnp.where(
        count == 0, jnp.nan, _layer_estimate(g - pg, w - pw, reduction)),
                       grads, state.prev_grads, params, state.prev_params)
    return raw, SecantState(grads, params)

  return CurvatureEstimator(init, estimate)


class HutchinsonState(NamedTuple):
  """The Hutchinson estimator's PRNG key.

  Example:
    >>> import jax, lawn_optax as lo
    >>> lo.HutchinsonState(key=jax.random.PRNGKey(0)).key.shape
    (2,)
  """
  key: Any


def _hutchinson(reduction: Reduction, every: int,
                seed: int) -> CurvatureEstimator:
  """``mean |v ⊙ Hv|`` (or its median) per layer with Rademacher ``v``,
  every ``every`` steps (NaN between); needs the extra argument
  ``obj_fn``."""
  _check_reduction(reduction)
  _tree.check_step(every, "every", minimum=1)

  def estimate(grads, state, params, count, obj_fn=None, **extra_args):
    del grads, extra_args
    if obj_fn is None:
      raise ValueError("scale_by_hutchinson_curvature needs update(..., "
                       "obj_fn=params -> loss).")
    key, sub = jax.random.split(state.key)

    def hvp_diagonal():
      leaves, treedef = jax.tree.flatten(params)
      keys = jax.random.split(sub, len(leaves))
      v = jax.tree.unflatten(treedef, [
          jax.random.rademacher(k, x.shape, x.dtype)
          for k, x in zip(keys, leaves)])
      hv = jax.jvp(jax.grad(obj_fn), (params,), (v,))[1]
      reduce = _median if reduction == "median" else jnp.mean
      return jax.tree.map(
          lambda vi, hvi: reduce(jnp.abs((vi * hvi).astype(jnp.float32))),
          v, hv)

    nans = lambda: jax.tree.map(
        lambda _: jnp.full([], jnp.nan, jnp.float32), params)
    raw = _gating.cond(count % every == 0, hvp_diagonal, nans)
    return raw, HutchinsonState(key)

  return CurvatureEstimator(
      lambda params: HutchinsonState(jax.random.PRNGKey(seed)), estimate)


@_docs.shared
def scale_by_curvature_lr(
    estimator: CurvatureEstimator,
    *,
    relative_to: Literal["median"] | None = None,
    trust_coefficient: Any = 1.0,
    ema_decay: float = 0.9,
    min_scale: float = 0.0,
    max_scale: float = float("inf"),
    mask: _tree.MaskOrFn = True,
) -> optax.GradientTransformationExtraArgs:
  r"""Scales each layer's update by ``trust_coefficient / c_l``, ``c_l``
  from a :class:`CurvatureEstimator` of your own.

  The built-in estimators are transforms of their own, with their options:
  :func:`scale_by_grad_weight_ratio` (LARS), :func:`scale_by_secant_curvature`
  and :func:`scale_by_hutchinson_curvature`; this is the transform they all
  are. It smooths (the estimators that ask for it), normalises, clips and
  scales.

  [curvature-scale]

  Args:
    estimator: a :class:`CurvatureEstimator`.
    relative_to: ``None`` or ``"median"`` (across layers).
    trust_coefficient: numerator of the scale (LARS's η).
    ema_decay: smoothing of the estimates, for an estimator that is
      ``smoothed``.
    min_scale, max_scale: clipping of the scale.
    mask: which leaves get a per-layer scale (others pass through; like LARS,
      exclude biases and norm parameters).

  Returns:
    An ``optax.GradientTransformationExtraArgs``; ``update`` needs params.

  Example:
    >>> import jax, jax.numpy as jnp, optax, lawn_optax as lo
    >>> grad_norm = lo.CurvatureEstimator(       # c_l = ||g_l||
    ...     lambda params: optax.EmptyState(),
    ...     lambda g, state, params, count, **extra: (
    ...         jax.tree.map(jnp.linalg.norm, g), state))
    >>> tx = lo.scale_by_curvature_lr(grad_norm, trust_coefficient=2.0)
    >>> p = {'w': jnp.ones(2)}
    >>> tx.update({'w': jnp.array([0.0, 4.0])}, tx.init(p), p)[0]['w'].tolist()
    [0.0, 2.0]

  References:
    Gao & Zhong, `Study on the Large Batch Size Training of Neural Networks
    Based on the Second Order Gradient <https://arxiv.org/abs/2012.08795>`_,
    2020.
  """
  if not isinstance(estimator, CurvatureEstimator):
    raise ValueError(
        f"estimator must be a lawn_optax.CurvatureEstimator, got "
        f"{estimator!r}. The estimators named by a string are transforms "
        "since 0.3: lo.scale_by_grad_weight_ratio(...), "
        "lo.scale_by_secant_curvature(...), "
        "lo.scale_by_hutchinson_curvature(...).")
  if relative_to not in (None, "median"):
    raise ValueError(f"relative_to must be None or 'median', got "
                     f"{relative_to!r}.")
  if not 0.0 <= ema_decay < 1.0:
    raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}.")

  def init_fn(params):
    sel = _tree.select(mask, params, what="mask")
    w = sel.flatten(params, "params")
    nan = lambda _: jnp.full([], jnp.nan, jnp.float32)
    return CurvatureLRState(count=jnp.zeros([], jnp.int32),
                            curvature=sel.unflatten(sel.map(nan, w)),
                            estimator=estimator.init(params))

  def update_fn(updates, state, params=None, **extra_args):
    sel, w, g, g_def = _tree.select_update(mask, updates, params)
    old = sel.flatten(state.curvature, "state.curvature")
    estimates, est_state = estimator.estimate(
        updates, state.estimator, params, state.count, **extra_args)
    raw = sel.map(lambda r: r, sel.flatten(estimates, "the estimate"))
    curv = sel.map(lambda o, r: _smooth(o, r, ema_decay), old, raw) if (
        estimator.smoothed) else raw
    eff = _relative(sel, curv) if relative_to == "median" else curv
    new_g = [_scaled(gi, wi, ci, trust_coefficient, min_scale, max_scale,
                     estimator.weight_decay) if f else gi
             for f, gi, wi, ci in zip(sel.flags, g, w, eff)]
    new_state = CurvatureLRState(
        count=optax.safe_increment(state.count),
        curvature=sel.unflatten(sel.map(lambda c: c.astype(jnp.float32),
                                        curv)),
        estimator=est_state)
    return jax.tree.unflatten(g_def, new_g), new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


@_docs.shared
def scale_by_grad_weight_ratio(
    *, trust_coefficient: Any = 1.0, weight_decay: Any = 0.0,
    reduction: Reduction = "norm",
    relative_to: Literal["median"] | None = None,
    min_scale: float = 0.0, max_scale: float = float("inf"),
    mask: _tree.MaskOrFn = True) -> optax.GradientTransformationExtraArgs:
  """Per-layer scale from ``c_l = (||g|| + β||w||) / ||w||``: the LARS
  limit (no state, no smoothing).

  With ``weight_decay=β > 0`` the output is ``scale * (g + β w)``, as in the
  LARS paper. (``optax.lars`` uses ``||g + β w||`` instead of ``||g|| +
  β||w||``; the two agree when β = 0.)

  [curvature-scale]

  Args:
    trust_coefficient: numerator of the scale (LARS's η).
    weight_decay: β, in the estimate and added to the update as ``β w``.
    reduction: ``"norm"`` or ``"median"`` (within a layer).
    relative_to, min_scale, max_scale, mask: see
      :func:`scale_by_curvature_lr`.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; ``update`` needs params.

  Example:
    >>> import jax.numpy as jnp, lawn_optax as lo
    >>> tx = lo.scale_by_grad_weight_ratio()
    >>> p, g = {'w': jnp.array([3.0, 4.0])}, {'w': jnp.array([0.0, 0.5])}
    >>> tx.update(g, tx.init(p), p)[0]['w'].tolist()  # ||w|| / ||g|| = 10
    [0.0, 5.0]

  References:
    You, Gitman, Ginsburg, `Large Batch Training of Convolutional Networks
    <https://arxiv.org/abs/1708.03888>`_, 2017.
  """
  return scale_by_curvature_lr(
      _grad_weight_ratio(reduction, weight_decay), relative_to=relative_to,
      trust_coefficient=trust_coefficient, min_scale=min_scale,
      max_scale=max_scale, mask=mask)


@_docs.shared
def scale_by_secant_curvature(
    *, trust_coefficient: Any = 1.0, ema_decay: float = 0.9,
    reduction: Reduction = "norm",
    relative_to: Literal["median"] | None = None,
    min_scale: float = 0.0, max_scale: float = float("inf"),
    mask: _tree.MaskOrFn = True) -> optax.GradientTransformationExtraArgs:
  """Per-layer scale from an EMA of ``||g_t - g_{t-1}|| / ||w_t -
  w_{t-1}||``: a finite-difference curvature along the last step.

  Keeps the previous gradients and params in the state (parameter-sized:
  :class:`SecantState`). Until the first difference exists the scale is 1.

  [curvature-scale]

  Args:
    trust_coefficient: numerator of the scale.
    ema_decay: smoothing of the estimates.
    reduction: ``"norm"`` or ``"median"`` (within a layer).
    relative_to, min_scale, max_scale, mask: see
      :func:`scale_by_curvature_lr`.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; ``update`` needs params.

  Example:
    >>> import jax.numpy as jnp, lawn_optax as lo
    >>> tx = lo.scale_by_secant_curvature()
    >>> p = {'w': jnp.array([3.0, 4.0])}
    >>> u, s = tx.update({'w': jnp.ones(2)}, tx.init(p), p)  # no step yet
    >>> u['w'].tolist()
    [1.0, 1.0]

  References:
    Gao & Zhong, arXiv:2012.08795, 2020.
  """
  return scale_by_curvature_lr(
      _secant(reduction), relative_to=relative_to,
      trust_coefficient=trust_coefficient, ema_decay=ema_decay,
      min_scale=min_scale, max_scale=max_scale, mask=mask)


@_docs.shared
def scale_by_hutchinson_curvature(
    *, trust_coefficient: Any = 1.0, ema_decay: float = 0.9, every: int = 10,
    reduction: Reduction = "norm",
    relative_to: Literal["median"] | None = None,
    min_scale: float = 0.0, max_scale: float = float("inf"),
    mask: _tree.MaskOrFn = True, seed: int = 0
) -> optax.GradientTransformationExtraArgs:
  """Per-layer scale from ``mean |v ⊙ Hv|`` with Rademacher ``v``: the
  Hutchinson estimate of the Hessian diagonal, every ``every`` steps.

  ``update`` needs the extra argument ``obj_fn`` (params -> loss), as in
  ``optax.contrib.sophia``. The estimate is EMA-smoothed and kept between
  recomputations (:class:`HutchinsonState` holds the PRNG key).

  [curvature-scale]

  Args:
    trust_coefficient: numerator of the scale.
    ema_decay: smoothing of the estimates.
    every: recomputation period (steps).
    reduction: ``"norm"`` (the mean of ``|v ⊙ Hv|``) or ``"median"``.
    relative_to, min_scale, max_scale, mask: see
      :func:`scale_by_curvature_lr`.
    seed: PRNG seed of the probe vectors.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; ``update`` needs params
    and ``obj_fn``.

  Example:
    >>> import jax.numpy as jnp, lawn_optax as lo
    >>> tx = lo.scale_by_hutchinson_curvature(trust_coefficient=2.0)
    >>> p = {'w': jnp.array([3.0, 4.0])}
    >>> loss = lambda q: jnp.sum(q['w'] ** 2)   # Hessian 2 I: scale 2 / 2
    >>> u, _ = tx.update({'w': jnp.ones(2)}, tx.init(p), p, obj_fn=loss)
    >>> u['w'].tolist()
    [1.0, 1.0]

  References:
    Gao & Zhong, arXiv:2012.08795, 2020.
  """
  return scale_by_curvature_lr(
      _hutchinson(reduction, every, seed), relative_to=relative_to,
      trust_coefficient=trust_coefficient, ema_decay=ema_decay,
      min_scale=min_scale, max_scale=max_scale, mask=mask)


def _smooth(old, new, ema_decay):
  """EMA of the fresh (finite, positive) estimates; the old one otherwise."""
  fresh = jnp.isfinite(new) & (new > 0)
  blended = jnp.where(jnp.isfinite(old), ema_decay * old +
                      (1 - ema_decay) * new, new)
  return jnp.where(fresh, blended, old)


def _relative(sel, curv):
  """Every estimate over the median of the positive ones (MCLR)."""
  vals = jnp.stack([c for c in curv if not _tree.is_masked_node(c)])
  med = jnp.nanmedian(jnp.where(vals > 0, vals, jnp.nan))
  return sel.map(lambda c: c / med, curv)


def _scaled(gi, wi, ci, trust_coefficient, min_scale, max_scale,
            weight_decay):
  # Zero, negative, NaN or infinite curvature: leave the layer's step alone.
  s = safe_div(trust_coefficient, jnp.where(jnp.isfinite(ci), ci, 0.0), 1.0)
  s = jnp.clip(s, min_scale, max_scale)
  if not (isinstance(weight_decay, (int, float)) and weight_decay == 0):
    gi = gi + weight_decay * wi
  return (gi * s).astype(gi.dtype)


Curvature = Callable[..., optax.GradientTransformationExtraArgs]


def _curvature_step(curvature: Curvature, kwargs: dict[str, Any],
                    caller: str) -> optax.GradientTransformationExtraArgs:
  """``curvature(**kwargs)``, with a clear error for the arguments of 0.3."""
  if "estimator" in kwargs:
    raise ValueError(
        f"{caller}(estimator=...) was removed in 0.3: pass the estimator's "
        "transform factory, curvature=lo.scale_by_secant_curvature (or "
        "lo.scale_by_grad_weight_ratio, lo.scale_by_hutchinson_curvature), "
        "and its options as keywords.")
  if isinstance(curvature, optax.GradientTransformation) or not callable(
      curvature):
    raise ValueError(
        f"{caller}: curvature must be a factory such as "
        f"lo.scale_by_secant_curvature (its options go to {caller} as "
        f"keywords), got {curvature!r}.")
  return curvature(**kwargs)


def cblr(
    learning_rate: optax.ScalarOrSchedule,
    *,
    curvature: Curvature = scale_by_secant_curvature,
    momentum: float | None = 0.9,
    nesterov: bool = False,
    **curvature_kwargs: Any,
) -> optax.GradientTransformationExtraArgs:
  """CBLR: SGD with momentum and per-layer learning rates ``η / c_l``.

  ``chain(curvature(**curvature_kwargs), scale_by_learning_rate(η),
  trace(momentum))``, the layout of LARS; with
  ``curvature=lo.scale_by_grad_weight_ratio`` and
  ``trust_coefficient=η_trust`` it *is* LARS (paper-faithful trust ratio
  ``||w|| / (||g|| + β||w||)``: :func:`paper_lars`).

  Args:
    learning_rate: global η (float or schedule).
    curvature: the per-layer scale's factory: :func:`scale_by_secant_curvature`,
      :func:`scale_by_grad_weight_ratio`,
      :func:`scale_by_hutchinson_curvature`, or
      ``functools.partial(lo.scale_by_curvature_lr, estimator)`` for a
      :class:`CurvatureEstimator` of your own.
    momentum: heavy-ball momentum (``None`` for none).
    nesterov: Nesterov momentum.
    **curvature_kwargs: ``curvature``'s options (``trust_coefficient``,
      ``reduction``, ``mask``, ...).

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Example:
    >>> import jax.numpy as jnp, lawn_optax as lo
    >>> tx = lo.cblr(0.1, curvature=lo.scale_by_grad_weight_ratio)
    >>> p = {'w': jnp.array([3.0, 4.0])}
    >>> u, _ = tx.update({'w': jnp.array([0.0, 0.5])}, tx.init(p), p)
    >>> float(u['w'][1])   # -lr * (||w|| / ||g||) * g
    -0.5

  References:
    Gao & Zhong, arXiv:2012.08795, 2020.
  """
  return _with_learning_rate(
      _curvature_step(curvature, curvature_kwargs, "cblr"), learning_rate,
      momentum, nesterov)


def _with_learning_rate(scale: optax.GradientTransformationExtraArgs,
                        learning_rate: optax.ScalarOrSchedule,
                        momentum: float | None, nesterov: bool = False
                        ) -> optax.GradientTransformationExtraArgs:
  """LARS's layout: the per-layer scale, the global rate, then momentum."""
  steps = [scale, optax.scale_by_learning_rate(learning_rate)]
  if momentum is not None:
    steps.append(optax.trace(decay=momentum, nesterov=nesterov))
  return optax.chain(*steps)


def mclr(
    learning_rate: optax.ScalarOrSchedule,
    *,
    curvature: Curvature = scale_by_secant_curvature,
    within_layer_median: bool = False,
    momentum: float | None = 0.9,
    **curvature_kwargs: Any,
) -> optax.GradientTransformationExtraArgs:
  """MCLR: median-curvature learning rates, ``η_l = η · median_k(c_k) / c_l``.

  The alias normalises by the median curvature *across layers*
  (``relative_to="median"``), so η is the step of a layer of median
  curvature and flatter (sharper) layers get proportionally more (less).
  ``within_layer_median=True`` also takes each layer's estimate as the median
  of its element-wise ratios instead of a ratio of norms.

  Args:
    learning_rate: η for a layer of median curvature.
    curvature: the per-layer scale's factory, as in :func:`cblr`.
    within_layer_median: ``reduction="median"`` too.
    momentum: heavy-ball momentum (``None`` for none).
    **curvature_kwargs: ``curvature``'s other options (``mask``, ...).

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Example:
    >>> import jax.numpy as jnp, lawn_optax as lo
    >>> tx = lo.mclr(0.1, curvature=lo.scale_by_grad_weight_ratio,
    ...              momentum=None)
    >>> p = {'a': jnp.ones(4), 'b': jnp.ones(4)}
    >>> g = {'a': 0.1 * jnp.ones(4), 'b': 0.3 * jnp.ones(4)}
    >>> u, _ = tx.update(g, tx.init(p), p)   # median curvature 0.2
    >>> [round(float(u[k][0]), 4) for k in 'ab']
    [-0.02, -0.02]

  References:
    Gao & Zhong, arXiv:2012.08795, 2020.
  """
  scale = _curvature_step(curvature, dict(
      curvature_kwargs, reduction="median" if within_layer_median else "norm",
      relative_to="median"), "mclr")
  return _with_learning_rate(scale, learning_rate, momentum)


def paper_lars(
    learning_rate: optax.ScalarOrSchedule,
    *,
    weight_decay: Any = 0.0,
    trust_coefficient: Any = 0.001,
    momentum: float | None = 0.9,
    nesterov: bool = False,
    mask: _tree.MaskOrFn = True,
) -> optax.GradientTransformationExtraArgs:
  """LARS with the paper's trust ratio ``η_trust ||w|| / (||g|| + β||w||)``.

  ``optax.lars`` divides by ``||g + β w||`` instead; the two coincide when
  ``weight_decay=0``. This is :func:`cblr` with
  :func:`scale_by_grad_weight_ratio`. (Named apart from ``optax.lars``;
  ``lawn_optax.lars`` is a deprecated alias.)

  Args:
    learning_rate: global learning rate γ.
    weight_decay: β.
    trust_coefficient: η_trust.
    momentum, nesterov: heavy-ball momentum on ``γ λ (g + β w)``.
    mask: which leaves get the trust ratio (others: plain momentum SGD).

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Example:
    >>> import jax.numpy as jnp, lawn_optax as lo
    >>> tx = lo.paper_lars(1.0, trust_coefficient=0.1, momentum=None)
    >>> p = {'w': jnp.array([3.0, 4.0])}
    >>> u, _ = tx.update({'w': jnp.array([0.0, 0.5])}, tx.init(p), p)
    >>> float(u['w'][1])   # -0.1 * ||w|| / ||g|| * g
    -0.5

  References:
    You, Gitman, Ginsburg, arXiv:1708.03888, 2017.
  """
  return cblr(learning_rate, curvature=scale_by_grad_weight_ratio,
              trust_coefficient=trust_coefficient, weight_decay=weight_decay,
              momentum=momentum, nesterov=nesterov, mask=mask)


def lars(*args: Any, **kwargs: Any) -> optax.GradientTransformationExtraArgs:
  """Deprecated alias of :func:`paper_lars` (it shadowed ``optax.lars``).

  Example:
    >>> import warnings, lawn_optax as lo
    >>> with warnings.catch_warnings(record=True) as w:
    ...   warnings.simplefilter("always")
    ...   _ = lo.lars(1.0)
    >>> w[0].category.__name__
    'DeprecationWarning'
  """
  warnings.warn("lawn_optax.lars is renamed paper_lars (it differs from "
                "optax.lars when weight_decay > 0).", DeprecationWarning,
                stacklevel=2)
  return paper_lars(*args, **kwargs)
