"""Every method through the shared composition battery (tests/battery.py)."""

import chex
import jax
import jax.numpy as jnp
import pytest

import lawn_optax as lo
from tests import battery

FREE = 3


def _lawn_invariant(granularity):
  def invariant(before, after, state, step, rtol):
    if step < FREE:
      return
    frozen = lo.frozen_norms(state)
    got = lo.weight_norms(after, battery.kernel_mask, granularity)
    chex.assert_trees_all_close(got, frozen, rtol=rtol, atol=0)
  return invariant


def _lawn(base, granularity="tensor", tangent=False):
  def factory(learning_rate, mask):
    return lo.lawn(base(learning_rate), free_steps=FREE, mask=mask,
                   granularity=granularity, tangent_projection=tangent)
  return factory


METHODS = [
    battery.Method("lawn_adam", lambda learning_rate, mask: lo.lawn_adam(
        learning_rate, free_steps=FREE, mask=mask), _lawn_invariant("tensor"),
                   1e-2),
    battery.Method("lawn_sgd_unit_tangent", lambda learning_rate, mask:
                   lo.lawn_sgd(learning_rate, free_steps=FREE, mask=mask,
                               momentum=0.9, nesterov=True, granularity="unit",
                               tangent_projection=True),
                   _lawn_invariant("unit"), 0.1),
    battery.Method("lawn_lamb", lambda learning_rate, mask: lo.lawn_lamb(
        learning_rate, free_steps=FREE, mask=mask), _lawn_invariant("tensor"),
                   1e-2),
]


@pytest.mark.parametrize("check", list(battery.CHECKS))
@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_battery(method, check):
  battery.CHECKS[check](method)
