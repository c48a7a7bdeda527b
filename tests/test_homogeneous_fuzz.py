"""A fuzzer for final_homogeneous: random programs of the supported primitives.

Hypothesis draws a small network as a list of operations on a pool of
(batch, 4) activations -- dense layers, scales, biases, ReLU/leaky ReLU/tanh,
sums, maxima, products, concat+slice, layer norms with and without epsilon,
a logit temperature, ``cond``, ``scan`` over a stacked kernel, ``while``,
sort/cumsum/top_k, constants -- and every mask that ``final_homogeneous``
returns must pass the numerical check in float64 with the degree the
analysis claims. A program may have no homogeneous set; then the analysis
must say so with a ValueError instead of returning a mask.
"""

import jax
import jax.numpy as jnp
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import lawn_optax as lo
from lawn_optax import _homogeneous

D = 4

UNARY = ["dense", "scale", "bias", "relu", "leaky", "tanh", "ln", "ln_noeps",
         "temp", "cond", "scan", "while", "sort", "cumsum", "top_k", "const",
         "square", "neg_max", "gelu"]
BINARY = ["add", "max", "mul", "concat"]


def _apply(op, params, name, vals, a, b, x):
  u, v = vals[a], vals[b]
  p = lambda shape: params.setdefault(name, jax.random.normal(
      jax.random.key(len(params) + 1), shape, jnp.float64) * 0.7)
  if op == "dense":
    return u @ p((D, D))
  if op == "scale":
    return u * p((D,))
  if op == "bias":
    return u + p((D,))
  if op == "relu":
    return jnp.maximum(u, 0.0)
  if op == "leaky":
    return jnp.where(u > 0, u, 0.1 * u)
  if op == "tanh":
    return jnp.tanh(u)
  if op == "gelu":
    return jax.nn.gelu(u)
  if op in ("ln", "ln_noeps"):
    c = u - u.mean(-1, keepdims=True)
    eps = 1e-5 if op == "ln" else 0.0
    return c / jnp.sqrt((c * c).mean(-1, keepdims=True) + eps)
  if op == "temp":
    return u * jnp.exp(p(()))
  if op == "cond":
    w = p((D, D))
    return jax.lax.cond(x.sum() > 0, lambda h: h @ w, lambda h: -h @ w, u)
  if op == "scan":
    stack = p((2, D, D))
    return jax.lax.scan(lambda h, w: (jnp.maximum(h @ w, 0.0), None), u,
                        stack)[0]
  if op == "while":
    n = 1 + (x.sum() > 0).astype(jnp.int32)
    return jax.lax.fori_loop(0, n, lambda i, h: 0.5 * h[:, ::-1], u)
  if op == "sort":
    return jnp.sort(u, -1)
  if op == "cumsum":
    return jnp.cumsum(u, -1)
  if op == "top_k":
    return jax.lax.top_k(u, D)[0]
  if op == "const":
    return u + 1.0
  if op == "square":
    return u * u
  if op == "neg_max":
    return u - jnp.max(u, -1, keepdims=True)
  if op == "add":
    return u + v
  if op == "max":
    return jnp.maximum(u, v)
  if op == "mul":
    return u * v
  if op == "concat":
    return jnp.concatenate([u, v], -1)[:, 1:D + 1]
  raise AssertionError(op)


programs = st.tuples(
    st.lists(st.tuples(st.sampled_from(UNARY + 3 * BINARY), st.integers(0, 100),
                       st.integers(0, 100)), min_size=1, max_size=9),
    st.sampled_from(["none", "relu", "tanh", "temp", "const", "scale"]))


def _build(program, last="none"):
  params = {}

  def fn(params_in, x):
    vals = [x @ params_in["p_in"]]
    for k, (op, a, b) in enumerate(program):
      vals.append(_apply(op, params_in, f"p{k:02d}", vals, a % len(vals),
                         b % len(vals), x))
    out = vals[-1] @ params_in["p_out"]
    if last == "none":
      return out
    return _apply(last, params_in, "p_last", [out], 0, 0, x)

  with jax.enable_x64(True):
    params["p_in"] = jax.random.normal(jax.random.key(0), (3, D), jnp.float64)
    params["p_out"] = jax.random.normal(jax.random.key(99), (D, D),
                                        jnp.float64)
    x = jax.random.normal(jax.random.key(5), (6, 3), jnp.float64)
    fn(params, x)  # creates the parameters
  return fn, params, x


_FUZZ = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@settings(max_examples=30, **_FUZZ)
@given(programs)
def test_every_returned_mask_passes_the_numerical_check(drawn):
  """30 random programs in the default run (~30 s on 2 cores)."""
  _check_program(drawn)


@pytest.mark.slow
@settings(max_examples=200, **_FUZZ)
@given(programs)
def test_every_returned_mask_passes_the_numerical_check_thorough(drawn):
  """200 more (~3.5 min): ``python -m pytest -m slow``."""
  _check_program(drawn)


def _check_program(drawn):
  program, last = drawn
  fn, params, x = _build(program, last)
  with jax.enable_x64(True):
    result = _homogeneous.analyse(fn, params, (x,), {}, biases="strict",
                                  include_embeddings=True,
                                  include_scales=True)
    try:
      mask = lo.masks.final_homogeneous(fn, params, x)
    except ValueError as e:
      assert result.error or result.blocked, e
      assert str(e).startswith(("no homogeneous set", "unsupported primitive",
                                "the homogeneous set found has degree"))
      return
    out = fn(params, x)
    assume(bool(jnp.all(jnp.isfinite(out))) and float(
        jnp.max(jnp.abs(out))) > 1e-6)
    degree = lo.masks.check_homogeneous(fn, params, mask, x,
                                        scales=(0.5, 2.0, 3.0, 1.7))
    assert degree == result.degree, drawn


def test_fuzzer_reaches_both_outcomes():
  """The generator is not degenerate: it yields masks and refusals."""
  fn, params, x = _build([("dense", 0, 0), ("relu", 1, 1)], "tanh")
  with jax.enable_x64(True):
    with pytest.raises(ValueError, match="no homogeneous set"):
      lo.masks.final_homogeneous(fn, params, x)
  fn, params, x = _build([("dense", 0, 0), ("relu", 1, 1), ("scan", 2, 2)])
  with jax.enable_x64(True):
    mask = lo.masks.final_homogeneous(fn, params, x)
    assert lo.masks.check_homogeneous(fn, params, mask, x) == 5
