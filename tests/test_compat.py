"""The private jax/optax uses, isolated in lawn_optax/_compat.py: each works
today, and its fallback works if a release moves what it reads."""

import builtins
import pathlib

import jax
import jax.numpy as jnp
import optax

import lawn_optax as lo
from lawn_optax import _compat

ROOT = pathlib.Path(lo.__file__).parent


def test_private_imports_live_in_the_compat_module_only():
  for path in ROOT.rglob("*.py"):
    if path.name == "_compat.py":
      continue
    text = path.read_text()
    assert "._src" not in text and "_ParamsPlaceholder" not in text, path


def test_each_private_use_works_now():
  assert _compat.no_params_message() == optax._src.base.NO_PARAMS_MSG
  jaxpr = jax.make_jaxpr(lambda x: jnp.sin(x))(1.0)
  assert _compat.user_frames(jaxpr.eqns[0].source_info.traceback)
  # optax.tree.map_params hands init its placeholder: recognised, so the
  # mask is not checked against it.
  tx = lo.lawn_sgd(0.1, free_steps=1, mask={"w": True}, momentum=0.9)
  state = tx.init({"w": jnp.ones(2)})
  mapped = optax.tree.map_params(tx, lambda p: 2 * p, state)
  assert float(mapped["base"][0].trace["w"][0]) == 0.0


def test_fallbacks_when_the_private_apis_move(monkeypatch):
  real_import = builtins.__import__

  def no_private(name, globals=None, *args, **kwargs):
    caller = (globals or {}).get("__name__", "")
    if caller == "lawn_optax._compat" and name.startswith(("optax._src",
                                                           "jax._src")):
      raise ImportError(name)
    return real_import(name, globals, *args, **kwargs)

  monkeypatch.setattr(builtins, "__import__", no_private)
  assert _compat.no_params_message() == _compat._NO_PARAMS_FALLBACK
  assert _compat.user_frames(None) == []
  # The analysis still runs, without source lines.
  text = lo.masks.explain(lambda p, x: jnp.tanh(x @ p["w"]) @ p["v"],
                          {"w": jnp.ones((2, 2)), "v": jnp.ones((2, 1))},
                          jnp.ones((1, 2)))
  assert "'tanh' needs an unscaled input" in text
