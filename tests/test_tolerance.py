"""The float32 error model of tests/tolerance.py against float64 sums taken
in the orders that different programs use (sequential, pairwise, over
shards, reversed): each stays inside the bound, and a norm that missed one
shard (the bug the bound must catch) falls far outside it."""

import numpy as np
import pytest

from tests import tolerance


def _orders(x32):
  """Sums of squares of float32 ``x32`` in several orders, all float32."""
  sq = x32 * x32
  sequential = np.cumsum(sq, dtype=np.float32)[-1]
  pairwise = np.sum(sq, dtype=np.float32)  # numpy's blocked pairwise sum
  shards = np.sum(np.stack([np.sum(s, dtype=np.float32)
                            for s in np.array_split(sq, 8)]), dtype=np.float32)
  backwards = np.cumsum(sq[::-1], dtype=np.float32)[-1]
  lanes = np.sum(np.stack([np.sum(sq[i::16], dtype=np.float32)
                           for i in range(16)]), dtype=np.float32)
  return [sequential, pairwise, shards, backwards, lanes]


@pytest.mark.numerics
@pytest.mark.parametrize("n", [7, 1024, 65_536])
@pytest.mark.parametrize("spread", [1.0, 1e4])
def test_norms_in_any_order_within_the_bound(n, spread):
  rng = np.random.default_rng(n)
  # Magnitudes over `spread` orders: rounding is worst when terms differ.
  x = (rng.normal(size=n) * spread ** rng.uniform(size=n)).astype(np.float32)
  exact = np.sqrt(np.sum(np.asarray(x, np.float64) ** 2))
  bound = tolerance.reduction_bound(n, exact, reductions=1, steps=1)
  for total in _orders(x):
    assert abs(np.sqrt(np.float64(total)) - exact) <= bound
  # A norm that missed one of 8 shards (~6 % of it) is off by more than the
  # bound, even the loose one of 65,536 terms (0.4 %).
  missed = np.sqrt(np.sum(np.asarray(x[n // 8:], np.float64) ** 2))
  if n >= 1024:
    assert abs(missed - exact) > 5 * bound


def test_gamma():
  assert tolerance.gamma(1) == pytest.approx(2.0 ** -24)
  assert tolerance.gamma(1024) == pytest.approx(1024 * 2.0 ** -24, rel=1e-4)
  with pytest.raises(ValueError, match="unbounded"):
    tolerance.gamma(2 ** 24)
