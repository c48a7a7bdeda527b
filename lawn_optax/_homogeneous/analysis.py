"""Tracing a model and analysing it: the final homogeneous set (private).

:func:`analyse` traces ``fn`` with every array abstract, runs the
interpreter (:mod:`.interpreter`, with the rule table of :mod:`.rules`),
and solves the constraints (:mod:`.solver`) for the largest set of leaves
whose joint scaling scales the output, with a reason for every leaf.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lawn_optax import _tree
from lawn_optax._homogeneous import solver
from lawn_optax._homogeneous.forms import Constraint, Val, _is_float
from lawn_optax._homogeneous.interpreter import Interpreter


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


def _outputs_note(traced: Traced) -> str | None:
  """Said when ``fn`` returns several floating-point outputs: the set must
  scale all of them with one degree."""
  n = sum(_is_float(v.aval) for v in traced.jaxpr.jaxpr.outvars)
  if n < 2:
    return None
  return (f"fn returns {n} floating-point outputs, and the analysis needs "
          "every one of them to scale with one degree (an auxiliary loss or "
          "a hidden state rarely does); return the logits alone, e.g. "
          "lambda p, x: fn(p, x)[0]")


class _Leaves(NamedTuple):
  """What the trace says of each params leaf."""
  paths: list[str]
  is_float: list[bool]
  shapes: list[tuple[int, ...]]
  named_bias: set[int]


def _leaves(traced: Traced) -> _Leaves:
  n = len(traced.leaves)
  avals = dict(zip(traced.param_leaves, traced.jaxpr.jaxpr.invars))
  # Real floating leaves only: a complex weight has no norm to freeze here.
  is_float = [i in avals and jnp.issubdtype(avals[i].aval.dtype, jnp.floating)
              for i in range(n)]
  shapes = [tuple(avals[i].aval.shape) if i in avals else () for i in range(n)]
  named_bias = {i for i in range(n) if is_float[i] and traced.keys[i] and
                traced.keys[i][-1] == "bias"}
  return _Leaves(traced.paths, is_float, shapes, named_bias)


def _interpret_with_biases(traced: Traced, leaves: _Leaves, biases: str
                           ) -> tuple[Interpreter, Val, set[int]]:
  """The interpretation, with the biases at zero under ``biases="ignore"``:
  those named ``bias``, and any leaf only ever added to activations with at
  most one non-unit axis, whatever its name (Haiku's ``b``, ``(C,)`` or
  ``(C, 1, 1)`` for an NCHW conv; its BatchNorm ``offset``,
  ``(1, 1, 1, C)``)."""
  zeroed = set(leaves.named_bias) if biases == "ignore" else set()
  interp, out = _interpret(traced, zeroed)
  is_bias = {i for i in range(len(leaves.paths)) if leaves.is_float[i] and (
      i in leaves.named_bias or (interp.roles[i] == {"bias"} and
                                 sum(d != 1 for d in leaves.shapes[i]) <= 1))}
  if biases == "ignore" and is_bias - zeroed:
    zeroed = is_bias
    interp, out = _interpret(traced, zeroed)
  if out.wild == "zero":
    raise ValueError("fn's output is identically zero: nothing to analyse.")
  if not out.form and not interp.used:
    raise ValueError("fn's output does not depend on the params: nothing "
                     "to constrain.")
  return interp, out, zeroed


def _ineligible(leaves: _Leaves, interp: Interpreter, coeff: list, zeroed,
                include_embeddings: bool, include_scales: bool
                ) -> list[str | None]:
  """Why each leaf cannot be a candidate at all (None: it can)."""
  reasons: list[str | None] = []
  for i in range(len(leaves.paths)):
    roles = interp.roles[i]
    reasons.append(
        "not a real floating-point array" if not leaves.is_float[i] else
        "bias: analysed as zero (biases='ignore')" if i in zeroed else
        "does not reach the output" if i not in interp.used and not coeff[i]
        else "embedding table (include_embeddings=False)"
        if not include_embeddings and "embedding" in roles else
        "norm scale (include_scales=False)"
        if not include_scales and roles == {"scale"} else None)
  return reasons


def _solve(interp: Interpreter, coeff: list, reasons: list, paths: list[str]
           ) -> tuple[set[int], list]:
  """The chosen leaves and the leaves only a missing rule keeps out; fills
  in every other leaf's reason."""
  eligible = {i for i, r in enumerate(reasons) if r is None}
  constraints = list(interp.constraints.values())
  supported = [c for c in constraints if not c.unsupported]
  for i, c in solver.propagate(supported, eligible).items():
    reasons[i] = _reason(c, i, paths)
  free = {i for i in eligible if reasons[i] is None}
  by_rules = solver.propagate(supported, free)
  by_all = solver.propagate(constraints, free)
  blocked = [(paths[i], c) for i, c in by_all.items() if i not in by_rules]
  for i, c in by_all.items():
    if i not in by_rules:
      reasons[i] = (f"undecided: {c.where} has no homogeneity rule (pass an "
                    "explicit mask)")
  free -= set(by_all)
  for members in solver.components(constraints, free).values():
    # A leaf scales the output if it, or a leaf tied to it, has a share of
    # the output's degree; the rest (behind an eps-free normalisation, say)
    # would be constrained for nothing.
    if not any(coeff[i] for i in members):
      for i in members:
        reasons[i] = "the output does not scale with it"
      free -= members
  chosen, excluded = solver.search(constraints, free, interp.used)
  for i, c in excluded.items():
    reasons[i] = (f"joining would break {c.where}, which needs {c.why} "
                  "(the leaves used nearer the output were kept)")
  return chosen, blocked


def _error(chosen: set[int], degree: Fraction, interp: Interpreter,
           coeff: list, reasons: list, paths: list[str], note: str | None
           ) -> str | None:
  """Why no set exists (or its degree is not a positive integer)."""
  if not chosen:
    head = max((i for i in range(len(paths)) if i in interp.used or coeff[i]),
               key=lambda i: interp.used.get(i, 1 << 60), default=None)
    error = "no homogeneous set: " + (
        f"'{paths[head]}' (the leaf used nearest the output) is out: "
        f"{reasons[head]}." if head is not None else
        "no floating-point parameter reaches the output.")
    return error + (" " + note + "." if note is not None else "")
  if degree.denominator != 1 or degree < 1:
    return (f"the homogeneous set found has degree {degree}, not a positive "
            "integer; pass an explicit mask.")
  return None


def analyse(fn: Callable[..., Any], params: Any, args: tuple, kwargs: dict, *,
            biases: str, include_embeddings: bool, include_scales: bool
            ) -> Analysis:
  """Finds the final homogeneous set of ``fn``'s parameters (see
  :mod:`lawn_optax._homogeneous`)."""
  if biases not in ("strict", "ignore"):
    raise ValueError(f"biases must be 'strict' or 'ignore', got {biases!r}.")
  traced = trace(fn, params, args, kwargs)
  leaves = _leaves(traced)
  note = _outputs_note(traced)
  if note is not None:
    warnings.warn(note + ".", stacklevel=4)
  interp, out, zeroed = _interpret_with_biases(traced, leaves, biases)
  n = len(leaves.paths)
  coeff = [out.form.get(i, Fraction(0)) for i in range(n)]
  reasons = _ineligible(leaves, interp, coeff, zeroed, include_embeddings,
                        include_scales)
  chosen, blocked = _solve(interp, coeff, reasons, leaves.paths)
  degree = sum((coeff[i] for i in chosen), Fraction(0))
  error = _error(chosen, degree, interp, coeff, reasons, leaves.paths, note)
  for i in chosen:
    reasons[i] = (f"degree {coeff[i]}" if coeff[i] else
                  "scales with the others (tied by a sum or a max)")
  return Analysis([i in chosen for i in range(n)],
                  int(degree) if error is None else None, leaves.paths,
                  traced.keys, traced.treedef, leaves.shapes,
                  [r or "" for r in reasons], coeff, blocked, error)


def _reason(c: Constraint, i: int, paths: Sequence[str]) -> str:
  others = [paths[j] for j in c.form if j != i]
  tail = f" (with '{others[0]}' out)" if len(others) == 1 else (
      f" (with {len(others)} other leaves out)" if others else "")
  return f"{c.where} needs {c.why}{tail}"


def scale_params(params: Any, flags: Sequence[bool], c: float) -> Any:
  params = _tree.unwrap_variables(params)
  leaves, treedef = jax.tree.flatten(params, is_leaf=_tree.is_masked_node)
  return jax.tree.unflatten(
      treedef, [x * np.asarray(c, x.dtype) if f else x
                for x, f in zip(leaves, flags)])
