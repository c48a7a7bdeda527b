"""final_homogeneous on a zoo of the models people train (tests/zoo.py).

Every model, in float32 and bfloat16, with zeros and with random example
inputs, must give its hand-derived mask (the same one: values never decide),
and that mask must pass the numerical check on random inputs.
"""

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

import lawn_optax as lo
from lawn_optax import _tree
from tests import helpers, zoo

_selected = helpers.selected


def _cast(tree, dtype):
  return jax.tree.map(
      lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating)
      else x, tree)


def _in_dtype(case, dtype):
  """(fn, params) of the case with every float array in ``dtype``."""
  if case.params is not None:
    return case.fn, _cast(case.params, dtype)
  graphdef, state = nnx.split(case.fn)
  return nnx.merge(graphdef, _cast(state, dtype)), None


def _zero_biases(fn, params):
  """Biases at zero, as ``biases="ignore"`` analyses the network."""
  zero = lambda tree: jax.tree_util.tree_map_with_path(
      lambda p, x: jnp.zeros_like(x) if _tree.path_str(p).endswith("bias")
      else x, tree)
  if params is not None:
    return fn, zero(params)
  graphdef, state = nnx.split(fn)
  return nnx.merge(graphdef, zero(state)), None


def _inputs(case, kind, dtype):
  return tuple(_cast(x, dtype) for x in case.inputs(kind))


def _call(fn, params, *args, **kw):
  return (lo.masks.final_homogeneous(fn, *args, **kw) if params is None else
          lo.masks.final_homogeneous(fn, params, *args, **kw))


def _case_id(make):
  name = getattr(make, "func", make).__name__.removeprefix("case_")
  return "_".join([name, *map(str, getattr(make, "args", ()))])


def _zoo_grid() -> list:
  """Every model in float32; in bfloat16 the three MLPs in the default run
  and the other models marked ``slow`` (the analysis is dtype-blind past
  its literals; ~10-20 s a model on 2 cores)."""
  grid = [pytest.param(make, jnp.float32, id=f"f32-{_case_id(make)}")
          for make in zoo.ALL]
  grid += [pytest.param(make, jnp.bfloat16, id=f"bf16-{_case_id(make)}",
                        marks=() if i < 3 else pytest.mark.slow)
           for i, make in enumerate(zoo.ALL)]
  return grid


@pytest.mark.parametrize("make,dtype", _zoo_grid())
def test_zoo(make, dtype):
  case = make()
  fn, params = _in_dtype(case, dtype)
  masks = {}
  for kind in ("zeros", "random"):
    args = _inputs(case, kind, dtype)
    if case.expected is None:
      with pytest.raises(ValueError, match=case.error):
        _call(fn, params, *args, **case.options)
      continue
    masks[kind] = _call(fn, params, *args, **case.options)
    assert _selected(masks[kind]) == sorted(case.expected), kind
  if case.expected is None:
    return
  args = _inputs(case, "random", dtype)
  if case.options.get("biases") == "ignore":
    fn, params = _zero_biases(fn, params)
  if params is None:
    degree = lo.masks.check_homogeneous(fn, masks["random"], *args)
  else:
    degree = lo.masks.check_homogeneous(fn, params, masks["random"], *args)
  assert degree == case.degree
