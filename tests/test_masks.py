"""Mask helpers on linen param dicts and nnx states."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from flax import nnx

import lawn_optax as lo
from tests import helpers


class LinenMLP(nn.Module):
  depth: int = 12

  @nn.compact
  def __call__(self, x):
    for _ in range(self.depth - 1):
      x = nn.relu(nn.Dense(4)(x))
    return nn.Dense(2)(x)


class NnxNet(nnx.Module):
  def __init__(self, rngs):
    self.layers = nnx.List([nnx.Linear(3, 3, rngs=rngs) for _ in range(11)])
    self.norm = nnx.LayerNorm(3, rngs=rngs)
    self.head = nnx.Linear(3, 2, use_bias=False, rngs=rngs)

  def __call__(self, x):
    for layer in self.layers:
      x = nnx.tanh(layer(x))
    return self.head(self.norm(x))


def _linen_params():
  return LinenMLP().init(jax.random.key(0), jnp.ones((1, 3)))["params"]


_selected = helpers.selected


def test_by_path_linen():
  params = _linen_params()
  mask = lo.masks.by_path(params, include=r"Dense_1[01]/.*", exclude=r".*/bias")
  assert _selected(mask) == ["Dense_10/kernel", "Dense_11/kernel"]
  assert jax.tree.structure(mask) == jax.tree.structure(params)


def test_last_layers_is_numeric_not_lexicographic():
  params = _linen_params()
  assert lo.masks.layers(params)[:3] == ["Dense_0", "Dense_1", "Dense_2"]
  assert _selected(lo.masks.last_layers(params, 3)) == [
      "Dense_10/kernel", "Dense_11/kernel", "Dense_9/kernel"]
  assert _selected(lo.masks.last_layers(params, 1, include=r".*")) == [
      "Dense_11/bias", "Dense_11/kernel"]


def test_nnx_state_paths_and_numeric_order():
  model = NnxNet(nnx.Rngs(0))
  for state in (nnx.state(model, nnx.Param),
                nnx.as_pure(nnx.state(model, nnx.Param))):
    assert lo.masks.layers(state)[-2:] == ["layers/9", "layers/10"]
    assert lo.masks.layers(state)[:2] == ["head", "layers/0"]
    assert _selected(lo.masks.by_path(state, r"layers/1[0-9]?/kernel")) == [
        "layers/1/kernel", "layers/10/kernel"]
    assert _selected(lo.masks.kernels(state, exclude="layers/.*")) == [
        "head/kernel"]


def test_nnx_optimizer_with_path_mask():
  model = NnxNet(nnx.Rngs(0))
  mask = lambda p: lo.masks.by_path(p, r"head/kernel|layers/10/kernel")
  tx = lo.lawn_adam(0.05, free_steps=2, mask=mask, granularity="unit")
  opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
  x = jax.random.normal(jax.random.key(1), (16, 3))
  y = jnp.arange(16) % 2

  @nnx.jit
  def step(model, opt):
    def loss_fn(m):
      return optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean()
    grads = nnx.grad(loss_fn)(model)
    opt.update(model, grads)

  for i in range(6):
    if i == 2:
      frozen = jnp.linalg.norm(model.head.kernel[...], axis=0)
    step(model, opt)
  got = jnp.linalg.norm(model.head.kernel[...], axis=0)
  assert jnp.allclose(got, frozen, rtol=1e-5)
  # The unconstrained layers did move.
  assert not jnp.allclose(model.norm.scale[...],
                          NnxNet(nnx.Rngs(0)).norm.scale[...])


def test_describe_reports_counts():
  params = _linen_params()
  text = lo.masks.describe(lo.masks.last_layers(params, 2), params,
                           print_fn=None)
  lines = text.splitlines()
  assert lines[0].startswith("selected 2 of 24 leaves, 24 of ")
  assert "Dense_10/kernel" in lines[1] and "(4, 4)" in lines[1]


def test_plain_dict_mask_for_frozen_dict_params():
  from flax.core import FrozenDict
  params = FrozenDict({"a": {"kernel": jnp.ones((2, 2))}, "b": jnp.ones(2)})
  tx = lo.lawn(optax.sgd(0.1), free_steps=0, mask={"a": True, "b": False})
  u, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
  assert jnp.allclose(jnp.linalg.norm(params["a"]["kernel"] + u["a"]["kernel"]),
                      2.0, rtol=1e-6)


@pytest.mark.parametrize("n", [0, 13])
def test_last_layers_bounds(n):
  with pytest.raises(ValueError, match=f"n={n} must be between 1"):
    lo.masks.last_layers(_linen_params(), n)


class FilterNet(nnx.Module):
  def __init__(self, rngs):
    self.l1 = nnx.Linear(3, 4, rngs=rngs)
    self.bn = nnx.BatchNorm(4, rngs=rngs)
    self.l2 = nnx.Linear(4, 2, rngs=rngs)

  def __call__(self, x):
    return self.l2(nnx.relu(self.bn(self.l1(x))))


@pytest.mark.parametrize("nnx_filter,expected", [
    (nnx.PathContains("kernel"), ["l1/kernel", "l2/kernel"]),
    (nnx.All(nnx.Param, nnx.PathContains("kernel")), ["l1/kernel",
                                                     "l2/kernel"]),
    (nnx.Not(nnx.PathContains("bias")), ["bn/scale", "l1/kernel",
                                         "l2/kernel"]),
    (nnx.Any(nnx.PathContains("l2"), nnx.PathContains("scale")),
     ["bn/scale", "l2/bias", "l2/kernel"]),
    (nnx.Param, ["bn/bias", "bn/scale", "l1/bias", "l1/kernel", "l2/bias",
                 "l2/kernel"]),
])
def test_nnx_filters_as_masks(nnx_filter, expected):
  # nnx.PathContains raised "missing argument 'x'", nnx.Param "is Array".
  model = FilterNet(nnx.Rngs(0))
  opt = nnx.Optimizer(model, lo.lawn_adam(0.05, free_steps=1,
                                          mask=nnx_filter), wrt=nnx.Param)
  x = jax.random.normal(jax.random.key(0), (8, 3))

  @nnx.jit
  def step(model, opt):
    opt.update(model, nnx.grad(lambda m: (m(x) ** 2).mean())(model))

  for _ in range(4):
    step(model, opt)
  frozen = lo.frozen_norms(opt.opt_state)
  paths, leaves, _ = lo._tree.flatten_with_paths(frozen)
  assert sorted(p for p, v in zip(paths, leaves)
                if not isinstance(v, optax.MaskedNode)) == expected
  now = lo.weight_norms(nnx.state(model, nnx.Param), nnx_filter)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5),
               now, frozen)


def test_nnx_filter_on_a_plain_dict():
  params = {"a": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}}
  tx = lo.lawn_sgd(0.1, free_steps=0, mask=nnx.PathContains("kernel"))
  state = tx.init(params)
  assert isinstance(lo.frozen_norms(state)["a"]["bias"], optax.MaskedNode)


def test_inject_hyperparams_with_a_callable_mask():
  params = {"Dense_0": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}}
  with pytest.raises(TypeError, match=r"static_args=\('mask',\)"):
    optax.inject_hyperparams(lo.lawn_adam)(
        learning_rate=0.1, free_steps=2, mask=lo.masks.kernels).init(params)
  tx = optax.inject_hyperparams(lo.lawn_adam, static_args=("mask",))(
      learning_rate=0.1, free_steps=2, mask=lo.masks.kernels)
  tx.init(params)


def test_float64_params():
  with jax.enable_x64(True):
    params = {"w": jnp.ones((3, 2), jnp.float64)}
    tx = lo.lawn_sgd(0.1, free_steps=0, mask=True)
    state = tx.init(params)
    u, state = jax.jit(tx.update)({"w": jnp.ones((3, 2))}, state, params)
    assert u["w"].dtype == jnp.float64
    new = optax.apply_updates(params, u)
    np.testing.assert_allclose(jnp.linalg.norm(new["w"]), jnp.sqrt(6.0),
                               rtol=1e-6)
