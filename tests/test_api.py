"""The public API: every name documented with a runnable example."""

import doctest
import inspect

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


def test_readme_api_table_mentions_every_public_name():
  from pathlib import Path
  readme = (Path(__file__).parents[1] / "README.md").read_text()
  for name, _ in _public():
    short = name.split(".")[-1]
    assert f"{short}" in readme, name


def test_readme_quickstart_runs():
  import re
  from pathlib import Path

  import jax.numpy as jnp
  readme = (Path(__file__).parents[1] / "README.md").read_text()
  code = re.search(r"## Quickstart.*?```python\n(.*?)```", readme, re.S).group(1)
  scope = {}
  exec(compile(code, "README quickstart", "exec"), scope)  # noqa: S102
  params, opt_state = scope["params"], scope["opt_state"]
  x, y = jnp.ones((8, 40)), jnp.arange(8) % 10
  for _ in range(3):
    params, opt_state, loss = scope["train_step"](params, opt_state, x, y)
  assert jnp.isfinite(loss)


def test_docs_api_page_documents_every_public_name():
  from pathlib import Path
  api = (Path(__file__).parents[1] / "docs" / "api.md").read_text()
  for name, obj in _public():
    if inspect.ismodule(obj):
      continue
    assert f"lawn_optax.{name}\n" in api, name
