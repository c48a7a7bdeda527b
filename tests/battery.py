"""A composition battery run over every method in the library.

Each check compares a wrapped trajectory with one computed by hand from the
unwrapped method, so it can fail for any method, whatever the method does.
A method is described by a :class:`Method`: a factory taking
``learning_rate`` (so ``inject_hyperparams`` can inject it) and ``mask``, and
an invariant checked after every step of every trajectory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from tests import tolerance


class Method(NamedTuple):
  name: str
  factory: Callable[..., optax.GradientTransformation]  # (learning_rate, mask)
  # invariant(params_before, params_after, state, step, rtol) raises if broken.
  invariant: Callable[[Any, Any, Any, int, float], None]
  learning_rate: float = 0.05
  # Built with retraction="projection": lo.project_norms after every
  # apply_updates (the projection path, through the same battery).
  projected: bool = False


# A norm recomputed from the retracted weights against its target: two
# norms of up to 256 terms (the retraction's and the check's), one step.
NORM_RTOL = 2 * tolerance.reduction_bound(256, 1.0, reductions=2)


def assert_orders_agree(got, want, steps):
  """Two trajectories of one method whose programs XLA fuses differently
  (inside a wrapper, jitted or not): within twice the float32 error
  model's bound (tests/tolerance.py). Largest reduction: a 16 x 16 kernel
  (256 terms); at most four per step (LAMB's two, a curvature estimate's
  two, the retraction's); relative to the largest weight."""
  scale = max(float(jnp.max(jnp.abs(x))) for x in jax.tree.leaves(want))
  atol = 2 * tolerance.reduction_bound(256, scale, reductions=4, steps=steps)
  chex.assert_trees_all_close(got, want, rtol=0, atol=atol)


def apply(method, params, updates, state):
  """``optax.apply_updates``, then, for a method on the projection path,
  :func:`lawn_optax.project_norms` with the state the update returned."""
  new = optax.apply_updates(params, updates)
  if method is not None and method.projected:
    import lawn_optax as lo
    new = lo.project_norms(new, state)
  return new


SIZES = (8, 16, 16, 4)


def make_params(dtype=jnp.float32, seed=0):
  rng = np.random.default_rng(seed)
  return {f"Dense_{i}": {
      "kernel": jnp.asarray(rng.normal(size=(a, b)) / np.sqrt(a), dtype),
      "bias": jnp.asarray(0.1 * rng.normal(size=(b,)), dtype)}
          for i, (a, b) in enumerate(zip(SIZES[:-1], SIZES[1:]))}


def kernel_mask(params):
  return {k: {"kernel": True, "bias": False} for k in params}


_DATA = np.random.default_rng(1)
X = jnp.asarray(_DATA.normal(size=(64, SIZES[0])), jnp.float32)
Y = jnp.asarray(_DATA.integers(0, SIZES[-1], size=64))


def loss(params, x=X, y=Y):
  h = x.astype(params["Dense_0"]["kernel"].dtype)
  n = len(params)
  for i in range(n):
    layer = params[f"Dense_{i}"]
    h = h @ layer["kernel"] + layer["bias"]
    if i < n - 1:
      h = jax.nn.relu(h)
  return optax.softmax_cross_entropy_with_integer_labels(
      h.astype(jnp.float32), y).mean()


def grads_at(params, t):
  """Deterministic, params-dependent gradients; a different batch each step."""
  idx = (jnp.arange(32) + 7 * t) % X.shape[0]
  return jax.grad(loss)(params, X[idx], Y[idx])


def run(tx, params, steps, grad_fn=grads_at, method=None, rtol=NORM_RTOL,
        invariant=True):
  """Jitted trajectory; checks the method's invariant after every step
  (unless ``invariant=False``; ``method`` also decides the projection)."""
  state = tx.init(params)
  step = jax.jit(lambda p, s, g: tx.update(g, s, p))
  history = []
  for t in range(steps):
    g = grad_fn(params, t)
    u, state = step(params, state, g)
    new = apply(method, params, u, state)
    if method is not None and invariant:
      method.invariant(params, new, state, t, rtol)
    params = new
    history.append(params)
  return history, state


def check_no_retrace(method, steps=6):
  params = make_params()
  tx = method.factory(learning_rate=method.learning_rate, mask=kernel_mask)
  state = tx.init(params)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(params, state, t):
    g = grads_at(params, t)
    u, state = tx.update(g, state, params)
    return apply(method, params, u, state), state

  chex.clear_trace_counter()
  for t in range(steps):
    params, state = step(params, state, jnp.asarray(t))
  chex.assert_tree_all_finite(params)


def check_chain(method, steps=8):
  """chain(tx, identity) == tx, and the invariant holds inside a chain."""
  params = make_params()
  plain, _ = run(method.factory(learning_rate=method.learning_rate,
                                mask=kernel_mask), params, steps, method=method)
  chained = optax.chain(
      optax.identity(),
      method.factory(learning_rate=method.learning_rate, mask=kernel_mask))
  named = optax.named_chain(
      ("method", method.factory(learning_rate=method.learning_rate,
                                mask=kernel_mask)), ("noop", optax.identity()))
  for tx in (chained, named):
    got, _ = run(tx, params, steps, method=method)
    assert_orders_agree(got[-1], plain[-1], steps)


def check_masked(method, steps=8):
  """optax.masked(tx, m): the masked subtree follows tx run on it alone."""
  params = make_params()
  outer = {k: k != "Dense_0" for k in params}
  tx = optax.masked(method.factory(learning_rate=method.learning_rate,
                                   mask=kernel_mask), outer)
  ref_tx = method.factory(learning_rate=method.learning_rate, mask=kernel_mask)
  full, state = params, tx.init(params)
  ref = {k: v for k, v in params.items() if k != "Dense_0"}
  ref_state = ref_tx.init(ref)
  upd, ref_upd = jax.jit(tx.update), jax.jit(ref_tx.update)
  for t in range(steps):
    g = grads_at(full, t)
    u, state = upd(g, state, full)
    # optax.masked passes the raw gradient through on leaves it masks out.
    chex.assert_trees_all_equal(u["Dense_0"], g["Dense_0"])
    full = apply(method, full, u, state)
    ru, ref_state = ref_upd({k: v for k, v in g.items() if k != "Dense_0"},
                            ref_state, ref)
    ref = apply(method, ref, ru, ref_state)
    assert_orders_agree({k: full[k] for k in ref}, ref, t + 1)


def check_multisteps(method, k=3, real_steps=6):
  """MultiSteps(tx, k) fed g1..gk == tx fed mean(g1..gk) on each real step."""
  params = make_params()
  inner = method.factory(learning_rate=method.learning_rate, mask=kernel_mask)
  ms = optax.MultiSteps(
      method.factory(learning_rate=method.learning_rate, mask=kernel_mask), k)
  p_ms, s_ms = params, ms.init(params)
  p_ref, s_ref = params, inner.init(params)
  ms_update = jax.jit(ms.update)
  ref_update = jax.jit(inner.update)
  for t in range(real_steps):
    gs = [grads_at(p_ms, k * t + j) for j in range(k)]
    for g in gs:
      u, s_ms = ms_update(g, s_ms, p_ms)
      p_ms = apply(method, p_ms, u, s_ms)
    mean_g = jax.tree.map(lambda *xs: sum(xs) / k, *gs)
    u, s_ref = ref_update(mean_g, s_ref, p_ref)
    new_ref = apply(method, p_ref, u, s_ref)
    method.invariant(p_ref, new_ref, s_ref, t, NORM_RTOL)
    p_ref = new_ref
    # The mean of k gradients summed in another order: elementwise
    # roundings on top of the reductions' (the model's `ops`).
    assert_orders_agree(p_ms, p_ref, t + 1)


def check_inject_hyperparams(method, steps=8):
  """Injected learning rate == the plain factory; changing it mid-run works."""
  params = make_params()
  lr = method.learning_rate
  tx = optax.inject_hyperparams(method.factory, static_args=("mask",))(
      learning_rate=lr, mask=kernel_mask)
  plain, _ = run(method.factory(learning_rate=lr, mask=kernel_mask), params,
                 steps, method=method, invariant=False)
  got, state = run(tx, params, steps, method=method)
  assert_orders_agree(got[-1], plain[-1], steps)
  # Halve the rate in the state: still jit-able, invariant still holds.
  state.hyperparams["learning_rate"] = jnp.asarray(lr / 2, jnp.float32)
  p = got[-1]
  for t in range(steps, steps + 3):
    u, state = jax.jit(tx.update)(grads_at(p, t), state, p)
    new = apply(method, p, u, state)
    method.invariant(p, new, state, t, NORM_RTOL)
    p = new


def check_apply_if_finite(method, steps=8, bad=(2, 5)):
  """NaN/Inf gradients under apply_if_finite: those steps change nothing."""
  params = make_params()
  tx = optax.apply_if_finite(
      method.factory(learning_rate=method.learning_rate, mask=kernel_mask), 3)
  ref_tx = method.factory(learning_rate=method.learning_rate, mask=kernel_mask)
  p, s = params, tx.init(params)
  rp, rs = params, ref_tx.init(params)
  upd, ref_upd = jax.jit(tx.update), jax.jit(ref_tx.update)
  t_ref = 0
  for t in range(steps):
    if t in bad:
      g = jax.tree.map(lambda x: jnp.full_like(x, jnp.nan if t == 2 else jnp.inf),
                       params)
      u, s_new = upd(g, s, p)
      new = apply(method, p, u, s_new)
      chex.assert_trees_all_equal(new, p)
      chex.assert_trees_all_equal(s_new.inner_state, s.inner_state)
      p, s = new, s_new
      continue
    g = grads_at(p, t_ref)
    u, s = upd(g, s, p)
    p = apply(method, p, u, s)
    ru, rs = ref_upd(grads_at(rp, t_ref), rs, rp)
    rp = apply(method, rp, ru, rs)
    t_ref += 1
    assert_orders_agree(p, rp, t + 1)
  assert int(s.total_notfinite) == len(bad)


def check_low_precision(method, dtype=jnp.bfloat16, steps=10):
  """bf16 params: finite, dtypes kept, invariant within the dtype's accuracy."""
  params = make_params(dtype)
  tx = method.factory(learning_rate=method.learning_rate, mask=kernel_mask)
  hist, state = run(tx, params, steps, method=method,
                    rtol=float(jnp.finfo(dtype).eps) * 4)
  chex.assert_tree_all_finite(hist[-1])
  assert all(x.dtype == dtype for x in jax.tree.leaves(hist[-1]))
  init_dtypes = jax.tree.map(lambda x: x.dtype, tx.init(params))
  chex.assert_trees_all_equal(jax.tree.map(lambda x: x.dtype, state),
                              init_dtypes)


def check_map_params(method):
  """optax.tree.map_params (as optax's own battery calls it) finds the params
  copies in the state without tripping over the mask."""
  params = make_params()
  tx = method.factory(learning_rate=method.learning_rate, mask=kernel_mask)
  state = tx.init(params)
  same = optax.tree.map_params(tx, lambda v: v, state)
  chex.assert_trees_all_equal(same, state)
  # A params-shaped map reaches the params copies only (secant's history).
  marked = optax.tree.map_params(tx, lambda v: jnp.full_like(v, 7.0), state,
                                 transform_non_params=lambda v: v)
  assert jax.tree.structure(marked) == jax.tree.structure(state)


def check_eager_matches_jit(method, steps=5):
  """The same trajectory without jax.jit (tests parameterised over jit)."""
  params = make_params()
  tx = method.factory(learning_rate=method.learning_rate, mask=kernel_mask)
  jitted, _ = run(tx, params, steps, method=method, invariant=False)
  state, p = tx.init(params), params
  for t in range(steps):
    u, state = tx.update(grads_at(p, t), state, p)
    new = apply(method, p, u, state)
    method.invariant(p, new, state, t, NORM_RTOL)
    p = new
  assert_orders_agree(p, jitted[-1], steps)


CHECKS = {
    "no_retrace": check_no_retrace,
    "chain": check_chain,
    "masked": check_masked,
    "multisteps": check_multisteps,
    "inject_hyperparams": check_inject_hyperparams,
    "apply_if_finite": check_apply_if_finite,
    "bf16": check_low_precision,
    "map_params": check_map_params,
    "no_jit": check_eager_matches_jit,
}
