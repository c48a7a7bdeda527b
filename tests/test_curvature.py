"""CBLR / MCLR / LARS against closed forms, NumPy LARS and optax.lars;
small-loss filtering and batch-size scheduling."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lawn_optax as lo
from tests import helpers

rng = np.random.default_rng(0)
PARAMS = {"a": jnp.asarray(rng.normal(size=(5, 4)), jnp.float32),
          "b": jnp.asarray(rng.normal(size=(4,)), jnp.float32)}


def _grads(params, t):
  return jax.tree.map(lambda w: jnp.sin(w * (t + 2)) + 0.1 * w, params)


def _run(tx, steps=12, params=PARAMS):
  state = tx.init(params)
  hist = []
  for t in range(steps):
    u, state = jax.jit(tx.update)(_grads(params, t), state, params)
    params = optax.apply_updates(params, u)
    hist.append(params)
  return hist


def _numpy_lars(params, steps, lr, trust, beta, momentum):
  """You et al. 2017, Algorithm 1, per layer, float64."""
  w = {k: np.asarray(v, np.float64) for k, v in params.items()}
  v = {k: np.zeros_like(x) for k, x in w.items()}
  hist = []
  for t in range(steps):
    g = {k: np.asarray(x, np.float64) for k, x in _grads(
        {k: jnp.asarray(x, jnp.float32) for k, x in w.items()}, t).items()}
    for k in w:
      local = trust * np.linalg.norm(w[k]) / (np.linalg.norm(g[k]) +
                                              beta * np.linalg.norm(w[k]))
      v[k] = momentum * v[k] + lr * local * (g[k] + beta * w[k])
      w[k] = w[k] - v[k]
    hist.append({k: x.copy() for k, x in w.items()})
  return hist


@pytest.mark.parametrize("beta", [0.0, 0.01])
def test_cblr_grad_weight_ratio_is_paper_lars(beta):
  ref = _numpy_lars(PARAMS, 12, lr=0.5, trust=0.02, beta=beta, momentum=0.9)
  for tx in (lo.cblr(0.5, curvature=lo.scale_by_grad_weight_ratio,
                     trust_coefficient=0.02,
                     weight_decay=beta, momentum=0.9),
             lo.paper_lars(0.5, trust_coefficient=0.02, weight_decay=beta)):
    for got, want in zip(_run(tx), ref):
      for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-6)


def test_matches_optax_lars_without_weight_decay_only():
  ours = _run(lo.paper_lars(0.5, trust_coefficient=0.02, weight_decay=0.0))
  theirs = _run(optax.lars(0.5, weight_decay=0.0, trust_coefficient=0.02))
  for a, b in zip(ours, theirs):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5,
                                                         atol=1e-7), a, b)
  # With decay the two trust ratios differ (||g|| + β||w|| vs ||g + βw||).
  ours = _run(lo.paper_lars(0.5, trust_coefficient=0.02, weight_decay=0.1))
  theirs = _run(optax.lars(0.5, weight_decay=0.1, trust_coefficient=0.02))
  assert not np.allclose(ours[-1]["a"], theirs[-1]["a"], rtol=1e-4)


def _quadratic(coef):
  # loss = 0.5 * sum_l coef_l * ||w_l||^2: Hessian diagonal = coef_l exactly.
  return lambda p: 0.5 * sum(coef[k] * jnp.sum(p[k] ** 2) for k in p)


COEF = {"a": 4.0, "b": 0.5}


def test_secant_recovers_quadratic_curvature():
  loss = _quadratic(COEF)
  tx = lo.scale_by_secant_curvature(ema_decay=0.5)
  params = PARAMS
  state = tx.init(params)
  for t in range(4):
    g = jax.grad(loss)(params)
    u, state = tx.update(g, state, params)
    if t == 0:  # no difference yet: scale 1
      jax.tree.map(np.testing.assert_array_equal, u, g)
    else:       # scale 1 / c_l = 1 / coef_l: the update is exactly w
      jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4),
                   u, params)
    np.testing.assert_allclose(state.curvature["a"], 4.0 if t else np.nan,
                               rtol=1e-4)
    params = jax.tree.map(lambda w, x: w - 0.1 * x, params, u)


@pytest.mark.parametrize("reduction", ["norm", "median"])
def test_hutchinson_recovers_quadratic_curvature(reduction):
  loss = _quadratic(COEF)
  tx = lo.scale_by_hutchinson_curvature(reduction=reduction, every=2,
                                        trust_coefficient=2.0)
  state = tx.init(PARAMS)
  g = jax.grad(loss)(PARAMS)
  step = jax.jit(lambda g, s, p: tx.update(g, s, p, obj_fn=loss))
  for _ in range(3):
    u, state = step(g, state, PARAMS)
  for k in COEF:
    np.testing.assert_allclose(state.curvature[k], COEF[k], rtol=1e-5)
    np.testing.assert_allclose(u[k], 2.0 / COEF[k] * g[k], rtol=1e-5)
  with pytest.raises(ValueError, match="needs update.*obj_fn"):
    tx.update(g, state, PARAMS)


def test_mclr_normalises_by_median_curvature():
  p = {f"l{i}": jnp.ones((3, 2)) for i in range(3)}
  g = {"l0": 0.1 * jnp.ones((3, 2)), "l1": 0.2 * jnp.ones((3, 2)),
       "l2": 0.8 * jnp.ones((3, 2))}
  tx = lo.mclr(1.0, curvature=lo.scale_by_grad_weight_ratio, momentum=None)
  u, _ = tx.update(g, tx.init(p), p)
  # c_l = ||g_l|| / ||w_l|| = 0.1, 0.2, 0.8; median 0.2: every layer moves
  # by (0.2 / c_l) * g_l = 0.2 per element.
  for k in p:
    np.testing.assert_allclose(u[k], -0.2, rtol=1e-6)
  within = lo.mclr(1.0, curvature=lo.scale_by_grad_weight_ratio,
                   momentum=None, within_layer_median=True)
  g2 = dict(g, l1=jnp.asarray([[0.2, 0.2], [0.2, 5.0], [0.2, 0.2]]))
  u2, s2 = within.update(g2, within.init(p), p)
  np.testing.assert_allclose(s2[0].curvature["l1"], 0.2, rtol=1e-6)


def test_guards_zero_norm_and_clipping():
  p = {"w": jnp.zeros((2, 2)), "v": jnp.ones((2, 2))}
  g = {"w": jnp.ones((2, 2)), "v": 1e-6 * jnp.ones((2, 2))}
  tx = lo.scale_by_grad_weight_ratio(max_scale=10.0)
  u, _ = tx.update(g, tx.init(p), p)
  np.testing.assert_array_equal(u["w"], g["w"])        # ||w|| = 0: scale 1
  np.testing.assert_allclose(u["v"], 10.0 * g["v"])    # 1e6 clipped to 10


@given(st.lists(st.integers(0, 5), min_size=1, max_size=40),
       st.floats(0.0, 0.95))
@settings(max_examples=60, deadline=None)
def test_small_loss_filter_keeps_expected_samples(values, fraction):
  losses = np.asarray(values, np.float32)
  w = np.asarray(lo.small_loss_weights(jnp.asarray(losses), fraction))
  drop = int(np.floor(fraction * len(losses)))
  # Independent rule: drop the `drop` smallest, earlier index first on ties.
  order = sorted(range(len(losses)), key=lambda i: (losses[i], i))
  expected = np.ones(len(losses), np.float32)
  expected[order[:drop]] = 0.0
  np.testing.assert_array_equal(w, expected)


def test_small_loss_filter_is_jittable_and_checks_input():
  f = jax.jit(lambda l: lo.small_loss_mean(l, 0.25))
  assert float(f(jnp.array([1.0, 2.0, 3.0, 4.0]))) == pytest.approx(3.0)
  with pytest.raises(ValueError, match="fraction must be in"):
    lo.small_loss_weights(jnp.ones(3), 1.0)


def test_batch_size_schedule_with_multisteps():
  sched = lo.batch_size_schedule({0: 1, 2: 2, 4: 3})
  tx = optax.MultiSteps(optax.sgd(1.0), every_k_schedule=sched)
  params = {"w": jnp.zeros(())}
  state = tx.init(params)
  step = jax.jit(tx.update)
  emitted = []
  for _t in range(1 + 1 + 2 + 2 + 3 + 3):
    u, state = step({"w": jnp.ones(())}, state, params)
    emitted.append(bool(u["w"] != 0))
  # updates 0,1 after 1 mini-batch; 2,3 after 2; 4,5 after 3.
  assert [i for i, e in enumerate(emitted) if e] == [0, 1, 3, 5, 8, 11]
  with pytest.raises(ValueError, match="must say what happens from update 0"):
    lo.batch_size_schedule({1: 2})


@pytest.mark.parametrize("name", ["cblr_secant", "cblr_hutchinson", "mclr",
                                  "lars"])
def test_curvature_methods_train_a_real_model(name):
  x, y = helpers.digits()
  rng = np.random.default_rng(0)
  params = {"Dense_0": {"kernel": jnp.asarray(rng.normal(size=(64, 64)) / 8,
                                              jnp.float32),
                        "bias": jnp.zeros(64, jnp.float32)},
            "Dense_1": {"kernel": jnp.asarray(rng.normal(size=(64, 10)) / 8,
                                              jnp.float32),
                        "bias": jnp.zeros(10, jnp.float32)}}

  def loss(p, idx):
    h = jax.nn.relu(x[idx] @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
    logits = h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]
    return optax.softmax_cross_entropy_with_integer_labels(logits,
                                                           y[idx]).mean()

  kernels = lo.masks.kernels(params)
  tx = {"cblr_secant": lo.cblr(0.2, mask=kernels, max_scale=10.0),
        "cblr_hutchinson": lo.cblr(
            0.02, curvature=lo.scale_by_hutchinson_curvature, mask=kernels,
            max_scale=10.0, every=5),
        "mclr": lo.mclr(0.05, mask=kernels),
        "lars": lo.paper_lars(0.5, trust_coefficient=0.01, mask=kernels)}[name]
  state = tx.init(params)

  @jax.jit
  def step(params, state, i):
    idx = jax.random.choice(jax.random.key(i), x.shape[0], (128,))
    g = jax.grad(loss)(params, idx)
    u, state = tx.update(g, state, params,
                         obj_fn=lambda p: loss(p, idx))
    return optax.apply_updates(params, u), state

  for i in range(300):
    params, state = step(params, state, i)
  acc = float((jnp.argmax(jax.nn.relu(x @ params["Dense_0"]["kernel"] +
                                       params["Dense_0"]["bias"]) @
                          params["Dense_1"]["kernel"] +
                          params["Dense_1"]["bias"], -1) == y).mean())
  assert acc > 0.9, (name, acc)


def test_an_estimator_of_your_own_is_one_object():
  """The public protocol: whole trees in, one scalar per leaf out; the mask
  chooses what is read. A grad-weight ratio written by hand trains as the
  built-in LARS transform does (its norms are summed in another order)."""
  ratio = lo.CurvatureEstimator(
      init=lambda params: optax.EmptyState(),
      estimate=lambda g, state, w, count, **extra: (jax.tree.map(
          lambda gi, wi: jnp.linalg.norm(gi) / jnp.linalg.norm(wi), g, w),
          state),
      smoothed=False)
  mask = {"a": True, "b": False}
  g = _grads(PARAMS, 0)
  ours = lo.scale_by_curvature_lr(ratio, trust_coefficient=0.5, mask=mask)
  builtin = lo.scale_by_grad_weight_ratio(trust_coefficient=0.5, mask=mask)
  cblr = lo.cblr(0.5, curvature=functools.partial(lo.scale_by_curvature_lr,
                                                  ratio), mask=mask)
  paper = lo.cblr(0.5, curvature=lo.scale_by_grad_weight_ratio, mask=mask)
  for a, b in ((ours, builtin), (cblr, paper)):
    ua = a.update(g, a.init(PARAMS), PARAMS)[0]
    ub = b.update(g, b.init(PARAMS), PARAMS)[0]
    chex.assert_trees_all_close(ua, ub, rtol=1e-6)
    np.testing.assert_array_equal(ua["b"], g["b"] if a is ours else
                                  ub["b"])   # unmasked: passed through


@pytest.mark.parametrize("call,match", [
    (lambda: lo.scale_by_curvature_lr("secant"),
     r"estimator must be a lawn_optax.CurvatureEstimator, got 'secant'.*"
     r"scale_by_secant_curvature"),
    (lambda: lo.cblr(0.1, estimator="hutchinson"),
     r"cblr\(estimator=...\) was removed in 0.3.*"
     r"curvature=lo.scale_by_secant_curvature"),
    (lambda: lo.mclr(0.1, curvature=lo.scale_by_secant_curvature()),
     r"mclr: curvature must be a factory"),
])
def test_the_names_of_0_3_get_a_migration_error(call, match):
  with pytest.raises(ValueError, match=match):
    call()


def test_an_option_the_estimator_lacks_is_refused_by_name():
  with pytest.raises(TypeError, match="weight_decay"):
    lo.cblr(0.1, curvature=lo.scale_by_hutchinson_curvature,
            weight_decay=1e-4)


@pytest.mark.parametrize("make", [
    lambda m: lo.scale_by_grad_weight_ratio(mask=m),
    lambda m: lo.scale_by_grad_weight_ratio(mask=m, reduction="median"),
    lambda m: lo.scale_by_secant_curvature(mask=m),
    lambda m: lo.scale_by_secant_curvature(mask=m, reduction="median"),
])
def test_leaves_the_mask_leaves_out_may_be_empty_or_integer(make):
  """The estimators see every leaf: an empty or integer leaf the mask
  leaves out passes through untouched (0.3's estimators saw only the
  selected leaves; a median of an empty leaf raised)."""
  p = {"w": jnp.asarray([[1.0, 2.0], [3.0, 5.0]]),
       "step": jnp.zeros((), jnp.int32), "empty": jnp.zeros((0,))}
  g = {"w": jnp.asarray([[0.5, -1.0], [2.0, 1.0]]),
       "step": jnp.ones((), jnp.int32), "empty": jnp.zeros((0,))}
  tx = make({"w": True, "step": False, "empty": False})
  state = tx.init(p)
  for _ in range(2):
    u, state = jax.jit(tx.update)(g, state, p)
  assert u["step"] == 1 and u["empty"].shape == (0,)
  assert np.isfinite(np.asarray(u["w"])).all()


def test_hutchinson_without_obj_fn_names_the_transform():
  tx = lo.scale_by_hutchinson_curvature()
  p = {"w": jnp.ones(2)}
  with pytest.raises(ValueError, match="scale_by_hutchinson_curvature needs "
                     r"update\(..., obj_fn="):
    tx.update(p, tx.init(p), p)


def test_lars_is_a_deprecated_alias_of_paper_lars():
  with pytest.warns(DeprecationWarning, match="renamed paper_lars"):
    old = lo.lars(0.5, trust_coefficient=0.02, weight_decay=0.1)
  new = lo.paper_lars(0.5, trust_coefficient=0.02, weight_decay=0.1)
  chex.assert_trees_all_equal(_run(old), _run(new))
