"""Real training on bundled data (scikit-learn digits): linen and nnx."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from flax import nnx

import lawn_optax as lo
from tests import helpers, tolerance


@pytest.fixture(scope="module")
def digits():
  x, y = helpers.digits(shuffle_seed=0)
  return (x[:1400], y[:1400]), (x[1400:], y[1400:])


class LinenMLP(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Dense(128)(x))
    x = nn.relu(nn.Dense(128)(x))
    return nn.Dense(10)(x)


class NnxMLP(nnx.Module):
  def __init__(self, rngs):
    self.l1 = nnx.Linear(64, 128, rngs=rngs)
    self.l2 = nnx.Linear(128, 128, rngs=rngs)
    self.out = nnx.Linear(128, 10, rngs=rngs)

  def __call__(self, x):
    return self.out(nnx.relu(self.l2(nnx.relu(self.l1(x)))))


def _xent(logits, y):
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


STEPS, FREE, BATCH = 400, 150, 128


def test_linen_mlp_with_lawn_adam(digits):
  (xtr, ytr), (xte, yte) = digits
  model = LinenMLP()
  params = model.init(jax.random.key(0), xtr[:1])["params"]
  mask = lo.masks.kernels(params)
  tx = lo.lawn_adam(3e-3, free_steps=FREE, mask=mask)
  state = tx.init(params)

  @jax.jit
  def step(params, state, i):
    idx = jax.random.choice(jax.random.key(i), xtr.shape[0], (BATCH,))
    g = jax.grad(lambda p: _xent(model.apply({"params": p}, xtr[idx]),
                                 ytr[idx]))(params)
    u, state = tx.update(g, state, params)
    params = optax.apply_updates(params, u)
    # The norm inside the step: eager weight_norms recompiles its cond on
    # every call (~0.5 s; fixed on branch fix-eager-norm-recompile).
    return params, state, lo.weight_norms(params, mask)["Dense_2"]["kernel"]

  norms = []
  for i in range(STEPS):
    params, state, norm = step(params, state, i)
    norms.append(float(norm))
  acc = float((model.apply({"params": params}, xte).argmax(-1) == yte).mean())
  print(f"linen LAWN-Adam digits test accuracy {acc:.3f}; head-kernel norm "
        f"at steps 50/{FREE}/{STEPS}: {norms[50]:.3f} {norms[FREE]:.3f} "
        f"{norms[-1]:.3f}")
  assert acc >= 0.93
  # The norm grows in the free phase, then stays frozen.
  assert norms[FREE - 1] > norms[10] * 1.05
  np.testing.assert_allclose(norms[FREE:], norms[FREE],
                             rtol=tolerance.held_norm_rtol(128 * 10))


def test_nnx_model_through_nnx_optimizer(digits):
  (xtr, ytr), (xte, yte) = digits
  model = NnxMLP(nnx.Rngs(0))
  mask = lambda p: lo.masks.kernels(p)
  optimizer = nnx.Optimizer(
      model, lo.lawn_adam(3e-3, free_steps=FREE, mask=mask, granularity="unit"),
      wrt=nnx.Param)

  @nnx.jit
  def step(model, optimizer, idx):
    grads = nnx.grad(lambda m: _xent(m(xtr[idx]), ytr[idx]))(model)
    optimizer.update(model, grads)

  for i in range(STEPS):
    idx = jax.random.choice(jax.random.key(i), xtr.shape[0], (BATCH,))
    step(model, optimizer, idx)
    if i == FREE - 1:
      at_freeze = jnp.linalg.norm(model.out.kernel[...], axis=0)
  acc = float((model(xte).argmax(-1) == yte).mean())
  print(f"nnx LAWN-Adam (per unit) digits test accuracy {acc:.3f}")
  assert acc >= 0.93
  np.testing.assert_allclose(jnp.linalg.norm(model.out.kernel[...], axis=0),
                             at_freeze, rtol=tolerance.held_norm_rtol(128))
  frozen = lo.frozen_norms(nnx.as_pure(optimizer.opt_state))
  np.testing.assert_allclose(frozen["out"]["kernel"][0], at_freeze, rtol=1e-6)


def test_linen_train_state(digits):
  from flax.training import train_state
  (xtr, ytr), (xte, yte) = digits
  model = LinenMLP()
  params = model.init(jax.random.key(0), xtr[:1])["params"]
  state = train_state.TrainState.create(
      apply_fn=model.apply, params=params,
      tx=lo.lawn_sgd(0.1, free_steps=20, mask=lo.masks.kernels, momentum=0.9))

  @jax.jit
  def step(state, i):
    idx = jax.random.choice(jax.random.key(i), xtr.shape[0], (BATCH,))
    g = jax.grad(lambda p: _xent(state.apply_fn({"params": p}, xtr[idx]),
                                 ytr[idx]))(state.params)
    return state.apply_gradients(grads=g)

  for i in range(60):
    state = step(state, i)
  frozen = lo.frozen_norms(state.opt_state)
  got = lo.weight_norms(state.params, lo.masks.kernels)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(
      a, b, rtol=tolerance.held_norm_rtol(128 * 128)), got, frozen)
  assert float((model.apply({"params": state.params}, xte).argmax(-1) ==
                yte).mean()) > 0.85
