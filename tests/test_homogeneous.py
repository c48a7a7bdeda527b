"""masks.final_homogeneous against hand-derived masks and the numerical check."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from flax import nnx

import lawn_optax as lo
from benchmarks import models
from lawn_optax import _homogeneous, _tree
from tests import helpers


class MLP(nn.Module):
  use_bias: bool = True
  norm: str | None = None  # "layer" or "batch" before the last two dense layers
  classes: int = 4

  @nn.compact
  def __call__(self, x, train=True):
    x = nn.relu(nn.Dense(16, use_bias=self.use_bias)(x))
    x = nn.Dense(16, use_bias=self.use_bias)(x)
    if self.norm == "layer":
      x = nn.LayerNorm()(x)
    elif self.norm == "batch":
      x = nn.BatchNorm(use_running_average=not train)(x)
    x = nn.relu(x)
    x = nn.relu(nn.Dense(16, use_bias=self.use_bias)(x))
    return nn.Dense(self.classes, use_bias=self.use_bias)(x)


class BNCNN(nn.Module):
  @nn.compact
  def __call__(self, x, train=True):
    x = nn.Conv(8, (3, 3))(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
    x = nn.max_pool(x, (2, 2), (2, 2))
    x = nn.Conv(8, (3, 3), use_bias=False)(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
    x = nn.avg_pool(x, (2, 2), (2, 2))
    return nn.Dense(3)(x.reshape(x.shape[0], -1))


class TwoBranch(nn.Module):
  """Bias-free branches of equal degree, summed and concatenated."""

  @nn.compact
  def __call__(self, x):
    x = jnp.tanh(nn.Dense(8, use_bias=False)(x))   # tanh cuts here
    a = nn.Dense(8, use_bias=False)(x)
    b = nn.Dense(8, use_bias=False)(x)
    y = nn.relu(a + b)                             # degrees 1 and 1
    c = jnp.concatenate([nn.Dense(4, use_bias=False)(y),
                         nn.Dense(4, use_bias=False)(y)], -1)  # 2 and 2
    return nn.Dense(2, use_bias=False)(nn.leaky_relu(c))


class SkipNet(nn.Module):
  """A residual block whose skip mixes degrees (x + W2 relu(W1 x))."""

  @nn.compact
  def __call__(self, x):
    x = nn.Dense(8, use_bias=False)(x)
    y = nn.Dense(8, use_bias=False)(nn.relu(nn.Dense(8, use_bias=False)(x)))
    x = nn.relu(x + y)
    return nn.Dense(2, use_bias=False)(x)


_selected = helpers.selected


def _zero_biases(params):
  return jax.tree_util.tree_map_with_path(
      lambda p, x: jnp.zeros_like(x) if _tree.path_str(p).endswith("bias")
      else x, params)


def _check(fn, params, mask, args, expected, degree, candidates):
  """Expected mask, numerical degree, and maximality over candidate leaves."""
  assert _selected(mask) == sorted(expected)
  assert lo.masks.check_homogeneous(fn, params, mask, *args) == degree
  paths, _, treedef = _tree.flatten_with_paths(params)
  flags = [p in expected for p in paths]
  for i, p in enumerate(paths):
    if flags[i] or not candidates(p):
      continue
    bigger = jax.tree.unflatten(treedef, [f or j == i
                                          for j, f in enumerate(flags)])
    try:
      lo.masks.check_homogeneous(fn, params, bigger, *args)
    except ValueError as e:
      assert "not homogeneous" in str(e)
      continue
    # Still homogeneous only if the output ignores the leaf's scale: it sits
    # behind a normalisation (scale-invariant up to the norm's epsilon).
    alone = jax.tree.unflatten(treedef, [j == i for j in range(len(paths))])
    scaled = _homogeneous.scale_params(params, jax.tree.leaves(alone), 2.0)
    np.testing.assert_allclose(fn(scaled, *args), fn(params, *args),
                               rtol=1e-3, atol=1e-4, err_msg=p)


def _random_biases(params):
  # Flax initialises biases at zero, which would hide degree mixing.
  return jax.tree_util.tree_map_with_path(
      lambda p, x: 0.3 * jax.random.normal(jax.random.key(len(str(p))), x.shape)
      if _tree.path_str(p).endswith("bias") else x, params)


def _linen(model, x, **apply_kw):
  variables = model.init(jax.random.key(0), x)
  params = _random_biases(variables["params"])
  rest = {k: v for k, v in variables.items() if k != "params"}
  mutable = list(rest) if rest else False

  def fn(p, x):
    out = model.apply({"params": p, **rest}, x, mutable=mutable, **apply_kw)
    return out[0] if mutable else out
  return fn, params


X = jax.random.normal(jax.random.key(1), (6, 5))
NOT_BIAS = lambda p: not p.endswith("bias")
ANY = lambda p: True
KERNELS = lambda p: p.endswith("kernel")


def test_bias_free_mlp_all_kernels():
  fn, params = _linen(MLP(use_bias=False), X)
  mask = lo.masks.final_homogeneous(fn, params, X)
  _check(fn, params, mask, (X,), [f"Dense_{i}/kernel" for i in range(4)], 4,
         ANY)


def test_mlp_with_biases_strict_and_ignore():
  fn, params = _linen(MLP(), X)
  strict = lo.masks.final_homogeneous(fn, params, X)
  _check(fn, params, strict, (X,), ["Dense_3/kernel", "Dense_3/bias"], 1, ANY)
  ignore = lo.masks.final_homogeneous(fn, params, X, biases="ignore")
  zb = _zero_biases(params)
  _check(fn, zb, ignore, (X,), [f"Dense_{i}/kernel" for i in range(4)], 4,
         NOT_BIAS)


@pytest.mark.parametrize("norm", ["layer", "batch"])
def test_mlp_with_norm_before_last_two_dense(norm):
  fn, params = _linen(MLP(norm=norm), X)
  mask = lo.masks.final_homogeneous(fn, params, X, biases="ignore",
                                    include_scales=False)
  zb = _zero_biases(params)
  _check(fn, zb, mask, (X,), ["Dense_2/kernel", "Dense_3/kernel"], 2,
         lambda p: NOT_BIAS(p) and "Norm" not in p)
  strict = lo.masks.final_homogeneous(fn, params, X)
  assert _selected(strict) == ["Dense_3/bias", "Dense_3/kernel"]
  # A free norm scale before the head joins by default (its bias zeroed).
  with_scale = lo.masks.final_homogeneous(fn, params, X, biases="ignore")
  norm_name = "LayerNorm_0" if norm == "layer" else "BatchNorm_0"
  assert _selected(with_scale) == sorted([f"{norm_name}/scale",
                                          "Dense_2/kernel", "Dense_3/kernel"])
  assert lo.masks.check_homogeneous(fn, zb, with_scale, X) == 3


def test_cnn_with_batchnorm_and_dense_head():
  x = jax.random.normal(jax.random.key(2), (4, 8, 8, 3))
  fn, params = _linen(BNCNN(), x)
  strict = lo.masks.final_homogeneous(fn, params, x)
  _check(fn, params, strict, (x,), ["Dense_0/bias", "Dense_0/kernel"], 1,
         lambda p: "BatchNorm" not in p)
  ignore = lo.masks.final_homogeneous(fn, params, x, biases="ignore",
                                      include_scales=False)
  _check(fn, _zero_biases(params), ignore, (x,), ["Dense_0/kernel"], 1,
         lambda p: NOT_BIAS(p) and "BatchNorm" not in p)
  # By default the last BN's scale joins: it would grow the logits.
  scaled = lo.masks.final_homogeneous(fn, params, x, biases="ignore")
  _check(fn, _zero_biases(params), scaled, (x,),
         ["BatchNorm_1/scale", "Dense_0/kernel"], 2, NOT_BIAS)


def test_resnet_blocks_with_skip_connections():
  x = jax.random.normal(jax.random.key(2), (2, 28 * 28))
  fn, params = _linen(models.ResNet(widths=(4, 8)), x, train=True)
  mask = lo.masks.final_homogeneous(fn, params, x)
  _check(fn, params, mask, (x,), ["Dense_0/bias", "Dense_0/kernel"], 1,
         lambda p: "BatchNorm" not in p)
  fn, params = _linen(SkipNet(), X)
  mask = lo.masks.final_homogeneous(fn, params, X)
  # x + W2 relu(W1 x) mixes degrees when the branch is scaled: the suffix is
  # the head; the stem feeding the skip (branch fixed) keeps degrees equal.
  _check(fn, params, mask, (X,), ["Dense_0/kernel", "Dense_3/kernel"], 2, ANY)


def test_equal_degree_branches_and_concat():
  fn, params = _linen(TwoBranch(), X)
  mask = lo.masks.final_homogeneous(fn, params, X)
  _check(fn, params, mask, (X,), [f"Dense_{i}/kernel" for i in range(1, 6)],
         3, ANY)


def test_ncf_recommender():
  model = models.NCF(num_users=7, num_items=11, dim=4, tower=(8, 4))
  u, i = jnp.arange(6) % 7, jnp.arange(6) % 11
  params = _random_biases(model.init(jax.random.key(0), u, i)["params"])
  fn = lambda p, u, i: model.apply({"params": p}, u, i)
  strict = lo.masks.final_homogeneous(fn, params, u, i)
  _check(fn, params, strict, (u, i), ["Dense_2/bias", "Dense_2/kernel"], 1,
         lambda p: "embedding" not in p)
  zb = _zero_biases(params)
  tower = lo.masks.final_homogeneous(fn, params, u, i, biases="ignore",
                                     include_embeddings=False)
  _check(fn, zb, tower, (u, i), ["Dense_0/kernel", "Dense_1/kernel",
                                 "Dense_2/kernel"], 3, KERNELS)
  full = lo.masks.final_homogeneous(fn, params, u, i, biases="ignore")
  _check(fn, zb, full, (u, i), ["Dense_0/kernel", "Dense_1/kernel",
                                "Dense_2/kernel", "item_embedding/embedding",
                                "user_embedding/embedding"], 4, NOT_BIAS)


class NnxCNN(nnx.Module):
  def __init__(self, rngs):
    self.conv = nnx.Conv(3, 8, (3, 3), rngs=rngs)
    self.bn = nnx.BatchNorm(8, rngs=rngs)
    self.fc1 = nnx.Linear(8 * 4 * 4, 16, use_bias=False, rngs=rngs)
    self.fc2 = nnx.Linear(16, 3, use_bias=False, rngs=rngs)

  def __call__(self, x):
    x = nnx.relu(self.bn(self.conv(x)))
    x = nnx.avg_pool(x, (2, 2), (2, 2))
    x = nnx.leaky_relu(self.fc1(x.reshape(x.shape[0], -1)))
    return self.fc2(x)


def test_nnx_module_and_nnx_optimizer():
  model = NnxCNN(nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(3), (4, 8, 8, 3))
  mask = lo.masks.final_homogeneous(model, x, include_scales=False)
  assert _selected(mask) == ["fc1/kernel", "fc2/kernel"]
  assert lo.masks.check_homogeneous(model, mask, x) == 2
  # By default BN's scale and bias (tied: x * scale + bias) join.
  full = lo.masks.final_homogeneous(model, x)
  assert _selected(full) == ["bn/bias", "bn/scale", "fc1/kernel",
                             "fc2/kernel"]
  assert lo.masks.check_homogeneous(model, full, x) == 3
  y = jnp.arange(4) % 3
  opt = nnx.Optimizer(model, lo.lawn_adam(1e-2, free_steps=3, mask=mask),
                      wrt=nnx.Param)

  @nnx.jit
  def step(model, opt):
    loss = lambda m: optax.softmax_cross_entropy_with_integer_labels(
        m(x), y).mean()
    opt.update(model, nnx.grad(loss)(model))

  for t in range(8):
    if t == 3:
      frozen = float(jnp.linalg.norm(model.fc2.kernel[...]))
    step(model, opt)
  np.testing.assert_allclose(jnp.linalg.norm(model.fc2.kernel[...]), frozen,
                             rtol=1e-5)


def test_lawn_trains_with_final_homogeneous_mask():
  xs, ys = helpers.digits()
  model = MLP(norm="layer", classes=10)
  params = model.init(jax.random.key(0), xs[:2])["params"]
  fn = lambda p, x: model.apply({"params": p}, x)
  mask = lo.masks.final_homogeneous(fn, params, xs[:2], biases="ignore")
  tx = lo.lawn_adam(3e-3, free_steps=60, mask=mask)
  state = tx.init(params)

  @jax.jit
  def step(params, state, i):
    idx = jax.random.choice(jax.random.key(i), xs.shape[0], (128,))
    g = jax.grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(
        fn(p, xs[idx]), ys[idx]).mean())(params)
    u, state = tx.update(g, state, params)
    return optax.apply_updates(params, u), state

  for i in range(200):
    params, state = step(params, state, i)
  acc = float((fn(params, xs).argmax(-1) == ys).mean())
  assert acc > 0.9
  got = lo.weight_norms(params, mask)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5), got,
               lo.frozen_norms(state))


def test_many_leaves():
  class Deep(nn.Module):
    @nn.compact
    def __call__(self, x):
      for _ in range(60):
        x = nn.relu(nn.Dense(8)(x))
      return nn.Dense(2)(x)
  fn, params = _linen(Deep(), X)
  assert len(jax.tree.leaves(params)) > 100
  mask = lo.masks.final_homogeneous(fn, params, X, biases="ignore")
  assert len(_selected(mask)) == 61  # the speed lives in benchmarks/


def test_errors_name_the_reason():
  p = {"w": jnp.ones((5, 3))}
  with pytest.raises(ValueError, match="does not depend on the params"):
    lo.masks.final_homogeneous(lambda p, x: x * 2.0, p, X)
  with pytest.raises(ValueError, match="no homogeneous set: 'w'.*'tanh'"):
    lo.masks.final_homogeneous(lambda p, x: jnp.tanh(x @ p["w"]), p, X)

  def loop(p, x):
    return jax.lax.fori_loop(0, 3, lambda i, h: h * 2.0, x @ p["w"])
  assert _selected(lo.masks.final_homogeneous(loop, p, X)) == ["w"]
  with pytest.raises(ValueError, match="not homogeneous"):
    lo.masks.check_homogeneous(lambda p, x: x @ p["w"] + 1.0, p, True, X)
  with pytest.raises(ValueError, match="output is zero"):
    lo.masks.check_homogeneous(lambda p, x: 0.0 * (x @ p["w"]), p, True, X)


# ---------------------------------------------------------------------------
# Each bug reported in the final_homogeneous issue, as a test.
# ---------------------------------------------------------------------------


class TanhMLP(nn.Module):
  @nn.compact
  def __call__(self, x):
    h = jnp.tanh(nn.Dense(8, name="hidden")(x))
    return nn.Dense(3, name="head")(h)


@pytest.mark.parametrize("inputs", ["zeros", "ones", "random"])
def test_example_input_values_never_decide(inputs):
  # With zeros the tanh's input was an "exact zero": the first layer joined.
  x = {"zeros": jnp.zeros((4, 5)), "ones": jnp.ones((4, 5)), "random": X}[
      inputs]
  fn, params = _linen(TanhMLP(), X)
  mask = lo.masks.final_homogeneous(fn, params, x)
  assert _selected(mask) == ["head/bias", "head/kernel"]
  assert lo.masks.check_homogeneous(fn, params, mask, X) == 1


class EvalBN(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.Dense(8, use_bias=False, name="before")(x)
    x = nn.BatchNorm(use_running_average=True, use_scale=False,
                     use_bias=False)(x)
    return nn.Dense(3, use_bias=False, name="head")(nn.relu(x))


def test_eval_batchnorm_statistics_never_decide():
  # At init the running mean is 0 and was taken for an exact zero: the layer
  # before the BN joined, and the mask went wrong after one update.
  model = EvalBN()
  variables = model.init(jax.random.key(0), X)
  trained = jax.tree.map(lambda s: s + 0.5, variables["batch_stats"])
  for stats in (variables["batch_stats"], trained):
    fn = lambda p, x, s=stats: model.apply(
        {"params": p, "batch_stats": s}, x)
    mask = lo.masks.final_homogeneous(fn, variables["params"], X)
    assert _selected(mask) == ["head/kernel"]
    assert lo.masks.check_homogeneous(fn, variables["params"], mask, X) == 1


def test_bfloat16_parameters():
  fn, params = _linen(MLP(use_bias=False), X)
  bf16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
  assert len(_selected(lo.masks.final_homogeneous(fn, bf16, X))) == 4
  # Only the head in bf16: it was silently dropped.
  mixed = dict(params)
  mixed["Dense_3"] = bf16["Dense_3"]
  assert _selected(lo.masks.final_homogeneous(fn, mixed, X)) == [
      f"Dense_{i}/kernel" for i in range(4)]


def test_abstract_params_allocate_nothing():
  fn, params = _linen(MLP(norm="layer"), X)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                          params)
  x = jax.ShapeDtypeStruct(X.shape, X.dtype)
  assert lo.masks.final_homogeneous(fn, abstract, x) == (
      lo.masks.final_homogeneous(fn, params, X))


def _shape_ops(h):
  """split, tile, stack, scatter, dynamic_update_slice: all of degree 1."""
  a, b = jnp.split(h, 2, -1)
  h = jnp.concatenate([jnp.tile(a, (1, 2))[:, :6], jnp.stack([b, b]).sum(0)],
                      -1)
  h = h.at[0].set(h[1])
  return jax.lax.dynamic_update_slice(h, h[:1], (2, 0))


def _control_flow(h, x):
  h = jax.lax.cond(x.sum() > 0, lambda h: h, lambda h: 2.0 * h, h)
  h = jax.lax.fori_loop(0, 3, lambda i, h: jnp.maximum(h, 0.0), h)
  n = 2 + (x.sum() > 0).astype(jnp.int32)  # traced trip count: a while loop
  h = jax.lax.fori_loop(0, n, lambda i, h: 0.5 * h, h)
  h, _ = jax.lax.scan(lambda c, _: (jnp.maximum(c, 0.0), None), h, None, 2)
  return jnp.sort(h, -1) + jax.lax.top_k(h, 12)[0] + jnp.cumsum(h, -1)


PATH_OPS = {"shape ops": lambda h, x: _shape_ops(h),
            "control flow": _control_flow}


@pytest.mark.parametrize("ops", list(PATH_OPS))
def test_primitives_on_the_path(ops):
  # Each of these aborted the whole analysis ("unsupported primitive").
  p = {"w": jax.random.normal(jax.random.key(0), (5, 12)),
       "v": jax.random.normal(jax.random.key(1), (12, 3))}
  fn = lambda p, x: PATH_OPS[ops](x @ p["w"], x) @ p["v"]
  mask = lo.masks.final_homogeneous(fn, p, X)
  assert _selected(mask) == ["v", "w"]
  assert lo.masks.check_homogeneous(fn, p, mask, X) == 2


@pytest.mark.parametrize("ops", list(PATH_OPS))
def test_primitives_cut_off_by_a_normalisation(ops):
  def fn(p, x):
    h = PATH_OPS[ops](x @ p["w"], x)  # scaled by w, then cut by the norm
    h = h / jnp.sqrt(jnp.mean(h * h, -1, keepdims=True) + 1e-6)
    return h @ p["v"]
  p = {"w": jnp.ones((5, 12)), "v": jnp.ones((12, 3))}
  assert _selected(lo.masks.final_homogeneous(fn, p, X)) == ["v"]


def test_unsupported_primitive_is_an_error_only_where_it_decides():
  p = {"w": jax.random.normal(jax.random.key(0), (5, 8)),
       "v": jax.random.normal(jax.random.key(1), (8, 3))}
  fft = lambda h: jnp.fft.fft(h).real  # no homogeneity rule for 'fft'
  blocking = lambda p, x: fft(x @ p["w"]) @ p["v"]
  with pytest.raises(ValueError, match=r"unsupported primitive 'fft' at "
                     r"test_homogeneous\.py:\d+ on the path from parameter "
                     r"'w' .* explicit mask \(lawn_optax\.masks\.by_path\)"):
    lo.masks.final_homogeneous(blocking, p, X)
  text = lo.masks.explain(blocking, p, X, print_fn=None)
  assert "undecided: 'fft'" in text
  # Behind a normalisation the primitive cannot matter: no error.
  def cut(p, x):
    h = fft(x @ p["w"])
    return (h - h.mean()) / jnp.sqrt(h.var() + 1e-5) @ p["v"]
  assert _selected(lo.masks.final_homogeneous(cut, p, X)) == ["v"]


def test_a_new_primitive_is_one_entry(monkeypatch):
  # The recipe of CONTRIBUTING.md: one entry in the rule table, nothing else.
  from lawn_optax._homogeneous import rules
  p = {"w": jax.random.normal(jax.random.key(0), (5, 8)),
       "v": jax.random.normal(jax.random.key(1), (8, 3))}
  fn = lambda p, x: jnp.fft.fft(x @ p["w"]).real @ p["v"]
  with pytest.raises(ValueError, match="unsupported primitive 'fft'"):
    lo.masks.final_homogeneous(fn, p, X)
  monkeypatch.setitem(rules.RULES, "fft", rules.Primitive(rules._same))  # linear
  mask = lo.masks.final_homogeneous(fn, p, X)
  assert _selected(mask) == ["v", "w"]
  assert lo.masks.check_homogeneous(fn, p, mask, X) == 2
  with pytest.raises(ValueError, match="primitive 'mul' registered twice"):
    rules._register("mul", rules._product)


def test_named_axis_collectives_shard_map():
  from jax.sharding import Mesh
  from jax.sharding import PartitionSpec as P
  mesh = Mesh(np.array(jax.devices()[:1]), ("data",))

  def fn(p, x):
    def local(x, w, v):
      h = jnp.maximum(x @ w, 0.0)
      h = jax.lax.psum(h, "data") + jax.lax.pmean(h, "data")
      return jax.lax.all_gather(h, "data", tiled=True) @ v
    return jax.shard_map(local, mesh=mesh, in_specs=(P("data"), P(), P()),
                         out_specs=P(), check_vma=False)(x, p["w"], p["v"])
  p = {"w": jnp.ones((5, 4)), "v": jnp.ones((4, 2))}
  mask = lo.masks.final_homogeneous(fn, p, X)
  assert _selected(mask) == ["v", "w"]
  assert lo.masks.check_homogeneous(fn, p, mask, X) == 2


def test_logit_temperature_after_the_head():
  # Only sets containing the last-used leaf (t) were tried: no answer.
  p = {"w": jax.random.normal(jax.random.key(0), (5, 8)),
       "v": jax.random.normal(jax.random.key(1), (8, 3)), "t": jnp.zeros(())}
  fn = lambda p, x: jnp.maximum(x @ p["w"], 0) @ p["v"] * jnp.exp(p["t"])
  mask = lo.masks.final_homogeneous(fn, p, X)
  assert _selected(mask) == ["v", "w"]
  assert lo.masks.check_homogeneous(fn, p, mask, X) == 2


def test_two_towers_with_a_tanh_in_one():
  # {tower A, tower B's last layer, head} is homogeneous; the head alone was
  # returned.
  p = {"a": jax.random.normal(jax.random.key(0), (5, 4)),
       "b1": jax.random.normal(jax.random.key(1), (5, 4)),
       "b2": jax.random.normal(jax.random.key(2), (4, 4)),
       "head": jax.random.normal(jax.random.key(3), (8, 3))}
  fn = lambda p, x: jnp.concatenate(
      [x @ p["a"], jnp.tanh(x @ p["b1"]) @ p["b2"]], -1) @ p["head"]
  mask = lo.masks.final_homogeneous(fn, p, X)
  assert _selected(mask) == ["a", "b2", "head"]
  assert lo.masks.check_homogeneous(fn, p, mask, X) == 2


def test_auxiliary_head_that_fn_drops_is_not_selected():
  p = {"w": jnp.ones((5, 3)), "aux": jnp.ones((5, 2))}

  def fn(p, x):
    _ = jnp.maximum(x @ p["aux"], 0)  # an auxiliary head, dropped
    return x @ p["w"]
  assert _selected(lo.masks.final_homogeneous(fn, p, X)) == ["w"]
  assert "does not reach the output" in lo.masks.explain(fn, p, X,
                                                         print_fn=None)


def test_integer_cast_breaks_homogeneity():
  p = {"w": jnp.ones((5, 3)), "v": jnp.ones((3, 2))}
  fn = lambda p, x: (x @ p["w"]).astype(jnp.int32).astype(jnp.float32) @ p["v"]
  assert _selected(lo.masks.final_homogeneous(fn, p, X)) == ["v"]


def test_keys_containing_slashes():
  # Haiku's "mlp/~/linear_0": every mask broke, even one of the exact
  # structure.
  p = {"mlp/~/linear_0": {"w": jnp.ones((5, 4))},
       "mlp/~/linear_1": {"w": jnp.ones((4, 2))}}
  fn = lambda p, x: jnp.maximum(x @ p["mlp/~/linear_0"]["w"], 0) @ p[
      "mlp/~/linear_1"]["w"]
  mask = lo.masks.final_homogeneous(fn, p, X)
  assert mask == {"mlp/~/linear_0": {"w": True}, "mlp/~/linear_1": {"w": True}}
  tx = lo.lawn(optax.sgd(0.1), free_steps=0, mask=mask)
  state = tx.init(p)
  updates, _ = tx.update(jax.tree.map(jnp.ones_like, p), state, p)
  assert jax.tree.structure(updates) == jax.tree.structure(p)
  prefix = {"mlp/~/linear_0": False, "mlp/~/linear_1": True}
  assert lo._tree.broadcast_mask(prefix, p) == [False, True]


class DenseLNDense(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(3, use_bias=False, name="head")(
        nn.LayerNorm(name="norm")(nn.Dense(8, name="body")(x)))


def test_norm_scale_in_by_default():
  # The LN scale stayed free and could grow the logits without bound.
  fn, params = _linen(DenseLNDense(), X)
  mask = lo.masks.final_homogeneous(fn, params, X, biases="ignore")
  assert _selected(mask) == ["head/kernel", "norm/scale"]
  assert _selected(lo.masks.final_homogeneous(
      fn, params, X, biases="ignore", include_scales=False)) == ["head/kernel"]
  text = lo.masks.explain(fn, params, X, biases="ignore", print_fn=None)
  assert text.splitlines()[0] == "final homogeneous set: 2 of 5 leaves, degree 2"
  assert re.search(r"out  body/kernel .*'add' at test_homogeneous\.py:\d+ "
                   r"\(_normalize in normalization\.py:\d+\)", text)


def test_tied_embedding_and_gemma_norm():
  p = {"emb": jax.random.normal(jax.random.key(0), (7, 4)),
       "scale": jnp.zeros(4)}

  def fn(p, tokens, one_plus):
    x = p["emb"][tokens]
    x = x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + 1e-6)
    x = x * ((1.0 + p["scale"]) if one_plus else p["scale"])
    return x @ p["emb"].T
  tokens = jnp.arange(6) % 7
  mask = lo.masks.final_homogeneous(fn, p, tokens, False)
  assert _selected(mask) == ["scale"]  # the tied table is cut by the norm
  with pytest.raises(ValueError, match=r"no homogeneous set: 'emb' .*'add' at"):
    lo.masks.final_homogeneous(fn, p, tokens, True)


def test_named_axis_collectives_pmap():
  def fn(p, x):
    def local(x):
      h = jnp.maximum(x @ p["w"], 0.0)
      h = h - jax.lax.pmean(h.mean(0), "i") + jax.lax.pmean(h.mean(0), "i")
      h = h + 0.0 * jax.lax.psum(h, "i")
      return jax.lax.all_gather(h, "i").reshape(-1, h.shape[-1]) @ p["v"]
    return jax.pmap(local, axis_name="i")(x[None])[0]
  p = {"w": jnp.ones((5, 4)), "v": jnp.ones((4, 2))}
  mask = lo.masks.final_homogeneous(fn, p, X)
  assert _selected(mask) == ["v", "w"]
  assert lo.masks.check_homogeneous(fn, p, mask, X) == 2


def test_every_real_float_dtype_alike_complex_and_integers_never():
  p = {"w16": jnp.ones((5, 4), jnp.float16), "w32": jnp.ones((4, 3)),
       "c": jnp.ones((3,), jnp.complex64), "n": jnp.ones((3,), jnp.int32)}

  def fn(p, x):
    h = jnp.maximum(x.astype(jnp.float16) @ p["w16"], 0).astype(jnp.float32)
    return (h @ p["w32"]) * jnp.real(p["c"]) * p["n"]
  mask = lo.masks.final_homogeneous(fn, p, X)
  assert _selected(mask) == ["w16", "w32"]
  text = lo.masks.explain(fn, p, X, print_fn=None)
  assert "out  c    (3,)    not a real floating-point array" in text
  assert lo.masks.check_homogeneous(fn, p, mask, X) == 2
