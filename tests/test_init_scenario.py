"""``popsim init DATA_FILE [-o FILE]``: a drafted scenario validates and runs end to end, on an SPSS file
with variable and value labels and on a CSV with text answers; bad input is one line naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyreadstat
import pytest
import yaml

from popsim import runner
from popsim.cli import main
from popsim.config import load_scenario

SMALL = {"simulation.agents": 4, "simulation.chunk_agents": 4, "simulation.requests_per_call": 16,
         "mop.n_personas": 2, "mop.n_exemplars": 8, "mop.max_train_records": 8, "mop.epochs": 1,
         "mop.batch_size": 8}


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POPSIM_CACHE_DIR", str(tmp_path / "cache"))


def write_sav(path: Path, n: int = 60) -> None:
    """Id, weight, age, sex and four questions; q_why is empty exactly when q_own is 'No' or "Don't know"."""
    rng = np.random.default_rng(0)
    own = rng.choice([1, 2, 8], n, p=[0.5, 0.4, 0.1]).astype(float)
    frame = pd.DataFrame({
        "respid": np.arange(1, n + 1), "wtssall": rng.uniform(0.5, 2, n).round(3), "age": rng.integers(18, 90, n),
        "sex": rng.integers(1, 3, n), "q_trust": rng.choice([1, 2, 3, 8], n), "q_own": own,
        "q_why": np.where(own == 1, rng.choice([1, 2, 3], n), np.nan), "q_vote": rng.choice([1, 2], n)})
    pyreadstat.write_sav(frame, str(path), column_labels={
        "respid": "Respondent id", "wtssall": "Weight", "age": "Age of respondent", "sex": "Sex of respondent",
        "q_trust": "How much do you trust the news media?", "q_own": "Do you own a car?",
        "q_why": "Why do you own a car?", "q_vote": "Did you vote in 2024?"},
        variable_value_labels={"sex": {1: "male", 2: "female"},
                               "q_trust": {1: "a lot", 2: "some", 3: "not at all", 8: "Don't know"},
                               "q_own": {1: "Yes", 2: "No", 8: "Don't know"},
                               "q_why": {1: "work", 2: "family", 3: "fun"},
                               "q_vote": {1: "voted", 2: "did not vote"}})


def write_csv(path: Path, n: int = 50) -> None:
    rng = np.random.default_rng(1)
    pd.DataFrame({
        "id": [f"r{i}" for i in range(n)], "gender": rng.choice(["woman", "man"], n),
        "age": rng.integers(18, 80, n), "comment": [f"free text answer number {i}" for i in range(n)],
        "likes_tea": rng.choice(["Yes", "No", "Don't know"], n),
        "mood": rng.choice(["good", "bad", "so-so"], n)}).to_csv(path, index=False)


def test_init_on_spss_file_uses_labels_notes_skip_pattern_and_runs(tmp_path: Path, capsys) -> None:
    write_sav(tmp_path / "mine.sav")
    out = tmp_path / "mine.yaml"
    assert main(["init", str(tmp_path / "mine.sav"), "-o", str(out)]) == 0
    text = out.read_text()
    raw = yaml.safe_load(text)
    assert raw["data"]["source"] == "mine.sav" and raw["data"]["id_column"] == "respid"
    assert raw["data"]["weight"] == "wtssall" and raw["data"]["missing"] == ["Don't know"]
    assert raw["data"]["attributes"]["sex"] == {"column": "sex", "labels": {1: "male", 2: "female"}}
    age = raw["data"]["attributes"]["age"]
    assert age["bins"][1:4] == [29, 44, 64] and age["bin_labels"][1:3] == ["30-44", "45-64"]
    questions = {q["id"]: q for q in raw["questions"]}
    assert list(questions) == ["q_trust", "q_own", "q_why", "q_vote"]
    assert questions["q_trust"]["text"] == "How much do you trust the news media?"
    assert questions["q_trust"]["options"] == {1: "a lot", 2: "some", 3: "not at all"}  # wording, DK -> missing
    note = next(line for line in text.splitlines() if "asked only when" in line)
    assert "'q_own' is 'Yes'" in note and text.index(note) < text.index("id: q_why")
    assert questions["q_why"]["ask_if"] == {"question": "q_own", "in": ["Yes"]}  # the skip pattern, as skip logic
    scenario = load_scenario(out, {**SMALL, "lm.name": "smollm2-135m-instruct", "output": str(tmp_path / "run")})
    assert [q.id for q in scenario.questions] == list(questions)
    # the draft takes the shipped survey's settings for new people (docs/experiments.md, 2026-12-07)
    assert raw["mop"]["exemplar_asked"] and raw["mop"]["calibrate_exemplars"] and raw["mop"]["exemplar_questions"] == 1
    result = runner.run(scenario, verbose=False)
    responses = pd.read_parquet(result.run_dir / "responses.parquet")
    owns = responses.loc[responses["question"] == "q_own", "answer"]
    assert set(owns) <= {"Yes", "No"}
    # q_why only for the agents who answered q_own "Yes" (its ask_if), the other three for all four agents
    assert len(responses) == 4 * 3 + int((owns == "Yes").sum())
    asked_why = set(responses.loc[responses["question"] == "q_why", "agent"])
    assert asked_why == set(responses.loc[(responses["question"] == "q_own") & (responses["answer"] == "Yes"), "agent"])

    assert main(["init", str(tmp_path / "mine.sav")]) == 0  # without -o: the same YAML on standard output
    printed = capsys.readouterr().out
    assert "id: q_why" in printed and "asked only when" in printed


def test_init_on_csv_with_text_answers(tmp_path: Path) -> None:
    write_csv(tmp_path / "data.csv")
    out = tmp_path / "sub" / "data.yaml"
    out.parent.mkdir()
    assert main(["init", str(tmp_path / "data.csv"), "-o", str(out)]) == 0
    text = out.read_text()
    raw = yaml.safe_load(text)
    assert raw["data"]["source"] == "../data.csv" and raw["data"]["id_column"] == "id"
    assert set(raw["data"]["attributes"]) == {"gender", "age"}
    assert raw["data"]["missing"] == ["Don't know"]
    questions = {q["id"]: q for q in raw["questions"]}
    assert sorted(questions["likes_tea"]["options"]) == ["No", "Yes"]
    assert "comment: free text" in text and "TODO: write the question as asked" in text
    scenario = load_scenario(out, {**SMALL, "lm.name": "hash-lm", "output": str(tmp_path / "run")})
    result = runner.run(scenario, verbose=False)
    assert len(pd.read_parquet(result.run_dir / "responses.parquet")) == 4 * 2


@pytest.mark.parametrize("case, says", [
    ("missing-data-file", ("nope.sav does not exist", "pass the path of a CSV")),
    ("existing-output", ("mine.yaml already exists", "pass --force")),
    ("no-questions", ("no column looks like a multiple-choice question", "write the scenario by hand")),
    ("output-is-the-data", ("is the data file itself", "data.yaml")),
])
def test_bad_input_is_one_line(case: str, says: tuple[str, ...], tmp_path: Path, capsys) -> None:
    (tmp_path / "mine.yaml").write_text("mine")
    pd.DataFrame({"id": range(30), "x": np.arange(30) * 1.5}).to_csv(tmp_path / "flat.csv", index=False)
    write_csv(tmp_path / "data.csv")
    argv = {"missing-data-file": ["init", str(tmp_path / "nope.sav")],
            "existing-output": ["init", str(tmp_path / "data.csv"), "-o", str(tmp_path / "mine.yaml")],
            "no-questions": ["init", str(tmp_path / "flat.csv")],
            "output-is-the-data": ["init", str(tmp_path / "data.csv"), "-o", str(tmp_path / "data.csv"),
                                   "--force"]}[case]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("popsim: error: ")
    assert all(part in err for part in says), err
    assert (tmp_path / "mine.yaml").read_text() == "mine"
    assert (tmp_path / "data.csv").read_text().startswith("id,")  # the data file is never overwritten
    assert main([*argv, "--force"] if case == "existing-output" else argv) == (0 if case == "existing-output" else 2)
