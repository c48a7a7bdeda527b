"""The language-model study on a tiny generated corpus (no R data needed)."""

import json
import textwrap

import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import data, protocol, tables
from benchmarks import language_model as lm


def _novel(name, chapters=4, words=60):
  rng = np.random.default_rng(len(name))
  vocab = ["the", "a", "Mr.", "Darcy", "said", "she", "was", "not", "in",
           "love", "with", "him", "and", "walked", "home"]
  lines = [name.upper(), "", "by Jane Austen", ""]
  for c in range(1, chapters + 1):
    lines += [f"CHAPTER {c}", ""]
    for _ in range(3):
      text = " ".join(rng.choice(vocab, words))
      lines += textwrap.wrap(text, 70) + [""]
  return lines


NOVELS = {n: _novel(n) for n in data.AUSTEN_NOVELS}


def test_corpus_split_is_disjoint_and_documented():
  c = data.text_corpus(NOVELS, max_train_chars=5000, source="generated")
  assert c.train.dtype == np.uint8 and len(c.train) == 5000
  val, test = bytes(c.val).decode(), bytes(c.test).decode()
  # Even chapters of each held-out novel -> validation, odd -> test.
  assert val.count("CHAPTER 1\n") == 2 and "CHAPTER 2\n" not in val
  assert test.count("CHAPTER 2\n") == 2 and "CHAPTER 1\n" not in test
  assert "PERSUASION" not in val + test   # front matter dropped
  # Paragraphs are unwrapped: one per line.
  assert all(len(p.split()) == 60 for p in val.splitlines()[1:4])
  with pytest.raises(ValueError, match="in train and held out"):
    data.text_corpus(NOVELS, train_novels=("emma",), heldout_novels=("emma",))
  with pytest.raises(KeyError, match="not in the corpus"):
    data.text_corpus({"emma": NOVELS["emma"]})
  with pytest.raises(ValueError, match="no chapter headings"):
    data.chapters(["no", "headings", "here"])


def test_austen_loader_names_the_package(tmp_path):
  with pytest.raises(FileNotFoundError, match="r-cran-janeaustenr"):
    data.austen(tmp_path)


def test_softcap_and_zloss():
  z = jnp.array([[-100.0, 0.0, 3.0, 80.0]])
  hp = {"softcap": jnp.float32(30.0)}
  capped = lm.output_logits(z, hp)
  assert float(jnp.max(jnp.abs(capped))) < 30.0
  np.testing.assert_allclose(capped, 30 * np.tanh(np.asarray(z) / 30), rtol=1e-6)
  np.testing.assert_array_equal(lm.output_logits(z, {"softcap": jnp.float32(0)}), z)
  ce, lse = lm.token_losses(z, jnp.array([2]))
  ref = np.log(np.exp(np.asarray(z, np.float64) - 80).sum()) + 80
  assert float(lse[0]) == pytest.approx(ref) and float(ce[0]) == pytest.approx(ref - 3)


def test_windows():
  w = lm.windows(np.arange(20, dtype=np.uint8), 4)
  assert w.shape == (4, 5) and list(w[1]) == [4, 5, 6, 7, 8]
  with pytest.raises(ValueError, match="shorter than one window"):
    lm.windows(np.arange(3, dtype=np.uint8), 4)


@pytest.fixture(scope="module")
def tiny_study():
  corpus = data.text_corpus(NOVELS, max_train_chars=3000, source="generated")
  cfg = dict(d=16, depth=1, heads=2, seq=16, train_chars=3000, epochs=2,
             batch_sizes=[4], methods=["adam", "adam+softcap", "lawn-adam"],
             lrs=protocol.log_grid(1e-3, 3e-2, 6), seeds=[0, 1, 2],
             studies=3, seeds_per_study=1, eval_chars=1000, logs=4,
             max_extensions=0)
  return lm.run(cfg, corpus, log=lambda _: None)


@pytest.mark.slow   # ~60 s on 2 cores (the study's compile)
def test_study_end_to_end(tiny_study, tmp_path):
  r = tiny_study
  assert r["max_extensions"] == 0   # recorded: the protocol's rounds
  b = r["batches"][0]
  assert b["steps"] == b["log_every"] * 4
  assert b["tokens"] == b["steps"] * 4 * 16
  for c in b["cells"].values():
    assert c["num_configs"] == 18 and len(c["test"]) == 3
    assert {len(r) for r in c["per_config"]["test_bpc"]} == {3}
    assert all(np.isfinite(c["test"])) and min(c["test"]) < 8.0
    curves = c["curves_selected"]
    assert set(curves) >= {"train_bpc", "val_probe_bpc", "max_abs_logit",
                           "mean_logit_norm", "head_norm",
                           "final_norm_scale_norm"}
    assert len(curves["head_norm"]) == 4
  # LAWN freezes the head's norm once it switches (free fraction <= 0.75).
  h = b["cells"]["lawn-adam"]["curves_selected"]["head_norm"]
  assert h[-1] == pytest.approx(h[-2], rel=1e-4)
  # Soft-capped logits stay below the cap.
  cap = b["cells"]["adam+softcap"]["selected"]["softcap"]
  assert max(b["cells"]["adam+softcap"]["curves_selected"][
      "max_abs_logit"]) < cap
  pairs = {(x["a"], x["b"]) for x in b["comparisons"]}
  assert pairs == {("adam+softcap", "adam"), ("lawn-adam", "adam"),
                   ("lawn-adam", "adam+softcap")}
  # The mask LAWN used: the final norm and the head.
  assert "in   head/kernel" in r["lawn_mask"]
  assert "in   final_norm/scale" in r["lawn_mask"]
  assert "out  blocks/0/up/kernel" in r["lawn_mask"]
  assert all(len(x["studies"]) == 3 for x in b["comparisons"])
  table = tables.language_model_table(r)
  assert "| lawn-adam − adam |" in table and "(studies " in table
  assert all((tmp_path / p.split("/")[-1]).stat().st_size > 1000
             for p in tables.language_model_plots(r, str(tmp_path / "lm")))
  json.dumps(r)


def test_unknown_method_is_named():
  corpus = data.text_corpus(NOVELS, max_train_chars=3000)
  with pytest.raises(ValueError, match="unknown methods.*'sgd'"):
    lm.run({**lm.PRESETS["quick"], "methods": ["sgd"]}, corpus)
