"""LAWN against an independent NumPy reference, and its invariants."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lawn_optax as lo
from tests import helpers, tolerance
from tests import reference as ref

SHAPES = helpers.SMALL_SHAPES
MASK = {"k1": True, "k2": True, "b": False}
LR = {"sgd": 0.05, "adam": 0.02}
_init_params, _targets = helpers.small_params, helpers.small_targets


def _np_grad(w, targets, t):
  # Gradient of 0.5 * ||w - a_t||^2 (plus a cubic term so the scale matters):
  # it depends on the params, so both sides must track each other to agree.
  return {k: (w[k] - targets[t][k]) + 0.1 * w[k] ** 3 for k in w}


@pytest.mark.numerics
@pytest.mark.parametrize("opt", ["sgd", "adam"])
@pytest.mark.parametrize("granularity", ["tensor", "unit"])
@pytest.mark.parametrize("tangent", [False, True])
def test_matches_numpy_reference(opt, granularity, tangent):
  steps, free_steps = 24, 9
  targets = _targets(steps)
  params0 = _init_params()
  mask = {"k1": True, "k2": True, "b": False} if granularity == "unit" else {
      "k1": True, "k2": False, "b": True}
  make = {"sgd": lambda: ref.SGDMomentum(LR["sgd"], 0.9),
          "adam": lambda: ref.Adam(LR["adam"])}[opt]
  expected, frozen = ref.lawn_trajectory(
      params0, lambda w, t: _np_grad(w, targets, t), make,
      free_steps=free_steps, mask=mask, steps=steps, granularity=granularity,
      tangent_projection=tangent)

  base = {"sgd": optax.sgd(LR["sgd"], momentum=0.9),
          "adam": optax.adam(LR["adam"])}[opt]
  tx = lo.lawn(base, free_steps=free_steps, mask=mask, granularity=granularity,
               tangent_projection=tangent)
  jtargets = [jax.tree.map(jnp.float32, a) for a in targets]

  @jax.jit
  def step(params, state, a):
    grads = jax.tree.map(lambda w, x: (w - x) + 0.1 * w**3, params, a)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  params = jax.tree.map(jnp.asarray, params0)
  state = tx.init(params)
  for t in range(steps):
    params, state = step(params, state, jtargets[t])
    # float32 against float64: within the error model's bound
    # (tests/tolerance.py) of 30-term norms, two a step (the tangent's
    # inner product, the retraction's norm), relative to the weights.
    tolerance.assert_matches_float64(params, expected[t], t + 1, terms=30)
  got = lo.frozen_norms(state)
  for k, v in frozen.items():
    np.testing.assert_allclose(got[k], v, rtol=tolerance.reduction_bound(
        30, 1.0, reductions=2, steps=free_steps + 1), atol=0)


def _mlp_setup():
  x, y = helpers.digits()
  rng = np.random.default_rng(0)
  sizes = [64, 32, 32, 10]
  params = {f"Dense_{i}": {
      "kernel": jnp.asarray(rng.normal(size=(a, b)) / np.sqrt(a), jnp.float32),
      "bias": jnp.zeros(b, jnp.float32)}
            for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))}

  def loss(p, xb, yb):
    h = xb
    for i in range(3):
      h = h @ p[f"Dense_{i}"]["kernel"] + p[f"Dense_{i}"]["bias"]
      if i < 2:
        h = jax.nn.relu(h)
    return optax.softmax_cross_entropy_with_integer_labels(h, yb).mean()

  return params, loss, x, y


@pytest.mark.parametrize("granularity", ["tensor", "unit"])
def test_invariants_in_real_training(granularity):
  """The base update before the switch (unmasked leaves bit for bit; masked
  ones to float32 rounding, as XLA fuses the base update differently inside
  LAWN's program); norms frozen after; unmasked leaves always the base's."""
  params, loss, x, y = _mlp_setup()
  free_steps, steps = 15, 45
  mask = lo.masks.kernels(params)
  base = optax.adam(3e-3)
  tx = lo.lawn(base, free_steps=free_steps, mask=mask, granularity=granularity)

  @jax.jit
  def step(params, state, i):
    idx = (jnp.arange(128) + 128 * i) % x.shape[0]
    g = jax.grad(loss)(params, x[idx], y[idx])
    u, new_state = tx.update(g, state, params)
    base_u, _ = base.update(g, state["base"], params)
    return optax.apply_updates(params, u), new_state, u, base_u

  state = tx.init(params)
  frozen_ref = None
  for i in range(steps):
    before = params
    params, state, u, base_u = step(params, state, i)
    flat_u = jax.tree_util.tree_leaves_with_path(u)
    flat_b = jax.tree.leaves(base_u)
    flat_m = jax.tree.leaves(mask)
    for (path, ui), bi, m in zip(flat_u, flat_b, flat_m):
      if not m:
        np.testing.assert_array_equal(ui, bi, err_msg=f"{path} step {i}")
      elif i < free_steps:
        # A few float32 roundings of Adam's arithmetic, at the update's scale.
        scale = float(jnp.max(jnp.abs(bi)))
        np.testing.assert_allclose(ui, bi, rtol=0, atol=1e-6 * scale,
                                   err_msg=f"{path} step {i}")
    if i == free_steps:
      frozen_ref = lo.weight_norms(before, mask, granularity)
    if i >= free_steps:
      # Norms of up to 64 x 32 terms, reduced in two programs' orders: the
      # frozen one (one norm each side), and the retracted weights' (the
      # retraction's norm and this one): tests/tolerance.py.
      n = max(x.size for x in jax.tree.leaves(params))
      got = lo.weight_norms(params, mask, granularity)
      chex.assert_trees_all_close(lo.frozen_norms(state), frozen_ref, atol=0,
                                  rtol=2 * tolerance.reduction_bound(
                                      n, 1.0, reductions=1))
      chex.assert_trees_all_close(got, frozen_ref, atol=0,
                                  rtol=2 * tolerance.reduction_bound(
                                      n, 1.0, reductions=2))


def test_free_steps_zero_freezes_initial_norms():
  params, loss, x, y = _mlp_setup()
  mask = lo.masks.kernels(params)
  init_norms = lo.weight_norms(params, mask)
  tx = lo.lawn_sgd(0.5, free_steps=0, mask=mask, momentum=0.9)
  state = tx.init(params)
  for _i in range(5):
    g = jax.grad(loss)(params, x[:256], y[:256])
    u, state = tx.update(g, state, params)
    params = optax.apply_updates(params, u)
  chex.assert_trees_all_close(lo.weight_norms(params, mask), init_norms,
                              rtol=1e-5)


def test_zero_norm_weight_stays_finite_and_unconstrained():
  params = {"w": jnp.zeros((4, 3)), "v": jnp.ones((4, 3))}
  tx = lo.lawn(optax.sgd(0.1), free_steps=0, mask=True, granularity="unit",
               tangent_projection=True)
  state = tx.init(params)
  grads = {"w": jnp.ones((4, 3)), "v": jnp.ones((4, 3))}
  u, state = tx.update(grads, state, params)
  chex.assert_tree_all_finite((u, state))
  # Nothing to freeze: the zero weight gets the plain SGD step, target reads 0.
  np.testing.assert_array_equal(u["w"], -0.1 * grads["w"])
  np.testing.assert_array_equal(lo.frozen_norms(state)["w"], 0.0)
  # A unit whose update would land exactly on zero is not divided by zero.
  params = {"w": jnp.ones((2, 2))}
  tx = lo.lawn(optax.sgd(1.0), free_steps=0, mask=True, granularity="unit")
  u, _ = tx.update({"w": jnp.ones((2, 2))}, tx.init(params), params)
  chex.assert_tree_all_finite(u)


def test_state_is_named_chain_and_small():
  params = {"k": jnp.ones((64, 32)), "b": jnp.ones(32)}
  tx = lo.lawn_adam(1e-3, free_steps=3, mask={"k": True, "b": False},
                    granularity="unit", tangent_projection=True)
  state = tx.init(params)
  assert list(state) == ["tangent", "base", "lawn"]
  assert isinstance(state["lawn"], lo.NormConstraintState)
  assert state["lawn"].targets["k"].shape == (1, 32)
  assert state["lawn"].targets["k"].dtype == jnp.float32
  assert isinstance(state["lawn"].targets["b"], optax.MaskedNode)


def test_traced_free_steps_under_inject_hyperparams():
  params, loss, x, y = _mlp_setup()
  mask = lo.masks.kernels(params)
  tx = optax.inject_hyperparams(lo.lawn_adam, static_args=("mask",))(
      learning_rate=1e-2, free_steps=4, mask=mask)
  state = tx.init(params)

  @jax.jit
  def step(params, state):
    g = jax.grad(loss)(params, x[:128], y[:128])
    u, state = tx.update(g, state, params)
    return optax.apply_updates(params, u), state

  for _ in range(4):
    params, state = step(params, state)
  frozen = lo.weight_norms(params, mask)
  for _ in range(4):
    state.hyperparams["learning_rate"] = state.hyperparams["learning_rate"] * 2
    params, state = step(params, state)
  chex.assert_trees_all_close(lo.weight_norms(params, mask), frozen, rtol=1e-5)


def test_lazy_retraction_deviation_is_bounded_by_one_update():
  """retraction="lazy": | ||w_new|| - c | <= c ||u|| / ||w|| at every
  constrained step (u: the base update), errors do not accumulate, and the
  free phase is the base optimizer bit-for-bit."""
  rng = np.random.default_rng(0)
  params = {"k": jnp.asarray(rng.normal(size=(6, 5)), jnp.float32),
            "b": jnp.zeros(5)}
  lr, free = 0.05, 3
  tx = lo.lawn(optax.sgd(lr), free_steps=free, mask={"k": True, "b": False},
               retraction="lazy")
  state = tx.init(params)
  step = jax.jit(tx.update)
  errors = []
  for t in range(60):
    g = {"k": jnp.asarray(rng.normal(size=(6, 5)), jnp.float32),
         "b": jnp.ones(5)}
    u, state = step(g, state, params)
    if t < free:
      np.testing.assert_array_equal(u["k"], -lr * g["k"])
    new = optax.apply_updates(params, u)
    if t >= free:
      c = float(lo.frozen_norms(state)["k"])
      w_norm = float(jnp.linalg.norm(params["k"]))
      bound = c * lr * float(jnp.linalg.norm(g["k"])) / w_norm
      err = abs(float(jnp.linalg.norm(new["k"])) - c)
      assert err <= bound * (1 + 1e-5) + 1e-6, (t, err, bound)
      errors.append(err / bound)
    np.testing.assert_array_equal(u["b"], -lr * g["b"])
    params = new
  # The bound is attained in order of magnitude, and not exceeded later on.
  assert max(errors) > 1e-3 and max(errors[-20:]) <= 1.0


@pytest.mark.parametrize("retraction", ["exact", "lazy"])
def test_retraction_modes_agree_to_first_order(retraction):
  """Both modes keep the norm at c; the lazy one within the step size."""
  params = {"k": jnp.ones((4, 3)) / 2.0}
  tx = lo.lawn(optax.adam(1e-3), free_steps=0, mask=True,
               retraction=retraction)
  state = tx.init(params)
  for t in range(20):
    g = {"k": jnp.sin(jnp.arange(12.0) + t).reshape(4, 3)}
    u, state = jax.jit(tx.update)(g, state, params)
    params = optax.apply_updates(params, u)
  c = float(lo.frozen_norms(state)["k"])
  tol = 1e-6 if retraction == "exact" else 5e-3
  assert abs(float(jnp.linalg.norm(params["k"])) - c) <= tol * c
