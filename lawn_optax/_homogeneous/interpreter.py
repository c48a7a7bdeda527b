r"""The interpreter of the mask analysis: runs a jaxpr on :class:`Val`\ s,
collecting the constraints the rule table records (private)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lawn_optax._homogeneous import rules
from lawn_optax._homogeneous.forms import (
    CONST,
    Constraint,
    Form,
    Val,
    Where,
    _add,
    _literal,
    _literal_val,
    _location,
)


def _live(jaxpr):
  """Equations the outputs depend on (a BatchNorm's running-statistics update,
  an auxiliary head the function drops: skipped). An effect with no result
  (``jax.debug.print``, ``jax.debug.callback``) cannot change the output:
  skipped, with what it alone reads."""
  needed = {v for v in jaxpr.outvars if not _literal(v)}
  live = []
  for eqn in reversed(jaxpr.eqns):
    if any(v in needed for v in eqn.outvars) or (eqn.effects and
                                                 eqn.outvars):
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
      if not rules.rule(eqn.primitive.name).view:
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
    """One equation: the rule table decides (see :mod:`.rules`)."""
    name = eqn.primitive.name
    entry = rules.rule(name)
    for pos, v in enumerate(ins):
      if v.origin is not None and (r := entry.role(pos, ins)):
        self.roles[v.origin].add(r)
    data = any(v.data for v in ins)
    if entry.control:
      return entry.rule(self, eqn, ins, data)
    sub = _call_jaxpr(eqn)
    if sub is not None:  # pjit, remat, custom_jvp/vjp, shard_map, pmap, ...
      jaxpr, consts = sub
      return self.run(jaxpr, ins, [CONST] * len(consts))
    if not any(v.form for v in ins):
      # Nothing here depends on a scaled leaf: a constant, or a wildcard.
      return [rules.unscaled(name, eqn, ins, data)] * len(eqn.outvars)
    return entry.rule(self, eqn, ins, data)
