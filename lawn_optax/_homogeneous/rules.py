"""The rule table of the mask analysis: what each primitive does to degrees.

``RULES[name](interp, eqn, ins, data) -> outputs`` for an equation with at
least one scaled operand (``ins``: the operands' :class:`Val`; ``data``:
whether any depends on a non-parameter input); :func:`default` for a
primitive without one (it assumes the degree passes through *and* records
that its inputs must be unscaled, flagged unsupported: the analysis then
names the primitive instead of guessing). ``CONTROL`` handles the
primitives with sub-programs and the literal-zero ``zeros_like``;
:func:`unscaled` says what a primitive makes of unscaled operands (literal
zeros and infinities have every degree). A new primitive is one entry here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any

import numpy as np

from lawn_optax._homogeneous.forms import (
    CONST,
    Val,
    _add,
    _is_float,
    _literal,
    _scale,
)

SCAN_UNROLL = 256  # symbolic scan steps before requiring a fixed-point carry

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


# -- rules for an equation with a scaled operand -----------------------------

def _invariant(interp, eqn, ins, data):
  return [Val({}, data=data)] * len(eqn.outvars)


def _compare(interp, eqn, ins, data):
  interp.equal(ins, eqn, "its operands to scale alike")
  return [Val({}, data=data)] * len(eqn.outvars)


def _convert(interp, eqn, ins, data):
  if _is_float(eqn.outvars[0].aval):
    return [ins[0]._replace(data=data)]
  interp.need(ins[0].form, eqn, "an unscaled input (an integer or bool "
              "cast does not scale)")
  return [Val({}, data=data)]


def _same(interp, eqn, ins, data):
  name, n_out = eqn.primitive.name, len(eqn.outvars)
  if name in ("split", "unstack"):
    return [ins[0]._replace(data=data)] * n_out
  if n_out == 1:
    for v in ins[1:]:
      interp.need(v.form, eqn, "unscaled indices")
    view = name in _ALIAS or (name in ("gather", "dynamic_slice") and
                              not any(v.data for v in ins[1:]))
    return [Val(ins[0].form, ins[0].wild, ins[0].origin if view else None,
                data)]
  return [v._replace(origin=None) for v in ins[:n_out]]


def _top_k(interp, eqn, ins, data):
  return [Val(ins[0].form, ins[0].wild, data=data), Val({}, data=data)]


def _equal_operands(interp, eqn, ins, data):
  idx = list(_EQUAL_OPERANDS[eqn.primitive.name](len(ins)))
  for j in range(len(ins)):
    if j not in idx:
      interp.need(ins[j].form, eqn, "unscaled indices and predicates")
  out = interp.equal([ins[j] for j in idx], eqn, "operands of one degree")
  return [out._replace(data=data)] * len(eqn.outvars)


def _product(interp, eqn, ins, data):
  a, b = ins[0], ins[1]
  if "zero" in (a.wild, b.wild):
    return [Val({}, "zero", data=data)] * len(eqn.outvars)
  return [Val(_add(a.form, b.form), data=data)] * len(eqn.outvars)


def _div(interp, eqn, ins, data):
  a, b = ins[0], ins[1]
  if b.wild == "zero":
    interp.need(_add(a.form, b.form), eqn, "a non-zero divisor")
    return [Val({}, data=data)]
  if a.wild == "zero":
    return [Val({}, "zero", data=data)]
  return [Val(_add(a.form, b.form, -1), data=data)]


def _power(interp, eqn, ins, data):
  power = _POWERS.get(eqn.primitive.name, None)
  power = Fraction(eqn.params["y"]) if power is None else power
  return [Val(_scale(ins[0].form, power), ins[0].wild, data=data)]


def _pow(interp, eqn, ins, data):
  base, exponent = ins
  y = eqn.invars[1]
  if not exponent.form and _literal(y) and np.ndim(y.val) == 0:
    return [Val(_scale(base.form, Fraction(float(y.val))), data=data)]
  for v in ins:
    interp.need(v.form, eqn, "an unscaled input (a power with a non-literal "
                "exponent)")
  return [Val({}, data=data)]


def _nonlinear(interp, eqn, ins, data):
  for v in ins:
    interp.need(v.form, eqn, "an unscaled input (not homogeneous)")
  return [Val({}, data=data)] * len(eqn.outvars)


def default(interp, eqn, ins, data):
  """No rule: assume the degree passes through, and need the input fixed
  (flagged unsupported, so a leaf only this excludes is reported)."""
  for v in ins:
    interp.need(v.form, eqn, "a rule (no homogeneity rule for this "
                "primitive)", unsupported=True)
  first = next(v for v in ins if v.form)
  return [Val(first.form, data=data)] * len(eqn.outvars)


Rule = Callable[[Any, Any, list, bool], list]
RULES: dict[str, Rule] = {
    **{n: _invariant for n in _INVARIANT},
    **{n: _compare for n in _COMPARE},
    **{n: _same for n in _SAME},
    **{n: _equal_operands for n in _EQUAL_OPERANDS},
    **{n: _product for n in _PRODUCT},
    **{n: _power for n in _POWERS}, "integer_pow": _power,
    **{n: _nonlinear for n in _NONLINEAR},
    "convert_element_type": _convert, "top_k": _top_k,
    "approx_top_k": _top_k, "div": _div, "pow": _pow,
}


def unscaled(name: str, eqn, ins: Sequence[Val], data: bool) -> Val:
  """The value of an equation none of whose operands is scaled: a constant,
  or a literal zero/infinity that keeps every degree."""
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


def role(name: str, pos: int, ins: Sequence[Val]) -> str | None:
  """How a parameter leaf used as operand ``pos`` of ``name`` acts: a
  kernel, an embedding table, a scale or a bias (for the options and the
  bias test), or nothing said."""
  if name in _KERNEL_USES:
    return "kernel"
  if name in ("gather", "dynamic_slice") and pos == 0 and any(
      w.data for w in ins[1:]):
    return "embedding"
  if name in ("mul", "div"):
    return "scale"
  if name in ("add", "sub", "add_any") and any(
      w.data or w.form for j, w in enumerate(ins) if j != pos):
    return "bias"
  return None


# -- control flow ------------------------------------------------------------

def _cond(interp, eqn, ins):
  interp.need(ins[0].form, eqn, "an unscaled branch index")
  outs = [interp.run(b.jaxpr, ins[1:], [CONST] * len(b.consts))
          for b in eqn.params["branches"]]
  return [interp.equal(vals, eqn, "every branch to give one degree")
          for vals in zip(*outs)]


def _while(interp, eqn, ins):
  p = eqn.params
  cn, bn = p["cond_nconsts"], p["body_nconsts"]
  cconsts, bconsts, carry = ins[:cn], ins[cn:cn + bn], list(ins[cn + bn:])
  body, cond = p["body_jaxpr"], p["cond_jaxpr"]
  for _ in range(len(carry) + 2):
    out = interp.run(body.jaxpr, bconsts + carry, [CONST] * len(body.consts))
    grown = [o if c.wild and not o.wild else c for c, o in zip(carry, out)]
    if all(g is c for g, c in zip(grown, carry)):
      break
    carry = grown
  for c, o in zip(carry, out):
    interp.equal([c, o], eqn, "a loop carry whose degree stays fixed")
  interp.run(cond.jaxpr, cconsts + carry, [CONST] * len(cond.consts))
  return [c._replace(origin=None) for c in carry]


def _scan(interp, eqn, ins):
  p = eqn.params
  nc, nk, length = p["num_consts"], p["num_carry"], int(p["length"])
  body = p["jaxpr"]
  consts, carry, xs = ins[:nc], list(ins[nc:nc + nk]), ins[nc + nk:]
  ys = None
  for _step in range(min(length, SCAN_UNROLL)):
    out = interp.run(body.jaxpr, consts + carry + xs,
                     [CONST] * len(body.consts))
    new, y = out[:nk], out[nk:]
    ys = y if ys is None else [interp.equal([a, b], eqn, "every scan step "
                                            "to stack values of one degree")
                               for a, b in zip(ys, y)]
    same = all(a.form == b.form and a.wild == b.wild
               for a, b in zip(carry, new))
    carry = [v._replace(origin=None) for v in new]
    if same:
      break
  else:
    if length > SCAN_UNROLL:  # keep the carry's degree from here on
      out = interp.run(body.jaxpr, consts + carry + xs,
                       [CONST] * len(body.consts))
      for c, o in zip(carry, out[:nk]):
        interp.equal([c, o], eqn, "a scan carry whose degree stays fixed")
  if ys is None:  # length 0
    ys = [Val({})] * (len(eqn.outvars) - nk)
  return carry + [y._replace(origin=None) for y in ys]


def _generic_reduce(interp, eqn, ins):
  sub = eqn.params.get("jaxpr")
  sub = getattr(sub, "jaxpr", sub)
  ops = {e.primitive.name for e in getattr(sub, "eqns", [])}
  if ops and ops <= {"add", "max", "min", "add_any"}:
    k = len(eqn.outvars)
    operands, inits = ins[:k], ins[k:]
    return [interp.equal([a, b], eqn, "operands of one degree")
            for a, b in zip(operands, inits)]
  for v in ins:
    interp.need(v.form, eqn, "a rule (no homogeneity rule for this "
                "reduction)", unsupported=True)
  first = next((v for v in ins if v.form), CONST)
  return [Val(first.form)] * len(eqn.outvars)


CONTROL: dict[str, Callable[[Any, Any, list], list]] = {
    "zeros_like": lambda interp, eqn, ins: [Val({}, "zero")],
    "cond": _cond, "while": _while, "scan": _scan,
    "reduce_window": _generic_reduce, "reduce": _generic_reduce,
}
