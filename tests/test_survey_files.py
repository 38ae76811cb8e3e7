"""Real survey files: SPSS/Stata files with their labels, literal texts kept as answers, `missing` rules.

Each test writes its own file, computes the expected answer shares straight from what it wrote, and checks
what popsim loads (and what `popsim validate` says each rule removed) against that.
"""

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
from popsim.data import load_population

WORDING = {"natspac": "Are we spending too much or too little on the space programme?",
           "natenvir": "Are we spending too much or too little on the environment?"}
SCALE = {1: "too little", 2: "about right", 3: "too much", 8: "Don't know", 9: "Refused"}


def spending_frame(n: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(11)
    frame = pd.DataFrame({
        "respid": np.arange(1, n + 1, dtype=float), "sex": rng.choice([1.0, 2.0], n),
        "natspac": rng.choice([1.0, 2.0, 3.0, 8.0, 9.0], n, p=[0.3, 0.3, 0.2, 0.15, 0.05]),
        "natenvir": rng.choice([1.0, 2.0, 3.0, 8.0], n, p=[0.5, 0.2, 0.1, 0.2]),
    })
    frame.loc[[4, 17], "natenvir"] = np.nan  # not asked: an empty cell
    return frame


def write_labelled(path: Path, frame: pd.DataFrame) -> None:
    labels = {"respid": "Respondent id", "sex": "Respondent's sex", **WORDING}
    values = {"sex": {1: "man", 2: "woman"}, "natspac": SCALE, "natenvir": SCALE}
    if path.suffix == ".sav":  # SPSS also declares 8/9 user-missing; popsim still keeps them until told
        pyreadstat.write_sav(frame, str(path), column_labels=labels, variable_value_labels=values,
                             missing_ranges={"natspac": [8, 9], "natenvir": [8, 9]})
    else:
        pyreadstat.write_dta(frame, str(path), column_labels=labels, variable_value_labels=values)


def scenario_file(folder: Path, source: str, questions: list[dict], **data) -> Path:
    config = {
        "name": "labelled", "kind": "survey", "seed": 5,
        "data": {"source": source, "id_column": "respid", "test_fraction": 0.25,
                 "attributes": {"sex": {"column": "sex", "labels": {1: "man", 2: "woman"}}}, **data},
        "questions": questions,
        "mop": {"n_personas": 2, "n_exemplars": 6, "max_train_records": 8, "epochs": 1, "batch_size": 4, "dim": 8,
                "exemplar_questions": 1},
        "simulation": {"agents": 4, "chunk_agents": 2, "requests_per_call": 8},
        "lm": {"name": "hash-lm"},
        "output": str(folder / "run"),
    }
    path = folder / "survey.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def shares(answers: pd.Series) -> dict[str, float]:
    return {k: round(v, 9) for k, v in answers.dropna().value_counts(normalize=True).sort_index().items()}


def validate_lines(path: Path, capsys: pytest.CaptureFixture) -> list[str]:
    capsys.readouterr()
    assert main(["validate", str(path)]) == 0
    return capsys.readouterr().out.splitlines()


@pytest.mark.parametrize("suffix", [".sav", ".dta"])
def test_labels_become_wording_and_options_and_missing_rules_remove_only_what_they_name(
        suffix: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    frame = spending_frame()
    write_labelled(tmp_path / f"gss{suffix}", frame)
    path = scenario_file(tmp_path, f"gss{suffix}", [{"id": "natspac", "column": "natspac"},
                                                     {"id": "natenvir", "column": "natenvir"}],
                         missing=["Don't know", 9])
    scenario = load_scenario(path)
    for q in scenario.questions:
        assert q.text == WORDING[q.id]
        assert q.options == {"1": "too little", "2": "about right", "3": "too much"}  # file order, less missing
    population = load_population(scenario)
    for q in scenario.questions:
        real = frame[q.column].where(~frame[q.column].isin([8, 9])).map(SCALE)
        assert shares(population.respondents[f"q_{q.id}"]) == shares(real)
        assert population.respondents[f"q_{q.id}"].isna().sum() == frame[q.column].isin([8, 9]).sum() \
            + frame[q.column].isna().sum()
    n8 = {c: int((frame[c] == 8).sum()) for c in ("natspac", "natenvir")}
    n9 = int((frame["natspac"] == 9).sum())  # natenvir has no 9: not listed
    assert validate_lines(path, capsys)[1:] == [
        f"missing: 'Don't know' removed {sum(n8.values())} answers (natspac {n8['natspac']}, natenvir "
        f"{n8['natenvir']})",
        f"missing: 9 removed {n9} answers (natspac {n9})",
    ]


def test_without_missing_rules_declared_missing_codes_are_answers_not_silently_dropped(tmp_path: Path) -> None:
    """The .sav declares 8 and 9 user-missing; the scenario does not: they are options, and counted as such."""
    frame = spending_frame()
    write_labelled(tmp_path / "gss.sav", frame)
    scenario = load_scenario(scenario_file(tmp_path, "gss.sav", [{"id": "natspac", "column": "natspac"}]))
    assert scenario.questions[0].option_labels == list(SCALE.values())
    answers = load_population(scenario).respondents["q_natspac"]
    assert shares(answers) == shares(frame["natspac"].map(SCALE))
    assert (answers == "Refused").sum() == (frame["natspac"] == 9).sum() > 0


def test_a_question_missing_list_replaces_the_global_one(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    frame = spending_frame()
    write_labelled(tmp_path / "gss.dta", frame)
    questions = [{"id": "natspac", "column": "natspac", "missing": []},  # 8 and 9 are answers here
                 {"id": "natenvir", "column": "natenvir", "text": "Own wording?"}]
    path = scenario_file(tmp_path, "gss.dta", questions, missing=[8])
    scenario = load_scenario(path)
    assert scenario.questions[0].option_labels == list(SCALE.values())
    assert scenario.questions[1].text == "Own wording?"
    assert scenario.questions[1].option_labels == ["too little", "about right", "too much", "Refused"]
    answers = load_population(scenario).respondents
    assert (answers["q_natspac"] == "Don't know").sum() == (frame["natspac"] == 8).sum()
    assert answers["q_natenvir"].isna().sum() == frame["natenvir"].isna().sum() + (frame["natenvir"] == 8).sum()
    n = int((frame["natenvir"] == 8).sum())
    assert validate_lines(path, capsys)[1:] == [f"missing: 8 removed {n} answers (natenvir {n})"]


STUFFING = "id,sex,stuffing\n" + "".join(
    f"r{i},{i % 2},{s}\n" for i, s in enumerate(["Sage"] * 9 + ["None"] * 7 + ["NA"] * 5 + [""] * 3 + ["Unsure"] * 4))


def test_none_and_na_written_in_a_csv_are_answers_unless_named_missing(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "data.csv").write_text(STUFFING)
    assert pd.read_csv(tmp_path / "data.csv")["stuffing"].isna().sum() == 7 + 5 + 3  # pandas' default loses them
    question = {"id": "stuffing", "column": "stuffing", "text": "Which stuffing?",
                "options": ["Sage", "None", "NA"], "missing": ["Unsure"]}
    path = scenario_file(tmp_path, "data.csv", [question], id_column="id")
    answers = load_population(load_scenario(path)).respondents["q_stuffing"]
    assert answers.value_counts().to_dict() == {"Sage": 9, "None": 7, "NA": 5}
    assert answers.isna().sum() == 3 + 4  # empty cells, and what the rule names
    assert validate_lines(path, capsys)[1:] == ["missing: 'Unsure' removed 4 answers (stuffing 4)"]


def test_no_rules_no_data_loaded_and_no_extra_lines(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    question = {"id": "stuffing", "column": "stuffing", "text": "Which stuffing?", "options": ["Sage"]}
    path = scenario_file(tmp_path, "absent.csv", [question], id_column="id")
    assert len(validate_lines(path, capsys)) == 1  # validate still checks only the file when no rule exists


def test_a_sav_file_end_to_end_on_the_real_smollm2(tmp_path: Path) -> None:
    frame = spending_frame()
    write_labelled(tmp_path / "gss.sav", frame)
    path = scenario_file(tmp_path, "gss.sav", [{"id": "natspac", "column": "natspac"},
                                                {"id": "natenvir", "column": "natenvir"}],
                         missing=["Don't know", "Refused"])
    config = yaml.safe_load(path.read_text())
    config["lm"]["name"] = "smollm2-135m-instruct"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    result = runner.run(load_scenario(path), verbose=False)
    responses = pd.read_parquet(result.run_dir / "responses.parquet")
    assert len(responses) == 4 * 2
    assert set(responses["answer"]) <= {"too little", "about right", "too much"}
    heldout = pd.read_parquet(result.run_dir / "heldout.parquet")
    assert heldout["natspac"].notna().any()
    assert set(heldout["natspac"].dropna()) <= {"too little", "about right", "too much"}


@pytest.mark.parametrize(("file_name", "sep"), [("data.csv", ";"), ("data.csv", "\t"), ("data.tsv", "\t")])
def test_semicolon_and_tab_separated_files_read_like_csv(tmp_path, file_name, sep):
    """A European-locale export (semicolons) or a tab-separated file loads the same respondents as a CSV."""
    from .helpers import local_survey, survey_table

    reference = load_population(load_scenario(local_survey(tmp_path / "comma")))
    path = local_survey(tmp_path / "other", lambda cfg: cfg["data"].update(source=file_name))
    survey_table().to_csv(path.parent / file_name, sep=sep, index=False)
    population = load_population(load_scenario(path))
    pd.testing.assert_frame_equal(population.respondents, reference.respondents)


def test_a_missing_column_lists_the_columns_read(tmp_path, capsys):
    from .helpers import local_survey

    path = local_survey(tmp_path, lambda cfg: cfg["data"].update(id_column="respondent_number"))
    assert main(["run", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "the data's columns are: id, sex, age, wt, q1, q2" in err
