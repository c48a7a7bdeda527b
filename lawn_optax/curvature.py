"""CBLR / MCLR: per-layer learning rates from curvature estimates (LARS is one).

Each layer (params leaf) ``l`` gets the update scale
``trust_coefficient / c_l`` from a curvature estimate ``c_l``; with the
``"grad_weight_ratio"`` estimator ``c_l = (||g_l|| + β||w_l||) / ||w_l||`` this
is exactly LARS's local learning rate, the "special case" of the CBLR paper.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

from lawn_optax import _gating, _tree
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
    >>> tx = lo.scale_by_curvature_lr("secant")
    >>> p = {'w': jnp.ones(3)}
    >>> _, s = tx.update({'w': jnp.ones(3)}, tx.init(p), p)
    >>> int(s.count), bool(jnp.isnan(s.curvature['w']))  # no step yet to difference
    (1, True)
  """
  count: Any  # int32 []
  curvature: Any
  estimator: Any


class CurvatureEstimator(NamedTuple):
  """A per-layer curvature estimate, as a small transform of its own.

  ``init(params, sel) -> state``; ``estimate(grads, state, params, sel,
  count, **extra_args) -> (raw, state)`` where ``raw`` is one float32
  ``[]`` per leaf of ``sel`` (``MaskedNode`` where ``sel`` does not scale;
  NaN where there is no estimate this step: the previous one is kept).
  ``sel`` is the :class:`lawn_optax._tree.Selection` of scaled leaves.
  :func:`scale_by_curvature_lr` smooths (when ``smoothed``), clips and
  scales; ``weight_decay`` (LARS's β) is added to the update as ``β w``.

  Example:
    >>> import jax.numpy as jnp, lawn_optax as lo
    >>> est = lo.secant_estimator()
    >>> tx = lo.scale_by_curvature_lr(est)
    >>> type(tx.init({'w': jnp.ones(2)}).estimator).__name__
    'SecantState'
  """
  name: str
  init: Callable[..., Any]
  estimate: Callable[..., tuple[list, Any]]
  smoothed: bool = True
  weight_decay: Any = 0.0


def _median(x):
  # NaN marks entries without an estimate (w_i == 0, Δw_i == 0).
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


def grad_weight_ratio_estimator(reduction: Reduction = "norm",
                                weight_decay: Any = 0.0
                                ) -> CurvatureEstimator:
  """``c_l = (||g|| + β||w||) / ||w||``: the LARS limit (no state, no
  smoothing); β (``weight_decay``) is also added to the update, as in LARS.

  Example:
    >>> import jax.numpy as jnp, lawn_optax as lo
    >>> tx = lo.scale_by_curvature_lr(lo.grad_weight_ratio_estimator())
    >>> p, g = {'w': jnp.array([3.0, 4.0])}, {'w': jnp.array([0.0, 0.5])}
    >>> tx.update(g, tx.init(p), p)[0]['w'].tolist()
    [0.0, 5.0]
  """
  _check_reduction(reduction)

  def estimate(g_tree, state, w_tree, sel, count, **extra_args):
    del count, extra_args
    g, w = sel.flatten(g_tree), sel.flatten(w_tree)
    # LARS: (||g|| + β||w||) / ||w|| = ||g||/||w|| + β.
    return sel.map(lambda gi, wi: _layer_estimate(gi, wi, reduction)
                   + weight_decay, g, w), state

  return CurvatureEstimator("grad_weight_ratio",
                            lambda params, sel: optax.EmptyState(), estimate,
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


def secant_estimator(reduction: Reduction = "norm") -> CurvatureEstimator:
  """``||g_t - g_{t-1}|| / ||w_t - w_{t-1}||`` per layer: a finite-difference
  curvature along the last step (parameter-sized state; NaN on the first
  step, which has no difference).

  Example:
    >>> import jax.numpy as jnp, lawn_optax as lo
    >>> tx = lo.scale_by_curvature_lr(lo.secant_estimator())
    >>> p = {'w': jnp.array([3.0, 4.0])}
    >>> u, s = tx.update({'w': jnp.ones(2)}, tx.init(p), p)  # no step yet
    >>> u['w'].tolist()
    [1.0, 1.0]
  """
  _check_reduction(reduction)

  def init(params, sel):
    return SecantState(optax.tree.zeros_like(params), params)

  def estimate(g_tree, state, w_tree, sel, count, **extra_args):
    del extra_args
    g, w = sel.flatten(g_tree), sel.flatten(w_tree)
    pg = sel.flatten(state.prev_grads)
    pw = sel.flatten(state.prev_params)
    raw = sel.map(lambda gi, pgi, wi, pwi: jnp.where(
        count == 0, jnp.nan, _layer_estimate(gi - pgi, wi - pwi, reduction)),
                  g, pg, w, pw)
    return raw, SecantState(g_tree, w_tree)

  return CurvatureEstimator("secant", init, estimate)


class HutchinsonState(NamedTuple):
  """The Hutchinson estimator's PRNG key.

  Example:
    >>> import jax, lawn_optax as lo
    >>> lo.HutchinsonState(key=jax.random.PRNGKey(0)).key.shape
    (2,)
  """
  key: Any


def hutchinson_estimator(reduction: Reduction = "norm", every: int = 10,
                         seed: int = 0) -> CurvatureEstimator:
  """``mean |v ⊙ Hv|`` (or its median) with Rademacher ``v``: the
  Hutchinson estimate of the Hessian diagonal, every ``every`` steps (NaN
  between: the smoothed estimate is kept). ``update`` needs the extra
  argument ``obj_fn`` (params -> loss), as in ``optax.contrib.sophia``.

  Example:
    >>> import jax.numpy as jnp, lawn_optax as lo
    >>> tx = lo.scale_by_curvature_lr(lo.hutchinson_estimator(),
    ...                               trust_coefficient=2.0)
    >>> p = {'w': jnp.array([3.0, 4.0])}
    >>> loss = lambda q: jnp.sum(q['w'] ** 2)   # Hessian 2 I: scale 2 / 2
    >>> tx.update({'w': jnp.ones(2)}, tx.init(p), p, obj_fn=loss)[0]['w'].tolist()
    [1.0, 1.0]
  """
  _check_reduction(reduction)
  _tree.check_step(every, "hutchinson_every", minimum=1)

  def estimate(g, state, params, sel, count, obj_fn=None, **extra_args):
    del g, extra_args
    if obj_fn is None:
      raise ValueError("estimator='hutchinson' needs update(..., "
                       "obj_fn=params -> loss).")
    key, sub = jax.random.split(state.key)

    def hvp_diagonal():
      leaves, treedef = jax.tree.flatten(params)
      keys = jax.random.split(sub, len(leaves))
      v = jax.tree.unflatten(treedef, [
          jax.random.rademacher(k, x.shape, x.dtype)
          for k, x in zip(keys, leaves)])
      hv = jax.jvp(jax.grad(obj_fn), (params,), (v,))[1]
      d = sel.flatten(jax.tree.map(lambda a, b: a * b, v, hv))
      return sel.map(lambda di: (_median(jnp.abs(di.astype(jnp.float32)))
                                 if reduction == "median" else
                                 jnp.mean(jnp.abs(di.astype(jnp.float32)))),
                     d)

    nans = lambda: sel.map(lambda _: jnp.full([], jnp.nan, jnp.float32),
                           sel.flags)
    raw = _gating.cond(count % every == 0, hvp_diagonal, nans)
    return raw, HutchinsonState(key)

  return CurvatureEstimator(
      "hutchinson", lambda params, sel: HutchinsonState(
          jax.random.PRNGKey(seed)), estimate)


ESTIMATORS = {"grad_weight_ratio": grad_weight_ratio_estimator,
              "secant": secant_estimator,
              "hutchinson": hutchinson_estimator}


def _estimator(estimator: Any, reduction: Reduction, weight_decay: Any,
               hutchinson_every: int, seed: int) -> CurvatureEstimator:
  """A :class:`CurvatureEstimator` from the name or object given."""
  if isinstance(estimator, CurvatureEstimator):
    return estimator
  if estimator not in ESTIMATORS:
    raise ValueError(f"estimator must be one of {tuple(ESTIMATORS)} or a "
                     f"CurvatureEstimator, got {estimator!r}.")
  if estimator != "grad_weight_ratio" and not (
      isinstance(weight_decay, (int, float)) and weight_decay == 0):
    raise ValueError(
        f"weight_decay={weight_decay!r} is only used by the "
        f"'grad_weight_ratio' estimator; estimator={estimator!r} would ignore "
        "it. Add decay to the base optimizer instead (e.g. "
        "optax.add_decayed_weights).")
  if estimator == "grad_weight_ratio":
    return grad_weight_ratio_estimator(reduction, weight_decay)
  if estimator == "secant":
    return secant_estimator(reduction)
  return hutchinson_estimator(reduction, hutchinson_every, seed)


def scale_by_curvature_lr(
    estimator: str | CurvatureEstimator = "grad_weight_ratio",
    *,
    reduction: Reduction = "norm",
    relative_to: Literal["median"] | None = None,
    trust_coefficient: Any = 1.0,
    weight_decay: Any = 0.0,
    ema_decay: float = 0.9,
    hutchinson_every: int = 10,
    min_scale: float = 0.0,
    max_scale: float = float("inf"),
    mask: _tree.MaskOrFn = True,
    seed: int = 0,
) -> optax.GradientTransformationExtraArgs:
  r"""Scales each layer's update by ``trust_coefficient / c_l``.

  ``c_l`` comes from a curvature estimator (per params leaf), a
  :class:`CurvatureEstimator` or one of their names:

  * ``"grad_weight_ratio"`` (:func:`grad_weight_ratio_estimator`):
    ``(||g|| + β||w||) / ||w||`` -- the LARS limit; with ``weight_decay=β >
    0`` the output is ``scale * (g + β w)``, as in the LARS paper.
    (``optax.lars`` uses ``||g + β w||`` instead of ``||g|| + β||w||``; the
    two agree when β = 0.)
  * ``"secant"`` (:func:`secant_estimator`): EMA (``ema_decay``) of
    ``||g_t - g_{t-1}|| / ||w_t - w_{t-1}||``, a finite-difference curvature
    along the last step. Keeps the previous gradients and params in the
    state (parameter-sized). Until the first difference exists the scale
    is 1.
  * ``"hutchinson"`` (:func:`hutchinson_estimator`): ``mean |v ⊙ Hv|`` with
    Rademacher ``v``, the Hutchinson estimate of the Hessian diagonal,
    recomputed every ``hutchinson_every`` steps (EMA-smoothed). ``update``
    then needs the extra argument ``obj_fn`` (params -> loss), as in
    ``optax.contrib.sophia``.

  This transform only smooths (the estimators that ask for it), normalises,
  clips and scales. ``reduction="median"`` replaces the ratio of norms by
  the median of the element-wise ratios within the layer (MCLR's
  within-layer median; for Hutchinson the median of ``|v ⊙ Hv|``).
  ``relative_to="median"`` divides every ``c_l`` by the median over layers,
  so a layer of median curvature gets scale ``trust_coefficient`` (MCLR's
  across-layer normalisation).

  Guards: a zero, negative, NaN or infinite estimate (zero weights, no step
  yet) gives scale 1; scales are clipped to ``[min_scale, max_scale]``.

  Args:
    estimator: a :class:`CurvatureEstimator`, or ``"grad_weight_ratio"``,
      ``"secant"``, ``"hutchinson"``.
    reduction: ``"norm"`` or ``"median"`` (for an estimator given by name).
    relative_to: ``None`` or ``"median"`` (across layers).
    trust_coefficient: numerator of the scale (LARS's η).
    weight_decay: β, added to the update as ``β w`` (grad_weight_ratio only).
    ema_decay: smoothing of the secant and Hutchinson estimates.
    hutchinson_every: Hutchinson recomputation period (steps).
    min_scale, max_scale: clipping of the scale.
    mask: which leaves get a per-layer scale (others pass through; like LARS,
      exclude biases and norm parameters).
    seed: PRNG seed of the Hutchinson probe vectors.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; ``update`` needs params.

  Example:
    >>> import jax.numpy as jnp, lawn_optax as lo
    >>> tx = lo.scale_by_curvature_lr("grad_weight_ratio")
    >>> p, g = {'w': jnp.array([3.0, 4.0])}, {'w': jnp.array([0.0, 0.5])}
    >>> u, _ = tx.update(g, tx.init(p), p)   # scale ||w|| / ||g|| = 10
    >>> u['w'].tolist()
    [0.0, 5.0]

  References:
    Gao & Zhong, `Study on the Large Batch Size Training of Neural Networks
    Based on the Second Order Gradient <https://arxiv.org/abs/2012.08795>`_,
    2020; You, Gitman, Ginsburg, `Large Batch Training of Convolutional
    Networks <https://arxiv.org/abs/1708.03888>`_, 2017.
  """
  est = _estimator(estimator, reduction, weight_decay, hutchinson_every,
                   seed)
  if relative_to not in (None, "median"):
    raise ValueError(f"relative_to must be None or 'median', got "
                     f"{relative_to!r}.")
  if not 0.0 <= ema_decay < 1.0:
    raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}.")
  _tree.check_step(hutchinson_every, "hutchinson_every", minimum=1)

  def init_fn(params):
    sel = _tree.select(mask, params, what="mask")
    w = sel.flatten(params, "params")
    nan = lambda _: jnp.full([], jnp.nan, jnp.float32)
    return CurvatureLRState(count=jnp.zeros([], jnp.int32),
                            curvature=sel.unflatten(sel.map(nan, w)),
                            estimator=est.init(params, sel))

  def update_fn(updates, state, params=None, **extra_args):
    sel, w, g, g_def = _tree.select_update(mask, updates, params)
    old = sel.flatten(state.curvature, "state.curvature")
    raw, est_state = est.estimate(updates, state.estimator, params, sel,
                                  state.count, **extra_args)
    curv = sel.map(lambda o, r: _smooth(o, r, ema_decay), old, raw) if (
        est.smoothed) else raw
    eff = _relative(sel, curv) if relative_to == "median" else curv
    new_g = [_scaled(gi, wi, ci, trust_coefficient, min_scale, max_scale,
                     est.weight_decay) if f else gi
             for f, gi, wi, ci in zip(sel.flags, g, w, eff)]
    new_state = CurvatureLRState(
        count=optax.safe_increment(state.count),
        curvature=sel.unflatten(sel.map(lambda c: c.astype(jnp.float32),
                                        curv)),
        estimator=est_state)
    return jax.tree.unflatten(g_def, new_g), new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


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


def cblr(
    learning_rate: optax.ScalarOrSchedule,
    *,
    estimator: str = "secant",
    reduction: Reduction = "norm",
    trust_coefficient: Any = 1.0,
    weight_decay: Any = 0.0,
    momentum: float | None = 0.9,
    nesterov: bool = False,
    mask: _tree.MaskOrFn = True,
    **estimator_kwargs: Any,
) -> optax.GradientTransformationExtraArgs:
  """CBLR: SGD with momentum and per-layer learning rates ``η / c_l``.

  ``chain(scale_by_curvature_lr(...), scale_by_learning_rate(η),
  trace(momentum))``, the layout of LARS; with ``estimator=
  "grad_weight_ratio"`` and ``trust_coefficient=η_trust`` it *is* LARS
  (paper-faithful trust ratio ``||w|| / (||g|| + β||w||)``).

  Args:
    learning_rate: global η (float or schedule).
    estimator, reduction, trust_coefficient, weight_decay, mask: see
      :func:`scale_by_curvature_lr`.
    momentum: heavy-ball momentum (``None`` for none).
    nesterov: Nesterov momentum.
    **estimator_kwargs: more :func:`scale_by_curvature_lr` options.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Example:
    >>> import jax.numpy as jnp, lawn_optax as lo
    >>> tx = lo.cblr(0.1, estimator="grad_weight_ratio")
    >>> p = {'w': jnp.array([3.0, 4.0])}
    >>> u, _ = tx.update({'w': jnp.array([0.0, 0.5])}, tx.init(p), p)
    >>> float(u['w'][1])   # -lr * (||w|| / ||g||) * g
    -0.5

  References:
    Gao & Zhong, arXiv:2012.08795, 2020.
  """
  steps = [scale_by_curvature_lr(
      estimator, reduction=reduction, trust_coefficient=trust_coefficient,
      weight_decay=weight_decay, mask=mask, **estimator_kwargs),
           optax.scale_by_learning_rate(learning_rate)]
  if momentum is not None:
    steps.append(optax.trace(decay=momentum, nesterov=nesterov))
  return optax.chain(*steps)


def mclr(
    learning_rate: optax.ScalarOrSchedule,
    *,
    estimator: str = "secant",
    within_layer_median: bool = False,
    momentum: float | None = 0.9,
    mask: _tree.MaskOrFn = True,
    **kwargs: Any,
) -> optax.GradientTransformationExtraArgs:
  """MCLR: median-curvature learning rates, ``η_l = η · median_k(c_k) / c_l``.

  The alias normalises by the median curvature *across layers*
  (``relative_to="median"``), so η is the step of a layer of median
  curvature and flatter (sharper) layers get proportionally more (less).
  ``within_layer_median=True`` also takes each layer's estimate as the median
  of its element-wise ratios instead of a ratio of norms.

  Args:
    learning_rate: η for a layer of median curvature.
    estimator: see :func:`scale_by_curvature_lr`.
    within_layer_median: use ``reduction="median"`` too.
    momentum: heavy-ball momentum (``None`` for none).
    mask: which leaves get a per-layer rate.
    **kwargs: more :func:`cblr` / :func:`scale_by_curvature_lr` options.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Example:
    >>> import jax.numpy as jnp, lawn_optax as lo
    >>> tx = lo.mclr(0.1, estimator="grad_weight_ratio", momentum=None)
    >>> p = {'a': jnp.ones(4), 'b': jnp.ones(4)}
    >>> g = {'a': 0.1 * jnp.ones(4), 'b': 0.3 * jnp.ones(4)}
    >>> u, _ = tx.update(g, tx.init(p), p)   # median curvature 0.2
    >>> [round(float(u[k][0]), 4) for k in 'ab']
    [-0.02, -0.02]

  References:
    Gao & Zhong, arXiv:2012.08795, 2020.
  """
  return cblr(learning_rate, estimator=estimator,
              reduction="median" if within_layer_median else "norm",
              relative_to="median", momentum=momentum, mask=mask, **kwargs)


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
  ``weight_decay=0``. This is :func:`cblr` with the ``"grad_weight_ratio"``
  estimator. (Named apart from ``optax.lars``; ``lawn_optax.lars`` is a
  deprecated alias.)

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
  return cblr(learning_rate, estimator="grad_weight_ratio",
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


def scale_by_grad_weight_ratio(
    *, trust_coefficient: Any = 1.0, weight_decay: Any = 0.0,
    reduction: Reduction = "norm",
    relative_to: Literal["median"] | None = None,
    min_scale: float = 0.0, max_scale: float = float("inf"),
    mask: _tree.MaskOrFn = True) -> optax.GradientTransformationExtraArgs:
  """:func:`scale_by_curvature_lr` with the ``"grad_weight_ratio"`` (LARS)
  estimator: ``c_l = (||g|| + β||w||) / ||w||``.

  Example:
    >>> import jax.numpy as jnp, lawn_optax as lo
    >>> tx = lo.scale_by_grad_weight_ratio()
    >>> p, g = {'w': jnp.array([3.0, 4.0])}, {'w': jnp.array([0.0, 0.5])}
    >>> tx.update(g, tx.init(p), p)[0]['w'].tolist()
    [0.0, 5.0]
  """
  return scale_by_curvature_lr(
      "grad_weight_ratio", trust_coefficient=trust_coefficient,
      weight_decay=weight_decay, reduction=reduction, relative_to=relative_to,
      min_scale=min_scale, max_scale=max_scale, mask=mask)


def scale_by_secant_curvature(
    *, trust_coefficient: Any = 1.0, ema_decay: float = 0.9,
    reduction: Reduction = "norm",
    relative_to: Literal["median"] | None = None,
    min_scale: float = 0.0, max_scale: float = float("inf"),
    mask: _tree.MaskOrFn = True) -> optax.GradientTransformationExtraArgs:
  """:func:`scale_by_curvature_lr` with the ``"secant"`` estimator: an EMA of
  ``||g_t - g_{t-1}|| / ||w_t - w_{t-1}||`` per layer.

  Example:
    >>> import jax.numpy as jnp, lawn_optax as lo
    >>> tx = lo.scale_by_secant_curvature()
    >>> p = {'w': jnp.array([3.0, 4.0])}
    >>> u, s = tx.update({'w': jnp.ones(2)}, tx.init(p), p)  # no step yet
    >>> u['w'].tolist()
    [1.0, 1.0]
  """
  return scale_by_curvature_lr(
      "secant", trust_coefficient=trust_coefficient, ema_decay=ema_decay,
      reduction=reduction, relative_to=relative_to, min_scale=min_scale,
      max_scale=max_scale, mask=mask)


def scale_by_hutchinson_curvature(
    *, trust_coefficient: Any = 1.0, ema_decay: float = 0.9, every: int = 10,
    reduction: Reduction = "norm",
    relative_to: Literal["median"] | None = None,
    min_scale: float = 0.0, max_scale: float = float("inf"),
    mask: _tree.MaskOrFn = True, seed: int = 0
) -> optax.GradientTransformationExtraArgs:
  """:func:`scale_by_curvature_lr` with the ``"hutchinson"`` estimator:
  ``mean |v ⊙ Hv|`` per layer every ``every`` steps; ``update`` needs
  ``obj_fn`` (params -> loss).

  Example:
    >>> import jax.numpy as jnp, lawn_optax as lo
    >>> tx = lo.scale_by_hutchinson_curvature(trust_coefficient=2.0)
    >>> p = {'w': jnp.array([3.0, 4.0])}
    >>> loss = lambda q: jnp.sum(q['w'] ** 2)   # Hessian 2 I: scale 2 / 2
    >>> u, _ = tx.update({'w': jnp.ones(2)}, tx.init(p), p, obj_fn=loss)
    >>> u['w'].tolist()
    [1.0, 1.0]
  """
  return scale_by_curvature_lr(
      "hutchinson", trust_coefficient=trust_coefficient, ema_decay=ema_decay,
      hutchinson_every=every, reduction=reduction, relative_to=relative_to,
      min_scale=min_scale, max_scale=max_scale, mask=mask, seed=seed)
