"""Every method through the shared composition battery (tests/battery.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lawn_optax as lo
from tests import battery, registry

METHODS = [battery.Method(m.name, m.factory, m.invariant, m.learning_rate,
                          m.projected)
           for m in registry.METHODS]


def _battery_grid() -> list:
  """Every method x every check. The default run takes LAWN-Adam (the
  flagship) through all nine and every other method through three, rotated
  so that each check still meets four methods; the rest of the grid is
  marked ``slow`` (``python -m pytest -m slow``): it is compile time, ~5 s a
  case on 2 cores."""
  grid = []
  for i, method in enumerate(METHODS):
    for j, check in enumerate(battery.CHECKS):
      # The projection path: LAWN-Adam's through the default rotation, the
      # other methods' in the slow set (test_project_norms compares their
      # trajectories with the chain's in the default run).
      default = method.name == "lawn_adam" or ((j - i) % 3 == 0 and (
          not method.projected or method.name == "lawn_adam_projection"))
      grid.append(pytest.param(method, check, id=f"{method.name}-{check}",
                               marks=() if default else pytest.mark.slow))
  return grid


@pytest.mark.parametrize("method,check", _battery_grid())
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
