"""The solver of the mask analysis (private): homogeneous linear constraints
over 0/1 variables, one per parameter leaf.

:func:`propagate` fixes to 0 the variables that every solution sets to 0
(single-sign constraints); :func:`search` then visits the rest in *output
order* (the leaf used nearest the output first) and lets each join when
some completion of the remaining variables still meets every constraint
(:func:`feasible`: an exact depth-first search with interval pruning). The
result is the lexicographically best solution in that order, hence maximal:
no excluded variable can join it (``tests/test_solver.py`` checks both
against brute force).
"""

from __future__ import annotations

from collections.abc import Sequence

from lawn_optax._homogeneous.forms import Constraint

SEARCH_NODES = 200_000  # depth-first nodes per feasibility question


def propagate(constraints: Sequence[Constraint], free: set[int]
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


def components(constraints: Sequence[Constraint], free: set[int]
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


def search(constraints: Sequence[Constraint], free: set[int],
            order: dict[int, int]) -> tuple[set[int], dict[int, Constraint]]:
  """Greedy in output order with exact feasibility (see module doc)."""
  group_of = {i: root for root, members in components(
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
    if not cons or feasible(cons, assign, free):
      chosen.add(i)
      continue
    assign[i] = 0
    mine = [c for c in cons if i in c.form]
    excluded[i] = next((c for c in mine if not feasible(
        [c], {**assign, i: 1}, free)), mine[0])
  return chosen, excluded


def feasible(constraints: Sequence[Constraint], assign: dict[int, int],
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
