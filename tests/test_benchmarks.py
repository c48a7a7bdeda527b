"""Data loaders (on small data the tests make) and benchmark plumbing."""

import gzip
import hashlib
import io
import json
import struct
import sys
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import common, data, generalization, overhead, protocol, tables
from lawn_optax import _tree


def _idx_bytes(arr):
  arr = np.asarray(arr, np.uint8)
  return struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(
      f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def test_read_idx_plain_and_gzip(tmp_path):
  arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
  (tmp_path / "a.idx").write_bytes(_idx_bytes(arr))
  (tmp_path / "a.idx.gz").write_bytes(gzip.compress(_idx_bytes(arr)))
  np.testing.assert_array_equal(data.read_idx(tmp_path / "a.idx"), arr)
  np.testing.assert_array_equal(data.read_idx(tmp_path / "a.idx.gz"), arr)
  (tmp_path / "bad.idx").write_bytes(b"\x00\x00\x0d\x01" + b"\x00" * 8)
  with pytest.raises(ValueError, match="not an unsigned-byte idx file"):
    data.read_idx(tmp_path / "bad.idx")
  (tmp_path / "short.idx").write_bytes(_idx_bytes(arr)[:-3])
  with pytest.raises(ValueError, match="header says"):
    data.read_idx(tmp_path / "short.idx")


def test_corrupted_and_truncated_idx_files_name_the_file(tmp_path):
  good = gzip.compress(_idx_bytes(np.arange(6, dtype=np.uint8)))
  (tmp_path / "cut.gz").write_bytes(good[:-6])
  with pytest.raises(ValueError, match=r"cut.gz: corrupted or truncated gzip"):
    data.read_idx(tmp_path / "cut.gz")
  (tmp_path / "flip.gz").write_bytes(good[:12] + bytes([good[12] ^ 0xFF])
                                     + good[13:])
  with pytest.raises(ValueError, match=r"flip.gz: corrupted"):
    data.read_idx(tmp_path / "flip.gz")


def test_download_is_https_only_checked_and_atomic(tmp_path, monkeypatch):
  payload = _idx_bytes(np.arange(6, dtype=np.uint8))
  good = hashlib.sha256(payload).hexdigest()

  class Response(io.BytesIO):
    def __enter__(self):
      return self

    def __exit__(self, *exc):
      return False

  served = {"body": gzip.compress(payload)}
  monkeypatch.setattr(data.urllib.request, "urlopen",
                      lambda url, timeout: Response(served["body"]))
  dest = tmp_path / "f.gz"
  with pytest.raises(ValueError, match="plain HTTP"):
    data.download("http://example.org/f.gz", dest, good)
  served["body"] = gzip.compress(payload)[:-4]  # a half-written transfer
  with pytest.raises(ValueError, match="corrupted or truncated"):
    data.download("https://example.org/f.gz", dest, good)
  assert not dest.exists() and not list(tmp_path.iterdir())
  served["body"] = gzip.compress(payload + b"x")  # another file
  with pytest.raises(ValueError, match="SHA-256"):
    data.download("https://example.org/f.gz", dest, good)
  assert not list(tmp_path.iterdir())
  served["body"] = gzip.compress(payload)
  data.download("https://example.org/f.gz", dest, good)
  assert [p.name for p in tmp_path.iterdir()] == ["f.gz"]


def test_fashion_mnist_from_user_path(tmp_path, monkeypatch):
  rng = np.random.default_rng(0)
  files = {"x": rng.integers(0, 256, (5, 28, 28)), "y": [0, 1, 2, 3, 9],
           "x_test": rng.integers(0, 256, (2, 28, 28)), "y_test": [4, 5]}
  digests = {}
  for key, name in data.FASHION_FILES.items():
    (tmp_path / name).write_bytes(gzip.compress(_idx_bytes(files[key])))
    digests[name] = hashlib.sha256(_idx_bytes(files[key])).hexdigest()
  # The pinned digests are Fashion-MNIST's: these small files fail them...
  with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.gz: SHA-256"):
    data.fashion_mnist(tmp_path)
  monkeypatch.setattr(data, "FASHION_SHA256", digests)  # ...and pass these.
  ds = data.fashion_mnist(tmp_path)
  assert ds.x.shape == (5, 784) and ds.x.dtype == np.float32
  assert ds.x.max() <= 1.0 and ds.y.tolist() == [0, 1, 2, 3, 9]
  np.testing.assert_allclose(ds.x_test[1], files["x_test"][1].ravel() / 255.0,
                             rtol=1e-6)
  monkeypatch.setattr(data, "FASHION_DIRS", ())
  with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
    data.fashion_mnist(tmp_path / "missing")


RATINGS = {"userId": [1, 1, 1, 2, 2, 2, 2, 3], "movieId": [10, 20, 30, 10,
                                                          40, 50, 60, 70],
           "rating": [4.0, 3, 5, 2, 1, 4, 5, 3],
           "timestamp": [5, 1, 3, 2, 9, 8, 7, 1]}


def test_movielens_csv_and_leave_one_out(tmp_path):
  path = tmp_path / "ratings.csv"
  rows = zip(*RATINGS.values())
  path.write_text("userId,movieId,rating,timestamp\n" + "\n".join(
      ",".join(str(v) for v in r) for r in rows) + "\n")
  r = data.movielens(path)
  assert (r.num_users, r.num_items, len(r.user)) == (3, 7, 8)
  split = data.leave_one_out(r, num_negatives=2, seed=0)
  # User 0 (id 1): by time 20 (t=1), 30 (t=3), 10 (t=5): test 10, val 30.
  items = np.unique(RATINGS["movieId"])
  assert items[split.test[0, 0]] == 10 and items[split.val[0, 0]] == 30
  assert items[split.test[1, 0]] == 40 and items[split.val[1, 0]] == 50
  for row, user_items in ((0, {10, 20, 30}), (1, {10, 40, 50, 60})):
    for cand in (split.val[row, 1:], split.test[row, 1:]):
      assert not set(items[cand]) & user_items
  # User 2 (one rating) only trains; held-out items left the training set.
  assert split.eval_users.tolist() == [0, 1]
  assert len(split.train_user) == 8 - 4


def test_movielens_from_r_lazy_load_db(tmp_path):
  import pandas as pd
  import rdata
  frame = pd.DataFrame({k: np.asarray(v) for k, v in RATINGS.items()})
  raw = rdata.unparser.unparse_data(
      rdata.conversion.convert_python_to_r_data(frame), file_format="xdr")
  chunk = struct.pack(">I", len(raw)) + zlib.compress(raw)
  index = {"variables": {"movielens": np.array([0, len(chunk)], np.int32)},
           "references": {}, "compressed": True}
  raw_index = rdata.unparser.unparse_data(
      rdata.conversion.convert_python_to_r_data(index), file_format="xdr")
  (tmp_path / "Rdata.rdb").write_bytes(chunk)
  (tmp_path / "Rdata.rdx").write_bytes(gzip.compress(raw_index))
  r = data.movielens(tmp_path / "Rdata")
  assert (r.num_users, r.num_items, len(r.user)) == (3, 7, 8)
  (tmp_path / "Rdata.rdb").write_bytes(chunk[:-9])  # truncated
  with pytest.raises(ValueError, match=r"Rdata.rdb: corrupted or truncated"):
    data.movielens(tmp_path / "Rdata")
  (tmp_path / "Rdata.rdx").write_bytes(gzip.compress(raw_index)[:-5])
  with pytest.raises(ValueError, match=r"Rdata.rdx: corrupted or truncated"):
    data.movielens(tmp_path / "Rdata")
  np.testing.assert_array_equal(r.timestamp, RATINGS["timestamp"])
  with pytest.raises(FileNotFoundError, match="r-cran-dslabs"):
    data.movielens(tmp_path / "Nothing")


def test_mnist1d_and_digits_generate_offline():
  ds = data.mnist1d(num_samples=200, seed=1)
  assert ds.x.shape == (160, 40) and ds.x_test.shape == (40, 40)
  assert set(np.unique(ds.y)) <= set(range(10))
  d = data.digits()
  assert d.x.shape[1] == 64 and d.x.max() <= 1.0


def test_generalization_cell_and_report(tmp_path):
  task = generalization.make_task("digits", (16,), max_train=256)
  spec = generalization.OptSpec("adam", {"lr": [1e-2], "free_frac": [0.5],
                                         "lawn": [1.0]})
  cell = generalization.run_cell(task, spec, 64, 3, [0, 1])
  assert cell["steps"] == 3 * (256 // 64)
  assert cell["selected"] == {"lr": 0.01, "free_frac": 0.5, "lawn": 1.0}
  assert len(cell["test"]) == 2 and 0.0 <= cell["test_mean"] <= 1.0
  assert len(cell["curves_selected"]["head_norm"]) == 3
  # The head norm is frozen after the switch (epoch 2 of 3 at free_frac 0.5).
  h = cell["curves_selected"]["head_norm"]
  assert h[1] == pytest.approx(h[2], rel=1e-5)
  assert h[0] != pytest.approx(h[1], rel=1e-3)


def test_generalization_protocol_end_to_end(tmp_path):
  """The main job's path on a tiny task: every configuration on every seed,
  repeated studies, budgets, extensions, intervals, table, plots, JSON."""
  task = generalization.make_task("digits", (16,), max_train=256)
  lrs = {"adam": protocol.log_grid(1e-3, 3e-2, 6),
         "sgdm": protocol.log_grid(1e-4, 1e-3, 6)}
  seeds = [0, 1, 2, 3]
  studies = protocol.make_studies(seeds, 2, 1)
  cells, comps, secs, reduced = generalization.protocol_cells(
      task, ["adam", "lawn-adam", "sgdm"], 64, 2, seeds, studies,
      max_extensions=1, lr_grids=lrs, log=lambda _: None, max_runs=40)
  assert secs > 0 and reduced == {}
  for c in cells.values():
    n_ext = {e["axis"] for e in c["extensions"]}
    assert c["num_configs"] == (6 + ("lr" in n_ext)) * (3 + (c["knob"] in
                                                             n_ext))
    assert len(set(c["grid"]["lr"])) >= 6
    assert c["selected"]["lr"] in c["grid"]["lr"]
    per = c["per_config"]["test_accuracy"]
    assert len(per) == c["num_configs"] and {len(r) for r in per} == {4}
    assert len(c["studies"]) == 2 and len(c["test"]) == 4
    assert len(c["final_train_loss"]) == 4
    # The table's per-seed value: the test metric of the configuration the
    # studies reporting that seed chose (seed 0 is reported by study 1 only).
    i = c["studies"][1]["selected_index"]
    assert c["test"][0] == pytest.approx(per[i][0])
  # Equal budgets, extensions included, across base families too.
  assert len({c["num_configs"] for c in cells.values()}) == 1
  assert [(c["a"], c["b"]) for c in comps] == [("lawn-adam", "adam")]
  assert len(comps[0]["studies"]) == 2
  d = np.subtract(cells["lawn-adam"]["test"], cells["adam"]["test"])
  assert comps[0]["mean"] == pytest.approx(d.mean())
  results = {"dataset": "digits", "metric": "accuracy", "seeds": seeds,
             "studies": studies, "schedule": "cosine", "epochs": 2,
             "cells": {n: [c] for n, c in cells.items()}, "comparisons": comps}
  table = tables.generalization_table(results, "accuracy")
  assert "| lawn-adam − adam |" in table and "(L " in table
  assert "(studies " in table and "2 studies" in table
  pngs = tables.generalization_plots(results, str(tmp_path / "g"))
  assert len(pngs) == 3 and pngs[-1].endswith("_sensitivity.png")
  assert all((tmp_path / p.split("/")[-1]).stat().st_size > 1000 for p in pngs)
  json.dumps(results)  # serialisable


@pytest.mark.slow   # ~110 s on 2 cores
def test_overhead_cell_smoke():
  cell = overhead.time_cell("mlp", 16, "adam", batch=8, repeats=3, inner=2)
  assert cell["calls_per_repeat"] == 2
  rows = cell["variants"]
  assert set(rows) == set(overhead._variants(None))
  assert rows["base"]["update"]["ratio"] == 1.0
  for r in rows.values():
    for what in ("update", "step"):
      assert len(r[what]["times_s"]) == 3
      q1, q3 = r[what]["iqr_s"]
      assert q1 <= r[what]["median_s"] <= q3
      assert r[what]["bytes"] > 0
      assert r[what]["temp_bytes"] >= 0
      assert r[what]["minor_faults_per_call"] >= 0
  # The exact retraction reads more than the base; never parameter-sized
  # state: O(constrained tensors/units).
  assert rows["lawn-tensor"]["update"]["bytes_ratio"] > 1.0
  assert 0 < cell["extra_state_bytes"]["lawn-tensor"] < 64
  assert cell["extra_state_bytes"]["lawn-lazy"] == cell["extra_state_bytes"][
      "lawn-tensor"]
  assert cell["extra_state_bytes"]["lawn-unit"] < 4 * (16 + 16 + 4 + 10) + 64
  table = overhead.table([cell])
  assert table.count("\n") == len(rows)  # header, rule, one row a variant


def test_hit_rate_ndcg_counts_ties_and_nans_as_misses():
  import jax.numpy as jnp
  scores = jnp.array([[0.9, 0.1, 0.2, 0.3],    # positive first: rank 0
                      [0.2, 0.1, 0.3, 0.4],    # two above: rank 2
                      [0.5, 0.5, 0.5, 0.5],    # all tied: rank 3
                      [jnp.nan, 0.1, 0.2, 0.3]])  # diverged: rank 3
  hr, ndcg = generalization.hit_rate_ndcg(scores, k=3)
  assert float(hr) == pytest.approx(2 / 4)
  assert float(ndcg) == pytest.approx((1.0 + 1 / np.log2(4)) / 4)
  hr1, _ = generalization.hit_rate_ndcg(scores, k=1)
  assert float(hr1) == pytest.approx(1 / 4)


def test_readme_generated_sections_match_the_json():
  from benchmarks import report
  text = report.README.read_text()
  assert report.render_readme(text) == text, (
      "README is out of date: run python -m benchmarks.report")


def _results_files():
  return (sorted(common.RESULTS.glob("generalization_*.json")),
          sorted(common.RESULTS.glob("language_model*.json")))


def test_committed_results_follow_the_protocol():
  """What ../shared/tools/audit_results.py checks, and more, on the committed
  JSON: every configuration on >= 8 seeds, >= 3 studies with disjoint
  selection seeds, every study's choice of either axis inside its grid,
  equal budgets, a schedule, pooled and per-study intervals, a code hash."""
  from benchmarks import report
  gen, lms = _results_files()
  assert gen   # the LM's may be absent: the summary then names it not re-run
  for path in gen:
    r = json.loads(path.read_text())
    assert r["schedule"] == "cosine" and len(r["seeds"]) >= 8, path
    assert len(r["studies"]) >= 3 and r["code_hash"], path
    sel = [set(st["selection_seeds"]) for st in r["studies"]]
    assert all(not a & b for i, a in enumerate(sel) for b in sel[i + 1:])
    budgets: dict[int, set[int]] = {}   # batch size -> configurations
    edges = tables.edge_cells(r)
    for method, cs in r["cells"].items():
      for c in cs:
        budgets.setdefault(c["batch_size"], set()).add(c["num_configs"])
        _assert_choices_inside(c, path, (method, c["batch_size"]), edges,
                               r["max_extensions"])
    if edges:   # a choice left at an edge is said under the table
      assert "Still at a grid edge" in tables.generalization_table(
          r, r["metric"]), path
    assert all(len(b) == 1 for b in budgets.values()), (path, budgets)
    assert r["comparisons"] and all(
        "low" in x and len(x["studies"]) == len(r["studies"])
        for x in r["comparisons"])
  for path in lms:
    r = json.loads(path.read_text())
    assert r["code_hash"] and len(r["seeds"]) >= 8, path
    edges = tables.edge_cells(r)
    for b in r["batches"]:
      for method, c in b["cells"].items():
        # language_model.run's default when the preset sets none
        _assert_choices_inside(c, path, (method, b["batch_size"]), edges,
                               r["config"].get("max_extensions", 2))
    if edges:
      assert "Still at a grid edge" in tables.language_model_table(r), path
  legacy = next((common.RESULTS / "legacy").glob("generalization_*.json"))
  with pytest.raises(ValueError, match="predates the comparison protocol"):
    report._generalization_section(legacy)


def test_edge_choices_in_both_layouts():
  cell = {"knob": "b2", "grid": {"lr": [1.0, 2.0, 3.0],
                                 "b2": [0.9, 0.99, 0.999]},
          "studies": [{"selected": {"lr": 1.0, "b2": 0.99}},
                      {"selected": {"lr": 2.0, "b2": 0.999}},
                      {"selected": {"lr": 1.0, "b2": 0.99}}]}
  want = ["adam B=8 lr=1 (2 of 3 studies)", "adam B=8 b2=0.999 (1 of 3 studies)"]
  assert tables.edge_choices({"cells": {"adam": [{**cell, "batch_size": 8}]}}
                             ) == want
  assert tables.edge_choices({"batches": [{"batch_size": 8,
                                           "cells": {"adam": cell}}]}) == want


def test_edge_choices_keep_the_digits_that_tell_values_apart():
  # 0.9999999 printed with :g reads "b2=1", a degenerate Adam that the grid
  # never holds; a decay of 1e-08 must stay 1e-08.
  cell = {"knob": "b2", "batch_size": 64,
          "grid": {"lr": [1.0, 2.0, 3.0], "b2": [0.99999, 0.999999, 0.9999999]},
          "studies": [{"selected": {"lr": 2.0, "b2": 0.9999999}}]}
  assert tables.edge_choices({"cells": {"lamb": [cell]}}) == [
      "lamb B=64 b2=0.9999999 (1 of 1 studies)"]
  assert tables.number(1e-08) == "1e-08" and tables.number(0.0158) == "0.0158"


def _assert_choices_inside(c, path, cell, edges=(),
                           max_extensions=None):
  assert {len(r) for r in c["per_config"][next(iter(c["per_config"]))]} == {
      len(c["seeds"])}, path
  for axis in ("lr", c["knob"]):
    values = sorted(set(c["grid"][axis]))
    assert len(values) >= (6 if axis == "lr" else 3), (path, axis)
    # Every study's choice and the choice on every seed (the figures'):
    # inside, or at an edge once the extension rounds ran out (the last
    # round extended this cell), and then listed under the table for
    # this very cell.
    for selected in [c["selected"]] + [st["selected"] for st in c["studies"]]:
      v = selected[axis]
      assert values[0] < v < values[-1] or (
          c["extensions"] and max_extensions is not None
          and c["extensions"][-1]["round"] == max_extensions
          and any(e[:4] == (*cell, axis, v) for e in edges)
      ), (path, axis, selected)


@pytest.mark.slow   # ~55 s on 2 cores
def test_cnn_task_carries_batchnorm_statistics_and_lawn_freezes_its_head():
  task = generalization.make_task("digits", (), max_train=128, model="cnn")
  # The head after the last BatchNorm, nothing before it.
  chosen = [_tree.path_str(k) for k, v in
            jax.tree_util.tree_flatten_with_path(task.mask)[0] if v]
  assert chosen == ["Dense_0/bias", "Dense_0/kernel"]
  params, stats = task.init(jax.random.key(0))
  _, new_stats = task.loss(params, stats, jnp.arange(32), jax.random.key(1))
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), stats,
                       new_stats)
  assert max(jax.tree.leaves(moved)) > 0   # statistics are updated in training
  spec = generalization.OptSpec("adam", {"lr": [1e-2], "free_frac": [0.5],
                                         "lawn": [1.0]})
  cell = generalization.run_cell(task, spec, 32, 3, [0])
  h = cell["curves_selected"]["head_norm"]   # 4 steps an epoch, freeze at 6
  assert h[1] == pytest.approx(h[2], rel=1e-5) and h[0] != pytest.approx(h[1])
  assert 0.0 <= cell["test_mean"] <= 1.0
  with pytest.raises(ValueError, match="image dataset"):
    generalization.make_task("mnist1d", (), model="cnn")


def test_retraction_ablation_runs_at_the_protocols_choices():
  from benchmarks import retraction
  committed = json.loads(
      (common.RESULTS / "generalization_mnist1d.json").read_text())
  choices = retraction._protocol_choices(
      common.RESULTS / "generalization_mnist1d.json")
  cells = committed["cells"]["lawn-adam"]
  assert sorted(choices) == sorted(c["batch_size"] for c in cells)
  for c in cells:
    got = choices[c["batch_size"]]
    assert got["lr"] == c["selected"]["lr"]
    assert got["free_frac"] == c["selected"]["free_frac"]
    assert (got["epochs"], got["schedule"]) == (c["epochs"],
                                                committed["schedule"])


def test_code_hash_ignores_documentation_and_sees_code(tmp_path, monkeypatch):
  mod = tmp_path / "m.py"
  monkeypatch.setattr(common, "ROOT", tmp_path)
  mod.write_text('"""Doc."""\n\ndef f(x):\n  """Doc."""\n  return x + 1  # c\n')
  h0 = common.code_hashes(["m.py"])
  mod.write_text('"""Other doc."""\n\ndef f(x):\n  """More."""\n  return x + 1\n')
  assert common.code_hashes(["m.py"]) == h0
  mod.write_text('"""Doc."""\n\ndef f(x):\n  return x + 2\n')
  assert common.code_hashes(["m.py"]) != h0
  assert common.code_hashes(["gone.py"]) == {"gone.py": "missing"}


def test_provenance_records_the_code_the_run_started_with(monkeypatch):
  """Editing the tree while a run is in progress must not relabel it: the
  run executes the modules as imported, so the hash is the start's."""
  import benchmarks.generalization  # noqa: F401  (a run's imports)
  before = common.provenance_of_code()
  assert "benchmarks/generalization.py" in before["code_files"]
  monkeypatch.setattr(common, "_normalized_source",
                      lambda path: "edited " + path.name)  # every file edited
  assert common.provenance_of_code() == before
  assert common.stale_files(before) == sorted(before["code_files"])


def test_code_files_include_the_module_run_with_python_m(monkeypatch):
  """``python -m benchmarks.generalization`` runs that module as
  ``__main__``; its code (the methods' grids, the training program) decides
  the numbers, so it must be hashed like an imported module (it was not: the
  committed tables recorded no hash of their own script)."""
  import importlib.machinery
  import types
  for name, path, hashed in [
      ("benchmarks.language_model", "benchmarks/language_model.py", True),
      ("benchmarks.report", "benchmarks/report.py", False)]:
    main = types.ModuleType("__main__")
    main.__file__ = str(common.ROOT / path)
    main.__spec__ = importlib.machinery.ModuleSpec(name, None)
    monkeypatch.setitem(sys.modules, "__main__", main)
    monkeypatch.delitem(sys.modules, name, raising=False)
    assert (path in common.code_files()) is hashed, path
    assert (path in common.provenance_of_code()["code_files"]) is hashed


def test_a_stale_table_says_so(tmp_path):
  """A results file whose code changed since (or that records no hash) is
  shown with a line saying so, in the README's summary and on the docs
  page, naming the files that changed."""
  from benchmarks import report
  src = common.RESULTS / "generalization_mnist1d_quick.json"
  r = json.loads(src.read_text())
  assert report.stale_line(r) is None, "committed results must be current"
  r["code_files"] = {**r["code_files"], "lawn_optax/lawn.py": "0" * 16}
  line = report.stale_line(r)
  assert line.startswith("**Stale") and "`lawn_optax/lawn.py`" in line
  (tmp_path / src.name).write_text(json.dumps(r))
  section = report.generalization_section(tmp_path, docs=True)
  assert section.startswith("**Stale")
  assert "**Stale" in report.summary_section(tmp_path)
  del r["code_files"]
  assert "records no code hash" in report.stale_line(r)


@pytest.mark.slow   # ~3 min on 2 cores; run before a device session
def test_overhead_device_suite_tiny(tmp_path):
  """The accelerator session's step-cost suite (issue 26) at toy sizes: the
  24M-MLP cell kinds, a GPT-2-shaped nnx LM with the mask final_homogeneous
  finds, a BN ResNet with every conv constrained, and the hand-written
  projection as peer; its JSON and table."""
  overhead.main(["--suite", "device", "--tiny", "--repeats", "2",
                 "--out", str(tmp_path)])
  r = json.loads((tmp_path / "overhead.json").read_text())
  assert r["complete"] and r["code_hash"]
  kinds = {(c["model"], tuple(c["programs"])) for c in r["cells"]}
  assert kinds == {("mlp", ("update", "step")), ("gpt-tiny", ("step",)),
                   ("resnet", ("step",))}
  for c in r["cells"]:
    assert any(n.startswith("peer") for n in c["variants"])
    for row in c["variants"].values():
      assert row["step"]["bytes"] > 0 and len(row["step"]["times_s"]) == 2
  gpt = next(c for c in r["cells"] if c["model"] == "gpt-tiny")
  # The automatic mask is the final norm and the head, not every matrix.
  assert 0 < gpt["variants"]["lawn-auto-mask"]["step"]["bytes"]
  assert "lawn-auto-mask" in overhead.table(r["cells"])


def test_peer_projection_holds_the_norms():
  import optax
  params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
  peer = overhead.Peer(optax.sgd(0.5), {"w": True, "b": False})
  state = peer.init(params)
  g = {"w": jnp.arange(6.0).reshape(3, 2), "b": jnp.ones(2)}
  u, state = peer.update(g, state, params)
  new = peer.project(optax.apply_updates(params, u), state)
  assert float(jnp.linalg.norm(new["w"])) == pytest.approx(
      float(jnp.linalg.norm(params["w"])), rel=1e-6)
  np.testing.assert_allclose(new["b"], -0.5 * np.ones(2))


def test_peer_capture_takes_the_norms_on_the_freeze_step_only():
  """LAWN by hand (the step-cost table's peer-capture): free before the
  freeze step, the norms of the weights on it held after."""
  import optax
  params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
  peer = overhead.Peer(optax.sgd(0.1), {"w": True, "b": False}, freeze_at=2)
  state = peer.init(params)
  norms = []
  for t in range(5):
    g = {"w": (t + 1.0) * jnp.arange(6.0).reshape(3, 2), "b": jnp.ones(2)}
    before = float(jnp.linalg.norm(params["w"]))
    u, state = peer.update(g, state, params)
    params = peer.project(optax.apply_updates(params, u), state)
    norms.append(float(jnp.linalg.norm(params["w"])))
    if t == 2:
      frozen = before
  assert norms[0] != pytest.approx(norms[1], rel=1e-3)   # free
  np.testing.assert_allclose(norms[2:], frozen, rtol=1e-6)


def test_regime_lengths_are_whole_epochs_nearest_the_steps():
  from benchmarks import regime
  assert regime.epochs_for(1600, 8000, 2048) == 533      # 3 steps an epoch
  assert regime.epochs_for(100, 8000, 64) == 1           # 125 steps
  assert regime.epochs_for(400, 8000, 512) == 27         # 15 an epoch
  assert regime.epochs_for(5, 100, 4096) == 5            # the full batch
  assert set(regime.DEFAULT_KNOBS) >= set(
      regime.PRESETS["mnist1d"]["optimizers"])


def test_a_fixed_knob_is_never_at_an_edge():
  """The regime map fixes every method's second axis at one value: the
  protocol must not try to extend it (only the learning rate grows)."""
  assert protocol.tuning._edges([0.5], [0.5]) == set()
  assert protocol.tuning._edges([0.1, 0.5], [0.5]) == {"high"}
  grids = generalization.method_grids(["adam", "lawn-adam"],
                                      knobs={"adam": 0.999, "lawn-adam": 0.5})
  assert grids["adam"]["lawn-adam"].knob_values == (0.5,)
  assert grids["adam"]["adam"].knob_values == (0.999,)


def test_regime_cells_run_by_two_commands_are_one_row():
  """A command that adds methods to a cell another command ran: one row
  with both's methods; a shared method that differs is an error, not a
  silent pick (the runs are bit-reproducible)."""
  from benchmarks import tables
  def method(acc):
    return {"grid": [1e-3], "val_mean_per_config": [acc],
            "test_mean_per_config": [acc], "selected": [0], "test": [acc],
            "final_train_loss": [0.01], "test_mean": acc}
  def cell(steps, methods, pairs):
    return {"batch_size": 512, "steps": steps, "steps_target": steps,
            "epochs": 1, "methods": methods,
            "comparisons": [{"a": a, "b": b} for a, b in pairs]}
  first = {"cells": [cell(405, {"adam": method(0.7), "lawn-adam": method(0.8)},
                          [("lawn-adam", "adam")]),
                     cell(105, {"adam": method(0.5)}, [])]}
  second = {"cells": [cell(405, {"adam": method(0.7), "adamw": method(0.9),
                                 "lawn-adamw": method(0.85)},
                           [("lawn-adamw", "adamw")])]}
  cells = tables.regime_cells([first, second])
  assert [c["steps"] for c in cells] == [105, 405]
  assert set(cells[1]["methods"]) == {"adam", "lawn-adam", "adamw",
                                      "lawn-adamw"}
  assert [(c["a"], c["b"]) for c in cells[1]["comparisons"]] == [
      ("lawn-adam", "adam"), ("lawn-adamw", "adamw")]
  assert len(first["cells"][0]["methods"]) == 2   # the inputs are untouched
  second["cells"][0]["methods"]["adam"] = method(0.71)
  with pytest.raises(ValueError, match="B=512 x 405 steps: adam differs"):
    tables.regime_cells([first, second])


def test_each_dataset_has_its_own_regime_map(tmp_path):
  """Regime files of two tasks are two maps (tables, readings, figures),
  never one table that mixes their cells."""
  from benchmarks import report
  src = json.loads((common.RESULTS / "regime_mnist1d_b2048.json").read_text())
  other = {**src, "dataset": "fashion_mnist", "cells": src["cells"][1:]}
  (tmp_path / "regime_mnist1d_b2048.json").write_text(json.dumps(src))
  (tmp_path / "regime_fashion_mnist.json").write_text(json.dumps(other))
  text = report.regime_section(tmp_path)
  mnist, fashion = text.split("**Fashion-MNIST**")
  assert mnist.startswith("**MNIST-1D**")
  assert "regime_mnist1d_b2048.json" in mnist and "fashion" not in mnist
  assert "regime_fashion_mnist.json" in fashion and "mnist1d_b2048" not in fashion
  assert "B=2048 × 99 steps" in mnist and "B=2048 × 99 steps" not in fashion
  assert text.count("**Reading, from these cells only**") == 2
  drawn = report.regime_figures(tmp_path)
  assert {p.rsplit("/", 1)[-1] for p in drawn} >= {"regime_map.png",
                                                  "regime_map_fashion_mnist.png"}


def test_regime_reading_says_only_what_the_verdicts_say():
  from benchmarks import tables
  def cell(steps, loss, verdicts):
    return {"batch_size": 2048, "steps": steps,
            "methods": {"adam": {"final_train_loss": [loss]}},
            "comparisons": [{"a": a, "b": b, "verdict": v, "mean": m}
                            for (a, b), (v, m) in verdicts.items()]}
  cells = [cell(100, 0.5, {("lawn-adam", "adam"): ("no difference", 0.001),
                           ("lawn-adam", "adamw"): ("lower", -0.02)}),
           cell(400, 0.01, {("lawn-adam", "adam"): ("higher", 0.021),
                            ("lawn-adam", "adamw"): ("no difference", 0.0)})]
  text = tables.regime_reading(cells)
  assert ("lawn-adam − adam: higher at B=2048 × 400 steps ✓ (+2.1); "
          "no difference at B=2048 × 100 steps (+0.1)") in text
  assert "lawn-adam − adamw: lower at B=2048 × 100 steps (-2.0)" in text
  assert ("stands in for AdamW's decay (beats Adam, no difference to AdamW)"
          " at B=2048 × 400 steps ✓ (+2.1)") in text
  assert "LAWN adds to decay" not in text   # lawn-adamw was not run
  cells[1]["comparisons"][0]["verdict"] = "unstable"
  assert "decay (beats Adam, no difference to AdamW) at no cell" in (
      tables.regime_reading(cells))


@pytest.mark.slow   # ~2 min on 2 cores: two cells, each compiled
def test_regime_tiny_end_to_end(tmp_path):
  from benchmarks import regime
  res = regime.main(["--tiny", "--out", str(tmp_path)])
  written = json.loads((tmp_path / "regime_digits.json").read_text())
  assert written["complete"] and written["code_hash"]
  assert [c["batch_size"] for c in written["cells"]] == [64, 512]
  for cell in written["cells"]:
    per_epoch = max(res["num_train"] // cell["batch_size"], 1)
    assert cell["steps"] == cell["epochs"] * per_epoch
    for name, rec in cell["methods"].items():
      knob = rec["knob"]
      assert set(rec["grid"][knob]) == {regime.DEFAULT_KNOBS[name]}
      assert len(rec["test"]) == 4
    assert {(c["a"], c["b"]) for c in cell["comparisons"]} == {
        ("lawn-adam", "adam")}
    assert np.isfinite(tables.regime_loss(cell))
  # The README's table and the heat map render from the files as written.
  from benchmarks import report
  text = report.regime_section(tmp_path)
  assert "lawn-adam − adam" in text and "regime_digits.json" in text
  assert "Current." in text
  assert len(text.splitlines()) >= 4 + len(written["cells"])
  drawn = report.regime_figures(tmp_path)
  assert (tmp_path / "regime_map.png").exists() and drawn


@pytest.mark.parametrize("job", [
    pytest.param("fashion-cnn", marks=pytest.mark.slow),   # ~3 min on 2 cores
    pytest.param("lm-gpu", marks=pytest.mark.slow)])       # ~50 s
def test_device_jobs_tiny(job, tmp_path):
  """Issues 27 and 28's self-sizing accelerator studies, at toy sizes: the
  protocol end to end (every configuration on every seed, studies), JSON
  written (and complete), code hash recorded."""
  from benchmarks import device_jobs
  device_jobs.main([job, "--tiny", "--out", str(tmp_path)])
  (path,) = tmp_path.glob("*.json")
  r = json.loads(path.read_text())
  assert r["code_hash"] and len(r["studies"]) >= 2
  if job == "fashion-cnn":
    assert r["complete"] and r["model"] == "BatchNorm ResNet"
    assert {c["batch_size"] for cs in r["cells"].values() for c in cs} == {
        32, 128}
    assert r["comparisons"] and "calibration" in r
  else:
    assert [b["batch_size"] for b in r["batches"]] == [4, 32]
    assert all(b["comparisons"] for b in r["batches"])


def test_size_epochs():
  from benchmarks import device_jobs
  assert device_jobs.size_epochs(2.0, 600, programs=2) == 100
  assert device_jobs.size_epochs(100.0, 60, programs=2) == 1
  assert device_jobs.size_epochs(1e-3, 600, programs=1) == 200
  with pytest.raises(ValueError):
    device_jobs.size_epochs(0.0, 60, programs=1)


@pytest.mark.slow   # ~40 s on 2 cores: seven compilations of the program
def test_memory_sizing_shrinks_the_chunk_and_keeps_the_numbers(monkeypatch):
  """Issue 42: a program sizes its chunk of runs by compiling it (XLA's
  memory analysis, no run). Under a fake limit of a third of what the whole
  program needs, the chunk halves until it fits, and the runs give the same
  numbers as in one chunk."""
  from benchmarks import generalization
  task = generalization.make_task("digits", (8,), max_train=128)
  runs = [protocol.Run("adam", {"lr": lr}, s) for lr in (1e-3, 1e-2)
          for s in range(2)]
  whole = generalization.Runner(task, "adam", 64, 1)
  need = whole.program.program_bytes(runs, lambda _: ())
  monkeypatch.setenv("LAWN_OPTAX_MEMORY_LIMIT", str(need // 3))
  assert protocol.memory_limit() == need // 3
  sized = generalization.Runner(task, "adam", 64, 1,
                                memory_bytes=protocol.memory_limit())
  got, want = sized(runs), whole(runs)
  tries = sized.program.sizing
  assert [t["runs"] for t in tries] == [4, 2, 1][:len(tries)]
  assert tries[-1]["bytes"] <= tries[-1]["budget"] < tries[0]["bytes"]
  assert sized.program.max_runs == tries[-1]["runs"] < len(runs)
  assert len(sized.program.seconds) == len(runs) // tries[-1]["runs"]
  for g, w in zip(got, want):
    np.testing.assert_allclose(g["test_accuracy"], w["test_accuracy"], rtol=1e-6)
    np.testing.assert_allclose(g["final_train_loss"], w["final_train_loss"],
                               rtol=1e-5)
  with pytest.raises(MemoryError, match="one run needs"):
    protocol.PaddedProgram(whole.program.fn, memory_bytes=1).fit(
        runs[:1], lambda _: ())


@pytest.mark.slow   # ~1 min on 2 cores
def test_lm_job_killed_mid_run_leaves_a_readable_partial_json(tmp_path):
  """Issue 42: the LM job writes after every batch size ("complete": false
  until the last); killed once the first is written, the file is there,
  parses, says how far it got, and renders as a table."""
  import os
  import signal
  import subprocess
  import time
  out = tmp_path / "out"
  proc = subprocess.Popen([sys.executable, "-m", "benchmarks.device_jobs",
                           "lm-gpu", "--tiny", "--out", str(out)],
                          cwd=common.ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  path = out / "language_model_gpu_tiny.json"
  deadline = time.monotonic() + 600
  while not path.exists() and proc.poll() is None:
    assert time.monotonic() < deadline
    time.sleep(0.2)
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  r = json.loads(path.read_text())
  assert r["complete"] is False and len(r["batches"]) == 1
  assert r["code_hash"] and r["batches"][0]["comparisons"]
  assert "| lawn-adam − adam |" in tables.language_model_table(r)


def test_no_benchmark_function_body_is_over_70_lines():
  """The benchmarks annex stays readable (issue 41): every function body
  (docstring aside) of benchmarks/ fits 70 lines."""
  import ast
  long = []
  for path in sorted(common.ROOT.glob("benchmarks/**/*.py")):
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        body = node.body
        has_doc = (isinstance(body[0], ast.Expr)
                   and isinstance(body[0].value, ast.Constant)
                   and isinstance(body[0].value.value, str))
        first = body[1] if has_doc and len(body) > 1 else body[0]
        lines = node.end_lineno - first.lineno + 1
        if lines > 70:
          long.append(f"{path.relative_to(common.ROOT)}:{node.name} {lines}")
  assert not long, long


def test_a_cpu_table_names_its_instruction_set():
  from benchmarks import report
  assert report._isa({"cpu_flags": ["avx", "avx2", "avx512f", "fma"]}) == (
      " (AVX-512)")
  assert report._isa({"cpu_flags": ["avx", "avx2", "fma"]}) == " (AVX2)"
  assert report._isa({}) == ""
  assert report.instruction_set(["sse2"]) == ""
  line = report._provenance({"environment": {
      "backend": "cpu", "cpu_model": "AMD EPYC", "cpu_count": 2,
      "cpu_flags": ["avx2"], "command": "c", "git_commit": "abc"}})
  assert "AMD EPYC (AVX2), 2 cores" in line


def test_rerun_all_holds_every_committed_tables_command():
  # The one script a full re-run uses must not forget a table.
  script = (common.ROOT / "benchmarks" / "rerun_all.sh").read_text()
  script = script.replace("$seeds", "100 101 102 103 104 105 106 107")
  script = script.replace("$d", "benchmarks/results/design")
  paths = sorted(common.RESULTS.glob("*.json")) + sorted(
      (common.RESULTS / "design").glob("generalization_*.json"))
  missing = []
  for path in paths:
    env = json.loads(path.read_text()).get("environment", {})
    if env.get("backend", "cpu") != "cpu":
      continue   # accelerator tables: benchmarks/device_run.sh
    if env["command"] not in script:
      missing.append(path.name)
  assert not missing, missing
  assert len(paths) >= 19   # a guard against a glob that finds nothing
