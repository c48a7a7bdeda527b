"""Build the bool masks that choose which weights a method constrains.

Every helper takes a params pytree -- a Flax linen ``params`` dict, an
``nnx.State`` (``nnx.state(model, nnx.Param)``, Variable-wrapped or pure) or
any pytree of arrays -- and returns a pytree of Python bools of the same
(unwrapped) structure, usable as ``mask=`` anywhere in this library and in
``optax.masked``. Paths are ``"/"``-joined keys such as
``"params/Dense_0/kernel"`` or ``"layers/0/kernel"``. A helper that would
select nothing raises instead of returning an all-False mask.
"""

from __future__ import annotations

import re
from typing import Any

import jax
import numpy as np

from lawn_optax import _tree

KERNEL = r"(.*/)?kernel"


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
  paths, _, _ = _tree.flatten_with_paths(params)
  inc = re.compile(include)
  owners = {p.rpartition("/")[0] for p in paths if inc.fullmatch(p)}
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
  order = layers(params, include)
  if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)):
    raise TypeError(f"n must be an int, got {n!r}.")
  if not 1 <= n <= len(order):
    raise ValueError(f"n={n} must be between 1 and the number of layers "
                     f"({len(order)}: {order}).")
  chosen = set(order[-n:])
  inc = re.compile(include)
  paths, leaves, _ = _tree.flatten_with_paths(params)
  return _leaf_bools(params, [
      bool(inc.fullmatch(p)) and p.rpartition("/")[0] in chosen
      and not _tree.is_masked_node(x) for p, x in zip(paths, leaves)])


def describe(mask: _tree.MaskOrFn, params: Any, *, print_fn=print) -> str:
  """A readable report of what ``mask`` selects: paths, shapes, counts.

  Args:
    mask: a mask (or callable) for ``params``.
    params: the params pytree.
    print_fn: where the report goes (``None`` to only return it).

  Returns:
    The report text.

  Example:
    >>> import jax.numpy as jnp, lawn_optax as lo
    >>> p = {'a': {'kernel': jnp.ones((2, 3))}, 'b': {'kernel': jnp.ones(3)}}
    >>> _ = lo.masks.describe({'a': True, 'b': False}, p)
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
  text = "\n".join(lines)
  if print_fn is not None:
    print_fn(text)
  return text
