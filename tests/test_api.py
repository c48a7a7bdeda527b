"""The public API: every name documented with a runnable example."""

import doctest
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
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


@pytest.mark.parametrize("wrapper", [lo.lawn_adam, lo.lawn_sgd, lo.lawn_lamb])
def test_wrappers_take_every_argument_of_lawn(wrapper):
  """Each wrapper has every keyword argument of lo.lawn but base_tx, with
  lawn's kind, default and annotation: the next argument added to lawn
  fails here until the wrappers forward it too."""
  want = {k: v for k, v in inspect.signature(lo.lawn).parameters.items()
          if k != "base_tx"}
  have = inspect.signature(wrapper).parameters
  missing = sorted(set(want) - set(have))
  assert not missing, f"{wrapper.__name__} drops {missing}"
  for name, p in want.items():
    q = have[name]
    assert (q.kind, q.default, q.annotation) == (p.kind, p.default,
                                                 p.annotation), name


@pytest.mark.parametrize("make", [
    lambda **kw: lo.lawn_adam(0.0, **kw),
    lambda **kw: lo.lawn_sgd(0.0, **kw),
    lambda **kw: lo.lawn_lamb(0.0, **kw)])
def test_wrappers_forward_norm_eps(make):
  """A weight of norm 5e-13 is below the default norm_eps (1e-12), so it
  is left unconstrained; with norm_eps=0 it is held. Pushed off its frozen
  norm by hand (doubled), it comes back only where norm_eps reaches the
  wrapper's retraction."""
  params = {"w": jnp.asarray([3e-13, 4e-13], jnp.float32)}
  grads = {"w": jnp.zeros(2)}
  for norm_eps, held in ((1e-12, False), (0.0, True)):
    tx = make(free_steps=0, mask={"w": True}, norm_eps=norm_eps)
    state = tx.init(params)
    _, state = tx.update(grads, state, params)   # captures 5e-13
    moved = {"w": params["w"] * 2.0}
    u, _ = tx.update(grads, state, moved)
    norm = float(jnp.linalg.norm(optax.apply_updates(moved, u)["w"]))
    assert (abs(norm - 5e-13) < 1e-18) == held, (norm_eps, norm)


def test_no_docstring_paragraph_is_copied_across_the_library():
  """A paragraph shared by several docstrings lives once, in
  lawn_optax/_docs.py, and is filled in at import (the marker lines the
  source holds are not the paragraph). Paragraphs of 120+ characters,
  whitespace normalised, in the source's docstrings."""
  import ast
  import collections
  from pathlib import Path
  seen = collections.defaultdict(list)
  for path in sorted((Path(lo.__file__).parent).glob("*.py")):
    for node in ast.walk(ast.parse(path.read_text())):
      if not isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.Module)):
        continue
      for para in (ast.get_docstring(node) or "").split("\n\n"):
        text = " ".join(para.split())
        if len(text) >= 120:
          seen[text].append(f"{path.name}:{getattr(node, 'name', '')}")
  copied = {t[:80]: w for t, w in seen.items() if len(w) > 1}
  assert not copied, copied


def test_shared_paragraphs_are_filled_in_with_the_function_name():
  for fn in (lo.lawn, lo.lawn_adam, lo.fixnorm, lo.constrain_norms_after):
    doc = " ".join(fn.__doc__.split())
    assert "[last-transform]" not in doc
    assert f"lo.{fn.__name__}(...)" in doc, fn.__name__
  assert "norm_eps" in lo.lawn_sgd.__doc__
  assert "[lawn-wrapper]" not in lo.lawn_sgd.__doc__
