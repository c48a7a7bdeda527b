"""The projection path (issue 40): ``retraction="projection"`` plus
``lo.project_norms`` after ``optax.apply_updates``, in optax.projections'
idiom. The composition battery, checkpoints and sharding run it through
tests/registry.py (the ``*_projection`` entries); here: the NumPy reference,
exactness, the free phase bit for bit, the donated-buffer memory analysis,
nnx and linen patterns, and every bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lawn_optax as lo
from tests import helpers, registry, tolerance
from tests import reference as ref

SHAPES = helpers.SMALL_SHAPES
_params, _targets = helpers.small_params, helpers.small_targets


def _trajectory(tx, params0, targets, project):
  @jax.jit
  def step(params, state, a):
    grads = jax.tree.map(lambda w, x: (w - x) + 0.1 * w**3, params, a)
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    return (lo.project_norms(params, state) if project else params), state

  params, state = jax.tree.map(jnp.asarray, params0), tx.init(params0)
  out = []
  for a in targets:
    params, state = step(params, state, jax.tree.map(jnp.float32, a))
    out.append((params, state))
  return out


@pytest.mark.numerics
@pytest.mark.parametrize("granularity", ["tensor", "unit"])
@pytest.mark.parametrize("tangent", [False, True])
def test_matches_numpy_reference_and_holds_the_norm_exactly(granularity,
                                                            tangent):
  steps, free_steps = 24, 9
  targets = _targets(steps)
  params0 = _params()
  mask = {"k1": True, "k2": True, "b": False}
  expected, frozen = ref.lawn_trajectory(
      params0, lambda w, t: {k: (w[k] - targets[t][k]) + 0.1 * w[k] ** 3
                             for k in w},
      lambda: ref.Adam(0.02), free_steps=free_steps, mask=mask, steps=steps,
      granularity=granularity, tangent_projection=tangent)
  tx = lo.lawn(optax.adam(0.02), free_steps=free_steps, mask=mask,
               granularity=granularity, tangent_projection=tangent,
               retraction="projection")
  got = _trajectory(tx, params0, targets, project=True)
  for t, (params, state) in enumerate(got):
    tolerance.assert_matches_float64(params, expected[t], t + 1, terms=30)
    if t >= free_steps:
      # Exact to the rounding of the norm itself, at every step (no drift
      # accumulates): the norm of a 30-term tensor, then one multiply.
      c = lo.frozen_norms(state)
      norms = lo.weight_norms(jax.tree.map(
          lambda x: np.asarray(x, np.float64), params), mask, granularity)
      for k in ("k1", "k2"):
        np.testing.assert_allclose(
            norms[k], c[k], atol=0, rtol=tolerance.reduction_bound(
                30, 1.0, reductions=2, ops=2))
  for k, v in frozen.items():
    np.testing.assert_allclose(lo.frozen_norms(got[-1][1])[k],
                               np.reshape(v, lo.frozen_norms(got[-1][1])[k].shape),
                               rtol=tolerance.reduction_bound(
                                   30, 1.0, reductions=2, steps=free_steps + 1))


def test_free_phase_is_the_base_optimizer_bit_for_bit():
  """Before the freeze the update is Adam's, bit for bit, the projection
  returns the params unchanged, bit for bit, and the state's phase says so.
  (Against a jitted plain ``adam`` + ``apply_updates`` the weights may
  differ in the last bit: XLA fuses Adam's arithmetic into the add there
  and may round it differently; here the update waits for the capture's
  norm, ``Constraint._bookkeeping``, and the weights are exactly
  ``params + updates``.)"""
  mask = {"k1": True, "k2": False, "b": False}
  tx = lo.lawn_adam(0.02, free_steps=50, mask=mask, retraction="projection")
  adam = optax.adam(0.02)
  grad = lambda w, x: (w - x) + 0.1 * w**3
  params = jax.tree.map(jnp.asarray, _params())
  state = tx.init(params)
  for a in _targets(6):
    grads = jax.tree.map(grad, params, jax.tree.map(jnp.float32, a))
    updates, new_state = jax.jit(tx.update)(grads, state, params)
    want, _ = jax.jit(adam.update)(grads, state["base"], params)
    jax.tree.map(np.testing.assert_array_equal, updates, want)
    applied = jax.jit(optax.apply_updates)(params, updates)
    projected = jax.jit(lo.project_norms)(applied, new_state)
    jax.tree.map(np.testing.assert_array_equal, projected, applied)
    assert not bool(new_state["lawn"].active)
    params, state = projected, new_state


def _flax_style(tree):
  """The small test tree as tests/registry.py's masks expect it."""
  return {"Dense_0": {"kernel": tree["k1"], "bias": tree["k2"][0]},
          "Dense_1": {"kernel": tree["k2"], "bias": tree["b"]}}


@pytest.mark.parametrize("method", [m for m in registry.METHODS
                                    if m.projection], ids=lambda m: m.name)
def test_same_trajectory_as_the_chain(method):
  """Both paths apply one rule: the same trajectory to float32 rounding
  (within the error model's bound of the reference comparison), for every
  registered method that takes ``retraction=`` (a new one is covered by
  registering it)."""
  params0 = _flax_style(_params())
  targets = [_flax_style(t) for t in _targets(12)]
  mask = registry.kernels(params0)
  build = lambda **kw: method.factory(method.learning_rate, mask, **kw)
  chain = _trajectory(build(), params0, targets, project=False)
  proj = _trajectory(build(retraction="projection"), params0, targets,
                     project=True)
  for t, ((p, _), (q, _)) in enumerate(zip(chain, proj)):
    flat_p = jax.tree_util.tree_flatten_with_path(p)[0]
    for (path, a), b in zip(flat_p, jax.tree.leaves(q)):
      scale = float(np.max(np.abs(a)))
      np.testing.assert_allclose(b, a, rtol=0, atol=2 * (
          tolerance.reduction_bound(30, scale, reductions=2, steps=t + 1)),
                                 err_msg=f"{method.name} "
                                 f"{jax.tree_util.keystr(path)} step {t}")
  a, b = lo.frozen_norms(chain[-1][1]), lo.frozen_norms(proj[-1][1])
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5), a, b)


def test_donated_step_holds_no_parameter_sized_temporary():
  """With donated params the projection fuses with apply_updates and writes
  the parameter buffer in place: XLA's memory analysis of the whole step
  (Adam, apply, projection) finds no temporary of a weight's size, as for
  the hand-written peer, for given targets and for targets captured at a
  freeze step (LAWN, FixNorm: the capture has no conditional, and the
  update waits for it); the chain's exact retraction stores the update."""
  n = 512
  params = {"w": jnp.ones((n, n)), "b": jnp.ones((n,))}
  mask = {"w": True, "b": False}
  weight_bytes = n * n * 4

  def temp_bytes(tx, project):
    state = tx.init(params)

    def step(params, state, g):
      u, state = tx.update(g, state, params)
      params = optax.apply_updates(params, u)
      return (lo.project_norms(params, state) if project else params), state

    c = jax.jit(step, donate_argnums=(0, 1)).lower(params, state,
                                                   params).compile()
    return c.memory_analysis().temp_size_in_bytes

  for start in (0, 5):  # always on, and gated (LAWN's, WRS's phases)
    tx = optax.chain(optax.adam(1e-3), lo.constrain_norms(
        mask, target=float(n), start_step=start, retraction="projection"))
    assert temp_bytes(tx, True) < weight_bytes // 4, start
  wrs = lo.weight_rescaling(optax.adam(1e-3), mask=mask, period=2,
                            granularity="tensor", retraction="projection")
  assert temp_bytes(wrs, True) < weight_bytes // 4
  for granularity in ("tensor", "unit"):
    for free_steps in (0, 5):
      lawn = lo.lawn_adam(1e-3, free_steps=free_steps, mask=mask,
                          granularity=granularity, retraction="projection")
      assert temp_bytes(lawn, True) < weight_bytes // 4, (granularity,
                                                           free_steps)
  fixnorm = lo.fixnorm(optax.sgd(0.1, momentum=0.9), mask=mask,
                       retraction="projection")
  assert temp_bytes(fixnorm, True) < weight_bytes // 4
  chain = optax.chain(optax.adam(1e-3), lo.constrain_norms(
      mask, target=float(n), start_step=5))
  assert temp_bytes(chain, False) >= weight_bytes  # what the path avoids


@pytest.mark.numerics
@pytest.mark.parametrize("scale", [1e-13, 1e17])
@pytest.mark.parametrize("granularity", ["tensor", "unit"])
def test_tiny_and_large_norms_in_range_are_captured_and_held(scale,
                                                             granularity):
  """Norms near both ends of float32's range of squares (1e-15 to 1e19, the
  projection's direct squares) are captured and held to the reference, after
  a free phase that moved them by 1e4."""
  params = {"w": jnp.asarray(scale * np.arange(1.0, 13.0).reshape(3, 4)
                             / 10.0, jnp.float32)}
  tx = lo.lawn(optax.sgd(0.0), free_steps=3, mask={"w": True},
               granularity=granularity, retraction="projection", norm_eps=0.0)
  state = tx.init(params)
  grow = jnp.float32(1e2 if scale < 1 else 1e-2)
  for t in range(6):
    u, state = jax.jit(tx.update)(jax.tree.map(jnp.zeros_like, params),
                                  state, params)
    params = lo.project_norms(optax.apply_updates(params, u), state)
    if t < 2:   # free phase: the weights move by 1e4 in all
      params = jax.tree.map(lambda w: w * grow, params)
  want = np.linalg.norm(np.asarray(params["w"], np.float64),
                        axis=None if granularity == "tensor" else 0)
  frozen = np.asarray(lo.frozen_norms(state)["w"], np.float64)
  assert np.all(np.isfinite(np.asarray(params["w"])))
  np.testing.assert_allclose(frozen.ravel(), np.ravel(want),
                             rtol=tolerance.reduction_bound(12, 1.0,
                                                            reductions=2,
                                                            ops=2))


@pytest.mark.numerics
@pytest.mark.parametrize("scale", [1e20, 1e-16])
def test_norms_beyond_the_range_of_squares_turn_nan_not_wrong(scale):
  """Beyond float32's range of squares the projection's norm is NaN, so the
  weights turn NaN from the freeze step on (loud), never silently left
  unconstrained or rescaled by a wrong norm; the free phase leaves them bit
  for bit; the chain holds the same weights (its squares are scaled)."""
  params = {"w": jnp.asarray(scale * np.arange(1.0, 13.0).reshape(3, 4)
                             / 10.0, jnp.float32)}
  zeros = jax.tree.map(jnp.zeros_like, params)
  tx = lo.lawn(optax.sgd(0.0), free_steps=2, mask={"w": True},
               retraction="projection", norm_eps=0.0)
  state, p = tx.init(params), params
  for t in range(4):
    u, state = jax.jit(tx.update)(zeros, state, p)
    p = lo.project_norms(optax.apply_updates(p, u), state)
    if t < 2:
      np.testing.assert_array_equal(p["w"], params["w"])
  assert np.all(np.isnan(np.asarray(p["w"])))
  chain = lo.lawn(optax.sgd(0.0), free_steps=2, mask={"w": True},
                  norm_eps=0.0)
  state, p = chain.init(params), params
  for _ in range(4):
    u, state = jax.jit(chain.update)(zeros, state, p)
    p = optax.apply_updates(p, u)
  np.testing.assert_allclose(float(lo.weight_norms(p)["w"]),
                             float(lo.weight_norms(params)["w"]), rtol=1e-6)


def test_nnx_optimizer_two_line_pattern():
  nnx = pytest.importorskip("flax.nnx")
  model = nnx.Sequential(nnx.Linear(4, 8, rngs=nnx.Rngs(0)), nnx.relu,
                         nnx.Linear(8, 3, rngs=nnx.Rngs(1)))
  mask = lo.masks.final_homogeneous(model, jnp.ones((1, 4)))
  opt = nnx.Optimizer(model, lo.lawn_adam(1e-2, free_steps=1, mask=mask,
                                          retraction="projection"),
                      wrt=nnx.Param)
  x, y = jnp.ones((5, 4)), jnp.array([0, 1, 2, 0, 1])

  @nnx.jit
  def step(model, opt):
    loss = lambda m: optax.softmax_cross_entropy_with_integer_labels(
        m(x), y).mean()
    opt.update(model, nnx.grad(loss)(model))
    params = nnx.state(model, nnx.Param)                        # the two
    nnx.update(model, lo.project_norms(params, opt.opt_state))  # lines

  for _ in range(4):
    step(model, opt)
  frozen = lo.frozen_norms(lo._tree.unwrap_variables(opt.opt_state))
  got = lo.weight_norms(nnx.state(model, nnx.Param), mask)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
               lo._tree.unwrap_variables(got), frozen)


def test_bad_inputs_name_what_is_wrong():
  params = {k: jnp.asarray(v) for k, v in _params().items()}
  mask = {"k1": True, "k2": False, "b": False}
  chain_state = lo.lawn_adam(0.1, free_steps=0, mask=mask).init(params)
  with pytest.raises(ValueError, match="retraction='projection'"):
    lo.project_norms(params, chain_state)
  with pytest.raises(ValueError, match="retraction='projection'"):
    lo.project_norms(params, optax.adam(0.1).init(params))
  tx = lo.lawn_adam(0.1, free_steps=0, mask=mask, retraction="projection")
  state = tx.init(params)
  other = {"k1": params["k1"], "extra": params["k2"]}
  with pytest.raises(ValueError, match=r"only in its state: \['b', 'k2'\]"):
    lo.project_norms(other, state)
  with pytest.raises(TypeError, match="swapped"):
    tx.update(params, params, state)
  with pytest.raises(ValueError, match="retraction must be one of"):
    lo.lawn_adam(0.1, free_steps=0, mask=mask, retraction="project")
