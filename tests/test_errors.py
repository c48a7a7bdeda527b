"""Bad input gets a clear error naming the parameter path or hyper-parameter."""

from pathlib import Path

import jax
import jax.numpy as jnp
import optax
import pytest

import lawn_optax as lo

PARAMS = {"Dense_0": {"kernel": jnp.ones((3, 4)), "bias": jnp.ones(4)},
          "Dense_1": {"kernel": jnp.ones((4, 2)), "bias": jnp.ones(2)},
          "step": jnp.zeros((), jnp.int32)}
MASK = {"Dense_0": {"kernel": True, "bias": False},
        "Dense_1": {"kernel": True, "bias": False}, "step": False}


def _lawn(**kw):
  args = dict(free_steps=2, mask=MASK)
  args.update(kw)
  return lo.lawn(optax.sgd(0.1), **args)


# Each row: (what is wrong, how to build and use it, exception, message regex).
BAD_INPUTS = [
    ("mask missing a params leaf",
     lambda: _lawn(mask={"Dense_0": True, "step": False}).init(PARAMS),
     ValueError, r"params leaf 'Dense_1/bias' has no entry"),
    ("mask entry not in params",
     lambda: _lawn(mask={**MASK, "Dense_9": True}).init(PARAMS),
     ValueError, r"mask entry 'Dense_9' matches no parameter"),
    ("mask selecting nothing",
     lambda: _lawn(mask=False).init(PARAMS),
     ValueError, r"selects no parameter leaf"),
    ("mask leaf not a bool",
     lambda: _lawn(mask={**MASK, "step": "yes"}).init(PARAMS),
     TypeError, r"mask entry 'step'.*must be Python bools"),
    ("integer leaf selected",
     lambda: _lawn(mask={**MASK, "step": True}).init(PARAMS),
     TypeError, r"parameter 'step' has dtype int32"),
    ("unit granularity on a bias",
     lambda: _lawn(mask=True, granularity="unit").init(
         {"k": jnp.ones((2, 2)), "b": jnp.ones(2)}),
     ValueError, r"parameter 'b' has shape \(2,\): granularity='unit'"),
    ("unit granularity on a scalar",
     lambda: _lawn(mask=True, granularity="unit").init({"s": jnp.ones(())}),
     ValueError, r"parameter 's' has shape \(\)"),
    ("unit_axis out of range",
     lambda: lo.lawn(optax.sgd(0.1), free_steps=0, mask=True,
                     granularity="unit", unit_axis=3).init(
                         {"k": jnp.ones((2, 2))}),
     ValueError, r"unit_axis=3 is out of range for parameter 'k'"),
    ("unknown granularity",
     lambda: _lawn(granularity="layer"),
     ValueError, r"granularity must be one of \('tensor', 'unit'\), got 'layer'"),
    ("negative free_steps",
     lambda: _lawn(free_steps=-1), ValueError, r"free_steps must be >= 0, got -1"),
    ("float free_steps",
     lambda: _lawn(free_steps=2.5), TypeError, r"free_steps must be an integer"),
    ("bool free_steps",
     lambda: _lawn(free_steps=True), TypeError, r"free_steps must be an integer"),
    ("update without params",
     lambda: _lawn().update(PARAMS, _lawn().init(PARAMS)),
     ValueError, r"not passing `params`"),
    ("zero period",
     lambda: lo.constrain_norms(True, period=0), ValueError,
     r"period must be >= 1, got 0"),
    ("non-positive target",
     lambda: lo.constrain_norms(MASK, target=0.0).init(PARAMS), ValueError,
     r"target norm for 'Dense_0/kernel' must be > 0"),
    ("target of the wrong shape",
     lambda: lo.constrain_norms(MASK, target=jnp.ones(3),
                                granularity="unit").init(PARAMS),
     ValueError, r"target norm for 'Dense_0/kernel' has shape \(3,\)"),
    ("last_layers beyond the model",
     lambda: lo.masks.last_layers(PARAMS, 3), ValueError,
     r"n=3 must be between 1 and the number of layers \(2"),
    ("by_path that matches nothing",
     lambda: lo.masks.by_path(PARAMS, r".*/weight"), ValueError,
     r"selects no parameter"),
    ("callable mask returning a wrong tree",
     lambda: _lawn(mask=lambda p: {"Dense_0": True}).init(PARAMS),
     ValueError, r"params leaf 'Dense_1/bias' has no entry"),
    ("FixNorm with a zero-initialised classifier and no classifier_norm",
     lambda: lo.fixnorm(optax.sgd(0.1), mask={**MASK, "Dense_1": False},
                        classifier_mask={"Dense_0": False, "step": False,
                                         "Dense_1": {"kernel": True,
                                                     "bias": False}}).init(
                            {**PARAMS, "Dense_1": {"kernel": jnp.zeros((4, 2)),
                                                   "bias": jnp.ones(2)}}),
     ValueError, r"classifier_mask weight 'Dense_1/kernel' has norm zero"),
    ("FixNorm weight in both masks",
     lambda: lo.fixnorm(optax.sgd(0.1), mask=MASK, classifier_mask=MASK,
                        classifier_norm=1.0).init(PARAMS),
     ValueError, r"in both mask and classifier_mask"),
    ("WRS period of zero",
     lambda: lo.weight_rescaling(optax.sgd(0.1), mask=MASK, period=0),
     ValueError, r"period must be >= 1"),
    ("constrain_norms_after with a step named like the constraint",
     lambda: lo.constrain_norms_after([("base", optax.sgd(0.1))], "base",
                                      MASK), ValueError,
     r"names of steps \['base'\] and name 'base' must all differ"),
    ("an estimator named by a string (the 0.2 spelling)",
     lambda: lo.scale_by_curvature_lr("newton"), ValueError,
     r"estimator must be a lawn_optax.CurvatureEstimator"),
    ("Hutchinson estimator without obj_fn",
     lambda: lo.scale_by_hutchinson_curvature(mask=MASK).update(
         PARAMS, lo.scale_by_hutchinson_curvature(mask=MASK).init(
             PARAMS), PARAMS),
     ValueError, r"scale_by_hutchinson_curvature needs update\(\.\.\., obj_fn"),
    ("cblr's estimator argument (the 0.2 spelling)",
     lambda: lo.cblr(0.1, estimator="secant"),
     ValueError, r"cblr\(estimator=\.\.\.\) was removed in 0\.3"),
    ("small-loss fraction of 1",
     lambda: lo.small_loss_weights(jnp.ones(4), 1.0), ValueError,
     r"fraction must be in \[0, 1\)"),
    ("batch-size schedule without update 0",
     lambda: lo.batch_size_schedule({10: 2}), ValueError,
     r"must say what happens from update 0"),
    ("final_homogeneous on a non-homogeneous output",
     lambda: lo.masks.final_homogeneous(
         lambda p, x: jnp.tanh(x @ p["w"]), {"w": jnp.ones((2, 2))},
         jnp.ones((1, 2))), ValueError, r"no homogeneous set: 'w'.*'tanh'"),
    ("final_homogeneous blocked by a primitive without a rule",
     lambda: lo.masks.final_homogeneous(
         lambda p, x: jnp.fft.fft(x @ p["w"]).real @ p["v"],
         {"w": jnp.ones((2, 2)), "v": jnp.ones((2, 1))}, jnp.ones((1, 2))),
     ValueError, r"unsupported primitive 'fft' at .* parameter 'w'"),
    ("final_homogeneous with an unknown biases mode",
     lambda: lo.masks.final_homogeneous(
         lambda p, x: x @ p["w"], {"w": jnp.ones((2, 2))}, jnp.ones((1, 2)),
         biases="zero"), ValueError, r"biases must be 'strict' or 'ignore'"),
    ("final_homogeneous on an integer output",
     lambda: lo.masks.final_homogeneous(
         lambda p, x: jnp.argmax(x @ p["w"], -1), {"w": jnp.ones((2, 2))},
         jnp.ones((1, 2))), ValueError, r"no floating-point output"),
    ("free_steps beyond the int32 step counter",
     lambda: _lawn(free_steps=2**31), ValueError,
     r"free_steps=2147483648 does not fit the int32 step counter"),
    ("unknown free_steps mode",
     lambda: _lawn(free_steps="later"), ValueError,
     r"free_steps must be an integer, 'auto' or a lawn_optax.AutoFreeze"),
    ("AutoFreeze checking every 0 steps",
     lambda: _lawn(free_steps=lo.AutoFreeze(every=0)), ValueError,
     r"AutoFreeze.every must be a Python int >= 1"),
    ("AutoFreeze threshold of 1 or more",
     lambda: _lawn(free_steps=lo.AutoFreeze(threshold=1.0)), ValueError,
     r"AutoFreeze.threshold must be < 1"),
    ("free_steps='auto' with the tangent projection",
     lambda: _lawn(free_steps="auto", tangent_projection=True), ValueError,
     r"tangent_projection=True needs a numeric free_steps"),
    ("an explicit unit_axis traced by inject_hyperparams",
     lambda: jax.jit(optax.inject_hyperparams(lo.lawn_sgd, static_args=(
         "mask",))(learning_rate=0.1, free_steps=0, mask=MASK,
                   granularity="unit", unit_axis=-1).update)(
                       PARAMS, optax.inject_hyperparams(
                           lo.lawn_sgd, static_args=("mask",))(
                               learning_rate=0.1, free_steps=0, mask=MASK,
                               granularity="unit", unit_axis=-1).init(PARAMS),
                       PARAMS), TypeError,
     r"unit_axis is a traced value"),
    ("mask=None",
     lambda: _lawn(mask=None).init(PARAMS), ValueError, r"mask is None"),
    ("update with state and params swapped",
     lambda: _lawn().update(PARAMS, PARAMS, _lawn().init(PARAMS)), TypeError,
     r"were state and params swapped"),
    ("check_norms on a state without a norm constraint",
     lambda: lo.check_norms(PARAMS, optax.sgd(0.1).init(PARAMS)), ValueError,
     r"opt_state holds no norm constraint"),
    ("project_norms on a state from the chain (no projection)",
     lambda: lo.project_norms(PARAMS, _lawn().init(PARAMS)), ValueError,
     r"holds no norm constraint built with retraction='projection'"),
    ("project_norms on params that do not match the state",
     lambda: lo.project_norms({"Dense_0": PARAMS["Dense_0"]}, _lawn(
         retraction="projection").init(PARAMS)), ValueError,
     r"params do not match the tree .*only in its state: \['Dense_1/bias'"),
    ("unknown retraction",
     lambda: _lawn(retraction="projected"), ValueError,
     r"retraction must be one of \('exact', 'lazy', 'projection'\)"),
    ("final_homogeneous on a function of no params",
     lambda: lo.masks.final_homogeneous(
         lambda p, x: 2.0 * x, {"w": jnp.ones((2, 2))}, jnp.ones((1, 2))),
     ValueError, r"does not depend on the params"),
]


@pytest.mark.parametrize("build,exc,match", [r[1:] for r in BAD_INPUTS],
                         ids=[r[0] for r in BAD_INPUTS])
def test_bad_input_is_a_clear_error(build, exc, match):
  with pytest.raises(exc, match=match):
    build()


def test_mask_mismatch_inside_update_names_path():
  tx = _lawn(mask=lambda p: {"Dense_0": True})
  with pytest.raises(ValueError, match=r"params leaf 'Dense_1/bias'"):
    tx.init(PARAMS)


DOC = Path(__file__).resolve().parents[1] / "docs" / "bad_inputs.md"


def observed(build):
  try:
    build()
  except Exception as e:  # pylint: disable=broad-except
    return type(e).__name__, str(e).splitlines()[0]
  return None, None


def doc_rows():
  rows = {}
  for line in DOC.read_text().splitlines():
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) == 3 and cells[0] not in ("bad input", "---"):
      rows[cells[0]] = (cells[1].strip("`"), cells[2].strip("`")
                        .replace("\\|", "|"))
  return rows


def test_docs_table_lists_every_bad_input_with_its_error():
  rows = doc_rows()
  assert sorted(rows) == sorted(r[0] for r in BAD_INPUTS)
  for name, build, _exc, _ in BAD_INPUTS:
    assert rows[name] == observed(build), name


if __name__ == "__main__":  # regenerate docs/bad_inputs.md
  lines = ["# Bad inputs and the errors they get", "",
           "Every row is a test (`tests/test_errors.py`): the input is built, "
           "the error is raised, and its first line must equal the one below.",
           "", "| bad input | error | message |", "|---|---|---|"]
  for name, build, _, _ in BAD_INPUTS:
    exc, msg = observed(build)
    lines.append(f"| {name} | `{exc}` | `{msg.replace('|', chr(92) + '|')}` |")
  DOC.write_text("\n".join(lines) + "\n")
