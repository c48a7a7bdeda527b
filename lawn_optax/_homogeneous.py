"""Degree analysis of a traced network: which parameters scale its output.

A set S of parameter leaves is *positively homogeneous* of degree k if
``f(c * theta_S, theta_rest) == c**k f(theta)`` for every c > 0. Given S, the
degree of every intermediate value is propagated through the jaxpr of ``f``:
dot/conv add degrees, elementwise max/add/select need equal degrees,
reshapes and reductions keep them, comparisons give scale-invariant (degree 0)
booleans, and anything else that sees a non-zero degree (exp, tanh, adding a
non-zero constant such as a normalisation's epsilon, ...) *breaks* homogeneity.
Exact zeros (literal 0, ``jnp.zeros``) are wildcards: ``max(x, 0)`` is ReLU.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any, NamedTuple

import jax
import jax.extend.core
import numpy as np

from lawn_optax import _tree

ZERO = "zero"  # an exact zero: compatible with every degree


class Broken(NamedTuple):
  """Why homogeneity failed: the primitive and where it was traced."""
  primitive: str
  where: str

  def __str__(self):
    return f"'{self.primitive}'{(' at ' + self.where) if self.where else ''}"


# Output degree = first operand's; every other operand must be degree 0.
_SAME = {
    "reshape", "transpose", "broadcast_in_dim", "squeeze", "expand_dims",
    "slice", "rev", "copy", "copy_p", "convert_element_type",
    "reduce_precision", "neg", "reduce_sum", "reduce_max", "reduce_min",
    "cumsum", "cummax", "cummin", "reduce_window_sum", "reduce_window_max",
    "reduce_window_min", "abs", "stop_gradient", "optimization_barrier",
    "sharding_constraint", "dynamic_slice", "gather", "real", "imag",
    "mesh_cast", "reshard",
}
# Comparisons of equally scaled values do not change when c > 0 scales them.
_COMPARE = {"eq", "ne", "lt", "le", "gt", "ge"}
_INVARIANT = {"sign", "argmax", "argmin", "is_finite"}
# Elementwise ops whose (scaled) operands must all share one degree.
_EQUAL = {"add", "sub", "add_any", "max", "min", "concatenate", "pad",
          "select_n", "clamp"}
_PRODUCT = {"mul", "dot_general", "conv_general_dilated"}
_CALLS = {"pjit", "jit", "closed_call", "core_call", "custom_jvp_call",
          "custom_vjp_call", "custom_vjp_call_jaxpr", "remat", "checkpoint",
          "remat2"}
# Non-homogeneous unless the input does not depend on S.
_NONLINEAR = {
    "exp", "exp2", "log", "log1p", "expm1", "tanh", "logistic", "sin", "cos",
    "tan", "asin", "acos", "atan", "atan2", "sinh", "cosh", "asinh", "acosh",
    "atanh", "erf", "erfc", "erf_inv", "lgamma", "digamma", "pow", "rem",
    "nextafter", "cbrt", "floor", "ceil", "round", "sort", "top_k",
    "reduce_and", "reduce_or", "reduce_prod", "cumprod", "logsumexp",
}
_KERNEL_USES = {"dot_general", "conv_general_dilated"}
_EMBED_USES = {"gather", "dynamic_slice"}
_ALIAS = {"convert_element_type", "reshape", "broadcast_in_dim",
          "expand_dims", "squeeze", "transpose", "copy", "copy_p"}


def _where(eqn) -> str:
  try:
    frame = jax._src.source_info_util.user_frame(eqn.source_info)  # noqa
    return f"{frame.file_name}:{frame.start_line}" if frame else ""
  except Exception:  # pylint: disable=broad-except
    return ""


def _sub_jaxprs(eqn):
  for v in eqn.params.values():
    if hasattr(v, "jaxpr") and hasattr(v, "consts"):  # ClosedJaxpr
      yield v.jaxpr, list(v.consts)
    elif hasattr(v, "eqns") and hasattr(v, "invars"):  # Jaxpr
      yield v, []


def _live_eqns(jaxpr):
  """Equations the outputs depend on (side computations such as a BatchNorm's
  running-statistics update are skipped)."""
  needed = {v for v in jaxpr.outvars if not _literal(v)}
  live = []
  for eqn in reversed(jaxpr.eqns):
    if any(v in needed for v in eqn.outvars):
      live.append(eqn)
      needed.update(v for v in eqn.invars if not _literal(v))
  return live[::-1]


def _literal(v):
  return isinstance(v, jax.extend.core.Literal)


def _const_degree(value) -> Any:
  try:
    return ZERO if not np.any(np.asarray(value)) else Fraction(0)
  except Exception:  # pylint: disable=broad-except
    return Fraction(0)


class _Analysis:
  """Propagates degrees through a jaxpr (recursing into sub-jaxprs)."""

  def __init__(self, unsupported_ok: bool = False):
    self.first_break: Broken | None = None
    self.unsupported_ok = unsupported_ok

  def _broken(self, eqn):
    b = Broken(eqn.primitive.name, _where(eqn))
    if self.first_break is None:
      self.first_break = b
    return b

  def run(self, jaxpr, in_degrees, consts=()):
    env = {}
    read = lambda v: _const_degree(v.val) if _literal(v) else env[v]
    for v, c in zip(jaxpr.constvars, consts):
      env[v] = _const_degree(c)
    for v in jaxpr.constvars[len(consts):]:
      env[v] = Fraction(0)
    for v, d in zip(jaxpr.invars, in_degrees):
      env[v] = d
    for eqn in _live_eqns(jaxpr):
      ins = [read(v) for v in eqn.invars]
      outs = self.eqn(eqn, ins)
      for v, d in zip(eqn.outvars, outs):
        env[v] = d
    return [read(v) for v in jaxpr.outvars]

  def eqn(self, eqn, ins):
    name = eqn.primitive.name
    out = lambda d: [d] * len(eqn.outvars)
    broken = [d for d in ins if isinstance(d, Broken)]
    if broken:
      return out(broken[0])
    if name in _CALLS:
      for jaxpr, consts in _sub_jaxprs(eqn):
        if len(jaxpr.invars) == len(ins):
          return self.run(jaxpr, ins, consts)
    scaled = [d for d in ins if d not in (0, ZERO)]
    if not scaled:
      # Nothing here depends on S: a constant, or an exact zero carried along.
      return out(ZERO if _stays_zero(name, ins) else Fraction(0))
    if name in _INVARIANT:
      return out(Fraction(0))
    if name in _COMPARE:
      degs = {d for d in ins if d != ZERO}
      return out(Fraction(0) if len(degs) == 1 else self._broken(eqn))
    if name in _SAME:
      if any(d not in (0, ZERO) for d in ins[1:]):
        return out(self._broken(eqn))
      return out(ins[0])
    if name in _PRODUCT:
      return out(ZERO if ZERO in ins else ins[0] + ins[1])
    if name == "div":
      if ins[1] == ZERO:
        return out(self._broken(eqn))
      return out(ZERO if ins[0] == ZERO else ins[0] - ins[1])
    if name in ("integer_pow", "square", "sqrt", "rsqrt"):
      power = {"square": 2, "sqrt": Fraction(1, 2), "rsqrt": Fraction(-1, 2)
               }.get(name) or eqn.params["y"]
      return out(ins[0] * power)
    if name in _EQUAL:
      if name == "select_n" and ins[0] not in (0, ZERO):
        return out(self._broken(eqn))
      degs = {d for d in (ins[1:] if name == "select_n" else ins) if d != ZERO}
      return out(self._broken(eqn) if len(degs) > 1 else degs.pop())
    if name in _NONLINEAR or self.unsupported_ok:
      return out(self._broken(eqn))
    raise UnsupportedPrimitive(name, _where(eqn))


def _stays_zero(name, ins) -> bool:
  if name in _PRODUCT:
    return ZERO in ins
  if name in _SAME or name in ("square", "sqrt", "integer_pow"):
    return ins[0] == ZERO
  if name == "div":
    return ins[0] == ZERO and ins[1] != ZERO
  if name in _EQUAL:
    return all(d == ZERO for d in (ins[1:] if name == "select_n" else ins))
  return False


class UnsupportedPrimitive(ValueError):

  def __init__(self, name, where):
    super().__init__(name, where)
    self.name, self.where = name, where


def leaf_roles(jaxpr, n_leaves: int) -> list[str]:
  """'kernel' / 'embedding' / 'scale' / 'bias' / 'other' for each params leaf,
  from how the traced function first consumes it."""
  roles: list[set[str]] = [set() for _ in range(n_leaves)]

  def walk(jx, origin):
    for eqn in jx.eqns:
      name = eqn.primitive.name
      src = [origin.get(v) if not _literal(v) else None for v in eqn.invars]
      for pos, leaf in enumerate(src):
        if leaf is None:
          continue
        if name in _KERNEL_USES:
          roles[leaf].add("kernel")
        elif name in _EMBED_USES and pos == 0:
          roles[leaf].add("embedding")
        elif name in ("mul", "div"):
          roles[leaf].add("scale")
        elif name in ("add", "sub", "add_any"):
          roles[leaf].add("bias")
        elif name in _ALIAS:
          for o in eqn.outvars:
            origin[o] = leaf
      for sub, _ in _sub_jaxprs(eqn):
        if len(sub.invars) == len(eqn.invars):
          inner = {iv: s for iv, s in zip(sub.invars, src) if s is not None}
          walk(sub, inner)

  walk(jaxpr, {v: i for i, v in enumerate(jaxpr.invars[:n_leaves])})
  out = []
  for r in roles:
    for role in ("kernel", "embedding", "scale", "bias"):
      if role in r:
        out.append(role)
        break
    else:
      out.append("other")
  return out


def first_use_order(jaxpr, n_leaves: int) -> list[int]:
  """Position (equation count, nested jaxprs inlined) of each leaf's first use."""
  pos = [None] * n_leaves
  counter = [0]

  def walk(jx, origin):
    for eqn in jx.eqns:
      counter[0] += 1
      src = [origin.get(v) if not _literal(v) else None for v in eqn.invars]
      subs = [s for s, _ in _sub_jaxprs(eqn) if len(s.invars) == len(eqn.invars)]
      if subs:
        walk(subs[0], {iv: s for iv, s in zip(subs[0].invars, src)
                       if s is not None})
        continue
      for leaf in src:
        if leaf is not None and pos[leaf] is None:
          pos[leaf] = counter[0]

  walk(jaxpr, {v: i for i, v in enumerate(jaxpr.invars[:n_leaves])})
  return pos


def output_degree(analysis: _Analysis, jaxpr, consts, degrees):
  outs = analysis.run(jaxpr, degrees, consts)
  if any(isinstance(d, Broken) for d in outs):
    return next(d for d in outs if isinstance(d, Broken))
  nonzero = {d for d in outs if d != ZERO}
  if len(nonzero) != 1:
    return Broken("outputs of different degrees", "")
  return nonzero.pop()


BIAS_PATTERN = re.compile(r"(.*/)?bias")


def analyse(fn, params, args, kwargs, *, biases: str, include_embeddings: bool,
            include_scales: bool):
  """Returns (mask flags, degree, paths, treedef) of the final homogeneous set."""
  if biases not in ("strict", "ignore"):
    raise ValueError(f"biases must be 'strict' or 'ignore', got {biases!r}.")
  params = _tree.unwrap_variables(params)
  paths, leaves, treedef = _tree.flatten_with_paths(params)
  n = len(leaves)

  def flat_fn(*flat):
    return fn(jax.tree.unflatten(treedef, list(flat)), *args, **kwargs)

  closed = jax.make_jaxpr(flat_fn)(*leaves)
  jaxpr, consts = closed.jaxpr, closed.consts
  if not jaxpr.outvars:
    raise ValueError("fn returns nothing to analyse.")
  roles = leaf_roles(jaxpr, n)
  first = first_use_order(jaxpr, n)
  floating = [hasattr(x, "dtype") and np.issubdtype(x.dtype, np.floating)
              for x in leaves]
  is_bias = [bool(BIAS_PATTERN.fullmatch(p)) or r == "bias"
             for p, r in zip(paths, roles)]
  candidate = []
  for i in range(n):
    ok = floating[i] and first[i] is not None
    ok &= not (biases == "ignore" and is_bias[i])
    ok &= include_embeddings or roles[i] != "embedding"
    ok &= include_scales or roles[i] != "scale" or is_bias[i]
    candidate.append(ok)
  if not any(first[i] is not None for i in range(n)):
    raise ValueError("fn's output does not depend on the params: nothing "
                     "to constrain.")
  base = [ZERO if biases == "ignore" and is_bias[i] and floating[i]
          else Fraction(0) for i in range(n)]
  cands = sorted((i for i in range(n) if candidate[i]), key=lambda i: first[i])
  def degree_of(chosen, newest):
    degrees = [Fraction(1) if i in chosen else base[i] for i in range(n)]
    try:
      deg = output_degree(_Analysis(), jaxpr, consts, degrees)
    except UnsupportedPrimitive as e:
      raise ValueError(
          f"unsupported primitive '{e.name}'{' at ' + e.where if e.where else ''}"
          f" on the path from parameter '{paths[newest]}' to the output:"
          " its effect on scaling is unknown. Pass an explicit mask "
          "(lawn_optax.masks.by_path) instead.") from None
    ok = isinstance(deg, Fraction) and deg >= 1 and deg.denominator == 1
    return ok, deg

  last_reason = None
  for start in range(len(cands)):
    chosen = set(cands[start:])
    ok, deg = degree_of(chosen, cands[start])
    if ok:
      # Maximality: an earlier leaf whose scaling keeps the degree joins too
      # (e.g. the layer feeding a skip connection whose branch stays fixed).
      for i in reversed(cands[:start]):
        ok_i, deg_i = degree_of(chosen | {i}, i)
        if ok_i:
          chosen.add(i)
          deg = deg_i
      flags = [i in chosen for i in range(n)]
      return flags, int(deg), paths, treedef, roles
    last_reason = deg if isinstance(deg, Broken) else Broken(
        f"degree {deg}", "")
  raise ValueError(
      "the output is not positively homogeneous in any suffix of the "
      f"parameters: even the last layer alone ('{paths[cands[-1]]}') meets "
      f"{last_reason}." if cands else
      "no parameter can be scaled (all excluded: integer, bias, embedding or "
      "scale leaves).")


def scale_params(params, flags, c):
  params = _tree.unwrap_variables(params)
  leaves, treedef = jax.tree.flatten(params, is_leaf=_tree.is_masked_node)
  return jax.tree.unflatten(
      treedef, [x * np.asarray(c, x.dtype) if f else x
                for x, f in zip(leaves, flags)])
