"""What an outside review found (issue 23), each a test written before its
fix: masks for Haiku-style leaves, several outputs, debug printing, the
messages and reports a new user meets."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lawn_optax as lo


def _selected(mask):
  return sorted(lo._tree.path_str(k) for k, v in
                jax.tree_util.tree_flatten_with_path(mask)[0] if v)


# Haiku names its parameters "w" and "b"; an NCHW conv bias is (C, 1, 1),
# a BatchNorm offset (1, 1, 1, C). Written with plain JAX the way Haiku
# computes them (hk.Conv2D(data_format="NCHW"), hk.Linear, hk.BatchNorm).

def _conv_nchw(x, w, b):
  y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                   dimension_numbers=("NCHW", "HWIO", "NCHW"))
  return y + b


def _haiku_cnn(p, x):
  x = jax.nn.relu(_conv_nchw(x, p["conv2_d"]["w"], p["conv2_d"]["b"]))
  x = jax.nn.relu(_conv_nchw(x, p["conv2_d_1"]["w"], p["conv2_d_1"]["b"]))
  x = x.reshape(x.shape[0], -1)
  return x @ p["linear"]["w"] + p["linear"]["b"]


def _haiku_params():
  rng = np.random.default_rng(0)
  n = lambda *s: jnp.asarray(rng.normal(size=s) / 3, jnp.float32)
  return {"conv2_d": {"w": n(3, 3, 2, 8), "b": n(8, 1, 1)},
          "conv2_d_1": {"w": n(3, 3, 8, 8), "b": n(8, 1, 1)},
          "linear": {"w": n(8 * 5 * 5, 4), "b": n(4)}}


def test_haiku_style_biases_are_biases_whatever_their_name_and_shape():
  params, x = _haiku_params(), jnp.ones((2, 2, 5, 5))
  mask = lo.masks.final_homogeneous(_haiku_cnn, params, x, biases="ignore")
  assert _selected(mask) == ["conv2_d/w", "conv2_d_1/w", "linear/w"]
  zero_b = jax.tree_util.tree_map_with_path(
      lambda k, v: jnp.zeros_like(v) if k[-1].key == "b" else v, params)
  assert lo.masks.check_homogeneous(_haiku_cnn, zero_b, mask, x) == 3


def _bn_head(p, x):
  # ResNet v2's final BatchNorm (Haiku: scale and offset of shape
  # (1, 1, 1, C)) before the linear head.
  bn = p["final_batchnorm"]
  mean = jnp.mean(x, axis=(0, 1, 2), keepdims=True)
  var = jnp.var(x, axis=(0, 1, 2), keepdims=True)
  x = (x - mean) * jax.lax.rsqrt(var + 1e-5) * bn["scale"] + bn["offset"]
  x = jax.nn.relu(x).mean(axis=(1, 2))
  return x @ p["logits"]["w"]


def test_a_batchnorm_offset_is_a_bias():
  rng = np.random.default_rng(1)
  n = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)
  params = {"final_batchnorm": {"offset": n(1, 1, 1, 6),
                                "scale": n(1, 1, 1, 6)},
            "logits": {"w": n(6, 3)}}
  x = jnp.ones((2, 4, 4, 6))
  mask = lo.masks.final_homogeneous(_bn_head, params, x, biases="ignore")
  # As in Flax, whose BatchNorm names its offset "bias": scale and head.
  assert _selected(mask) == ["final_batchnorm/scale", "logits/w"]


def test_several_outputs_error_says_why_and_what_to_do():
  def fn(p, x):
    h = x @ p["w"]
    return h @ p["head"], jnp.exp(h).sum()   # (logits, aux loss)
  params = {"w": jnp.ones((3, 4)), "head": jnp.ones((4, 2))}
  with pytest.raises(ValueError, match=r"2 floating-point outputs.*one degree"
                     r".*logits alone"):
    lo.masks.final_homogeneous(fn, params, jnp.ones((1, 3)))


def test_several_outputs_analysed_jointly_warn():
  def fn(p, x):
    h = jax.nn.relu(x @ p["w"])
    return {"logits": h @ p["head"], "hidden": h}
  params = {"w": jnp.ones((3, 4)), "head": jnp.ones((4, 2))}
  with pytest.warns(UserWarning, match=r"2 floating-point outputs"):
    lo.masks.final_homogeneous(fn, params, jnp.ones((1, 3)))
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    lo.masks.final_homogeneous(lambda p, x: fn(p, x)["logits"], params,
                               jnp.ones((1, 3)))


def test_debug_printing_on_the_path_is_ignored():
  def fn(p, x):
    h = jax.nn.relu(x @ p["w"])
    jax.debug.print("h {}", jnp.tanh(h))
    jax.debug.callback(lambda v: None, h)
    return h @ p["head"]
  params = {"w": jnp.ones((3, 4)), "head": jnp.ones((4, 2))}
  mask = lo.masks.final_homogeneous(fn, params, jnp.ones((1, 3)))
  assert _selected(mask) == ["head", "w"]


# Messages.

PARAMS = {"Dense_0": {"kernel": jnp.ones((3, 4)), "bias": jnp.ones(4)},
          "Dense_1": {"kernel": jnp.ones((4, 2)), "bias": jnp.ones(2)}}


def test_a_string_mask_is_explained_as_an_nnx_filter():
  import flax.nnx  # noqa: F401  (strings are nnx filters once flax is loaded)
  tx = lo.lawn_adam(1e-3, free_steps=1, mask="kernel")
  with pytest.raises(ValueError, match=r"nnx filter.*tag.*masks\.by_path"):
    tx.init(PARAMS)


def test_a_string_mask_without_flax_points_to_by_path(monkeypatch):
  monkeypatch.setattr(lo._tree, "loaded_nnx", lambda: None)
  tx = lo.lawn_adam(1e-3, free_steps=1, mask="Dense_1/kernel")
  with pytest.raises(TypeError, match=r"masks\.by_path"):
    tx.init(PARAMS)


def test_mask_none_is_named():
  with pytest.raises(ValueError, match=r"mask is None"):
    lo.lawn_adam(1e-3, free_steps=1, mask=None).init(PARAMS)


def test_a_prefix_mismatch_names_whose_paths():
  with pytest.raises(ValueError, match=r"The mask's paths: \['Dense_0'\]"):
    lo.lawn_adam(1e-3, free_steps=1, mask={"Dense_0": True}).init(PARAMS)


@pytest.mark.parametrize("make", [
    lambda: lo.lawn_adam(1e-3, free_steps=1, mask=lo.masks.kernels),
    lambda: lo.lawn_adam(1e-3, free_steps=0, mask=lo.masks.kernels),
    lambda: lo.fixnorm(optax.sgd(0.1), mask=lo.masks.kernels),
    lambda: lo.constrain_norms(lo.masks.kernels),
], ids=["lawn", "lawn-static0", "fixnorm", "constrain_norms"])
def test_swapped_state_and_params_are_named(make):
  tx = make()
  state = tx.init(PARAMS)
  with pytest.raises(TypeError, match=r"swapped.*update\(updates, state, "
                     r"params\)"):
    tx.update(PARAMS, PARAMS, state)


# Reports that display once.

def test_explain_and_describe_return_a_report_that_displays_once(capsys):
  f = lambda p, x: jax.nn.relu(x @ p["w"]) @ p["v"]
  params = {"w": jnp.ones((3, 4)), "v": jnp.ones((4, 2))}
  report = lo.masks.explain(f, params, jnp.ones((1, 3)))
  assert capsys.readouterr().out == ""     # nothing printed
  assert repr(report) == str(report) and report.startswith(
      "final homogeneous set: 2 of 2 leaves")
  desc = lo.masks.describe({"w": True, "v": False}, params)
  assert capsys.readouterr().out == ""
  assert repr(desc).startswith("selected 1 of 2 leaves")
  printed = []
  lo.masks.explain(f, params, jnp.ones((1, 3)), print_fn=printed.append)
  assert printed == [str(report)]


# The first hour: install story, one repository URL, notebooks' install cell.

from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _repository():
  import tomllib
  meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
  return meta["project"]["urls"]["Repository"]


def test_one_repository_url_used_everywhere():
  import json
  import re
  url = _repository()
  owner_repo = url.removeprefix("https://github.com/")
  for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
    text = "".join("".join(c["source"]) for c in
                   json.loads(nb.read_text())["cells"])
    assert f'REPOSITORY = "{url}"' in text, nb.name
    for found in re.findall(r"github\.com/([\w.-]+/[\w.-]+)", text):
      assert found == owner_repo, (nb.name, found)
  for doc in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
    text = doc.read_text()
    assert "pip install lawn_optax" not in text, doc.name  # not on the index
    for found in re.findall(r"github\.com/([\w.-]+/[\w.-]+)", text):
      assert found == owner_repo, (doc.name, found)


def test_notebook_install_cell_installs_nothing_outside_colab(tmp_path,
                                                             monkeypatch):
  import json
  import subprocess
  import sys
  cell = "".join(json.loads((ROOT / "notebooks" / "quickstart.ipynb")
                            .read_text())["cells"][1]["source"])
  calls = []
  monkeypatch.setattr(subprocess, "check_call", lambda *a, **k: calls.append(a))
  monkeypatch.delitem(sys.modules, "google.colab", raising=False)
  monkeypatch.chdir(ROOT / "notebooks")
  path_before = list(sys.path)
  try:
    exec(compile(cell, "install cell", "exec"), {})  # noqa: S102
    assert calls == []
    assert str(ROOT) in sys.path   # the clone's root, found from notebooks/
    monkeypatch.chdir(tmp_path)    # outside a clone: nothing at all
    sys.path[:] = path_before
    exec(compile(cell, "install cell", "exec"), {})  # noqa: S102
    assert calls == [] and sys.path == path_before
  finally:
    sys.path[:] = path_before
