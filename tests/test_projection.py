"""The shared primitive: norms, retraction, tangent projection, gating."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lawn_optax as lo
from lawn_optax import numerics
from tests import reference as ref

DTYPES = [jnp.float32, jnp.bfloat16, jnp.float16]


@pytest.fixture(autouse=True)
def _strict():
  # Library code must not lean on implicit dtype or rank promotion.
  with jax.numpy_dtype_promotion("strict"), jax.numpy_rank_promotion("raise"):
    yield


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("granularity", ["tensor", "unit"])
def test_norms_match_numpy(dtype, granularity):
  x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 5, 4)), dtype)
  got = numerics.leaf_norm(x, granularity)
  assert got.dtype == jnp.float32
  want = ref.norm(np.asarray(x, np.float64), granularity)
  np.testing.assert_allclose(got, np.reshape(want, got.shape), rtol=1e-6)


@pytest.mark.parametrize("granularity", ["tensor", "unit"])
def test_norm_derivative_at_zero_is_zero_and_values_are_kept(granularity):
  """optax.safe_norm's convention: d||x||/dx at x = 0 is 0, not NaN (a zero
  secant difference in MCLR made derivatives through its update NaN). The
  values are the norm to float32 rounding, and NaN and Inf
  propagate."""
  zero = jnp.zeros((3, 4), jnp.float32)
  grad = jax.grad(lambda x: jnp.sum(numerics.leaf_norm(x, granularity)))(zero)
  np.testing.assert_array_equal(grad, np.zeros((3, 4)))
  x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4)), jnp.float32)
  want = np.linalg.norm(np.asarray(x, np.float64),
                        axis=None if granularity == "tensor" else 0,
                        keepdims=granularity == "unit")
  np.testing.assert_allclose(numerics.leaf_norm(x, granularity), want,
                             rtol=2.5e-7)
  grad = jax.grad(lambda x: jnp.sum(numerics.leaf_norm(x, granularity)))(x)
  np.testing.assert_allclose(grad, x / want, rtol=1e-6)
  bad = x.at[0, 0].set(jnp.nan).at[1, 1].set(jnp.inf)
  got = np.asarray(numerics.leaf_norm(bad, "tensor"))
  assert np.isnan(got)
  assert np.isinf(numerics.leaf_norm(x.at[1, 1].set(jnp.inf), "tensor"))


@pytest.mark.parametrize("granularity", ["tensor", "unit"])
def test_retraction_derivative_where_w_plus_u_is_zero_is_finite(granularity):
  """The retraction's norm ||w + u|| follows the same convention as
  leaf_norm (derivative 0 at zero); values unchanged."""
  w = jnp.asarray([[1.0, -2.0], [0.5, 3.0]])
  t = numerics.leaf_norm(w, granularity)
  f = lambda u: jnp.sum(numerics.retract(w, u, t, granularity) ** 2)
  chex.assert_tree_all_finite(jax.grad(f)(-w))
  x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 2)), jnp.float32)
  want = jnp.sqrt(numerics.sum_squares_of_sum(w, x, granularity))
  np.testing.assert_array_equal(numerics.norm_of_sum(w, x, granularity), want)
  params, mask = {"w": w}, {"w": True}
  tx = lo.constrain_norms_after([("base", optax.sgd(1.0))], "lawn", mask,
                                start_step=jnp.asarray(0),
                                granularity=granularity)
  state = tx.init(params)

  def outer(g):  # sgd(1.0) on gradient w: w + u = 0 exactly
    u, _ = tx.update(g, state, params)
    return jnp.sum(optax.apply_updates(params, u)["w"] ** 2)

  chex.assert_tree_all_finite(jax.grad(outer)(params))


def test_mclr_derivative_with_a_zero_secant_difference_is_finite():
  params = {"w": jnp.asarray([[1.0, 2.0], [3.0, -1.0]])}
  g = {"w": jnp.asarray([[0.1, -0.2], [0.3, 0.05]])}
  tx = lo.mclr(0.1, mask={"w": True})
  _, state = tx.update(g, tx.init(params), params)

  def outer(g):  # the same gradient and params again: secant differences 0
    u, _ = tx.update(g, state, params)
    return jnp.sum(optax.apply_updates(params, u)["w"] ** 2)

  chex.assert_tree_all_finite(jax.grad(outer)(g))


def test_unit_axis_other_layout():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3)), jnp.float32)
  got = numerics.leaf_norm(x, "unit", unit_axis=0)
  np.testing.assert_allclose(got[:, 0], np.linalg.norm(x, axis=1), rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("granularity", ["tensor", "unit"])
def test_retraction_lands_on_target(dtype, granularity):
  rng = np.random.default_rng(1)
  w = jnp.asarray(rng.normal(size=(6, 4)), dtype)
  u = jnp.asarray(0.3 * rng.normal(size=(6, 4)), dtype)
  target = numerics.leaf_norm(w, granularity) * 0.7
  new_u = numerics.retract(w, u, target, granularity)
  assert new_u.dtype == dtype
  new_w = w + new_u
  tol = 1e-6 if dtype == jnp.float32 else 4 * float(jnp.finfo(dtype).eps)
  np.testing.assert_allclose(numerics.leaf_norm(new_w, granularity), target,
                             rtol=tol)
  # Direction of w + u is kept (closed form of the retraction, float64).
  v = np.asarray(w, np.float64) + np.asarray(u, np.float64)
  want = np.asarray(target) * v / ref.norm(v, granularity) - np.asarray(
      w, np.float64)
  np.testing.assert_allclose(np.asarray(new_u, np.float64), want,
                             rtol=tol * 10, atol=tol * 10)


@pytest.mark.parametrize("granularity", ["tensor", "unit"])
def test_tangent_is_orthogonal_and_matches_reference(granularity):
  rng = np.random.default_rng(2)
  w = jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)
  g = jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)
  got = numerics.tangent(w, g, granularity)
  want = ref.tangent(np.asarray(g, np.float64), np.asarray(w, np.float64),
                     granularity)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  axes = None if granularity == "tensor" else 0
  np.testing.assert_allclose(jnp.sum(got * w, axis=axes), 0.0, atol=1e-5)


def test_period_gates_exact_steps():
  """With period 3 the norm is reset exactly on steps 0, 3, 6 (WRS gating)."""
  params = {"w": jnp.ones((4, 2))}
  tx = optax.chain(optax.sgd(0.1),
                   lo.constrain_norms(True, target=1.0, period=3,
                                      granularity="unit"))
  state = tx.init(params)
  step = jax.jit(tx.update)
  changed = []
  for t in range(8):
    g = {"w": -jnp.ones((4, 2)) * (t + 1)}
    u, state = step(g, state, params)
    plain = -0.1 * g["w"]
    changed.append(not bool(jnp.array_equal(u["w"], plain)))
    params = optax.apply_updates(params, u)
    if changed[-1]:
      np.testing.assert_allclose(jnp.linalg.norm(params["w"], axis=0), 1.0,
                                 rtol=1e-6)
  assert [t for t, c in enumerate(changed) if c] == [0, 3, 6]


def test_given_targets_per_leaf():
  params = {"a": jnp.ones((2, 2)), "b": jnp.ones((3, 2))}
  tx = lo.constrain_norms(True, target={"a": 2.0, "b": jnp.array([1.0, 3.0])},
                          granularity="unit")
  u, state = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params),
                       params)
  new = optax.apply_updates(params, u)
  np.testing.assert_allclose(jnp.linalg.norm(new["a"], axis=0), [2.0, 2.0],
                             rtol=1e-6)
  np.testing.assert_allclose(jnp.linalg.norm(new["b"], axis=0), [1.0, 3.0],
                             rtol=1e-6)
  chex.assert_shape(state.targets["b"], (1, 2))
