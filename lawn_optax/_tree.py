"""Tree and mask plumbing shared by every method (private).

Everything here runs at trace time, in Python: it decides *which* leaves a
transform touches and validates user input with errors that name the offending
parameter path. The numerics live in :mod:`lawn_optax.projection`.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lawn_optax import _compat

MaskedNode = optax.MaskedNode
# A pytree of Python bools (the params' structure or a prefix of it), a
# callable params -> such a pytree, or a Flax nnx filter (a string, a
# Variable type, nnx.PathContains(...)).
MaskOrFn = Any
# An int step, or an int32 scalar array (traced under inject_hyperparams).
Step = int | jax.Array
Granularity = Literal["tensor", "unit"]

GRANULARITIES: tuple[Granularity, ...] = ("tensor", "unit")


def is_masked_node(x: Any) -> bool:
  return isinstance(x, MaskedNode)


def loaded_nnx() -> Any:
  """``flax.nnx`` if the user already imported it, else None: the core never
  imports flax itself (the one place nnx is detected)."""
  return sys.modules.get("flax.nnx")


def _is_nnx_variable(x: Any) -> bool:
  nnx = loaded_nnx()
  return nnx is not None and isinstance(x, nnx.Variable)


def is_nnx_module(x: Any) -> bool:
  nnx = loaded_nnx()
  return nnx is not None and isinstance(x, nnx.Module)


def is_params_placeholder(x: Any) -> bool:
  """``optax.tree.map_params``'s placeholder (as ``optax.masked`` does, the
  transforms then build their state without looking at the mask)."""
  return _compat.is_params_placeholder(x)


def is_nnx_filter(mask: Any) -> bool:
  """Whether ``mask`` is a Flax nnx filter (``nnx.PathContains(...)``,
  ``nnx.All/Any/Not(...)``, a Variable type such as ``nnx.Param``, a tag
  string, ``...``)."""
  nnx = loaded_nnx()
  if nnx is None:
    return isinstance(mask, str)
  if isinstance(mask, (str, type(...))):
    return True
  if isinstance(mask, type):
    return issubclass(mask, nnx.Variable)
  module = type(mask).__module__ or ""
  return module.startswith("flax.nnx") and callable(mask) and not isinstance(
      mask, nnx.Module)


def _raw_key(key: Any) -> Any:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return getattr(key, attr)
  return key


def nnx_filter_flags(mask: Any, params: Any) -> list[bool]:
  """One bool per (unwrapped) leaf of ``params``: the nnx filter's verdict on
  its path and Variable. A bare array (``nnx.Optimizer``'s ``update`` gets
  them) counts as an ``nnx.Param``."""
  nnx = loaded_nnx()
  if nnx is None:
    raise TypeError(
        f"mask {mask!r} is a string, which this library reads as a Flax nnx "
        "filter, but flax.nnx is not imported. To select leaves by path, "
        "use lawn_optax.masks.by_path(params, r'(.*/)?kernel') (a regex "
        "over 'a/b/kernel' paths) or lawn_optax.masks.kernels.")
  predicate = nnx.filterlib.to_predicate(mask)
  items, _ = jax.tree_util.tree_flatten_with_path(
      params, is_leaf=lambda x: _is_nnx_variable(x) or is_masked_node(x))
  flags = []
  for path, leaf in items:
    if is_masked_node(leaf):
      flags.append(False)
      continue
    variable = leaf if _is_nnx_variable(leaf) else nnx.Param(leaf)
    flags.append(bool(predicate(tuple(_raw_key(k) for k in path), variable)))
  return flags


def check_not_a_step_count(params: Any, who: str) -> None:
  """A mask helper called with a step count: optax.inject_hyperparams took it
  for a schedule."""
  if isinstance(params, (jax.Array, np.ndarray)) and np.ndim(params) == 0 and (
      jnp.issubdtype(params.dtype, jnp.integer)):
    raise TypeError(
        f"{who} was called with a step count, not params: "
        "optax.inject_hyperparams treats every callable argument as a "
        "schedule. Pass static_args=('mask',) to optax.inject_hyperparams "
        "(or give the mask as a pytree of bools).")


def unwrap_variables(tree: Any) -> Any:
  """Replaces ``flax.nnx.Variable`` wrappers by their values.

  ``nnx.Optimizer`` calls ``init`` with Variable-wrapped params and ``update``
  with plain arrays; unwrapping both gives every state one structure.
  """
  if "flax.nnx" not in sys.modules:
    return tree
  return jax.tree.map(
      lambda x: x.get_value() if _is_nnx_variable(x) else x,
      tree,
      is_leaf=_is_nnx_variable,
  )


def key_str(key: Any) -> str:
  return str(_raw_key(key))


def path_str(path: Sequence[Any]) -> str:
  """``(DictKey('Dense_0'), DictKey('kernel'))`` -> ``'Dense_0/kernel'``.

  The joined string is for regexes and messages only: a key may itself
  contain ``/`` (Haiku's ``'mlp/~/linear_0'``), so matching is done on
  :func:`key_tuple`.
  """
  return join(key_tuple(path))


def key_tuple(path: Sequence[Any]) -> tuple[str, ...]:
  """``(DictKey('mlp/~/linear_0'), DictKey('w'))`` -> ``('mlp/~/linear_0', 'w')``."""
  return tuple(key_str(k) for k in path)


def join(keys: Sequence[str]) -> str:
  return "/".join(keys)


def natural_key(path: str) -> tuple:
  """Sort key that orders ``Dense_9`` before ``Dense_10`` (numeric chunks)."""
  return tuple(
      tuple((0, int(c), "") if c.isdigit() else (1, 0, c)
            for c in re.split(r"(\d+)", part) if c)
      for part in path.split("/")
  )


def flatten_with_keys(tree: Any
                      ) -> tuple[list[tuple[str, ...]], list[Any], Any]:
  """Flattens ``tree`` (MaskedNode counted as a leaf) into key tuples,
  leaves, treedef."""
  tree = unwrap_variables(tree)
  items, treedef = jax.tree_util.tree_flatten_with_path(
      tree, is_leaf=is_masked_node)
  return [key_tuple(p) for p, _ in items], [x for _, x in items], treedef


def flatten_with_paths(tree: Any) -> tuple[list[str], list[Any], Any]:
  """Flattens ``tree`` (MaskedNode counted as a leaf) into ``"a/b"`` paths,
  leaves, treedef."""
  keys, leaves, treedef = flatten_with_keys(tree)
  return [join(k) for k in keys], leaves, treedef


def _as_static_bool(value: Any, where: str) -> bool:
  if isinstance(value, (bool, np.bool_)):
    return bool(value)
  if isinstance(value, (np.ndarray, jax.Array)) and value.shape == () and (
      value.dtype == np.bool_):
    if isinstance(value, jax.core.Tracer):
      raise TypeError(
          f"mask entry '{where}' is a traced array; masks must be static "
          "Python bools (pass a callable mask through `static_args` of "
          "optax.inject_hyperparams).")
    return bool(value)
  raise TypeError(
      f"mask entry '{where}' is {value!r} of type {type(value).__name__}; "
      "mask leaves must be Python bools.")


def broadcast_prefix(prefix: Any, params: Any, *, what: str = "mask",
                     convert: Callable[[Any, str], Any] | None = None
                     ) -> list[Any]:
  """Expands a prefix tree to one value per leaf of ``params``.

  ``prefix`` may be a callable ``params -> prefix`` (as in ``optax.masked``), a
  single value, or a pytree whose paths are a prefix of the params' paths.
  Containers are matched by path, not by node type, so a plain ``dict`` mask
  works for ``FrozenDict`` or ``nnx.State`` params.

  Raises:
    ValueError: naming the first params path without an entry in ``prefix``,
      or the first entry of ``prefix`` that matches no params path.
  """
  if is_params_placeholder(params):
    return []
  if prefix is None:
    raise ValueError(
        f"{what} is None: pass a pytree of bools with the params' structure "
        "(or a prefix of it), a callable params -> mask, or a Flax nnx "
        "filter (True selects every leaf).")
  if what.endswith("mask") and is_nnx_filter(prefix):
    return nnx_filter_flags(prefix, params)
  params = unwrap_variables(params)
  if callable(prefix):
    prefix = prefix(params)
  prefix = unwrap_variables(prefix)
  p_keys, p_leaves, _ = flatten_with_keys(params)
  items, _ = jax.tree_util.tree_flatten_with_path(prefix)
  entries = {key_tuple(path): value for path, value in items}
  used: set[tuple[str, ...]] = set()
  values = []
  for parts, leaf in zip(p_keys, p_leaves):
    p = join(parts)
    match = next((parts[:k] for k in range(len(parts) + 1)
                  if parts[:k] in entries), None)
    if match is None and is_masked_node(leaf):
      # optax.masked replaced a whole subtree: entries below it are moot.
      below = {e for e in entries if e[:len(parts)] == parts}
      if below:
        used |= below
        values.append(False)
        continue
    if match is None:
      raise ValueError(
          f"{what} does not match the params: params leaf '{p}' has no entry "
          f"in the {what} (it must have the params' structure or a prefix of "
          f"it). The {what}'s paths: "
          f"{sorted('/'.join(e) for e in entries)[:8]}")
    used.add(match)
    value = entries[match]
    values.append(convert(value, "/".join(match)) if convert else value)
  unused = [e for e in entries if e not in used]
  if unused:
    raise ValueError(
        f"{what} does not match the params: {what} entry "
        f"'{'/'.join(sorted(unused)[0])}' matches no parameter.")
  return values


def broadcast_mask(mask: MaskOrFn, params: Any, what: str = "mask"
                   ) -> list[bool]:
  """One static bool per leaf of ``params`` (see :func:`broadcast_prefix`)."""
  return broadcast_prefix(mask, params, what=what, convert=_as_static_bool)


class Selection(NamedTuple):
  """Which leaves of a params tree a transform constrains (static)."""
  treedef: Any
  paths: list[str]
  flags: list[bool]  # True where the leaf is constrained (never on MaskedNode)

  def flatten(self, tree: Any, what: str = "tree") -> list[Any]:
    tree = unwrap_variables(tree)
    leaves, treedef = jax.tree.flatten(tree, is_leaf=is_masked_node)
    if len(leaves) != len(self.flags):
      raise ValueError(
          f"{what} has {len(leaves)} leaves but params have "
          f"{len(self.flags)}: {treedef} vs {self.treedef}")
    return leaves

  def unflatten(self, leaves: list[Any]) -> Any:
    return jax.tree.unflatten(self.treedef, leaves)

  def map(self, fn: Callable[..., Any], *trees: list[Any]) -> list[Any]:
    """``fn`` on selected leaves; MaskedNode elsewhere (a state-shaped list)."""
    return [fn(*xs) if f else MaskedNode()
            for f, *xs in zip(self.flags, *trees)]


def select(mask: MaskOrFn, params: Any, *, granularity: Granularity = "tensor",
           unit_axis: int = -1, what: str = "mask") -> Selection:
  """Resolves ``mask`` against ``params`` and validates every selected leaf."""
  check_granularity(granularity)
  flags = broadcast_mask(mask, params, what)
  paths, leaves, treedef = flatten_with_paths(params)
  flags = [f and not is_masked_node(x) for f, x in zip(flags, leaves)]
  if is_params_placeholder(params):
    return Selection(treedef, paths, flags)
  if not any(flags):
    hint = ""
    if isinstance(mask, str):
      hint = (f" The string {mask!r} is a Flax nnx filter: it matches a "
              "Variable's tag, not its path. To select leaves by path use "
              "lawn_optax.masks.by_path(params, r'(.*/)?kernel') (a regex) "
              f"or nnx.PathContains({mask!r}).")
    raise ValueError(
        f"{what} selects no parameter leaf: nothing would be constrained. "
        f"Params paths: {paths[:8]}{' ...' if len(paths) > 8 else ''}"
        + hint)
  for path, leaf, f in zip(paths, leaves, flags):
    if f:
      check_normable(leaf, path, granularity, unit_axis)
  return Selection(treedef, paths, flags)


def select_update(mask: MaskOrFn, updates: Any, params: Any, *,
                  granularity: Granularity = "tensor", unit_axis: int = -1,
                  what: str = "mask") -> tuple[Selection, list, list, Any]:
  """The common preamble of every ``update``: selection, params and update
  leaves (MaskedNode counted as a leaf), and the updates' treedef."""
  require_params(params)
  sel = select(mask, params, granularity=granularity, unit_axis=unit_axis,
               what=what)
  w = sel.flatten(params, "params")
  u, u_def = jax.tree.flatten(updates, is_leaf=is_masked_node)
  if len(u) != len(w):
    raise ValueError("updates and params have different structures: "
                     f"{u_def} vs {sel.treedef}")
  return sel, w, u, u_def


def check_granularity(granularity: Any) -> None:
  if granularity not in GRANULARITIES:
    raise ValueError(
        f"granularity must be one of {GRANULARITIES}, got {granularity!r}.")


def check_normable(leaf: Any, path: str, granularity: Granularity,
                   unit_axis: int) -> None:
  shape = getattr(leaf, "shape", None)
  dtype = getattr(leaf, "dtype", None)
  if shape is None or dtype is None:
    raise TypeError(f"parameter '{path}' is {type(leaf).__name__}, not an "
                    "array: it cannot be normed.")
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(f"parameter '{path}' has dtype {dtype}; only floating "
                    "point weights can be normed.")
  if granularity == "unit":
    if len(shape) < 2:
      raise ValueError(
          f"parameter '{path}' has shape {tuple(shape)}: granularity='unit' "
          "needs at least 2 axes (inputs..., outputs). Use "
          "granularity='tensor' or leave it out of the mask (biases, scales).")
    if not -len(shape) <= unit_axis < len(shape):
      raise ValueError(f"unit_axis={unit_axis} is out of range for parameter "
                       f"'{path}' of shape {tuple(shape)}.")


INT32_MAX = 2**31 - 1


def check_step(value: Any, name: str, minimum: int = 0) -> None:
  """Validates an integer step hyper-parameter when it is concrete.

  Under ``optax.inject_hyperparams`` the value arrives as a traced array inside
  ``update``; it was validated when concrete at ``init``.
  """
  if isinstance(value, jax.core.Tracer):
    return
  if isinstance(value, (bool, np.bool_)) or not (
      isinstance(value, (int, np.integer)) or (
          isinstance(value, (np.ndarray, jax.Array)) and value.shape == ()
          and jnp.issubdtype(value.dtype, jnp.integer))):
    raise TypeError(f"{name} must be an integer, got {value!r}.")
  if int(value) < minimum:
    raise ValueError(f"{name} must be >= {minimum}, got {int(value)}.")
  if int(value) > INT32_MAX:
    raise ValueError(
        f"{name}={int(value)} does not fit the int32 step counter (at most "
        f"2**31 - 1 = {INT32_MAX}). A value larger than the number of steps "
        "you train is enough to never reach it.")


def resolve_axis(unit_axis: Any, name: str = "unit_axis") -> int:
  """``unit_axis`` as a Python int (``None``: the last axis).

  An axis is structure, not a hyper-parameter: it decides which reductions
  the program holds. ``optax.inject_hyperparams`` makes every number it is
  given a traced hyper-parameter, so an explicit axis must be named in its
  ``static_args`` (the default, ``None``, needs nothing)."""
  if unit_axis is None:
    return -1
  if isinstance(unit_axis, jax.core.Tracer):
    raise TypeError(
        f"{name} is a traced value: an axis is structure, not a "
        "hyper-parameter. Under optax.inject_hyperparams pass "
        f"static_args=(..., '{name}') (or leave {name} at its default).")
  if isinstance(unit_axis, (bool, np.bool_)) or not (
      isinstance(unit_axis, (int, np.integer)) or (
          isinstance(unit_axis, (np.ndarray, jax.Array))
          and unit_axis.shape == ()
          and jnp.issubdtype(unit_axis.dtype, jnp.integer))):
    raise TypeError(f"{name} must be an integer axis, got {unit_axis!r}.")
  return int(unit_axis)


def swapped_state_error(state: Any, expected: str) -> TypeError:
  return TypeError(
      f"update(updates, state, params) got a state that is not this "
      f"transform's ({type(state).__name__}; expected {expected}): were "
      "state and params swapped? optax's order is update(updates, state, "
      "params).")


def check_chain_state(tx: optax.GradientTransformation, names: Sequence[str]
                      ) -> optax.GradientTransformationExtraArgs:
  """``tx`` (a ``named_chain`` of ``names``) whose ``update`` first checks
  that it was given that chain's state (a swapped call would fail with a
  bare ``KeyError``)."""
  names = list(names)

  def update_fn(updates, state, params=None, **extra_args):
    if not isinstance(state, dict) or not set(names) <= set(state):
      raise swapped_state_error(state, f"a dict with keys {names}")
    return tx.update(updates, state, params, **extra_args)

  return optax.GradientTransformationExtraArgs(tx.init, update_fn)


def require_params(params: Any) -> None:
  if params is None:
    raise ValueError(_compat.no_params_message())  # optax's own wording
