"""The comparison protocol: intervals, grids, tuning loop, optimizers."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lawn_optax as lo
from benchmarks import protocol
from benchmarks.protocol import MethodGrid, Run


def test_t_quantiles_match_scipy():
  stats = pytest.importorskip("scipy.stats")
  for df in range(1, 31):
    assert protocol.t_quantile_975(df) == pytest.approx(stats.t.ppf(0.975, df),
                                                        abs=6e-4)


def test_paired_interval_against_a_hand_computation():
  a, b = [0.9, 0.8, 0.85, 0.95, 0.9], [0.8, 0.8, 0.8, 0.9, 0.85]
  d = np.subtract(a, b)
  half = 2.776 * d.std(ddof=1) / math.sqrt(5)
  r = protocol.paired_interval(a, b)
  assert r["mean"] == pytest.approx(d.mean())
  assert (r["low"], r["high"]) == pytest.approx((d.mean() - half,
                                                 d.mean() + half))
  assert r["verdict"] == "higher"
  assert protocol.paired_interval(b, a)["verdict"] == "lower"
  assert protocol.paired_interval([1, 2, 3], [2, 1, 3])["verdict"] == (
      "no difference")
  assert protocol.paired_interval([1, float("nan")], [1, 2])["verdict"].startswith(
      "undefined")
  with pytest.raises(ValueError, match="2 seeds|>= 2"):
    protocol.paired_interval([1.0], [2.0])


def test_log_grid_and_schedule():
  g = protocol.log_grid(1e-3, 1e-1, 5)
  assert g == (1e-3, 3.16e-3, 1e-2, 3.16e-2, 1e-1)
  s = protocol.warmup_cosine(100, 0.1)
  assert float(s(0)) == 0.0 and float(s(10)) == pytest.approx(1.0)
  assert float(s(100)) == pytest.approx(0.0, abs=1e-6)
  assert float(s(55)) == pytest.approx(0.5, abs=1e-6)
  assert float(protocol.warmup_cosine(100, schedule="constant")(70)) == 1.0
  with pytest.raises(ValueError, match="schedule"):
    protocol.warmup_cosine(10, schedule="linear")


def _fake_runner(best_lr):
  """Validation score peaks at ``best_lr`` (per method), the knob adds a
  small offset; the test metric is the score plus the seed / 100."""
  calls = []

  def run_many(runs):
    calls.append(list(runs))
    return [{"val": -abs(math.log(r.config["lr"] / best_lr[r.method]))
             + 0.01 * r.config["k"],
             "test": 0.5 + r.seed / 100 + (0.01 if r.method == "b" else 0)}
            for r in runs]
  return run_many, calls


def test_tune_extends_edges_with_equal_budgets():
  lrs = (1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2)
  grids = {"a": MethodGrid(lrs, "k", (0.0, 1.0)),
           "b": MethodGrid(lrs, "k", (0.0, 1.0), {"lawn": 1.0})}
  run_many, calls = _fake_runner({"a": 0.1, "b": 4e-3})
  cells = protocol.tune_and_report(grids, run_many, "val", ["test"], [10, 11],
                                   [0, 1, 2], higher_is_better=True,
                                   max_extensions=2, log=lambda _: None)
  a, b = cells["a"], cells["b"]
  # a's optimum is above the grid: two extensions upwards, still at the edge.
  assert [e["side"] for e in a["extensions"]] == ["high", "high"]
  assert a["selected"]["lr"] == pytest.approx(0.128) and a["selected_at_edge"] == "high"
  # b chose inside: it spends its equal extensions on the nearer side.
  assert all(not e["chosen_at_edge"] for e in b["extensions"])
  assert b["selected"] == {"lr": 4e-3, "k": 1.0, "lawn": 1.0}
  assert a["num_configs"] == b["num_configs"] == 12 + 4
  # Selection and report runs are disjoint in seeds; report uses the choice.
  assert {r.seed for c in calls[:-1] for r in c} == {10, 11}
  assert [(r.method, r.seed) for r in calls[-1]] == [
      (m, s) for m in "ab" for s in (0, 1, 2)]
  assert b["test"] == pytest.approx([0.51, 0.52, 0.53])


def test_tune_rejects_unequal_budgets_and_shared_seeds():
  lrs = tuple(np.geomspace(1e-3, 1e-1, 6))
  run_many, _ = _fake_runner({"a": 1e-2, "b": 1e-2})
  with pytest.raises(ValueError, match="unequal tuning budgets"):
    protocol.tune_and_report({"a": MethodGrid(lrs, "k", (0.0,)),
                              "b": MethodGrid(lrs, "k", (0.0, 1.0))},
                             run_many, "val", [], [1], [0], higher_is_better=True)
  with pytest.raises(ValueError, match="disjoint"):
    protocol.tune_and_report({"a": MethodGrid(lrs, "k", (0.0,))}, run_many,
                             "val", [], [0, 1], [1, 2], higher_is_better=True)


def test_diverged_configurations_lose():
  lrs = (1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2)

  def run_many(runs):
    return [{"val": float("nan") if r.config["lr"] > 5e-3 else r.config["lr"],
             "test": 0.0} for r in runs]
  cells = protocol.tune_and_report({"a": MethodGrid(lrs, "k", (0.0,))},
                                   run_many, "val", ["test"], [1], [0],
                                   higher_is_better=True, max_extensions=0)
  assert cells["a"]["selected"]["lr"] == 4e-3


def test_pad_runs():
  runs = [Run("a", {}, 0), Run("b", {}, 1)]
  assert protocol.pad_runs(runs, None) == runs
  assert protocol.pad_runs(runs, 4) == runs + [runs[1]] * 2


# ----------------------------------------------------------------------------
# The traced optimizer family against optax's own (an independent reference).

PARAMS = {"w": jnp.arange(12.0).reshape(3, 4) / 7 - 0.5, "b": jnp.ones(4) / 3}
MASK = {"w": True, "b": False}
SCHED = protocol.warmup_cosine(20, 0.2)


def _run(tx, steps=12):
  params, state = PARAMS, tx.init(PARAMS)
  for i in range(steps):
    g = jax.tree.map(lambda p: jnp.cos(p * (i + 1)), params)
    u, state = tx.update(g, state, params)
    params = optax.apply_updates(params, u)
  return params


def _hp(**kw):
  return {k: jnp.float32(v) for k, v in {**protocol.HP_DEFAULTS, **kw}.items()}


@pytest.mark.parametrize("family,hp,reference", [
    ("adam", dict(lr=0.05, b2=0.99),
     lambda s: optax.adam(lambda c: 0.05 * s(c), b2=0.99)),
    ("adam", dict(lr=0.05, wd=0.3),
     lambda s: optax.adamw(lambda c: 0.05 * s(c), weight_decay=0.3)),
    ("sgdm", dict(lr=0.1, momentum=0.95, wd=1e-2),
     lambda s: optax.chain(optax.add_decayed_weights(1e-2),
                           optax.sgd(lambda c: 0.1 * s(c), momentum=0.95))),
    ("lamb", dict(lr=0.02, wd=0.1, b2=0.99),
     lambda s: optax.lamb(lambda c: 0.02 * s(c), b2=0.99, weight_decay=0.1)),
])
def test_build_optimizer_matches_optax(family, hp, reference):
  decay = {"w": True, "b": True}
  got = _run(protocol.build_optimizer(family, _hp(**hp), MASK, decay, 20,
                                      SCHED))
  want = _run(reference(SCHED))
  for k in PARAMS:
    np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=2e-5)


def test_build_optimizer_lawn_and_decay_that_spares_constrained_leaves():
  decay = {"w": True, "b": True}
  got = _run(protocol.build_optimizer(
      "adam", _hp(lr=0.05, wd=0.3, lawn=1.0, free_frac=0.25,
                  decay_constrained=0.0), MASK, decay, 20, SCHED))
  base = optax.adamw(lambda c: 0.05 * SCHED(c), weight_decay=0.3,
                     mask={"w": False, "b": True})
  want = _run(lo.lawn(base, free_steps=5, mask=MASK))
  for k in PARAMS:
    np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=2e-5)
  # Norm frozen at its value after the 5 free steps.
  free = _run(protocol.build_optimizer(
      "adam", _hp(lr=0.05, wd=0.3, lawn=1.0, free_frac=0.25,
                  decay_constrained=0.0), MASK, decay, 20, SCHED), steps=5)
  assert float(jnp.linalg.norm(got["w"])) == pytest.approx(
      float(jnp.linalg.norm(free["w"])), rel=1e-5)


def test_build_optimizer_runs_vmapped_over_hyperparameters():
  hps = protocol.stack_hps([{"lr": 0.01}, {"lr": 0.05, "lawn": 1.0}])

  def one(hp):
    tx = protocol.build_optimizer("adam", hp, MASK, {"w": True, "b": True},
                                  20, SCHED)
    return _run(tx, 3)["w"]
  out = jax.jit(jax.vmap(one))(hps)
  np.testing.assert_allclose(out[0], _run(optax.adam(lambda c: 0.01 * SCHED(c)),
                                          3)["w"], rtol=2e-6)
  with pytest.raises(ValueError, match="unknown hyper-parameters"):
    protocol.stack_hps([{"learning_rate": 1.0}])
  with pytest.raises(ValueError, match="family"):
    protocol.build_optimizer("rmsprop", hps, MASK, MASK, 1, SCHED)
