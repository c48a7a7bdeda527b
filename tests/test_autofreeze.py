"""free_steps="auto" (issue 29): the rule against a NumPy reference, and the
decision as state: jit, MultiSteps, inject_hyperparams, bad input. Sharding
and checkpoints mid-run are in tests/scripts (test_sharding, test_checkpoint)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lawn_optax as lo
from tests import tolerance

MASK = {"w": True, "b": False}
W0 = np.random.default_rng(0).normal(size=(3, 2))
LR = 0.1


def _params():
  return {"w": jnp.asarray(W0, jnp.float32), "b": jnp.zeros(2, jnp.float32)}


def _decay(t):
  return 1.0 / (1.0 + t / 15.0)


def _grads(params, t):
  # Pure radial growth at a decaying pace: w <- w (1 + LR a_t) under SGD.
  return {"w": -_decay(t) * params["w"], "b": jnp.ones(2)}


def reference_freeze(threshold, every, steps):
  """The rule in NumPy (float64): the step it freezes at, and the margin
  of the decision (how far the rate was from the threshold)."""
  n, last, peak, checks = float(np.linalg.norm(W0)), 0.0, 0.0, 0
  margins = []
  for t in range(steps):
    if t % every == 0:
      have = checks >= 1
      rate = np.log(n / last) if have else 0.0
      peak = max(peak, rate) if have else peak
      if have and checks >= 2 and peak > 0:
        margins.append(abs(rate - threshold * peak) / peak)
        if rate <= threshold * peak:
          return t, min(margins)
      last, checks = n, checks + 1
    n *= 1.0 + LR * _decay(t)
  return None, min(margins)


def _train(tx, steps, params=None):
  params = _params() if params is None else params
  state = tx.init(params)
  step = jax.jit(tx.update)
  norms = []
  for t in range(steps):
    u, state = step(_grads(params, t), state, params)
    params = optax.apply_updates(params, u)
    norms.append(float(jnp.linalg.norm(params["w"])))
  return params, state, np.array(norms)


@pytest.mark.parametrize("threshold,every", [(0.1, 10), (0.3, 5), (0.5, 3)])
def test_the_rule_freezes_where_numpy_says(threshold, every):
  want, margin = reference_freeze(threshold, every, 300)
  assert want is not None and margin > 2e-4   # not a borderline decision
  tx = lo.lawn_sgd(LR, mask=MASK, free_steps=lo.AutoFreeze(threshold, every))
  _, state, norms = _train(tx, want + 20)
  assert int(lo.frozen_at(state)) == want
  frozen = float(lo.frozen_norms(state)["w"])
  assert frozen == pytest.approx(norms[want - 1], rel=1e-5)
  np.testing.assert_allclose(norms[want:], frozen,
                             rtol=tolerance.held_norm_rtol(W0.size))
  assert norms[want - 1] > norms[want - 2]   # it was still growing


def test_default_is_auto_free_steps_string():
  a = lo.lawn_sgd(LR, mask=MASK, free_steps="auto")
  b = lo.lawn_sgd(LR, mask=MASK, free_steps=lo.AutoFreeze())
  assert lo.AutoFreeze().threshold == 0.3 and lo.AutoFreeze().every == 10
  want, _ = reference_freeze(0.3, 10, 400)
  for tx in (a, b):
    _, state, _ = _train(tx, want + 1)
    assert int(lo.frozen_at(state)) == want


def test_latest_is_a_deadline_and_zero_threshold_switches_the_rule_off():
  tx = lo.lawn_sgd(LR, mask=MASK,
                   free_steps=lo.AutoFreeze(threshold=0.0, latest=7))
  _, state, _ = _train(tx, 12)
  assert int(lo.frozen_at(state)) == 7
  tx = lo.lawn_sgd(LR, mask=MASK, free_steps=lo.AutoFreeze(threshold=0.0))
  _, state, _ = _train(tx, 60)
  assert int(lo.frozen_at(state)) == -1


def test_one_compilation_and_a_traced_threshold():
  tx = optax.inject_hyperparams(lo.lawn_sgd, static_args=("mask",))(
      learning_rate=LR, mask=MASK, free_steps="auto")
  params = _params()
  state = tx.init(params)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(state, params, t):
    return tx.update(_grads(params, t), state, params)

  for t in range(25):
    u, state = step(state, params, jnp.asarray(t, jnp.float32))
    params = optax.apply_updates(params, u)
  # A traced threshold, set per run: the vmapped benchmarks' way.
  def run(threshold):
    tx = lo.lawn_sgd(LR, mask=MASK, free_steps=lo.AutoFreeze(threshold, 5))
    def step(t, carry):   # a loop, not 80 unrolled steps: compiles in seconds
      p, s = carry
      u, s = tx.update(_grads(p, t), s, p)
      return optax.apply_updates(p, u), s
    _, s = jax.lax.fori_loop(0, 80, step, (_params(), tx.init(_params())))
    return lo.frozen_at(s)
  got = jax.jit(jax.vmap(run))(jnp.asarray([0.3, 0.5]))
  want = [reference_freeze(th, 5, 80)[0] for th in (0.3, 0.5)]
  assert got.tolist() == want


def test_multisteps_counts_real_updates():
  """Under MultiSteps(k=2) the rule sees the real updates only: the same
  decision, in real updates, as the unwrapped optimizer fed the mean of
  each pair of micro-batch gradients (here equal)."""
  inner = lo.lawn_sgd(LR, mask=MASK, free_steps=lo.AutoFreeze(0.3, 5))
  tx = optax.MultiSteps(inner, every_k_schedule=2)
  params = _params()
  state = tx.init(params)
  step = jax.jit(tx.update)
  want, _ = reference_freeze(0.3, 5, 200)
  for t in range(2 * (want + 3)):
    u, state = step(_grads(params, t // 2), state, params)
    params = optax.apply_updates(params, u)
  assert int(lo.frozen_at(state.inner_opt_state)) == want


@pytest.mark.parametrize("build,match", [
    (lambda: lo.lawn_adam(1e-3, mask=MASK, free_steps="sometimes"),
     r"free_steps must be an integer, 'auto' or a lawn_optax.AutoFreeze"),
    (lambda: lo.lawn_adam(1e-3, mask=MASK,
                          free_steps=lo.AutoFreeze(every=0)),
     r"AutoFreeze.every must be a Python int >= 1"),
    (lambda: lo.lawn_adam(1e-3, mask=MASK,
                          free_steps=lo.AutoFreeze(threshold=1.5)),
     r"AutoFreeze.threshold must be < 1"),
    (lambda: lo.lawn_adam(1e-3, mask=MASK, free_steps="auto",
                          tangent_projection=True),
     r"tangent_projection=True needs a numeric free_steps"),
    (lambda: lo.lawn_adam(1e-3, mask=MASK,
                          free_steps=lo.AutoFreeze(latest=-2)),
     r"AutoFreeze.latest must be >= 0"),
])
def test_bad_auto_settings_are_named(build, match):
  with pytest.raises(ValueError, match=match):
    build()
