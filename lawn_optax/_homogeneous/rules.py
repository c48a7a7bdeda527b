"""The rule table of the mask analysis: what each primitive does to degrees.

``RULES`` holds one :class:`Primitive` per primitive name, and nothing else
knows primitive names: its ``rule(interp, eqn, ins, data) -> outputs`` runs
for an equation with at least one scaled operand (``ins``: the operands'
:class:`Val`; ``data``: whether any depends on a non-parameter input), or for
every equation when ``control`` is set (primitives with sub-programs, and the
literal-zero ``zeros_like``); ``unscaled`` says which wildcard the outputs
keep when no operand is scaled (literal zeros and infinities have every
degree); ``view`` marks an output that is its first operand seen another way
(it keeps the parameter's identity, and is not a use of it); ``role`` says
how a parameter operand acts (a kernel, an embedding table, a scale, a bias).
A primitive without an entry gets :func:`default`: the degree passes through
*and* its inputs must be unscaled, flagged unsupported, so that the analysis
names the primitive instead of guessing.

A new primitive is one entry: its name added to one ``_register`` line below,
or one small rule function registered there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any, NamedTuple

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

Rule = Callable[[Any, Any, list, bool], list]
Wild = str | None  # a Val's wildcard: "zero", "inf" or None


class Primitive(NamedTuple):
  """What the analysis knows about one primitive (see the module's doc)."""
  rule: Rule
  unscaled: Callable[[Sequence[Wild]], Wild] = lambda wild: None
  view: bool = False
  role: Callable[[int, Sequence[Val]], str | None] = lambda pos, ins: None
  # The operands that carry the value (the others: indices, predicates).
  operands: Callable[[int], Sequence[int]] | None = None
  power: Fraction | None = None
  control: bool = False


RULES: dict[str, Primitive] = {}


def _register(names: str, rule: Rule, **fields: Any) -> None:
  for name in names.split():
    if name in RULES:
      raise ValueError(f"primitive {name!r} registered twice")
    RULES[name] = Primitive(rule, **fields)


def rule(name: str) -> Primitive:
  """The entry of ``name``; :func:`default`'s for a primitive without one."""
  return RULES.get(name, _DEFAULT)


def unscaled(name: str, eqn, ins: Sequence[Val], data: bool) -> Val:
  """The value of an equation none of whose operands is scaled: a constant,
  or a literal zero/infinity that keeps every degree."""
  idx = _value_operands(name, len(ins))
  return Val({}, rule(name).unscaled([ins[j].wild for j in idx]), data=data)


def _value_operands(name: str, n: int) -> Sequence[int]:
  """The operands of ``name`` (of ``n``) that carry the value."""
  operands = rule(name).operands
  return range(n) if operands is None else operands(n)


# -- what the outputs keep when no operand is scaled (value operands' wild) --

def _first(wild: Sequence[Wild]) -> Wild:
  return wild[0] if wild else None


def _any_zero(wild: Sequence[Wild]) -> Wild:
  return "zero" if "zero" in wild else None


def _keeps_zero(wild: Sequence[Wild]) -> Wild:  # f(0) == 0
  return "zero" if wild[0] == "zero" else None


def _zero_over_nonzero(wild: Sequence[Wild]) -> Wild:
  return "zero" if wild[0] == "zero" and wild[1] != "zero" else None


def _common(wild: Sequence[Wild]) -> Wild:
  return wild[0] if len(set(wild)) == 1 else None


# -- how a parameter operand acts --------------------------------------------

def _kernel(pos: int, ins: Sequence[Val]) -> str | None:
  return "kernel"


def _scale_role(pos: int, ins: Sequence[Val]) -> str | None:
  return "scale"


def _embedding(pos: int, ins: Sequence[Val]) -> str | None:
  return "embedding" if pos == 0 and any(w.data for w in ins[1:]) else None


def _bias(pos: int, ins: Sequence[Val]) -> str | None:
  others = [w for j, w in enumerate(ins) if j != pos]
  return "bias" if any(w.data or w.form for w in others) else None


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


def _pass_through(interp, eqn, ins, data, view):
  """Output i has operand i's degree (extra index/shape operands must be
  unscaled); a view keeps the parameter's identity."""
  name, n_out = eqn.primitive.name, len(eqn.outvars)
  if name in ("split", "unstack"):
    return [ins[0]._replace(data=data)] * n_out
  if n_out == 1:
    for v in ins[1:]:
      interp.need(v.form, eqn, "unscaled indices")
    return [Val(ins[0].form, ins[0].wild, ins[0].origin if view else None,
                data)]
  return [v._replace(origin=None) for v in ins[:n_out]]


def _same(interp, eqn, ins, data):
  return _pass_through(interp, eqn, ins, data, RULES[eqn.primitive.name].view)


def _indexed(interp, eqn, ins, data):
  # A slice at indices that do not depend on the data still names the leaf.
  return _pass_through(interp, eqn, ins, data,
                       not any(v.data for v in ins[1:]))


def _top_k(interp, eqn, ins, data):
  return [Val(ins[0].form, ins[0].wild, data=data), Val({}, data=data)]


def _equal_operands(interp, eqn, ins, data):
  idx = list(_value_operands(eqn.primitive.name, len(ins)))
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
  power = RULES[eqn.primitive.name].power
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


_DEFAULT = Primitive(default)


# -- control flow (run for every equation: ``control=True``) -----------------

def _zeros_like(interp, eqn, ins, data):
  return [Val({}, "zero")]


def _cond(interp, eqn, ins, data):
  interp.need(ins[0].form, eqn, "an unscaled branch index")
  outs = [interp.run(b.jaxpr, ins[1:], [CONST] * len(b.consts))
          for b in eqn.params["branches"]]
  return [interp.equal(vals, eqn, "every branch to give one degree")
          for vals in zip(*outs)]


def _while(interp, eqn, ins, data):
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


def _scan(interp, eqn, ins, data):
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


def _generic_reduce(interp, eqn, ins, data):
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


# -- the table: one entry per primitive --------------------------------------

_all = lambda n: range(n)
_first_two = lambda n: (0, 1)
_updates = lambda n: (0, 2)  # scatter: operand and updates (not indices)

# Views of a parameter: output i has operand i's degree and keeps its identity.
_register("reshape transpose broadcast_in_dim squeeze expand_dims copy copy_p "
          "slice rev reduce_precision sharding_constraint mesh_cast reshard "
          "split device_put pvary pcast tile broadcast_to unstack "
          "layout_constraint name", _same, unscaled=_first, view=True)
# Output i has operand i's degree (a new value, not a view).
_register("neg abs real imag conj stop_gradient sort optimization_barrier "
          "reduce_sum reduce_max reduce_min cumsum cummax cummin "
          "reduce_window_sum reduce_window_max reduce_window_min psum pmean "
          "pmax pmin all_gather all_gather_invariant ppermute all_to_all "
          "psum_scatter reduce_scatter pbroadcast psum_invariant "
          "unreduced_psum preduced with_memory_space_constraint", _same,
          unscaled=_first)
_register("gather dynamic_slice", _indexed, unscaled=_first, role=_embedding)
_register("convert_element_type", _convert, unscaled=_keeps_zero, view=True)
# Operands of one degree (those ``operands`` names; the rest: indices).
_register("add sub add_any", _equal_operands, operands=_all, unscaled=_common,
          role=_bias)
_register("max min concatenate stack clamp complex", _equal_operands,
          operands=_all, unscaled=_common)
_register("pad dynamic_update_slice", _equal_operands, operands=_first_two,
          unscaled=_common)
_register("select_n", _equal_operands, operands=lambda n: range(1, n),
          unscaled=_common)
_register("scatter scatter-add scatter_add scatter-sub scatter_sub "
          "scatter-max scatter_max scatter-min scatter_min", _equal_operands,
          operands=_updates, unscaled=_common)
_register("sign argmax argmin is_finite iota", _invariant)
_register("eq ne lt le gt ge", _compare)
_register("mul", _product, unscaled=_any_zero, role=_scale_role)
_register("dot_general conv_general_dilated ragged_dot ragged_dot_general",
          _product, unscaled=_any_zero, role=_kernel)
_register("div", _div, unscaled=_zero_over_nonzero, role=_scale_role)
_register("square", _power, unscaled=_keeps_zero, power=Fraction(2))
_register("sqrt", _power, unscaled=_keeps_zero, power=Fraction(1, 2))
_register("rsqrt", _power, unscaled=_keeps_zero, power=Fraction(-1, 2))
_register("cbrt", _power, unscaled=_keeps_zero, power=Fraction(1, 3))
_register("integer_pow", _power, unscaled=_keeps_zero)  # power: params["y"]
_register("pow", _pow)
_register("top_k approx_top_k", _top_k)
# Not homogeneous: the input must be unscaled.
_register("tanh sin tan asin atan sinh asinh atanh erf erf_inv expm1 log1p "
          "floor ceil round", _nonlinear, unscaled=_keeps_zero)
_register("exp exp2 log logistic cos acos atan2 cosh acosh erfc lgamma "
          "digamma igamma igammac bessel_i0e bessel_i1e rem nextafter "
          "reduce_prod cumprod cumlogsumexp bitcast_convert_type polygamma "
          "zeta random_gamma_grad regularized_incomplete_beta not and or xor "
          "population_count clz shift_left shift_right_logical "
          "shift_right_arithmetic is_finite_not", _nonlinear)
_register("zeros_like", _zeros_like, control=True)
_register("cond", _cond, control=True)
_register("while", _while, control=True)
_register("scan", _scan, control=True)
_register("reduce reduce_window", _generic_reduce, control=True)
