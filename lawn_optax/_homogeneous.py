"""Symbolic degree analysis of a traced network: which parameters scale it.

A set S of parameter leaves is *positively homogeneous* of degree k if
``f(c * theta_S, theta_rest) == c**k f(theta)`` for every ``c > 0``. Give each
float leaf i a 0/1 variable ``s_i`` (1: in S). Then the degree of every value
of the traced program is a *linear form* ``sum_i a_i s_i`` with constant
coefficients: a dot/conv/mul adds the degrees of its operands, a division
subtracts them, ``x**y`` multiplies by ``y``, and shape ops, reductions,
pooling, collectives and sorting keep them. Operations that are homogeneous
only under a condition add a linear *constraint*:

* elementwise sums, max/min, select, concatenation, pad, scatter: the
  operands' forms must be equal (``x + b`` with a fixed ``b``: the form of
  ``x`` must be 0);
* nonlinear functions (exp, tanh, erf, ...), integer casts, comparisons with a
  non-zero constant, a normalisation's ``+ eps``: the input form must be 0;
* loops: a ``while`` carry must keep its form; ``scan`` is unrolled
  symbolically (up to :data:`SCAN_UNROLL` steps, then the carry must keep
  its form); ``cond`` branches must agree.

The only *values* that matter are literals of the program: an all-zero
literal (``max(x, 0)``, ``jnp.zeros``) or an all-infinite one (max-pool
padding) has every degree. Parameters, example inputs, closed-over arrays and
non-parameter state (BatchNorm statistics) are abstract: their values never
decide anything. Unused computations are skipped (liveness), so primitives
that no parameter reaches, or that do not reach the output, never matter.

A primitive without a rule is assumed to pass its first operand's degree
through *and* to need its scaled inputs to have form 0; a leaf that only this
assumption excludes makes :func:`analyse` report it as blocked by that
primitive (``final_homogeneous`` then raises, naming it).

The constraints are homogeneous linear equations over 0/1 variables. Single-
sign equations fix their variables to 0 (propagation); what remains is solved
per connected component by a greedy search in *output order*: leaves are
visited from the one used nearest the output backwards, and each joins if
some completion of the remaining variables still satisfies every constraint
(an exact depth-first feasibility search with interval pruning). The result
is maximal: no excluded leaf can join it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any, NamedTuple

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np

from lawn_optax import _tree

SCAN_UNROLL = 256  # symbolic scan steps before requiring a fixed-point carry
SEARCH_NODES = 200_000  # depth-first nodes per feasibility question

Form = dict  # leaf index -> Fraction (zero coefficients never stored)

_ZERO_SAFE = frozenset({  # f(0) == 0
    "tanh", "sin", "tan", "asin", "atan", "sinh", "asinh", "atanh", "erf",
    "expm1", "log1p", "floor", "ceil", "round", "erf_inv", "cbrt"})
_NONLINEAR = frozenset({
    "exp", "exp2", "log", "log1p", "expm1", "tanh", "logistic", "sin", "cos",
    "tan", "asin", "acos", "atan", "atan2", "sinh", "cosh", "asinh", "acosh",
    "atanh", "erf", "erfc", "erf_inv", "lgamma", "digamma", "igamma",
    "igammac", "bessel_i0e", "bessel_i1e", "rem", "nextafter", "floor", "ceil",
    "round", "reduce_prod", "cumprod", "cumlogsumexp", "bitcast_convert_type",
    "polygamma", "zeta", "random_gamma_grad", "regularized_incomplete_beta",
    "not", "and", "or", "xor", "population_count", "clz", "shift_left",
    "shift_right_logical", "shift_right_arithmetic", "is_finite_not"})
# Output i has operand i's degree (extra index/shape operands must be fixed).
_SAME = frozenset({
    "reshape", "transpose", "broadcast_in_dim", "squeeze", "expand_dims",
    "slice", "rev", "copy", "copy_p", "reduce_precision", "neg", "reduce_sum",
    "reduce_max", "reduce_min", "cumsum", "cummax", "cummin",
    "reduce_window_sum", "reduce_window_max", "reduce_window_min", "abs",
    "stop_gradient", "sharding_constraint", "dynamic_slice", "gather", "real",
    "imag", "conj", "mesh_cast", "reshard", "split", "psum",
    "pmean", "pmax", "pmin", "all_gather", "ppermute", "all_to_all",
    "psum_scatter", "reduce_scatter", "pbroadcast", "psum_invariant", "pvary",
    "optimization_barrier", "sort", "device_put", "tile", "broadcast_to",
    "unstack", "all_gather_invariant", "layout_constraint",
    "with_memory_space_constraint", "name", "pcast", "unreduced_psum",
    "preduced"})
# Operands that carry the value; the rest are indices, predicates, shapes.
_EQUAL_OPERANDS: dict[str, Callable[[int], Sequence[int]]] = {
    "add": lambda n: range(n), "sub": lambda n: range(n),
    "add_any": lambda n: range(n), "max": lambda n: range(n),
    "min": lambda n: range(n), "concatenate": lambda n: range(n),
    "stack": lambda n: range(n), "pad": lambda n: (0, 1),
    "select_n": lambda n: range(1, n), "clamp": lambda n: range(n),
    "scatter": lambda n: (0, 2), "scatter-add": lambda n: (0, 2),
    "scatter_add": lambda n: (0, 2), "scatter-sub": lambda n: (0, 2),
    "scatter_sub": lambda n: (0, 2), "scatter-max": lambda n: (0, 2),
    "scatter_max": lambda n: (0, 2), "scatter-min": lambda n: (0, 2),
    "scatter_min": lambda n: (0, 2), "dynamic_update_slice": lambda n: (0, 1),
    "complex": lambda n: range(n),
}
_COMPARE = frozenset({"eq", "ne", "lt", "le", "gt", "ge"})
_INVARIANT = frozenset({"sign", "argmax", "argmin", "is_finite", "iota"})
_PRODUCT = frozenset({"mul", "dot_general", "conv_general_dilated",
                      "ragged_dot", "ragged_dot_general"})
_POWERS = {"square": Fraction(2), "sqrt": Fraction(1, 2),
           "rsqrt": Fraction(-1, 2), "cbrt": Fraction(1, 3)}
# Views of a parameter that keep its identity (for the leaf's role).
_ALIAS = frozenset({
    "reshape", "transpose", "broadcast_in_dim", "squeeze", "expand_dims",
    "copy", "copy_p", "slice", "rev", "reduce_precision", "sharding_constraint",
    "mesh_cast", "reshard", "convert_element_type", "split", "device_put",
    "pvary", "pcast", "tile", "broadcast_to", "unstack", "layout_constraint",
    "name"})
_KERNEL_USES = frozenset({"dot_general", "conv_general_dilated", "ragged_dot",
                          "ragged_dot_general"})


def _add(a: Form, b: Form, k: Any = 1) -> Form:
  out = dict(a)
  for i, v in b.items():
    w = out.get(i, 0) + k * v
    if w:
      out[i] = w
    else:
      out.pop(i, None)
  return out


def _scale(a: Form, k: Any) -> Form:
  return {i: v * k for i, v in a.items()} if k else {}


class Val(NamedTuple):
  """What the analysis knows of one traced value."""
  form: Form  # its degree as a linear form in the leaf variables
  wild: str | None = None  # "zero" / "inf": a literal with every degree
  origin: int | None = None  # the parameter leaf it is a view of
  data: bool = False  # depends on a non-parameter input (indices: lookups)


CONST = Val({})


class Where(NamedTuple):
  """A traced equation, for messages: primitive and source location."""
  primitive: str
  location: str

  def __str__(self) -> str:
    return f"'{self.primitive}'" + (f" at {self.location}" if self.location
                                    else "")


class Constraint(NamedTuple):
  form: Form  # must be 0
  where: Where
  why: str  # what the primitive needs
  unsupported: bool = False


_LIBRARY_DIRS = tuple(os.sep + d + os.sep for d in (
    "jax", "jaxlib", "flax", "optax", "lawn_optax", "haiku", "equinox"))


def _location(eqn) -> str:
  try:
    from jax._src import source_info_util as siu  # pylint: disable=g-import-not-at-top
    frames = list(siu.user_frames(eqn.source_info.traceback))
  except Exception:  # pylint: disable=broad-except
    return ""
  if not frames:
    return ""
  fmt = lambda f: f"{os.path.basename(f.file_name)}:{f.start_line}"
  inner = frames[0]
  user = next((f for f in frames
               if not any(d in f.file_name for d in _LIBRARY_DIRS)), None)
  if user is None or user is inner:
    return fmt(inner)
  return f"{fmt(user)} ({inner.function_name} in {fmt(inner)})"


def _literal(v) -> bool:
  return isinstance(v, jax.extend.core.Literal)


def _literal_val(value) -> Val:
  arr = np.asarray(value)
  if not arr.size:
    return CONST
  if jnp.issubdtype(arr.dtype, jnp.inexact):  # bfloat16 too (dtype kind V)
    arr = arr.astype(np.complex128 if jnp.issubdtype(
        arr.dtype, jnp.complexfloating) else np.float64)
  elif arr.dtype.kind not in "iub":
    return CONST
  if not np.any(arr):
    return Val({}, "zero")
  if arr.dtype.kind in "fc" and np.all(np.isinf(arr)):
    return Val({}, "inf")
  return CONST


def _is_float(aval) -> bool:
  dtype = getattr(aval, "dtype", None)
  return dtype is not None and (jnp.issubdtype(dtype, jnp.floating) or
                                jnp.issubdtype(dtype, jnp.complexfloating))


def _live(jaxpr):
  """Equations the outputs depend on (a BatchNorm's running-statistics update,
  an auxiliary head the function drops: skipped)."""
  needed = {v for v in jaxpr.outvars if not _literal(v)}
  live = []
  for eqn in reversed(jaxpr.eqns):
    if any(v in needed for v in eqn.outvars) or eqn.effects:
      live.append(eqn)
      needed.update(v for v in eqn.invars if not _literal(v))
  return live[::-1]


def _call_jaxpr(eqn):
  """The sub-jaxpr of a call-like primitive taking the eqn's operands."""
  for value in eqn.params.values():
    if hasattr(value, "jaxpr") and hasattr(value, "consts"):
      jaxpr, consts = value.jaxpr, list(value.consts)
    elif hasattr(value, "eqns") and hasattr(value, "invars"):
      jaxpr, consts = value, []
    else:
      continue
    if len(jaxpr.invars) == len(eqn.invars):
      return jaxpr, consts
  return None


class Interpreter:
  """Propagates :class:`Val` through a jaxpr, collecting constraints."""

  def __init__(self, n_leaves: int):
    self.constraints: dict[tuple, Constraint] = {}
    self.roles: list[set[str]] = [set() for _ in range(n_leaves)]
    self.used: dict[int, int] = {}  # leaf -> its last direct use (counter)
    self.counter = 0
    self.outer: list[Any] = []  # the enclosing equations (for locations)

  # -- bookkeeping -----------------------------------------------------------
  def need(self, form: Form, eqn, why: str, unsupported: bool = False):
    """Records ``form == 0`` (``eqn`` None: the function's outputs)."""
    if not form:
      return
    lead = form[min(form)]
    key = tuple(sorted((i, v / lead) for i, v in form.items()))
    # The same condition met again nearer the output replaces the first one
    # (reasons name the last obstacle).
    old = self.constraints.pop(key, None)
    if eqn is None:
      where = Where("output", "")
    else:
      location = _location(eqn) or next(
          (loc for loc in map(_location, reversed(self.outer)) if loc), "")
      where = Where(eqn.primitive.name, location)
    self.constraints[key] = Constraint(
        dict(form), where, why, unsupported and (old is None or
                                                 old.unsupported))

  def equal(self, vals: Sequence[Val], eqn, why: str) -> Val:
    """One degree for ``vals`` (wildcards match any); the common value."""
    real = [v for v in vals if v.wild is None]
    data = any(v.data for v in vals)
    if not real:
      kinds = {v.wild for v in vals}
      return Val({}, kinds.pop() if len(kinds) == 1 else None, data=data)
    if any(not v.form for v in real):
      why += " (one is a fixed value: an epsilon, a bias or a constant)"
    for v in real[1:]:
      self.need(_add(v.form, real[0].form, -1), eqn, why)
    return Val(real[0].form, data=data)

  # -- the interpreter -------------------------------------------------------
  def run(self, jaxpr, ins: Sequence[Val], consts: Sequence[Val] = ()
          ) -> list[Val]:
    env: dict[Any, Val] = {}
    read = lambda v: _literal_val(v.val) if _literal(v) else env.get(v, CONST)
    for v, c in zip(jaxpr.constvars, consts):
      env[v] = c
    for v, val in zip(jaxpr.invars, ins):
      env[v] = val
    for eqn in _live(jaxpr):
      vals = [read(v) for v in eqn.invars]
      self.counter += 1
      if eqn.primitive.name not in _ALIAS:
        for val in vals:
          if val.origin is not None:
            self.used[val.origin] = self.counter
      self.outer.append(eqn)
      try:
        outs = self.eqn(eqn, vals)
      finally:
        self.outer.pop()
      for v, o in zip(eqn.outvars, outs):
        env[v] = o
    return [read(v) for v in jaxpr.outvars]

  def eqn(self, eqn, ins: list[Val]) -> list[Val]:
    name = eqn.primitive.name
    n_out = len(eqn.outvars)
    self._roles(name, eqn, ins)
    if name == "zeros_like":
      return [Val({}, "zero")]
    if name == "cond":
      return self._cond(eqn, ins)
    if name == "while":
      return self._while(eqn, ins)
    if name == "scan":
      return self._scan(eqn, ins)
    if name in ("reduce_window", "reduce"):
      return self._generic_reduce(eqn, ins)
    sub = _call_jaxpr(eqn)
    if sub is not None:  # pjit, remat, custom_jvp/vjp, shard_map, pmap, ...
      jaxpr, consts = sub
      return self.run(jaxpr, ins, [CONST] * len(consts))
    data = any(v.data for v in ins)
    if not any(v.form for v in ins):
      # Nothing here depends on a scaled leaf: a constant, or a wildcard.
      return [self._unscaled(name, eqn, ins, data)] * n_out
    if name in _INVARIANT:
      return [Val({}, data=data)] * n_out
    if name in _COMPARE:
      self.equal(ins, eqn, "its operands to scale alike")
      return [Val({}, data=data)] * n_out
    if name == "convert_element_type":
      if _is_float(eqn.outvars[0].aval):
        return [ins[0]._replace(data=data)]
      self.need(ins[0].form, eqn, "an unscaled input (an integer or bool "
                "cast does not scale)")
      return [Val({}, data=data)]
    if name in _SAME:
      if name in ("split", "unstack"):
        return [ins[0]._replace(data=data)] * n_out
      if n_out == 1:
        for v in ins[1:]:
          self.need(v.form, eqn, "unscaled indices")
        view = name in _ALIAS or (name in ("gather", "dynamic_slice") and
                                  not any(v.data for v in ins[1:]))
        return [Val(ins[0].form, ins[0].wild,
                    ins[0].origin if view else None, data)]
      return [v._replace(origin=None) for v in ins[:n_out]]
    if name in ("top_k", "approx_top_k"):
      return [Val(ins[0].form, ins[0].wild, data=data), Val({}, data=data)]
    if name in _EQUAL_OPERANDS:
      idx = list(_EQUAL_OPERANDS[name](len(ins)))
      for j in range(len(ins)):
        if j not in idx:
          self.need(ins[j].form, eqn, "unscaled indices and predicates")
      out = self.equal([ins[j] for j in idx], eqn,
                       "operands of one degree")
      return [out._replace(data=data)] * n_out
    if name in _PRODUCT:
      a, b = ins[0], ins[1]
      if "zero" in (a.wild, b.wild):
        return [Val({}, "zero", data=data)] * n_out
      return [Val(_add(a.form, b.form), data=data)] * n_out
    if name == "div":
      a, b = ins[0], ins[1]
      if b.wild == "zero":
        self.need(_add(a.form, b.form), eqn, "a non-zero divisor")
        return [Val({}, data=data)]
      if a.wild == "zero":
        return [Val({}, "zero", data=data)]
      return [Val(_add(a.form, b.form, -1), data=data)]
    if name in _POWERS or name == "integer_pow":
      power = _POWERS.get(name, None)
      power = Fraction(eqn.params["y"]) if power is None else power
      return [Val(_scale(ins[0].form, power), ins[0].wild, data=data)]
    if name == "pow":
      base, exponent = ins
      y = eqn.invars[1]
      if not exponent.form and _literal(y) and np.ndim(y.val) == 0:
        return [Val(_scale(base.form, Fraction(float(y.val))), data=data)]
      for v in ins:
        self.need(v.form, eqn, "an unscaled input (a power with a "
                  "non-literal exponent)")
      return [Val({}, data=data)]
    if name in _NONLINEAR:
      for v in ins:
        self.need(v.form, eqn, "an unscaled input (not homogeneous)")
      return [Val({}, data=data)] * n_out
    # No rule: assume it passes the degree through, and needs its input fixed.
    for v in ins:
      self.need(v.form, eqn, "a rule (no homogeneity rule for this "
                "primitive)", unsupported=True)
    first = next(v for v in ins if v.form)
    return [Val(first.form, data=data)] * n_out

  def _unscaled(self, name, eqn, ins, data) -> Val:
    wild = [v.wild for v in ins]
    if name in _SAME and wild and wild[0]:
      return Val({}, wild[0], data=data)
    if name in _PRODUCT and "zero" in wild:
      return Val({}, "zero", data=data)
    if name == "div" and wild[0] == "zero" and wild[1] != "zero":
      return Val({}, "zero", data=data)
    if name in _POWERS or name == "integer_pow":
      return Val({}, "zero" if wild[0] == "zero" else None, data=data)
    if name in _ZERO_SAFE and wild[0] == "zero":
      return Val({}, "zero", data=data)
    if name == "convert_element_type" and wild[0] == "zero":
      return Val({}, "zero", data=data)
    if name in _EQUAL_OPERANDS:
      idx = list(_EQUAL_OPERANDS[name](len(ins)))
      kinds = {wild[j] for j in idx}
      if len(kinds) == 1 and None not in kinds:
        return Val({}, kinds.pop(), data=data)
    return Val({}, data=data)

  def _roles(self, name, eqn, ins):
    for pos, v in enumerate(ins):
      if v.origin is None:
        continue
      if name in _KERNEL_USES:
        self.roles[v.origin].add("kernel")
      elif name in ("gather", "dynamic_slice") and pos == 0 and any(
          w.data for w in ins[1:]):
        self.roles[v.origin].add("embedding")
      elif name in ("mul", "div"):
        self.roles[v.origin].add("scale")
      elif name in ("add", "sub", "add_any") and any(
          w.data or w.form for j, w in enumerate(ins) if j != pos):
        self.roles[v.origin].add("bias")

  def _cond(self, eqn, ins):
    self.need(ins[0].form, eqn, "an unscaled branch index")
    outs = [self.run(b.jaxpr, ins[1:], [CONST] * len(b.consts))
            for b in eqn.params["branches"]]
    return [self.equal(vals, eqn, "every branch to give one degree")
            for vals in zip(*outs)]

  def _while(self, eqn, ins):
    p = eqn.params
    cn, bn = p["cond_nconsts"], p["body_nconsts"]
    cconsts, bconsts, carry = ins[:cn], ins[cn:cn + bn], list(ins[cn + bn:])
    body, cond = p["body_jaxpr"], p["cond_jaxpr"]
    for _ in range(len(carry) + 2):
      out = self.run(body.jaxpr, bconsts + carry, [CONST] * len(body.consts))
      grown = [o if c.wild and not o.wild else c for c, o in zip(carry, out)]
      if all(g is c for g, c in zip(grown, carry)):
        break
      carry = grown
    for c, o in zip(carry, out):
      self.equal([c, o], eqn, "a loop carry whose degree stays fixed")
    self.run(cond.jaxpr, cconsts + carry, [CONST] * len(cond.consts))
    return [c._replace(origin=None) for c in carry]

  def _scan(self, eqn, ins):
    p = eqn.params
    nc, nk, length = p["num_consts"], p["num_carry"], int(p["length"])
    body = p["jaxpr"]
    consts, carry, xs = ins[:nc], list(ins[nc:nc + nk]), ins[nc + nk:]
    ys = None
    for _step in range(min(length, SCAN_UNROLL)):
      out = self.run(body.jaxpr, consts + carry + xs,
                     [CONST] * len(body.consts))
      new, y = out[:nk], out[nk:]
      ys = y if ys is None else [self.equal([a, b], eqn, "every scan step "
                                            "to stack values of one degree")
                                 for a, b in zip(ys, y)]
      same = all(a.form == b.form and a.wild == b.wild
                 for a, b in zip(carry, new))
      carry = [v._replace(origin=None) for v in new]
      if same:
        break
    else:
      if length > SCAN_UNROLL:  # keep the carry's degree from here on
        out = self.run(body.jaxpr, consts + carry + xs,
                       [CONST] * len(body.consts))
        for c, o in zip(carry, out[:nk]):
          self.equal([c, o], eqn, "a scan carry whose degree stays fixed")
    if ys is None:  # length 0
      ys = [Val({})] * (len(eqn.outvars) - nk)
    return carry + [y._replace(origin=None) for y in ys]

  def _generic_reduce(self, eqn, ins):
    sub = eqn.params.get("jaxpr")
    sub = getattr(sub, "jaxpr", sub)
    ops = {e.primitive.name for e in getattr(sub, "eqns", [])}
    if ops and ops <= {"add", "max", "min", "add_any"}:
      k = len(eqn.outvars)
      operands, inits = ins[:k], ins[k:]
      return [self.equal([a, b], eqn, "operands of one degree")
              for a, b in zip(operands, inits)]
    for v in ins:
      self.need(v.form, eqn, "a rule (no homogeneity rule for this "
                "reduction)", unsupported=True)
    first = next((v for v in ins if v.form), CONST)
    return [Val(first.form)] * len(eqn.outvars)


# --------------------------------------------------------------------------
# Tracing and the search
# --------------------------------------------------------------------------


def _abstract(x: Any) -> Any:
  if isinstance(x, jax.ShapeDtypeStruct):
    return x
  if isinstance(x, (jax.Array, np.ndarray, np.generic)) or (
      hasattr(x, "shape") and hasattr(x, "dtype") and not isinstance(
          x, (bool, int, float, complex))):
    return jax.ShapeDtypeStruct(np.shape(x), x.dtype)
  return None


class Traced(NamedTuple):
  jaxpr: Any  # ClosedJaxpr; its first invars are the array leaves of params
  keys: list[tuple[str, ...]]
  paths: list[str]
  leaves: list[Any]
  treedef: Any
  param_leaves: list[int]  # which params leaves are traced (arrays)
  n_inputs: int  # traced non-parameter inputs after them


def trace(fn: Callable[..., Any], params: Any, args: tuple, kwargs: dict
          ) -> Traced:
  """Traces ``fn(params, *args, **kwargs)`` with every array abstract
  (``jax.ShapeDtypeStruct``); other arguments (Python scalars, flags) stay
  static."""
  params = _tree.unwrap_variables(params)
  keys, leaves, treedef = _tree.flatten_with_keys(params)
  p_abs = [_abstract(x) for x in leaves]
  a_leaves, a_def = jax.tree.flatten((args, kwargs))
  a_abs = [_abstract(x) for x in a_leaves]
  p_dyn = [i for i, a in enumerate(p_abs) if a is not None]
  a_dyn = [i for i, a in enumerate(a_abs) if a is not None]

  def flat_fn(*flat):
    ps, xs = list(leaves), list(a_leaves)
    for i, v in zip(p_dyn, flat[:len(p_dyn)]):
      ps[i] = v
    for i, v in zip(a_dyn, flat[len(p_dyn):]):
      xs[i] = v
    a, k = jax.tree.unflatten(a_def, xs)
    return fn(jax.tree.unflatten(treedef, ps), *a, **k)

  closed = jax.make_jaxpr(flat_fn)(*[p_abs[i] for i in p_dyn],
                                   *[a_abs[i] for i in a_dyn])
  return Traced(closed, keys, [_tree.join(k) for k in keys], leaves, treedef,
                p_dyn, len(a_dyn))


class Analysis(NamedTuple):
  """The result of :func:`analyse` (one entry per params leaf)."""
  flags: list[bool]
  degree: int | None
  paths: list[str]
  keys: list[tuple[str, ...]]
  treedef: Any
  shapes: list[tuple[int, ...]]
  reasons: list[str]  # why each leaf is in or out
  coefficients: list[Fraction]  # each leaf's share of the output degree
  blocked: list[tuple[str, Constraint]]  # leaves only a missing rule excludes
  error: str | None  # why no set exists, if none does


def _interpret(traced: Traced, zeroed: set[int]) -> tuple[Interpreter, Val]:
  n = len(traced.leaves)
  jaxpr = traced.jaxpr.jaxpr
  ins = []
  for i, var in zip(traced.param_leaves, jaxpr.invars):
    if i in zeroed:
      ins.append(Val({}, "zero"))
    elif jnp.issubdtype(var.aval.dtype, jnp.floating):
      ins.append(Val({i: Fraction(1)}, origin=i))
    else:
      ins.append(Val({}, origin=i))
  ins += [Val({}, data=True)] * traced.n_inputs
  interp = Interpreter(n)
  outs = interp.run(jaxpr, ins,
                    [Val({}, data=True)] * len(traced.jaxpr.consts))
  floats = [o for o, v in zip(outs, jaxpr.outvars) if _is_float(v.aval)]
  if not floats:
    raise ValueError("fn returns no floating-point output to analyse.")
  return interp, interp.equal(floats, None, "every output to share one "
                              "degree")


def analyse(fn: Callable[..., Any], params: Any, args: tuple, kwargs: dict, *,
            biases: str, include_embeddings: bool, include_scales: bool
            ) -> Analysis:
  """Finds the final homogeneous set of ``fn``'s parameters (see module doc)."""
  if biases not in ("strict", "ignore"):
    raise ValueError(f"biases must be 'strict' or 'ignore', got {biases!r}.")
  traced = trace(fn, params, args, kwargs)
  keys, paths, n = traced.keys, traced.paths, len(traced.leaves)
  avals = dict(zip(traced.param_leaves, traced.jaxpr.jaxpr.invars))
  # Real floating leaves only: a complex weight has no norm to freeze here.
  is_float = [i in avals and jnp.issubdtype(avals[i].aval.dtype, jnp.floating)
              for i in range(n)]
  shapes = [tuple(avals[i].aval.shape) if i in avals else () for i in range(n)]
  named_bias = {i for i in range(n) if is_float[i] and keys[i] and
                keys[i][-1] == "bias"}
  zeroed = named_bias if biases == "ignore" else set()
  interp, out = _interpret(traced, zeroed)
  roles = interp.roles
  # A vector that is only ever added to activations is a bias too.
  is_bias = {i for i in range(n) if is_float[i] and (
      i in named_bias or (roles[i] == {"bias"} and len(shapes[i]) <= 1))}
  if biases == "ignore" and is_bias - zeroed:
    zeroed = is_bias
    interp, out = _interpret(traced, zeroed)
  if out.wild == "zero":
    raise ValueError("fn's output is identically zero: nothing to analyse.")
  if not out.form and not interp.used:
    raise ValueError("fn's output does not depend on the params: nothing "
                     "to constrain.")

  coeff = [out.form.get(i, Fraction(0)) for i in range(n)]
  reasons: list[str | None] = [None] * n
  for i in range(n):
    if not is_float[i]:
      reasons[i] = "not a real floating-point array"
    elif i in zeroed:
      reasons[i] = "bias: analysed as zero (biases='ignore')"
    elif i not in interp.used and not coeff[i]:
      reasons[i] = "does not reach the output"
    elif not include_embeddings and "embedding" in roles[i]:
      reasons[i] = "embedding table (include_embeddings=False)"
    elif not include_scales and roles[i] == {"scale"}:
      reasons[i] = "norm scale (include_scales=False)"
  eligible = {i for i in range(n) if reasons[i] is None}
  constraints = list(interp.constraints.values())
  supported = [c for c in constraints if not c.unsupported]
  for i, c in _propagate(supported, eligible).items():
    reasons[i] = _reason(c, i, paths)
  free = {i for i in eligible if reasons[i] is None}
  by_rules = _propagate(supported, free)
  by_all = _propagate(constraints, free)
  blocked = [(paths[i], c) for i, c in by_all.items() if i not in by_rules]
  for i, c in by_all.items():
    if i not in by_rules:
      reasons[i] = (f"undecided: {c.where} has no homogeneity rule (pass an "
                    "explicit mask)")
  free -= set(by_all)
  components = _components(constraints, free)
  for members in components.values():
    # A leaf scales the output if it, or a leaf tied to it, has a share of
    # the output's degree; the rest (behind an eps-free normalisation, say)
    # would be constrained for nothing.
    if not any(coeff[i] for i in members):
      for i in members:
        reasons[i] = "the output does not scale with it"
      free -= members
  chosen, excluded = _search(constraints, free, interp.used)
  for i, c in excluded.items():
    reasons[i] = (f"joining would break {c.where}, which needs {c.why} "
                  "(the leaves used nearer the output were kept)")
  degree = sum((coeff[i] for i in chosen), Fraction(0))
  error = None
  if not chosen:
    head = max((i for i in range(n) if i in interp.used or coeff[i]),
               key=lambda i: interp.used.get(i, 1 << 60), default=None)
    error = "no homogeneous set: " + (
        f"'{paths[head]}' (the leaf used nearest the output) is out: "
        f"{reasons[head]}." if head is not None else
        "no floating-point parameter reaches the output.")
  elif degree.denominator != 1 or degree < 1:
    error = (f"the homogeneous set found has degree {degree}, not a positive "
             "integer; pass an explicit mask.")
  for i in chosen:
    reasons[i] = (f"degree {coeff[i]}" if coeff[i] else
                  "scales with the others (tied by a sum or a max)")
  return Analysis([i in chosen for i in range(n)],
                  int(degree) if error is None else None, paths, keys,
                  traced.treedef, shapes, [r or "" for r in reasons], coeff,
                  blocked, error)


def _reason(c: Constraint, i: int, paths: Sequence[str]) -> str:
  others = [paths[j] for j in c.form if j != i]
  tail = f" (with '{others[0]}' out)" if len(others) == 1 else (
      f" (with {len(others)} other leaves out)" if others else "")
  return f"{c.where} needs {c.why}{tail}"


def _propagate(constraints: Sequence[Constraint], free: set[int]
               ) -> dict[int, Constraint]:
  """Variables that every solution sets to 0, each with a constraint that
  forces it: one whose coefficients on the still-free variables share a
  sign (all other variables are 0). Constraints nearest the output are tried
  first, so a leaf's reason is the last obstacle on its way out."""
  forced: dict[int, Constraint] = {}
  changed = True
  while changed:
    changed = False
    for c in reversed(constraints):
      terms = [v for i, v in c.form.items() if i in free and i not in forced]
      if terms and (all(v > 0 for v in terms) or all(v < 0 for v in terms)):
        for i in c.form:
          if i in free and i not in forced:
            forced[i] = c._replace(form={
                j: v for j, v in c.form.items() if j == i or j not in free
                or j in forced})
        changed = True
  return forced


def _components(constraints: Sequence[Constraint], free: set[int]
                ) -> dict[int, set[int]]:
  """Groups of free variables linked by constraints (root -> members)."""
  parent = {i: i for i in free}

  def find(i):
    while parent[i] != i:
      parent[i] = parent[parent[i]]
      i = parent[i]
    return i

  for c in constraints:
    vs = [i for i in c.form if i in free]
    for v in vs[1:]:
      parent[find(v)] = find(vs[0])
  groups: dict[int, set[int]] = {}
  for i in free:
    groups.setdefault(find(i), set()).add(i)
  return groups


def _search(constraints: Sequence[Constraint], free: set[int],
            order: dict[int, int]) -> tuple[set[int], dict[int, Constraint]]:
  """Greedy in output order with exact feasibility (see module doc)."""
  group_of = {i: root for root, members in _components(
      constraints, free).items() for i in members}
  by_group: dict[int, list[Constraint]] = {}
  for c in constraints:
    vs = [i for i in c.form if i in free]
    if vs:
      by_group.setdefault(group_of[vs[0]], []).append(c)
  chosen: set[int] = set()
  excluded: dict[int, Constraint] = {}
  assign: dict[int, int] = {}
  for i in sorted(free, key=lambda i: -order.get(i, 1 << 60)):
    cons = by_group.get(group_of[i], [])
    assign[i] = 1
    if not cons or _feasible(cons, assign, free):
      chosen.add(i)
      continue
    assign[i] = 0
    mine = [c for c in cons if i in c.form]
    excluded[i] = next((c for c in mine if not _feasible(
        [c], {**assign, i: 1}, free)), mine[0])
  return chosen, excluded


def _feasible(constraints: Sequence[Constraint], assign: dict[int, int],
              free: set[int]) -> bool:
  """Whether the unassigned free variables can complete ``assign`` (depth-
  first, pruned by each constraint's attainable interval; gives up -- False,
  which only shrinks the set -- after :data:`SEARCH_NODES` nodes)."""
  cons = [{i: v for i, v in c.form.items() if i in free} for c in constraints]
  rest = sorted({i for c in cons for i in c if i not in assign})
  nodes = 0

  def ok(a):
    for c in cons:
      lo = hi = 0
      for i, v in c.items():
        if i in a:
          lo += v * a[i]
          hi += v * a[i]
        elif v > 0:
          hi += v
        else:
          lo += v
      if lo > 0 or hi < 0:
        return False
    return True

  def dfs(k, a):
    nonlocal nodes
    nodes += 1
    if nodes > SEARCH_NODES or not ok(a):
      return False
    if k == len(rest):
      return True
    for value in (1, 0):
      a[rest[k]] = value
      if dfs(k + 1, a):
        return True
    del a[rest[k]]
    return False

  return dfs(0, dict(assign))


def scale_params(params: Any, flags: Sequence[bool], c: float) -> Any:
  params = _tree.unwrap_variables(params)
  leaves, treedef = jax.tree.flatten(params, is_leaf=_tree.is_masked_node)
  return jax.tree.unflatten(
      treedef, [x * np.asarray(c, x.dtype) if f else x
                for x, f in zip(leaves, flags)])
