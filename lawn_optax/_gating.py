"""The phase gates and the XLA ordering devices they need (private).

A norm constraint acts on some steps only (LAWN after its free steps, WRS
every ``period`` steps). These helpers decide when, keep the decision a
branch in XLA (only the taken branch runs), and write the result back into
the update tree. Everything here is structure: no norm arithmetic.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def active(count: jax.Array, start: Any, period: Any) -> jax.Array:
  """Whether step ``count`` is one of ``start, start + period, ...``."""
  start = jnp.asarray(start, jnp.int32)
  on = count >= start
  if isinstance(period, int) and period == 1:
    return on
  return on & ((count - start) % jnp.asarray(period, jnp.int32) == 0)


def is_static_int(x: Any) -> bool:
  return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def always_active(start_step: Any, period: Any) -> bool:
  """Statically every step: ``start_step=0`` and ``period=1`` as ints."""
  return (is_static_int(start_step) and start_step == 0
          and is_static_int(period) and period == 1)


def compute_dtype(x: jax.Array) -> Any:
  """float32 at least; float64 stays float64 (identities stay exact)."""
  return jnp.float64 if x.dtype == jnp.float64 else jnp.float32


def with_leaves(leaves: list, idx: list, values: list) -> list:
  """``leaves`` with ``leaves[idx[j]]`` replaced by ``values[j]``."""
  out = list(leaves)
  for i, v in zip(idx, values):
    out[i] = v
  return out


def cond(pred: Any, true_fn: Any, false_fn: Any, *operands: Any) -> Any:
  """``lax.cond(pred, true_fn, false_fn, *operands)``, or, where ``pred`` is
  already known (an eager call, outside any trace), the taken function
  called directly: an eager ``lax.cond`` would compile its branches again on
  every call, since they are fresh closures each time (~1 s per call)."""
  if not isinstance(pred, jax.core.Tracer) and getattr(
      pred, "is_fully_addressable", True):
    return true_fn(*operands) if bool(pred) else false_fn(*operands)
  return jax.lax.cond(pred, true_fn, false_fn, *operands)


def branch(pred: jax.Array, act: Any, skip: Any, operands: Any) -> Any:
  """``lax.cond(pred, act, skip, operands)`` that stays a branch in XLA.

  XLA's conditional simplifier replaces a two-way conditional whose branches
  hold only elementwise ops and reductions by both branches computed and a
  ``select`` (XLA:GPU does, seen on an H200 with jax 0.11.2: LAWN's free
  phase then paid for the norms it skips). It leaves a branch that holds any
  other op; an optimization barrier on ``act``'s result is such an op and
  costs nothing."""
  barrier = lambda ops: jax.lax.optimization_barrier(act(ops))
  return cond(pred, barrier, skip, operands)


def gate(pred: jax.Array | None, act: Any, skip: Any, operands: Any) -> Any:
  """``act(operands)`` when ``pred``, ``skip(operands)`` otherwise, as one
  tree-level conditional (only the taken branch runs: :func:`branch`);
  ``pred=None`` means statically every step: no conditional at all."""
  if pred is None:
    return act(operands)
  return branch(pred, act, skip, operands)


def order_token(values: list) -> jax.Array:
  """Always True, but computed from ``values``: passing an array through
  :func:`after` with it orders whatever writes that array after the
  reductions that made ``values`` (XLA then need not keep a copy of what
  they read)."""
  return jnp.asarray(0.0 * sum(jnp.sum(jnp.where(jnp.isfinite(v), v, 0.0))
                               for v in values) == 0.0)


@jax.custom_jvp
def after(x: jax.Array, flag: jax.Array) -> jax.Array:
  """``x``, bit for bit, as a value that depends on the scalar ``flag``
  (always True): an integer OR of 0 on its bits, which XLA can neither fold
  nor move into the float arithmetic that reads ``x``. Differentiated as the
  identity in ``x`` (the bit path alone would carry no tangent)."""
  bits = jnp.dtype(f"uint{8 * x.dtype.itemsize}")
  zero = jnp.asarray(jnp.logical_not(flag), bits)
  return jax.lax.bitcast_convert_type(
      jax.lax.bitcast_convert_type(x, bits) | zero, x.dtype)


@after.defjvp
def _after_jvp(primals, tangents):
  x, flag = primals
  return after(x, flag), tangents[0]
