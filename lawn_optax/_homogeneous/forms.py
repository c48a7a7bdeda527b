"""The values the mask analysis propagates, and its constraints (private).

A degree is a *linear form* in one 0/1 variable per parameter leaf (a dict
leaf index -> Fraction, zero coefficients never stored); :class:`Val` is what
the analysis knows of a traced value, :class:`Constraint` a condition some
primitive needs (a form that must be 0).
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np

from lawn_optax import _compat

Form = dict  # leaf index -> Fraction (zero coefficients never stored)


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
  frames = _compat.user_frames(eqn.source_info.traceback)
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
