"""WRS: periodic weight rescaling instead of weight decay for BN networks."""

from __future__ import annotations

from typing import Any

import jax
import optax

from lawn_optax import _docs, _tree
from lawn_optax._constraint import Retraction
from lawn_optax.numerics import DEFAULT_EPS, leaf_norm, safe_div
from lawn_optax.projection import constrain_norms_after


@_docs.shared
def weight_rescaling(
    base_tx: optax.GradientTransformation,
    *,
    mask: _tree.MaskOrFn,
    period: _tree.Step = 1,
    target: Any = 1.0,
    granularity: _tree.Granularity = "unit",
    unit_axis: int | None = None,
    norm_eps: float = DEFAULT_EPS,
    retraction: Retraction = "exact",
) -> optax.GradientTransformationExtraArgs:
  """WRS: rescale BN-preceded kernels to a target norm every ``period`` steps.

  With BatchNorm after a kernel, the loss is invariant to the kernel's scale,
  and without weight decay the noise orthogonal to the span of its inputs
  grows the norm and shrinks the effective learning rate. WRS removes it by
  rescaling each kernel (per output filter by default: every BN channel is
  separately scale-invariant) to ``target`` on steps 0, ``period``,
  ``2 * period``, ... (a step counter in the state; one compiled step).

  Not rescaled: the base optimizer's moments (momentum buffers keep their
  scale), and Flax ``batch_stats`` (the running statistics of the layer
  after the kernel). In training mode BN uses batch statistics, so this only
  matters for evaluation between rescales; :func:`rescale_batch_stats`
  rescales the running statistics consistently if it does.

  [last-transform]

  Args:
    base_tx: the optimizer (no weight decay).
    mask: the kernels followed by a normalisation.
    period: rescale every ``period`` steps (>= 1).
    target: the norm to rescale to (float or pytree); ``None`` keeps the
      norms measured at step 0.
    granularity: ``"unit"`` (per output filter, default) or ``"tensor"``.
    unit_axis: the output axis for ``granularity="unit"``.
    norm_eps: floor of the norm divided by in the retraction.
    retraction: ``"exact"``, ``"lazy"`` or ``"projection"`` (see
      :func:`lawn_optax.constrain_norms`).

  Returns:
    :func:`lawn_optax.constrain_norms_after` ``([("base", base_tx)], "wrs",
    ...)``: the state and results of ``optax.named_chain(("base", base_tx),
    ("wrs", constrain_norms(...)))``; with ``period > 1`` the steps between
    rescales run ``base_tx``'s step alone.

  Example:
    >>> import jax.numpy as jnp, optax, lawn_optax as lo
    >>> params = {'conv': 3.0 * jnp.ones((2, 2, 3, 4))}
    >>> tx = lo.weight_rescaling(optax.sgd(0.1), mask=True, period=2)
    >>> u, _ = tx.update(params, tx.init(params), params)
    >>> new = optax.apply_updates(params, u)['conv']
    >>> jnp.round(jnp.linalg.norm(new.reshape(-1, 4), axis=0), 5).tolist()
    [1.0, 1.0, 1.0, 1.0]

  References:
    Liu, Cui, Wan, Mao, Chan, `Weight Rescaling: Effective and Robust
    Regularization for Deep Neural Networks with Batch Normalization
    <https://arxiv.org/abs/2102.03497>`_, 2022.
  """
  _tree.check_step(period, "period", minimum=1)
  return constrain_norms_after(
      [("base", base_tx)], "wrs", mask, target=target, period=period,
      granularity=granularity, unit_axis=unit_axis, eps=norm_eps,
      retraction=retraction)


def rescale_batch_stats(batch_stats: Any, params_before: Any,
                        params_after: Any, pairs: dict[str, str],
                        unit_axis: int = -1) -> Any:
  """Rescales BN running statistics after their input kernels were rescaled.

  A kernel scaled by ``s`` per output unit scales its layer's pre-BN
  activations by ``s``: the running ``mean`` must scale by ``s`` and the
  running ``var`` by ``s**2`` for evaluation-mode BN to give the same
  output. ``s`` is read as ``||w_after|| / ||w_before||`` per unit (exact
  on a pure rescale).

  Args:
    batch_stats: Flax ``batch_stats`` collection.
    params_before: params before the step.
    params_after: params after the step.
    pairs: ``{"kernel/path": "bn/path"}``, e.g.
      ``{"Conv_0/kernel": "BatchNorm_0"}``.
    unit_axis: output axis of the kernels.

  Returns:
    The rescaled ``batch_stats`` (same structure).

  Example:
    >>> import jax.numpy as jnp, lawn_optax as lo
    >>> stats = {'BatchNorm_0': {'mean': jnp.ones(2), 'var': jnp.ones(2)}}
    >>> new = lo.rescale_batch_stats(stats, {'k': jnp.ones((3, 2))},
    ...                              {'k': 2 * jnp.ones((3, 2))}, {'k': 'BatchNorm_0'})
    >>> new['BatchNorm_0']['var'].tolist()
    [4.0, 4.0]
  """
  def table(tree):
    paths, leaves, _ = _tree.flatten_with_paths(tree)
    return dict(zip(paths, leaves))

  before_t, after_t = table(params_before), table(params_after)
  factors = {}
  for kernel, bn in pairs.items():
    if kernel not in before_t or kernel not in after_t:
      raise KeyError(f"kernel '{kernel}' not found in the params; paths: "
                     f"{sorted(before_t)[:8]}")
    before = leaf_norm(before_t[kernel], "unit", unit_axis)
    after = leaf_norm(after_t[kernel], "unit", unit_axis)
    factors[bn] = safe_div(after, before, 1.0).ravel()
  stats_layers = {p.rpartition("/")[0] for p in table(batch_stats)}
  missing = sorted(set(factors) - stats_layers)
  if missing:
    raise KeyError(f"batch_stats has no layer '{missing[0]}'; layers: "
                   f"{sorted(stats_layers)[:8]}")

  def rescale(path, x):
    p = _tree.path_str(path)
    bn, _, stat = p.rpartition("/")
    if bn not in factors:
      return x
    s = factors[bn]
    if stat == "mean":
      return (x * s).astype(x.dtype)
    if stat == "var":
      return (x * s * s).astype(x.dtype)
    return x

  return jax.tree_util.tree_map_with_path(rescale, batch_stats)
