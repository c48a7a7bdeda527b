"""The design study of free_steps="auto"'s default
(benchmarks/autofreeze_design.py): it reads a threshold out of a tuned run
exactly as the tables report the shipped default."""

import json

import pytest

from benchmarks import autofreeze_design, common, generalization, protocol

TABLE = common.RESULTS / "generalization_mnist1d.json"


def test_the_rebuilt_tuning_makes_the_recorded_selections():
  results = json.loads(TABLE.read_text())
  for index in range(len(results["cells"]["lawn-adam"])):
    chosen = protocol.selections(autofreeze_design.tuning_of_cell(
        results, index))
    for method in ("lawn-adam", "lawn-adam-auto"):
      cell = results["cells"][method][index]
      assert [chosen[method][f"study {k}"] for k in range(4)] == [
          s["selected_index"] for s in cell["studies"]]
      assert chosen[method]["all"] == cell["selected_index"]


def test_the_default_threshold_row_is_the_tables_reduced_budget_row():
  # Independent of the design script: the comparison generalization.py
  # recorded for "auto at its default" when it ran.
  results = json.loads(TABLE.read_text())
  recorded = {c["batch_size"]: c for c in results["comparisons"]
              if c["a"] == generalization.AUTO_DEFAULT
              and c["b"] == "lawn-adam"}
  rows = [r for r in autofreeze_design.threshold_rows(results)
          if r["threshold"] == generalization.HP_AUTO_DEFAULT]
  assert sorted(r["batch_size"] for r in rows) == sorted(recorded)
  for r in rows:
    c = recorded[r["batch_size"]]
    assert (r["mean"], r["low"], r["high"], r["verdict"]) == (
        c["mean"], c["low"], c["high"], c["verdict"])
    assert r["studies"] == [s["verdict"] for s in c["studies"]]


def test_the_tables_seeds_are_refused():
  results = json.loads(TABLE.read_text())
  with pytest.raises(ValueError, match="seeds >= 100"):
    autofreeze_design.check_design_seeds(results, TABLE.name)
