"""FixNorm and WRS: closed-form checks, errors, and a real BatchNorm CNN."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lawn_optax as lo
from benchmarks import models
from tests import helpers, tolerance

rng = np.random.default_rng(0)
X = jnp.asarray(rng.normal(size=(32, 6)), jnp.float32)
Y = jnp.asarray(rng.integers(0, 3, size=32))


def scale_invariant_loss(params):
  # A normalised layer: the loss depends on w only through w / ||w||.
  w = params["w"] / jnp.linalg.norm(params["w"])
  logits = jnp.tanh(X @ w) @ params["head"]
  return optax.softmax_cross_entropy_with_integer_labels(logits, Y).mean()


def _trajectory(tx, params, steps=15):
  state = tx.init(params)
  out = []
  for _t in range(steps):
    g = jax.grad(scale_invariant_loss)(params)
    u, state = jax.jit(tx.update)(g, state, params)
    params = optax.apply_updates(params, u)
    out.append(params)
  return out


@pytest.mark.parametrize("opt", ["sgd", "momentum", "adam"])
def test_radius_r_equals_unit_radius_with_rescaled_lr(opt):
  """FixNorm at radius r, lr η == radius 1, lr η/r² (SGD) or η/r (Adam)."""
  r, eta = 3.0, 0.05
  w = jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)
  head = jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)
  mask = {"w": True, "head": False}
  make = {"sgd": lambda lr: optax.sgd(lr),
          "momentum": lambda lr: optax.sgd(lr, momentum=0.9),
          "adam": lambda lr: optax.adam(lr, eps=1e-30)}[opt]
  # The head is not scale-invariant: keep its step identical in both runs.
  head_lr = eta
  def tx(lr, radius):
    return lo.fixnorm(optax.multi_transform(
        {"w": make(lr), "head": make(head_lr)}, {"w": "w", "head": "head"}),
                      mask=mask, radius=radius)
  eff = eta / r**2 if opt != "adam" else eta / r
  big = _trajectory(tx(eta, r), {"w": r * w / jnp.linalg.norm(w),
                                 "head": head})
  unit = _trajectory(tx(eff, 1.0), {"w": w / jnp.linalg.norm(w),
                                    "head": head})
  for a, b in zip(big, unit):
    np.testing.assert_allclose(a["w"] / r, b["w"], rtol=2e-4, atol=2e-6)
    np.testing.assert_allclose(a["head"], b["head"], rtol=2e-4, atol=2e-6)
    np.testing.assert_allclose(jnp.linalg.norm(a["w"]), r,
                               rtol=tolerance.held_norm_rtol(24))
  # And the check can fail: without rescaling the learning rate it does not hold.
  wrong = _trajectory(tx(eta, 1.0), {"w": w / jnp.linalg.norm(w), "head": head})
  assert not np.allclose(big[-1]["w"] / r, wrong[-1]["w"], rtol=1e-3)


def test_classifier_keeps_alpha_and_body_keeps_init_norms():
  params = {"body": jnp.asarray(rng.normal(size=(5, 4)), jnp.float32),
            "head": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)}
  init = float(jnp.linalg.norm(params["body"]))
  tx = lo.fixnorm(optax.adam(0.1), mask={"body": True, "head": False},
                  classifier_mask={"body": False, "head": True},
                  classifier_norm=2.5)
  state = tx.init(params)
  for t in range(10):
    g = jax.tree.map(lambda x: jnp.sin(x * (t + 1)), params)
    u, state = tx.update(g, state, params)
    params = optax.apply_updates(params, u)
    np.testing.assert_allclose(jnp.linalg.norm(params["body"]), init,
                               rtol=tolerance.held_norm_rtol(20))
    np.testing.assert_allclose(jnp.linalg.norm(params["head"]), 2.5,
                               rtol=tolerance.held_norm_rtol(12))
  assert list(state) == ["base", "fixnorm", "classifier"]


def test_fixnorm_errors():
  params = {"body": jnp.ones((3, 3)), "head": jnp.zeros((3, 2))}
  with pytest.raises(ValueError, match="classifier_mask weight 'head' has "
                     "norm zero at init.*classifier_norm"):
    lo.fixnorm(optax.sgd(0.1), mask={"body": True, "head": False},
               classifier_mask={"body": False, "head": True}).init(params)
  # With α given, a zero-initialised head is fine.
  lo.fixnorm(optax.sgd(0.1), mask={"body": True, "head": False},
             classifier_mask={"body": False, "head": True},
             classifier_norm=1.0).init(params)
  with pytest.raises(ValueError, match="'body' is in both mask and "
                     "classifier_mask"):
    lo.fixnorm(optax.sgd(0.1), mask=True, classifier_mask={"body": True,
                                                           "head": False},
               classifier_norm=1.0).init(params)
  with pytest.raises(ValueError, match="classifier_norm is given but"):
    lo.fixnorm(optax.sgd(0.1), mask=True, classifier_norm=1.0)


def test_fixnorm_search_uses_two_sweeps():
  calls = []

  def evaluate(lr, alpha):
    calls.append((lr, alpha))
    return -np.log10(lr / 0.03) ** 2 - (alpha - 8.0) ** 2 / 10

  best, trials = lo.fixnorm_search(evaluate, [0.003, 0.01, 0.03, 0.1],
                                   [2.0, 4.0, 8.0, 16.0])
  assert (best.learning_rate, best.classifier_norm) == (0.03, 8.0)
  assert len(trials) == len(calls) == 4 + 4 - 1
  assert calls[:4] == [(lr, 4.0) for lr in (0.003, 0.01, 0.03, 0.1)]


def test_wrs_period_three_rescales_exactly_on_multiples():
  params = {"k": jnp.asarray(rng.normal(size=(3, 3, 2, 4)), jnp.float32)}
  tx = lo.weight_rescaling(optax.sgd(0.05, momentum=0.9), mask=True, period=3)
  state = tx.init(params)
  base = optax.sgd(0.05, momentum=0.9)
  rescaled = []
  for t in range(9):
    g = {"k": jnp.cos(params["k"] * (t + 1))}
    base_u, _ = base.update(g, state["base"], params)
    u, state = tx.update(g, state, params)
    changed = not np.array_equal(u["k"], base_u["k"])
    params = optax.apply_updates(params, u)
    norms = jnp.linalg.norm(params["k"].reshape(-1, 4), axis=0)
    if changed:
      np.testing.assert_allclose(norms, 1.0, rtol=1e-6)
    rescaled.append(changed)
  assert [t for t, c in enumerate(rescaled) if c] == [0, 3, 6]


def test_rescale_batch_stats_keeps_eval_outputs():
  import flax.linen as nn

  class ConvBN(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
      x = nn.Conv(4, (3, 3), use_bias=False)(x)
      return nn.BatchNorm(use_running_average=not train, momentum=0.0)(x)

  model = ConvBN()
  x = jax.random.normal(jax.random.key(0), (8, 6, 6, 2))
  v = model.init(jax.random.key(1), x)
  _, upd = model.apply(v, x, train=True, mutable=["batch_stats"])
  v = {"params": v["params"], **upd}
  before = model.apply(v, x)
  params = v["params"]
  tx = lo.weight_rescaling(optax.sgd(0.0), mask=lo.masks.kernels, target=0.5)
  u, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params),
                   params)
  new_params = optax.apply_updates(params, u)
  stats = lo.rescale_batch_stats(v["batch_stats"], params, new_params,
                                 {"Conv_0/kernel": "BatchNorm_0"})
  after = model.apply({"params": new_params, "batch_stats": stats}, x)
  stale = model.apply({"params": new_params,
                       "batch_stats": v["batch_stats"]}, x)
  np.testing.assert_allclose(after, before, rtol=1e-3, atol=1e-3)
  assert not np.allclose(stale, before, rtol=1e-2, atol=1e-2)
  # A pair naming a layer the statistics do not have is an error, not a no-op.
  with pytest.raises(KeyError, match="batch_stats has no layer 'BatchNorm_9'"):
    lo.rescale_batch_stats(v["batch_stats"], params, new_params,
                           {"Conv_0/kernel": "BatchNorm_9"})
  with pytest.raises(KeyError, match="kernel 'Conv_9/kernel' not found"):
    lo.rescale_batch_stats(v["batch_stats"], params, new_params,
                           {"Conv_9/kernel": "BatchNorm_0"})


def _digits_images():
  return helpers.digits()


@pytest.mark.slow   # ~60 s (fixnorm) and ~25 s (wrs) on 2 cores
@pytest.mark.parametrize("method", ["fixnorm", "wrs"])
def test_batchnorm_cnn_trains_with_norms_held(method):
  x, y = _digits_images()
  model = models.ResNet(widths=(8, 16), image_shape=(8, 8, 1))
  v = model.init(jax.random.key(0), x[:2], train=True)
  params, stats = v["params"], v["batch_stats"]
  conv_mask = lo.masks.by_path(params, r".*Conv_\d+/kernel")
  head_mask = lo.masks.by_path(params, r"Dense_0/kernel")
  if method == "fixnorm":
    tx = lo.fixnorm(optax.sgd(0.1, momentum=0.9), mask=conv_mask,
                    classifier_mask=head_mask, classifier_norm=3.0)
    targets = jax.tree.map(lambda w, m: jnp.linalg.norm(w) if m else None,
                           params, conv_mask)
  else:
    tx = lo.weight_rescaling(optax.sgd(0.1, momentum=0.9), mask=conv_mask)
  state = tx.init(params)

  @jax.jit
  def step(params, stats, state, i):
    idx = jax.random.choice(jax.random.key(i), x.shape[0], (128,))
    def loss(p):
      logits, upd = model.apply({"params": p, "batch_stats": stats}, x[idx],
                                train=True, mutable=["batch_stats"])
      return optax.softmax_cross_entropy_with_integer_labels(
          logits, y[idx]).mean(), upd["batch_stats"]
    (l, stats), g = jax.value_and_grad(loss, has_aux=True)(params)
    u, state = tx.update(g, state, params)
    return optax.apply_updates(params, u), stats, state

  for i in range(120):
    params, stats, state = step(params, stats, state, i)
    if i % 20 == 0 or i == 119:
      if method == "fixnorm":
        got = jax.tree.map(lambda w, m: jnp.linalg.norm(w) if m else None,
                           params, conv_mask)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5),
                     got, targets)
        np.testing.assert_allclose(
            jnp.linalg.norm(params["Dense_0"]["kernel"]), 3.0, rtol=1e-5)
      else:
        for w, m in zip(jax.tree.leaves(params), jax.tree.leaves(conv_mask)):
          if m:
            np.testing.assert_allclose(
                jnp.linalg.norm(w.reshape(-1, w.shape[-1]), axis=0), 1.0,
                rtol=1e-5)
  logits = model.apply({"params": params, "batch_stats": stats}, x)
  acc = float((logits.argmax(-1) == y).mean())
  assert acc > 0.85, acc
