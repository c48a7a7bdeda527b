"""Build the bool masks that choose which weights a method constrains.

Every helper takes a params pytree -- a Flax linen ``params`` dict, an
``nnx.State`` (``nnx.state(model, nnx.Param)``, Variable-wrapped or pure) or
any pytree of arrays -- and returns a pytree of Python bools of the same
(unwrapped) structure, usable as ``mask=`` anywhere in this library and in
``optax.masked``. Paths are ``"/"``-joined keys such as
``"params/Dense_0/kernel"`` or ``"layers/0/kernel"``. A helper that would
select nothing raises instead of returning an all-False mask.

Example:
  >>> import jax.numpy as jnp, lawn_optax as lo
  >>> params = {'Dense_0': {'kernel': jnp.ones((2, 3)), 'bias': jnp.ones(3)}}
  >>> lo.masks.kernels(params)
  {'Dense_0': {'bias': False, 'kernel': True}}
"""

from __future__ import annotations

import re
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from lawn_optax import _tree

__all__ = ["Report", "by_path", "check_homogeneous", "describe", "explain",
           "final_homogeneous", "kernels", "last_layers", "layers"]

KERNEL = r"(.*/)?kernel"


class Report(str):
  """The text of :func:`explain` or :func:`describe`: a ``str`` that a REPL
  or notebook shows once, as text (``print(report)`` prints it too).

  Example:
    >>> import lawn_optax as lo
    >>> lo.masks.Report("selected 1 of 2 leaves")
    selected 1 of 2 leaves
  """

  def __repr__(self) -> str:
    return str(self)

  def _repr_pretty_(self, p: Any, cycle: bool) -> None:
    p.text(str(self))


def _leaf_bools(params: Any, flags: list[bool]) -> Any:
  _, _, treedef = _tree.flatten_with_paths(params)
  return jax.tree.unflatten(treedef, flags)


def by_path(params: Any, include: str = KERNEL,
            exclude: str | None = None) -> Any:
  """Selects leaves whose path fully matches ``include`` and not ``exclude``.

  Args:
    params: the params pytree.
    include: regex, matched with ``re.fullmatch`` against ``"a/b/kernel"``.
    exclude: optional regex; a path matching it is never selected.

  Returns:
    A pytree of bools with the params' structure.

  Raises:
    ValueError: if no path is selected (listing the paths that exist).

  Example:
    >>> import jax.numpy as jnp, lawn_optax as lo
    >>> p = {'Dense_0': {'kernel': jnp.ones((2, 3)), 'bias': jnp.ones(3)},
    ...      'Dense_1': {'kernel': jnp.ones((3, 1)), 'bias': jnp.ones(1)}}
    >>> lo.masks.by_path(p, exclude=r'Dense_0/.*')
    {'Dense_0': {'bias': False, 'kernel': False}, 'Dense_1': {'bias': False, 'kernel': True}}
  """
  _tree.check_not_a_step_count(params, "lawn_optax.masks.by_path")
  paths, leaves, _ = _tree.flatten_with_paths(params)
  inc, exc = re.compile(include), re.compile(exclude) if exclude else None
  flags = [bool(inc.fullmatch(p)) and not (exc and exc.fullmatch(p))
           and not _tree.is_masked_node(x) for p, x in zip(paths, leaves)]
  if not any(flags):
    raise ValueError(
        f"by_path(include={include!r}, exclude={exclude!r}) selects no "
        f"parameter. Paths: {paths[:12]}{' ...' if len(paths) > 12 else ''}")
  return _leaf_bools(params, flags)


def kernels(params: Any, exclude: str | None = None) -> Any:
  """Every leaf named ``kernel`` (dense and conv weights; no biases, scales
  or embeddings).

  Example:
    >>> import jax.numpy as jnp, lawn_optax as lo
    >>> lo.masks.kernels({'kernel': jnp.ones((2, 2)), 'bias': jnp.ones(2)})
    {'bias': False, 'kernel': True}
  """
  return by_path(params, KERNEL, exclude)


def layers(params: Any, include: str = KERNEL) -> list[str]:
  """Paths of the layers owning a leaf that matches ``include``, in numeric
  order (``Dense_9`` before ``Dense_10``; ``layers/10`` after ``layers/9``).

  A layer is the parent path of a matching leaf. Flax names layers in creation
  order (``Dense_0``, ``Dense_1``, ...), so for auto-named models this is the
  forward order; for hand-named layers use :func:`by_path`.

  Example:
    >>> import jax.numpy as jnp, lawn_optax as lo
    >>> p = {f'Dense_{i}': {'kernel': jnp.ones((1, 1))} for i in range(11)}
    >>> lo.masks.layers(p)[-2:]
    ['Dense_9', 'Dense_10']
  """
  keys, _, _ = _tree.flatten_with_keys(params)
  inc = re.compile(include)
  owners = {_tree.join(k[:-1]) for k in keys if inc.fullmatch(_tree.join(k))}
  return sorted(owners, key=_tree.natural_key)


def last_layers(params: Any, n: int, include: str = KERNEL) -> Any:
  """Selects the ``include`` leaves of the last ``n`` layers (numeric order).

  Args:
    params: the params pytree.
    n: how many layers, counted from the output (1 <= n <= number of layers).
    include: which leaves of those layers (default: kernels).

  Returns:
    A pytree of bools with the params' structure.

  Example:
    >>> import jax.numpy as jnp, lawn_optax as lo
    >>> p = {f'Dense_{i}': {'kernel': jnp.ones((1, 1))} for i in range(11)}
    >>> m = lo.masks.last_layers(p, 2)
    >>> [k for k, v in m.items() if v['kernel']]
    ['Dense_10', 'Dense_9']
  """
  _tree.check_not_a_step_count(params, "lawn_optax.masks.last_layers")
  order = layers(params, include)
  if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)):
    raise TypeError(f"n must be an int, got {n!r}.")
  if not 1 <= n <= len(order):
    raise ValueError(f"n={n} must be between 1 and the number of layers "
                     f"({len(order)}: {order}).")
  chosen = set(order[-n:])
  inc = re.compile(include)
  keys, leaves, _ = _tree.flatten_with_keys(params)
  return _leaf_bools(params, [
      bool(inc.fullmatch(_tree.join(k))) and _tree.join(k[:-1]) in chosen
      and not _tree.is_masked_node(x) for k, x in zip(keys, leaves)])


def describe(mask: _tree.MaskOrFn, params: Any, *,
             print_fn: Any = None) -> Report:
  """A readable report of what ``mask`` selects: paths, shapes, counts.

  Args:
    mask: a mask (or callable) for ``params``.
    params: the params pytree.
    print_fn: also hand the text to it (e.g. ``print``, a logger's
      ``info``); by default nothing is printed.

  Returns:
    The report, a :class:`Report` (a ``str`` that a REPL or notebook shows
    once, as text).

  Example:
    >>> import jax.numpy as jnp, lawn_optax as lo
    >>> p = {'a': {'kernel': jnp.ones((2, 3))}, 'b': {'kernel': jnp.ones(3)}}
    >>> lo.masks.describe({'a': True, 'b': False}, p)
    selected 1 of 2 leaves, 6 of 9 parameters (66.7%)
      a/kernel  (2, 3)  6
  """
  flags = _tree.broadcast_mask(mask, params)
  paths, leaves, _ = _tree.flatten_with_paths(params)
  rows = [(p, tuple(np.shape(x)), int(np.size(x)), f)
          for p, x, f in zip(paths, leaves, flags)
          if not _tree.is_masked_node(x)]
  chosen = [r for r in rows if r[3]]
  total, sel = sum(r[2] for r in rows), sum(r[2] for r in chosen)
  width = max((len(r[0]) for r in chosen), default=0)
  lines = [f"selected {len(chosen)} of {len(rows)} leaves, {sel} of {total} "
           f"parameters ({100.0 * sel / max(total, 1):.1f}%)"]
  lines += [f"  {p:<{width}}  {s}  {c}" for p, s, c, _ in chosen]
  text = Report("\n".join(lines))
  if print_fn is not None:
    print_fn(text)
  return text


def _split_nnx(fn, params, args):
  """(fn, params, args) for an ``nnx.Module`` given as ``fn``: the module's
  other state (BatchNorm statistics, RNG keys) becomes an input, so that the
  analysis sees it as abstract like any other input."""
  if not _tree.is_nnx_module(fn):
    return fn, params, args
  nnx = _tree.loaded_nnx()
  graphdef, state, rest = nnx.split(fn, nnx.Param, ...)
  call = lambda p, r, *a, **k: nnx.merge(graphdef, p, r)(*a, **k)
  inputs = (params,) + args if params is not None else args
  return call, nnx.as_pure(state), (nnx.as_pure(rest),) + inputs


def _analyse(fn, params, args, kwargs, biases, include_embeddings,
             include_scales):
  from lawn_optax import _homogeneous  # pylint: disable=g-import-not-at-top
  fn, params, args = _split_nnx(fn, params, args)
  return _homogeneous.analyse(fn, params, args, kwargs, biases=biases,
                              include_embeddings=include_embeddings,
                              include_scales=include_scales)


def final_homogeneous(fn: Any, params: Any = None, *example_args: Any,
                      biases: Literal["strict", "ignore"] = "strict", include_embeddings: bool = True,
                      include_scales: bool = True,
                      **example_kwargs: Any) -> Any:
  """Mask of the final homogeneous sub-network, found by tracing ``fn``.

  ``fn(params, *example_args, **example_kwargs)`` must return the logits. It is
  traced once to a jaxpr with every array -- parameters, example inputs --
  abstract (only shapes and dtypes matter: ``jax.ShapeDtypeStruct`` params
  work, nothing is allocated; zeros, ones or real data give the same mask).
  The result is a set S of float parameter leaves such that scaling every leaf
  of S by the same ``c > 0`` scales the output by ``c**k``, ``k >= 1``, and
  every leaf of S scales the output.

  How (details in ``lawn_optax._homogeneous``): the degree of every traced
  value is a linear form in one 0/1 variable per leaf. Dense/conv/mul add
  degrees; ReLU/leaky ReLU/max/min with literal zeros, pooling, reshapes,
  slicing/gather/scatter/concat/split/pad, sort/top_k/argmax/cumsum,
  ``cond``/``while``/``scan`` (a scanned layer stack is one leaf),
  ``jit``/remat/custom_jvp/custom_vjp, ``shard_map`` and named-axis
  collectives keep them; sums, maxima, selects and concatenations need equal
  degrees; nonlinear functions (tanh, GELU, exp, softmax), integer casts and
  the epsilon of a normalisation need unscaled inputs. Only literals of the
  program count as exact zeros; closed-over arrays and non-parameter state
  (BatchNorm statistics, in train or eval mode) are abstract. Primitives on
  paths that no parameter reaches, or that do not reach the output, are
  ignored. Among the sets meeting every constraint, the search keeps leaves
  in output order: from the leaf used nearest the output backwards, each
  joins when the constraints can still be met; the result is maximal (no
  excluded leaf can join it). :func:`explain` shows why each leaf is in or
  out.

  Biases: with ``biases="strict"`` (default) biases are analysed like any
  other leaf. A bias added after a scaled kernel must scale like the kernel's
  output, so in an MLP with biases only the head keeps its bias with it (the
  result: the last layer, kernel and bias). ``biases="ignore"`` analyses the
  network with every bias at zero (leaves named ``bias``, or vectors only ever
  added to activations): the result holds no bias (for an MLP: all its
  kernels), which is what LAWN practice constrains.

  Norm scales (a LayerNorm/RMSNorm/BatchNorm ``scale`` after the last
  normalisation) and embedding tables that can join are in by default: a
  free scale before the head would otherwise grow the logits without bound.
  ``include_scales=False`` / ``include_embeddings=False`` leave them out.
  Given an ``nnx.Module`` as ``fn`` the call is
  ``final_homogeneous(model, *example_args)``; the mask follows
  ``nnx.state(model, nnx.Param)`` (usable with ``nnx.Optimizer``), and the
  module's other state is abstract too.

  Speed: it traces abstractly and solves small constraint systems; a
  GPT-2-sized model takes a fraction of a second (``python -m
  benchmarks.mask_analysis`` times one).

  Args:
    fn: ``(params, *args, **kwargs) -> logits``, or an ``nnx.Module``.
    params: the params pytree, arrays or ``jax.ShapeDtypeStruct`` (for an nnx
      module: the first example input).
    *example_args: example inputs (shapes and dtypes are what matter; Python
      scalars and flags are passed as they are).
    biases: ``"strict"`` or ``"ignore"`` (see above).
    include_embeddings: let embedding tables join the set.
    include_scales: let elementwise scale parameters join the set.
    **example_kwargs: keyword inputs of ``fn``.

  Returns:
    A pytree of bools with the params' structure.

  Raises:
    ValueError: if the output does not depend on the params, if no leaf can be
      in the set (naming the leaf used nearest the output and the primitive
      that excludes it), or if a primitive without a homogeneity rule is all
      that keeps a leaf out (naming it, where it was traced, and the
      workaround: an explicit mask).

  Example:
    >>> import jax, jax.numpy as jnp, flax.linen as nn, lawn_optax as lo
    >>> class Net(nn.Module):
    ...   @nn.compact
    ...   def __call__(self, x):
    ...     x = nn.LayerNorm(use_scale=False)(nn.Dense(8)(x))
    ...     x = nn.relu(nn.Dense(8, use_bias=False)(x))
    ...     return nn.Dense(3, use_bias=False)(x)
    >>> net = Net()
    >>> params = net.init(jax.random.key(0), jnp.ones((1, 4)))['params']
    >>> mask = lo.masks.final_homogeneous(
    ...     lambda p, x: net.apply({'params': p}, x), params, jnp.zeros((1, 4)))
    >>> lo.masks.describe(mask, params)
    selected 2 of 5 leaves, 88 of 136 parameters (64.7%)
      Dense_1/kernel  (8, 8)  64
      Dense_2/kernel  (8, 3)  24
  """
  result = _analyse(fn, params, example_args, example_kwargs, biases,
                    include_embeddings, include_scales)
  if result.blocked:
    path, c = result.blocked[0]
    raise ValueError(
        f"unsupported primitive {c.where} on the path from parameter "
        f"'{path}' to the output: its effect on scaling is unknown, and it "
        "alone decides whether that parameter joins. Pass an explicit mask "
        "(lawn_optax.masks.by_path), or see masks.explain for every leaf.")
  if result.error:
    raise ValueError(result.error)
  return jax.tree.unflatten(result.treedef, result.flags)


def explain(fn: Any, params: Any = None, *example_args: Any,
            biases: Literal["strict", "ignore"] = "strict", include_embeddings: bool = True,
            include_scales: bool = True, print_fn: Any = None,
            **example_kwargs: Any) -> Report:
  """Per leaf: in or out of :func:`final_homogeneous`'s set, and why.

  Takes the same arguments as :func:`final_homogeneous` and never raises for
  a missing set: a leaf that is out names the primitive (and the source line
  where it was traced) that keeps it out, so a user can see what still grows
  the logits.

  Args:
    fn: as for :func:`final_homogeneous`; so are ``params``,
      ``example_args``, ``biases``, ``include_embeddings``,
      ``include_scales`` and ``example_kwargs``.
    print_fn: also hand the text to it (e.g. ``print``); by default
      nothing is printed.

  Returns:
    The report, a :class:`Report` (a ``str`` shown once, as text, by a REPL
    or notebook): one line per leaf, ``in``/``out``, path, shape, reason.

  Example:
    >>> import jax.numpy as jnp, lawn_optax as lo
    >>> f = lambda p, x: jnp.tanh(x @ p['w1']) @ p['w2'] * p['t']
    >>> p = {'w1': jnp.ones((4, 3)), 'w2': jnp.ones((3, 2)), 't': jnp.ones(())}
    >>> lo.masks.explain(f, p, jnp.ones((1, 4)))  # doctest: +ELLIPSIS
    final homogeneous set: 2 of 3 leaves, degree 2
      in   t   ()      degree 1
      in   w2  (3, 2)  degree 1
      out  w1  (4, 3)  'tanh' at <doctest ...>:1 needs an unscaled input (not homogeneous)
  """
  result = _analyse(fn, params, example_args, example_kwargs, biases,
                    include_embeddings, include_scales)
  n_in = sum(result.flags)
  head = (f"final homogeneous set: {n_in} of {len(result.flags)} leaves, "
          f"degree {result.degree}" if result.error is None else
          result.error)
  rows = sorted(zip(result.flags, result.paths, result.shapes, result.reasons),
                key=lambda r: (not r[0], _tree.natural_key(r[1])))
  w_path = max((len(r[1]) for r in rows), default=0)
  w_shape = max((len(str(r[2])) for r in rows), default=0)
  lines = [head] + [
      f"  {'in ' if f else 'out'}  {p:<{w_path}}  {str(s):<{w_shape}}  {why}"
      for f, p, s, why in rows]
  text = Report("\n".join(lines))
  if print_fn is not None:
    print_fn(text)
  return text


_RTOL = {2: 5e-2, 4: 1e-4, 8: 1e-9}  # by the float size in bytes


def check_homogeneous(fn: Any, params: Any, mask: Any, *example_args: Any,
                      scales: tuple[float, ...] = (0.5, 2.0, 3.0),
                      rtol: float | None = None, **example_kwargs: Any) -> int:
  """Numerically verifies ``fn(c * theta_S) == c**k fn(theta_S)``; returns k.

  The leaves selected by ``mask`` are scaled jointly by each ``c`` in
  ``scales``; the degree is read off ``c = 2`` and must be a positive
  integer that fits every ``c`` to ``rtol`` (relative to the output's scale).
  For an ``nnx.Module`` call ``check_homogeneous(model, mask, *inputs)``.

  Args:
    fn: ``(params, *args, **kwargs) -> output``, or an ``nnx.Module``.
    params: the params pytree (for an nnx module: the mask).
    mask: a mask for ``params`` (for an nnx module: the first input).
    *example_args: inputs.
    scales: the factors tried.
    rtol: tolerance, relative to the largest output magnitude. Default: by
      the least precise float dtype among the output and the scaled leaves
      (16-bit: 5e-2, 32-bit: 1e-4, 64-bit: 1e-9).
    **example_kwargs: keyword inputs of ``fn``.

  Returns:
    The degree ``k``.

  Raises:
    ValueError: with the reason when the output is not homogeneous in the
      masked leaves.

  Example:
    >>> import jax.numpy as jnp, lawn_optax as lo
    >>> f = lambda p, x: jnp.maximum(x @ p['w1'], 0) @ p['w2'] + p['b']
    >>> p = {'w1': jnp.ones((2, 3)), 'w2': jnp.ones((3, 1)), 'b': jnp.ones(1)}
    >>> lo.masks.check_homogeneous(f, p, {'w1': False, 'w2': True, 'b': True},
    ...                            jnp.ones((4, 2)))
    1
  """
  from lawn_optax import _homogeneous  # pylint: disable=g-import-not-at-top
  if _tree.is_nnx_module(fn):
    params, mask = mask, params  # called as (model, mask, *inputs)
  fn, params, args = _split_nnx(fn, params, example_args)
  flags = _tree.broadcast_mask(mask, params)
  if not any(flags):
    raise ValueError("mask selects no parameter leaf.")
  outputs = lambda p: [x for x in jax.tree.leaves(fn(p, *args,
                                                     **example_kwargs))
                       if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
  call = lambda p: np.concatenate([np.asarray(x, np.float64).ravel()
                                   for x in outputs(p)])
  params = _tree.unwrap_variables(params)
  if rtol is None:
    scaled = [x for x, f in zip(jax.tree.leaves(params), flags) if f]
    sizes = [jnp.dtype(x.dtype).itemsize for x in scaled + outputs(params)
             if jnp.issubdtype(x.dtype, jnp.inexact)]
    rtol = _RTOL.get(min(sizes, default=4), 1e-4)
  base = call(params)
  size = float(np.max(np.abs(base))) if base.size else 0.0
  if size == 0.0 or not np.isfinite(size):
    raise ValueError(f"fn's output is {'zero' if size == 0 else 'not finite'}"
                     " at these params: no degree can be measured.")
  out = {c: call(_homogeneous.scale_params(params, flags, c)) for c in scales}
  ref_c = 2.0 if 2.0 in out else scales[-1]
  ratio = np.max(np.abs(out[ref_c])) / size
  k = np.log(ratio) / np.log(ref_c) if ratio > 0 else -np.inf
  k_int = int(round(k)) if np.isfinite(k) else 0
  if not np.isfinite(k) or abs(k - k_int) > 0.05 or k_int < 1:
    raise ValueError(f"not homogeneous of a positive integer degree: scaling "
                     f"by {ref_c} scaled the output by {ratio:.6g} "
                     f"(degree {k:.4g}).")
  for c, o in out.items():
    err = np.max(np.abs(o - c**k_int * base)) / (c**k_int * size)
    if err > rtol:
      raise ValueError(
          f"not homogeneous: at c={c} the output differs from c**{k_int} "
          f"times the original by {err:.3g} (relative), above rtol={rtol}.")
  return k_int
