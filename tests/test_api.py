"""The public API: every name documented with a runnable example."""

import doctest
import inspect

import jax
import numpy as np
import pytest

import lawn_optax as lo


def _public():
  for name in lo.__all__:
    obj = getattr(lo, name)
    yield name, obj
    if inspect.ismodule(obj):
      for sub in obj.__all__:
        yield f"{name}.{sub}", getattr(obj, sub)


@pytest.mark.parametrize("name,obj", list(_public()), ids=lambda x: x
                         if isinstance(x, str) else "")
def test_every_public_name_has_a_doctest_example(name, obj):
  doc = inspect.getdoc(obj) or ""
  assert doc.strip(), f"{name} has no docstring"
  examples = doctest.DocTestParser().get_examples(doc)
  assert examples, f"{name}'s docstring has no >>> example"


def test_all_is_sorted_and_complete():
  assert lo.__all__ == sorted(lo.__all__)
  for name in lo.__all__:
    assert hasattr(lo, name)


def test_readme_quickstart_runs():
  import re
  from pathlib import Path

  import jax.numpy as jnp
  readme = (Path(__file__).parents[1] / "README.md").read_text()
  blocks = re.findall(r"```python\n(.*?)```",
                      readme.split("## Quickstart")[1], re.S)
  scope = {}
  exec(compile(blocks[0], "README quickstart", "exec"), scope)  # noqa: S102
  params, opt_state = scope["params"], scope["opt_state"]
  x, y = jnp.ones((8, 40)), jnp.arange(8) % 10
  for _ in range(3):
    params, opt_state, loss = scope["train_step"](params, opt_state, x, y)
  assert jnp.isfinite(loss)
  # The nnx lines, on an nnx MLP of the same shape.
  from flax import nnx

  class MLP(nnx.Module):
    def __init__(self, rngs):
      self.a, self.b = nnx.Linear(40, 16, rngs=rngs), nnx.Linear(16, 10,
                                                                 rngs=rngs)

    def __call__(self, x):
      return self.b(nnx.relu(self.a(x)))

  nnx_scope = {"lo": scope["lo"], "jnp": jnp, "nnx": nnx,
               "model": MLP(nnx.Rngs(0))}
  exec(compile(blocks[1], "README nnx", "exec"), nnx_scope)  # noqa: S102
  optimizer, model = nnx_scope["optimizer"], nnx_scope["model"]
  grads = nnx.grad(lambda m: m(jnp.ones((4, 40))).sum())(model)
  optimizer.update(model, grads)
  assert bool(jnp.all(jnp.isfinite(model.b.kernel.value)))
  # The projection path's block, freezing after one step: the norms hold.
  proj_scope = dict(scope)
  exec(compile(blocks[2].replace("free_steps=2_000", "free_steps=1"),  # noqa: S102
               "README projection", "exec"), proj_scope)
  params, opt_state = proj_scope["params"], proj_scope["opt_state"]
  for _ in range(3):
    params, opt_state, loss = proj_scope["train_step"](params, opt_state, x, y)
  frozen = lo.frozen_norms(opt_state)
  got = lo.weight_norms(params, lo.masks.kernels)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
               got, frozen)


def test_docs_api_page_documents_every_public_name():
  from pathlib import Path
  api = (Path(__file__).parents[1] / "docs" / "api.md").read_text()
  for name, obj in _public():
    if inspect.ismodule(obj):
      continue
    assert f"lawn_optax.{name}\n" in api, name


def _compiles_on_second_call(fn, caplog) -> list[str]:
  import logging

  import jax
  fn()   # warm the caches
  caplog.clear()
  with jax.log_compiles(True), caplog.at_level(logging.DEBUG):
    jax.block_until_ready(fn())
  return [r.getMessage() for r in caplog.records
          if "Compiling" in r.getMessage()]


@pytest.mark.parametrize("granularity", ["tensor", "unit"])
def test_eager_diagnostics_do_not_recompile_per_call(caplog, granularity):
  """weight_norms is called eagerly every step for logging: a second call
  on the same shapes must hit JAX's caches (it compiled its norm's
  ``lax.cond`` again on every call, ~0.5 s each: fresh branch closures)."""
  import jax.numpy as jnp
  params = {"w": jnp.ones((4, 3)), "b": jnp.ones(3)}
  mask = {"w": True, "b": granularity == "tensor"}
  call = lambda: lo.weight_norms(params, mask, granularity)
  assert not _compiles_on_second_call(call, caplog)
  # ones (4, 3): sqrt(12) per tensor, sqrt(4) per output unit
  expected = 12 ** 0.5 if granularity == "tensor" else 2.0
  assert float(jnp.max(call()["w"])) == pytest.approx(expected)


@pytest.mark.parametrize("method", ["lawn", "lawn_tangent", "wrs",
                                    "autofreeze"])
@pytest.mark.parametrize("frozen", [False, True])
def test_eager_update_does_not_recompile_per_call(caplog, method, frozen):
  """An un-jitted ``tx.update`` (a notebook, a debugging session) runs each
  op from JAX's caches: its phase gates and norms must not compile anew on
  every call (they did: ~1.5 s per eager update)."""
  import jax.numpy as jnp
  import optax
  params = {"w": jnp.ones((4, 3)), "b": jnp.ones(3)}
  grads = {"w": jnp.full((4, 3), 0.1), "b": jnp.full(3, 0.1)}
  mask = {"w": True, "b": False}
  base = optax.sgd(0.1)
  tx = {"lawn": lambda: lo.lawn(base, free_steps=1, mask=mask),
        "lawn_tangent": lambda: lo.lawn(base, free_steps=1, mask=mask,
                                        tangent_projection=True),
        "wrs": lambda: lo.weight_rescaling(base, period=2, mask=mask,
                                          granularity="tensor"),
        "autofreeze": lambda: lo.lawn(base, free_steps="auto", mask=mask),
        }[method]()
  state = tx.init(params)
  if frozen:
    for _ in range(3):
      _, state = tx.update(grads, state, params)
  call = lambda: tx.update(grads, state, params)
  assert not _compiles_on_second_call(call, caplog), method
