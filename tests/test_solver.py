"""The mask analysis' solver on its own (lawn_optax._homogeneous.solver):
small random systems of homogeneous linear constraints over 0/1 variables,
checked against brute force."""

import itertools
from fractions import Fraction

import numpy as np
import pytest

from lawn_optax._homogeneous import solver
from lawn_optax._homogeneous.forms import Constraint, Where

WHERE = Where("test", "")


def _system(rng, n, m):
  """``m`` constraints over variables 0..n-1, each on 2-4 variables with
  small integer coefficients of both signs (and some of one sign)."""
  cons = []
  for _ in range(m):
    k = int(rng.integers(2, min(4, n) + 1))
    vs = rng.choice(n, size=k, replace=False)
    coefs = rng.integers(-2, 3, size=k)
    form = {int(v): Fraction(int(c)) for v, c in zip(vs, coefs) if c}
    if form:
      cons.append(Constraint(form, WHERE, "test"))
  return cons


def _feasible(cons, x):
  return all(sum(v * x[i] for i, v in c.form.items()) == 0 for c in cons)


def _assignments(n):
  return [dict(enumerate(bits)) for bits in itertools.product((0, 1),
                                                               repeat=n)]


@pytest.mark.parametrize("seed", range(40))
def test_greedy_search_is_the_lexicographic_best_feasible_set(seed):
  rng = np.random.default_rng(seed)
  n = int(rng.integers(3, 8))
  cons = _system(rng, n, int(rng.integers(1, 6)))
  free = set(range(n))
  order = {i: int(o) for i, o in enumerate(rng.permutation(n))}
  chosen, excluded = solver.search(cons, free, order)
  assert chosen | set(excluded) == free and not chosen & set(excluded)
  # Visiting order: the leaf used nearest the output (largest order) first.
  visit = sorted(free, key=lambda i: -order[i])
  feasible = [x for x in _assignments(n) if _feasible(cons, x)]
  best = max(feasible, key=lambda x: tuple(x[i] for i in visit))
  assert chosen == {i for i in free if best[i]}
  # Maximal: no excluded variable can join the chosen set.
  for i in excluded:
    x = {j: int(j in chosen or j == i) for j in range(n)}
    assert not _feasible(cons, x)
    # The constraint named as the reason involves it.
    assert i in excluded[i].form


@pytest.mark.parametrize("seed", range(40))
def test_propagation_forces_only_variables_zero_in_every_solution(seed):
  rng = np.random.default_rng(100 + seed)
  n = int(rng.integers(3, 8))
  cons = _system(rng, n, int(rng.integers(1, 6)))
  forced = solver.propagate(cons, set(range(n)))
  feasible = [x for x in _assignments(n) if _feasible(cons, x)]
  for i in forced:
    assert all(x[i] == 0 for x in feasible), (i, cons)


def test_components_group_linked_variables():
  cons = [Constraint({0: Fraction(1), 1: Fraction(-1)}, WHERE, ""),
          Constraint({2: Fraction(1), 3: Fraction(-2)}, WHERE, ""),
          Constraint({1: Fraction(1), 4: Fraction(-1)}, WHERE, "")]
  groups = solver.components(cons, {0, 1, 2, 3, 4, 5})
  assert sorted(sorted(g) for g in groups.values()) == [[0, 1, 4], [2, 3],
                                                        [5]]


def test_feasibility_gives_up_conservatively():
  # A chain of equalities: feasible, found within the node budget.
  cons = [Constraint({i: Fraction(1), i + 1: Fraction(-1)}, WHERE, "")
          for i in range(12)]
  assert solver.feasible(cons, {0: 1}, set(range(13)))
  assert not solver.feasible(cons, {0: 1, 12: 0}, set(range(13)))
