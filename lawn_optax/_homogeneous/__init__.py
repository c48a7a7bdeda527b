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

from lawn_optax._homogeneous.analysis import (
    Analysis,
    Traced,
    analyse,
    scale_params,
    trace,
)
from lawn_optax._homogeneous.rules import RULES, SCAN_UNROLL
from lawn_optax._homogeneous.solver import SEARCH_NODES

__all__ = ["RULES", "SCAN_UNROLL", "SEARCH_NODES", "Analysis", "Traced",
           "analyse", "scale_params", "trace"]
