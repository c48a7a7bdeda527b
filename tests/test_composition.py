"""Every method through the shared composition battery (tests/battery.py)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
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
    # The lazy retraction keeps each norm within one update's relative size
    # of its frozen value (bound tested in test_lawn.py): 2 % at this rate.
    battery.Method("lawn_adam_lazy", lambda learning_rate, mask: lo.lawn_adam(
        learning_rate, free_steps=FREE, mask=mask, retraction="lazy"),
                   lambda *a: _lawn_invariant("tensor")(*a[:4], 2e-2), 1e-2),
]


def _head(p):
  last = max(p, key=lambda k: int(k.split("_")[1]))
  return {k: {"kernel": k == last, "bias": False} for k in p}


def _body(p):
  last = max(p, key=lambda k: int(k.split("_")[1]))
  return {k: {"kernel": k != last, "bias": False} for k in p}


def _norms_equal_targets(granularity, every=1):
  def invariant(before, after, state, step, rtol):
    if step % every:
      return
    got = lo.weight_norms(after, battery.kernel_mask, granularity)
    chex.assert_trees_all_close(got, lo.frozen_norms(state), rtol=rtol, atol=0)
  return invariant


def _finite(before, after, state, step, rtol):
  chex.assert_tree_all_finite(after)


METHODS += [
    battery.Method("fixnorm", lambda learning_rate, mask: lo.fixnorm(
        optax.sgd(learning_rate, momentum=0.9), mask=_body,
        classifier_mask=_head, classifier_norm=2.0),
                   _norms_equal_targets("tensor"), 0.1),
    battery.Method("wrs", lambda learning_rate, mask: lo.weight_rescaling(
        optax.adam(learning_rate), mask=mask, period=2),
                   _norms_equal_targets("unit", every=2), 1e-2),
    battery.Method("cblr_secant", lambda learning_rate, mask: lo.cblr(
        learning_rate, estimator="secant", mask=mask, max_scale=10.0),
                   _finite, 0.05),
    battery.Method("mclr", lambda learning_rate, mask: lo.mclr(
        learning_rate, mask=mask), _finite, 0.05),
    battery.Method("lars", lambda learning_rate, mask: lo.paper_lars(
        learning_rate, weight_decay=1e-3, trust_coefficient=0.01, mask=mask),
                   _finite, 1.0),
]


@pytest.mark.parametrize("check", list(battery.CHECKS))
@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_battery(method, check):
  battery.CHECKS[check](method)


_SGDM = lambda: optax.sgd(0.1, momentum=0.9)
_KERNELS = {"k1": True, "b1": False, "k2": True}
DIFFERENTIABLE = {
    "lawn-constrained": lambda: lo.lawn(_SGDM(), free_steps=1, mask=_KERNELS),
    "lawn-free": lambda: lo.lawn(_SGDM(), free_steps=5, mask=_KERNELS),
    "lawn-unit": lambda: lo.lawn(_SGDM(), free_steps=1, mask=_KERNELS,
                                 granularity="unit"),
    "lawn-static0": lambda: lo.lawn(_SGDM(), free_steps=0, mask=_KERNELS),
    "lawn-lazy": lambda: lo.lawn(_SGDM(), free_steps=1, mask=_KERNELS,
                                 retraction="lazy"),
    "lawn-tangent": lambda: lo.lawn(_SGDM(), free_steps=1, mask=_KERNELS,
                                    tangent_projection=True),
    "fixnorm": lambda: lo.fixnorm(_SGDM(), mask=_KERNELS),
    "wrs-active": lambda: lo.weight_rescaling(_SGDM(), mask=_KERNELS,
                                              period=1),
    "wrs-between": lambda: lo.weight_rescaling(_SGDM(), mask=_KERNELS,
                                               period=2),
    "paper_lars": lambda: lo.paper_lars(0.1, weight_decay=1e-3,
                                        mask=_KERNELS),
    "mclr": lambda: lo.mclr(0.1, mask=_KERNELS),
}


@pytest.mark.parametrize("make", DIFFERENTIABLE.values(),
                         ids=list(DIFFERENTIABLE))
def test_derivatives_through_update_match_finite_differences(make):
  """Differentiating through ``update`` (meta-learning, hypergradients), on
  the second step: the directional derivative of a smooth function of the
  new params w.r.t. the gradient matches central differences. Float64
  params; the norms are float32 by design, hence h=1e-2 and rtol 5e-3
  (observed at most 5e-4). A method whose update hid the gradient's tangent
  (as constrain_norms_after's did) is off by O(1)."""
  rng = np.random.default_rng(5)
  with jax.enable_x64(True):
    shape = {"k1": (6, 5), "b1": (5,), "k2": (5, 3)}
    draw = lambda: {k: jnp.asarray(rng.normal(size=s)) for k, s in shape.items()}
    params, g0, g1, d = draw(), draw(), draw(), draw()
    tx = make()
    _, state = tx.update(jax.tree.map(lambda x: 0.5 * x, g0), tx.init(params),
                         jax.tree.map(lambda x: 0.9 * x, params))

    def outer(g):
      u, _ = tx.update(g, state, params)
      new = optax.apply_updates(params, u)
      return sum(jnp.sum(jnp.sin(x) * x) for x in jax.tree.leaves(new))

    grad = jax.grad(outer)(g1)
    ad = sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(grad),
                                             jax.tree.leaves(d)))
    h = 1e-2
    shift = lambda s: jax.tree.map(lambda a, b: a + s * b, g1, d)
    fd = (outer(shift(h)) - outer(shift(-h))) / (2 * h)
    np.testing.assert_allclose(float(ad), float(fd), rtol=5e-3)
