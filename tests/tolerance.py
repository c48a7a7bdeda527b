"""How far two float32 computations of one quantity may differ when they
reduce in different orders (sharded vs one device, chain vs projection, several
processes vs one, float32 vs a float64 reference).

The error model, from Higham, *Accuracy and Stability of Numerical
Algorithms* (2nd ed.), Lemma 3.1 and section 4.2: with unit roundoff
``u = 2**-24`` (float32, round to nearest), a sum of ``n`` terms computed in
*any* order and with any blocking (a tree over shards, SIMD lanes of any
width, FMA or not) differs from the exact sum by at most
``gamma(n - 1) * sum(|terms|)``, ``gamma(n) = n u / (1 - n u)``. A sum of
squares has only non-negative terms, so its relative error is at most
``gamma(n)``, and a norm (its square root) at most ``gamma(n) / 2 + u``; an
inner product ``<g, w> / ||w||^2`` likewise relative to ``|g| |w|``. Every
method of the library combines at most a few such reductions by products
and quotients (LAMB's trust ratio ``||w|| / ||u||`` and LAWN's retraction
``c (w + u) / ||w + u||``: three per step), each entering with relative
weight one, so one step's result has relative error at most
``reductions * gamma(n) + ops * u``, ``ops`` the elementwise operations
rounded on the way (each at most ``u``).

*Relative to what* matters: the retraction's update ``u' = c (w + u) /
||w + u|| - w`` is a difference of two weight-sized numbers, so its error is
relative to the *weights*, not to the (small) update. Hence ``scale``: the
largest magnitude among the quantities the result is computed from.

Over ``steps`` steps the errors of the weights carry forward and add (every
registered method is non-expansive in the weights: a rescaling onto a sphere
or ball, an update bounded independently of the weights' last bits), so the
bound is ``steps`` times one step's.

The bound is a worst case over every reduction order, so it holds on an
AVX-512 host as on an AVX2 one, and on an accelerator; it is not a
measurement on one machine. Tests that use it also check it against a
float64 computation of the same quantity (``tests/test_sharding.py``), so a
model that forgot an error source shows there.
"""

from __future__ import annotations

import numpy as np

U32 = 2.0 ** -24  # float32 unit roundoff (round to nearest)


def gamma(n: int, u: float = U32) -> float:
  """Higham's ``gamma_n = n u / (1 - n u)``: the relative error bound of a
  sum of ``n`` non-negative terms in any order."""
  if n * u >= 1:
    raise ValueError(f"gamma({n}) is unbounded in this precision")
  return n * u / (1 - n * u)


def reduction_bound(terms: int, scale: float, *, reductions: int, steps: int = 1,
                    ops: int = 8, u: float = U32) -> float:
  """The largest difference between a float32 result and its exact value.

  Args:
    terms: the number of terms of the largest reduction (norm, inner
      product) the result depends on: a tensor's size for per-tensor norms,
      its fan-in for per-unit ones.
    scale: the largest magnitude of the quantities the result is computed
      from (for an update of a constrained weight: the weight's).
    reductions: how many reductions enter one step's result.
    steps: how many steps the errors accumulate over.
    ops: rounded elementwise operations per step (each at most ``u``).

  Returns:
    ``steps * (reductions * gamma(terms) + ops * u) * scale``. Two float32
    computations that reduce in different orders differ by at most twice it.
  """
  return steps * (reductions * gamma(terms, u) + ops * u) * scale


def held_norm_rtol(terms: int) -> float:
  """The relative tolerance between a norm the library holds and its target
  (or the same norm on two steps): two norms of ``terms`` terms, each in its
  own order (the retraction's and the check's), and the retraction's
  elementwise roundings. Independent of the steps: every step retracts
  onto the target afresh."""
  return reduction_bound(terms, 1.0, reductions=2)


def assert_matches_float64(params: dict, expected: dict, steps: int,
                           terms: int, reductions: int = 2) -> None:
  """float32 ``params`` after ``steps`` steps against a float64 reference's
  ``expected`` (both dicts of arrays): each leaf within one bound, relative
  to its largest magnitude."""
  for k, want in expected.items():
    bound = reduction_bound(terms, float(np.max(np.abs(want))),
                            reductions=reductions, steps=steps)
    np.testing.assert_allclose(params[k], want, rtol=0, atol=bound,
                               err_msg=f"{k} after {steps} steps")
