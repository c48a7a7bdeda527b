"""The six probes an adversarial tester found failing (issue 24), each a
test written before its fix: silently wrong or unexplained results."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lawn_optax as lo
from tests import tolerance

MASK = {"w": True, "b": False}


def _params(scale=1.0):
  rng = np.random.default_rng(0)
  return {"w": jnp.asarray(scale * rng.normal(size=(4, 3)), jnp.float32),
          "b": jnp.zeros(3, jnp.float32)}


# A held norm of the 12-term weight against its target (tests/tolerance.py).
HELD = tolerance.held_norm_rtol(12)


def _grads(t):
  rng = np.random.default_rng(100 + t)
  return {"w": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
          "b": jnp.asarray(rng.normal(size=3), jnp.float32)}


def _injected(**kw):
  return optax.inject_hyperparams(lo.lawn_adam, static_args=("mask",))(
      learning_rate=0.1, mask=MASK, **kw)


def _set(state, name, value):
  hp = dict(state.hyperparams)
  hp[name] = jnp.asarray(value, hp[name].dtype)
  return state._replace(hyperparams=hp)


def _run_injected(changes, steps=12, free_steps=10, **kw):
  """Jitted steps of an injected LAWN-Adam; ``changes[t]`` sets free_steps
  before step t. Returns the weight norm after each step and the state."""
  tx = _injected(free_steps=free_steps, **kw)
  params = _params()
  state = tx.init(params)
  step = jax.jit(tx.update)
  norms = []
  for t in range(steps):
    if t in changes:
      state = _set(state, "free_steps", changes[t])
    u, state = step(_grads(t), state, params)
    params = optax.apply_updates(params, u)
    norms.append(float(jnp.linalg.norm(params["w"])))
  return np.array(norms), state


# 1. Changing free_steps mid-run under inject_hyperparams.

def test_lowering_free_steps_mid_run_freezes_at_once():
  norms, state = _run_injected({5: 3})
  # Step 5 is the first step with count >= free_steps: the norm reached
  # after step 4 is frozen there and held from then on.
  frozen = float(lo.frozen_norms(state)["w"])
  assert frozen > 0
  assert frozen == pytest.approx(norms[4], rel=1e-6)
  np.testing.assert_allclose(norms[5:], frozen, rtol=HELD)
  assert int(lo.frozen_at(state)) == 5


def test_raising_free_steps_before_the_freeze_delays_it():
  norms, state = _run_injected({5: 8})
  frozen = float(lo.frozen_norms(state)["w"])
  assert frozen == pytest.approx(norms[7], rel=1e-6)
  np.testing.assert_allclose(norms[8:], frozen, rtol=HELD)
  assert not np.allclose(norms[5:8], frozen, rtol=1e-3)
  assert int(lo.frozen_at(state)) == 8


def test_raising_free_steps_after_the_freeze_pauses_then_restores():
  # Frozen at step 3; raised to 8 at step 6: steps 6 and 7 are free, and
  # from step 8 on the norm is held at the value frozen at step 3.
  norms, state = _run_injected({6: 8}, free_steps=3)
  frozen = float(lo.frozen_norms(state)["w"])
  assert frozen == pytest.approx(norms[2], rel=1e-6)
  np.testing.assert_allclose(norms[3:6], frozen, rtol=HELD)
  assert not np.allclose(norms[6:8], frozen, rtol=1e-3)
  np.testing.assert_allclose(norms[8:], frozen, rtol=HELD)
  assert int(lo.frozen_at(state)) == 3


def test_frozen_at_before_and_after_the_freeze():
  tx = lo.lawn_sgd(0.1, free_steps=2, mask=MASK)
  params = _params()
  state = tx.init(params)
  assert lo.frozen_at(state) is not None and int(lo.frozen_at(state)) == -1
  for t in range(3):
    _, state = tx.update(_grads(t), state, params)
  assert int(lo.frozen_at(state)) == 2
  assert lo.frozen_at(optax.sgd(0.1).init(params)) is None


# 2. Axes and modes are structure, not hyper-parameters.

@pytest.mark.parametrize("make", [
    lambda: optax.inject_hyperparams(lo.lawn_adam, static_args=("mask",))(
        learning_rate=0.1, free_steps=2, mask=MASK, granularity="unit"),
    lambda: optax.inject_hyperparams(lo.fixnorm, static_args=(
        "mask", "base_tx"))(base_tx=optax.sgd(0.1), mask=MASK,
                            granularity="unit"),
    lambda: optax.inject_hyperparams(lo.weight_rescaling, static_args=(
        "mask", "base_tx"))(base_tx=optax.sgd(0.1), mask=MASK),
], ids=["lawn", "fixnorm", "wrs"])
def test_unit_granularity_under_inject_hyperparams(make):
  tx = make()
  params = _params()
  state = tx.init(params)
  step = jax.jit(tx.update)
  for t in range(4):
    u, state = step(_grads(t), state, params)
    params = optax.apply_updates(params, u)
  assert np.all(np.isfinite(np.asarray(params["w"])))


def test_an_explicit_unit_axis_under_inject_hyperparams_is_named():
  tx = optax.inject_hyperparams(lo.lawn_adam, static_args=("mask",))(
      learning_rate=0.1, free_steps=0, mask=MASK, granularity="unit",
      unit_axis=-1)
  params = _params()
  state = tx.init(params)
  with pytest.raises(TypeError, match=r"unit_axis.*static_args"):
    jax.jit(tx.update)(_grads(0), state, params)


# 3. Norms of huge weights: never NaN from finite inputs.

@pytest.mark.parametrize("retraction", ["exact", "lazy"])
@pytest.mark.parametrize("granularity", ["tensor", "unit"])
def test_huge_weights_keep_their_norm(retraction, granularity):
  params = _params(scale=1e20)   # ||w|| ~ 3e20: its square overflows float32
  want = lo.weight_norms(params, MASK, granularity)["w"]
  tx = lo.lawn(optax.sgd(1e18), free_steps=0, mask=MASK,
               granularity=granularity, retraction=retraction)
  state = tx.init(params)
  for t in range(3):
    u, state = jax.jit(tx.update)(_grads(t), state, params)
    params = optax.apply_updates(params, u)
  got = lo.weight_norms(params, MASK, granularity)["w"]
  assert np.all(np.isfinite(np.asarray(params["w"])))
  ref = np.linalg.norm(np.asarray(_params(1e20)["w"], np.float64),
                       axis=None if granularity == "tensor" else 0)
  # float32 norms of 12 terms against float64, then held over 3 steps by
  # the retraction: the float32 error model (tests/tolerance.py).
  np.testing.assert_allclose(np.asarray(want).ravel(), np.ravel(ref),
                             rtol=tolerance.reduction_bound(12, 1.0,
                                                            reductions=1))
  # Lazy: off by at most one update's relative size (here ~1e-2).
  np.testing.assert_allclose(got, want, rtol=2 * tolerance.reduction_bound(
      12, 1.0, reductions=2, steps=3) if retraction == "exact" else 3e-2)


def test_weight_norms_of_huge_and_tiny_arrays_are_exact():
  for scale in (1e25, 1e-25):
    x = {"w": jnp.asarray(scale * np.arange(1.0, 7.0).reshape(2, 3),
                          jnp.float32)}
    ref = scale * np.sqrt(np.sum(np.arange(1.0, 7.0) ** 2))
    assert float(lo.weight_norms(x)["w"]) == pytest.approx(ref, rel=1e-6, abs=0)


@pytest.mark.numerics
def test_direct_norm_is_leaf_norm_in_range_and_nan_out_of_it():
  """The projection path's norm: the bits of leaf_norm wherever the squares
  are in float32's range; NaN, never a confident wrong norm, out of it (per
  unit: only the units out of range); zeros have norm 0."""
  from lawn_optax.numerics import direct_norm, leaf_norm
  rng = np.random.default_rng(3)
  for size in (1e-14, 1e-3, 1.0, 7e4, 1e18):
    x = jnp.asarray(size * rng.standard_normal((6, 5)), jnp.float32)
    for gran in ("tensor", "unit"):
      np.testing.assert_array_equal(direct_norm(x, gran, -1),
                                    leaf_norm(x, gran, -1))
  for size in (1e20, 1e-17):          # squares overflow / underflow
    x = jnp.full((4, 3), size, jnp.float32)
    assert np.isnan(float(direct_norm(x)))
    assert float(leaf_norm(x)) == pytest.approx(size * np.sqrt(12), rel=1e-6)
  x = jnp.ones((4, 3), jnp.float32).at[:, 1].set(1e20)
  got = np.asarray(direct_norm(x, "unit", -1)).ravel()
  assert np.isnan(got[1]) and np.all(got[[0, 2]] == np.float32(2.0))
  assert float(direct_norm(jnp.zeros((4,)))) == 0.0


# 4. Weights with norm below norm_eps.

@pytest.mark.parametrize("scale", [1e-15, 1e-30])
def test_tiny_weights_are_not_collapsed(scale):
  params = _params(scale=scale)
  n0 = float(lo.weight_norms(params, MASK)["w"])
  tx = lo.lawn(optax.sgd(0.0), free_steps=0, mask=MASK)  # updates of zero
  state = tx.init(params)
  for t in range(3):
    u, state = tx.update(_grads(t), state, params)
    params = optax.apply_updates(params, u)
  # Below norm_eps there is no direction to hold: the update (zero) passes
  # through, and the weight stays where it was.
  assert float(lo.weight_norms(params, MASK)["w"]) == pytest.approx(n0, abs=0,
                                                                   rel=1e-6)


@pytest.mark.parametrize("scale", [1e-15, 1e-30])
def test_tiny_norms_are_held_exactly_with_norm_eps_zero(scale):
  params = _params(scale=scale)
  tx = lo.lawn(optax.sgd(scale), free_steps=0, mask=MASK, norm_eps=0.0)
  state = tx.init(params)
  n0 = float(lo.weight_norms(params, MASK)["w"])
  for t in range(3):
    u, state = tx.update(_grads(t), state, params)
    params = optax.apply_updates(params, u)
  assert float(lo.weight_norms(params, MASK)["w"]) == pytest.approx(n0, abs=0,
                                                                   rel=1e-5)
  moved = np.abs(np.asarray(params["w"]) - np.asarray(_params(scale)["w"]))
  assert moved.max() > 1e-3 * scale   # the weights did move


# 5. free_steps beyond the int32 step counter.

def test_free_steps_beyond_int32_is_named():
  with pytest.raises(ValueError, match=r"free_steps=2147483648 .*int32"):
    lo.lawn_adam(1e-3, free_steps=2**31, mask=MASK)


# 6. Transforms placed after LAWN.

def test_check_norms_reports_drift_from_a_transform_after_lawn():
  tx = optax.chain(lo.lawn_adam(0.1, free_steps=0, mask=MASK),
                   optax.clip_by_global_norm(0.01))
  params = _params()
  state = tx.init(params)
  for t in range(20):
    u, state = tx.update(_grads(t), state, params)
    params = optax.apply_updates(params, u)
  report = lo.check_norms(params, state)
  assert report.max_drift > 5 * report.rtol
  assert not report.ok and "w  " in repr(report) and "last" in repr(report)
  good = lo.lawn_adam(0.1, free_steps=0, mask=MASK)
  params = _params()
  state = good.init(params)
  for t in range(20):
    u, state = good.update(_grads(t), state, params)
    params = optax.apply_updates(params, u)
  report = lo.check_norms(params, state)
  assert report.ok and report.max_drift < 1e-5


def test_every_method_docstring_says_it_must_come_last():
  for fn in (lo.lawn, lo.lawn_adam, lo.lawn_sgd, lo.lawn_lamb, lo.fixnorm,
             lo.weight_rescaling, lo.constrain_norms,
             lo.constrain_norms_after):
    assert "last transform" in " ".join(fn.__doc__.split()), fn.__name__
