"""Questionnaire features: ask_if skip logic, multi_select, scale, honoured in the data, fitting, simulation and
the report (the real embedded SmolLM2 answers in the simulation tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from popsim import runner
from popsim.config import QuestionSpec, load_scenario
from popsim.data import load_population, survey_records
from popsim.questions import NO, YES, Condition, SkipLogic, expand_items
from popsim.sim.model import PopulationModel

SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "questionnaire.yaml"

STEAK = QuestionSpec(id="eats_steak", text="Do you eat steak?", options={1: "Yes", 2: "No"})
HOW = QuestionSpec(id="how", text="How do you like your steak?", options=["Rare", "Medium", "Well done"],
                   ask_if=Condition.model_validate({"question": "eats_steak", "in": [1]}))
SIDES = QuestionSpec.model_validate({
    "id": "sides", "type": "multi_select", "text": "Which sides do you order? Select all that apply.",
    "options": ["Fries", "Salad", "Beans"], "ask_if": {"question": "eats_steak", "in": ["Yes"]},
    "columns": {"Fries": "side_fries", "Salad": "side_salad", "Beans": "side_beans"}})
VEG = QuestionSpec.model_validate({
    "id": "veg", "text": "Would you try a vegetarian steak?", "options": ["Yes", "No"],
    "ask_if": {"any": [{"question": "sides", "in": ["Salad"]}, {"attribute": "age", "in": ["65+"]}]}})
CUTS = QuestionSpec.model_validate({
    "id": "cuts", "type": "ranking", "text": "Rank these cuts from your favourite down.",
    "options": ["Ribeye", "Sirloin", "Flank"], "ask_if": {"question": "eats_steak", "in": ["Yes"]},
    "columns": {"Ribeye": "rank_ribeye", "Sirloin": "rank_sirloin", "Flank": "rank_flank"}})
QUESTIONS = [STEAK, HOW, SIDES, VEG, CUTS]
ITEMS = ["eats_steak", "how", "sides[Fries]", "sides[Salad]", "sides[Beans]", "veg", "cuts[#1]", "cuts[#2]"]


def test_multi_select_is_one_yes_no_item_per_option() -> None:
    items = expand_items(QUESTIONS)
    assert [i.id for i in items] == ITEMS
    salad = items[3]
    assert salad.option_labels == [YES, NO] and salad.column == "side_salad" and salad.ask_if == SIDES.ask_if
    assert salad.text.endswith('Do you select "Salad"?') and "(Select all that apply.)" not in salad.text


def test_skip_logic_decides_from_attributes_and_earlier_answers() -> None:
    logic = SkipLogic(expand_items(QUESTIONS))
    how, veg = HOW, VEG
    assert logic.asked(how, {}, {}) is None  # its question is still pending
    assert logic.asked(how, {"eats_steak": "Yes"}, {}) is True  # code 1 reads as its wording
    assert logic.asked(how, {"eats_steak": "No"}, {}) is False
    assert logic.asked(how, {"eats_steak": None}, {}) is False  # not asked / no answer: not met
    sides = {"sides[Fries]": YES, "sides[Salad]": NO, "sides[Beans]": NO}
    assert logic.asked(veg, sides, {"attr_age": "30-44"}) is False
    assert logic.asked(veg, sides, {"attr_age": "65+"}) is True  # any: the attribute suffices
    assert logic.asked(veg, {**sides, "sides[Salad]": YES}, {"attr_age": None}) is True
    assert logic.asked(veg, {"sides[Fries]": YES}, {"attr_age": "30-44"}) is None  # other options pending
    none_asked = dict.fromkeys(sides)
    assert logic.asked(veg, none_asked, {"attr_age": pd.NA}) is False


def _steak_table(n: int = 120) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    eats = rng.choice([1, 2], n, p=[0.7, 0.3])
    frame = pd.DataFrame({"id": range(n), "age": rng.choice(["18-29", "30-44", "65+"], n), "eats": eats,
                          "how": rng.choice(["Rare", "Medium", "Well done"], n),
                          "side_fries": np.where(rng.random(n) < 0.6, "Fries", ""),
                          "side_salad": rng.choice([1, 0], n), "side_beans": np.where(rng.random(n) < 0.2, "yes", "no"),
                          "veg": rng.choice(["Yes", "No", "Don't know"], n)})
    frame.loc[frame["eats"] == 2, ["side_fries"]] = ""
    frame.loc[frame["eats"] == 2, ["side_salad", "side_beans"]] = np.nan
    frame.loc[:9, ["side_fries", "side_salad", "side_beans"]] = [("", np.nan, np.nan)] * 10  # skipped it
    ranks = np.array([rng.permutation(3) + 1 for _ in range(n)], dtype=float)
    ranks[11] = [1, 1, 2]  # a tie: no answer
    frame[["rank_ribeye", "rank_sirloin", "rank_flank"]] = ranks
    frame.loc[frame["eats"] == 2, ["rank_ribeye", "rank_sirloin", "rank_flank"]] = np.nan
    frame.loc[5, "how"] = "Rare"  # a respondent who says no and still answered: not asked, answer dropped
    frame.loc[5, "eats"] = 2
    return frame


def _steak_scenario(tmp_path: Path, *, lm: str = "hash-lm", agents: int = 10, **extra) -> Path:
    _steak_table().to_csv(tmp_path / "steak.csv", index=False)
    questions = [q.model_dump(mode="json", exclude_defaults=True) for q in QUESTIONS]
    questions[0]["column"], questions[1]["column"], questions[3]["column"] = "eats", "how", "veg"
    questions[3]["missing"] = ["Don't know"]
    config = {"name": "steak", "kind": "survey", "seed": 4,
              "data": {"source": "steak.csv", "id_column": "id", "attributes": {"age": {"column": "age"}}},
              "questions": questions,
              "mop": {"n_personas": 2, "n_exemplars": 10, "max_train_records": 16, "epochs": 1, "batch_size": 8,
                      "exemplar_questions": 3},
              "simulation": {"agents": agents, "chunk_agents": 4}, "lm": {"name": lm},
              "output": str(tmp_path / "run"), **extra}
    path = tmp_path / "steak.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_real_data_counts_only_those_asked(tmp_path: Path) -> None:
    scenario = load_scenario(_steak_scenario(tmp_path))
    pop = load_population(scenario)
    r = pop.respondents
    table = _steak_table()
    assert [q.id for q in pop.questions] == [i.id for i in expand_items(scenario.questions)]
    no = (table["eats"] == 2).to_numpy()
    assert r.loc[no, "q_how"].isna().all() and r.loc[~no, "q_how"].notna().all()  # respondent 5 dropped
    assert r.loc[no, "q_sides[Fries]"].isna().all()
    skipped = np.arange(len(r)) < 10
    assert r.loc[skipped, ["q_sides[Fries]", "q_sides[Salad]", "q_sides[Beans]"]].isna().all().all()
    asked = ~no & ~skipped
    fries = r.loc[asked, "q_sides[Fries]"]
    assert set(fries) == {YES, NO} and (fries == YES).sum() == (table.loc[asked, "side_fries"] == "Fries").sum()
    assert (r.loc[asked, "q_sides[Salad]"] == YES).sum() == (table.loc[asked, "side_salad"] == 1).sum()
    assert (r.loc[asked, "q_sides[Beans]"] == YES).sum() == (table.loc[asked, "side_beans"] == "yes").sum()
    veg_asked = r[["q_sides[Salad]"]].eq(YES).any(axis=1) | (r["attr_age"] == "65+")
    assert r.loc[~veg_asked, "q_veg"].isna().all()
    assert pop.missing_removed["'Don't know'"]["veg"] > 0
    ranked = ~no & (np.arange(len(r)) != 11)
    first = table.loc[ranked, ["rank_ribeye", "rank_sirloin", "rank_flank"]].to_numpy().argmin(axis=1)
    assert list(r.loc[ranked, "q_cuts[#1]"]) == [CUTS.option_labels[k] for k in first]
    assert r.loc[~ranked, ["q_cuts[#1]", "q_cuts[#2]"]].isna().all().all()
    assert pop.missing_removed["invalid ranking (ties or gaps)"] == {"cuts": 1}
    records = survey_records(pop)  # MoP fits only answers of those asked
    per_question = pd.Series(records.question_ids).value_counts()
    assert per_question["how"] == pop.train["q_how"].notna().sum() < len(pop.train)
    assert per_question["sides[Salad]"] == pop.train["q_sides[Salad]"].notna().sum()
    second = [(o, resp) for o, resp, q in zip(records.options, records.responses, records.question_ids, strict=True)
              if q == "cuts[#2]"]
    assert second and all(len(o) == 2 and resp in o for o, resp in second)  # the top choice is not offered again


def test_agents_are_asked_by_their_own_answers_on_smollm2(smollm) -> None:
    """The real SmolLM2 answers; each agent is asked a conditional question exactly when its own earlier
    answers (or attributes) meet the condition, ranks distinct options, and the same seed gives the same
    answers whatever the chunking."""
    items = expand_items(QUESTIONS)
    ages = ["18-29", "65+", "30-44", "18-29", "65+", "30-44"]
    profiles = pd.DataFrame({"attr_age": ages})

    def simulate(chunk: int) -> pd.DataFrame:
        model = PopulationModel(questions=items, lm=smollm, mop=None, profiles=profiles,
                                profile_texts=[f"age: {a}" for a in ages], method="silicon", seed=3,
                                progress=False, chunk_agents=chunk, requests_per_call=64)
        model.step()
        return model.responses()

    wide = simulate(6).pivot(index="agent", columns="question", values="answer")
    assert wide["eats_steak"].notna().all()
    eats = wide["eats_steak"] == "Yes"
    assert 0 < eats.sum() < len(wide)  # both branches are exercised (same seed, same answers)
    for agent, row in wide.iterrows():
        asked_sides = row["eats_steak"] == "Yes"
        for col in ["how", "sides[Fries]", "sides[Salad]", "sides[Beans]"]:
            assert pd.notna(row.get(col)) == asked_sides, (agent, col, row.to_dict())
        salad = asked_sides and row["sides[Salad]"] == YES
        assert pd.notna(row.get("veg")) == (salad or ages[agent] == "65+"), (agent, row.to_dict())
    assert wide["how"].dropna().isin(HOW.option_labels).all()
    ranked = wide.loc[eats, ["cuts[#1]", "cuts[#2]"]]
    assert ranked.notna().all().all() and (ranked["cuts[#1]"] != ranked["cuts[#2]"]).all()  # distinct ranks
    assert wide.loc[~eats, ["cuts[#1]", "cuts[#2]"]].isna().all().all()
    again = simulate(4).pivot(index="agent", columns="question", values="answer")
    pd.testing.assert_frame_equal(wide, again)


def test_shipped_questionnaire_validates_and_reports_counts(capsys: pytest.CaptureFixture) -> None:
    from popsim.cli import main

    assert main(["validate", str(SCENARIO)]) == 0
    out = capsys.readouterr().out
    assert "valid survey scenario 'questionnaire'" in out
    other = (pd.read_csv(SCENARIO.parent / "data" / "sleeping-alone-sample.csv", dtype=str)["where_you_sleep"]
             == "Other (please specify)").sum()  # counted from the file, independently of popsim
    assert other > 0 and f"missing: 'Other (please specify)' removed {other} answers (where_you_sleep {other})" in out
    scenario = load_scenario(SCENARIO)
    kinds = {q.id: (q.type, q.ask_if is not None, q.missing is not None) for q in scenario.questions}
    assert kinds["reasons"] == ("multi_select", True, False) and kinds["where_you_sleep"] == ("single", True, True)
    assert {q.type for q in scenario.questions} == {"scale", "single", "multi_select"}
    pop = load_population(scenario)
    never = pop.respondents["q_separate_beds"] == "Never"
    assert pop.respondents.loc[never, ["q_where_you_sleep", "q_sleep_better", "q_reasons[One of us snores]"]] \
        .isna().all().all()
    assert pop.respondents.loc[~never, "q_reasons[One of us snores]"].notna().sum() > 100


def test_shipped_questionnaire_runs_and_reports_on_smollm2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           smollm, encoder) -> None:
    """The shipped scenario end to end on the real SmolLM2 (few agents, a smaller MoP): the conditional
    questions are answered only by agents who ever sleep apart, and the report compares the shares of the
    ask_if question, the multi_select options and the question with missing rules, real beside simulated."""
    from popsim.cli import main

    monkeypatch.setenv("POPSIM_CACHE_DIR", str(tmp_path / "cache"))
    config = yaml.safe_load(SCENARIO.read_text())
    config["data"]["source"] = str(SCENARIO.parent / config["data"]["source"])
    config["mop"].update(n_personas=2, n_exemplars=12, max_train_records=12, epochs=1)
    small = tmp_path / "questionnaire.yaml"
    small.write_text(yaml.safe_dump(config, sort_keys=False))
    run_dir = tmp_path / "run"
    scenario = load_scenario(small, {"output": str(run_dir), "simulation.agents": 12})
    runner.run(scenario, lm=smollm, encoder=encoder, verbose=False)  # the suite's shared SmolLM2: no reload
    responses = pd.read_parquet(run_dir / "responses.parquet")
    wide = responses.pivot(index="agent", columns="question", values="answer")
    apart = wide["separate_beds"] != "Never"
    for col in ["where_you_sleep", "sleep_better", "reasons[One of us snores]", "reasons[One of us is sick]"]:
        assert (wide[col].notna() == apart).all() if col in wide else not apart.any()
    assert main(["report", str(run_dir)]) == 0
    report = (run_dir / "report" / "report.md").read_text()
    assert "Questionnaire: skip logic, select all that apply, missing rules, rankings, scales" in report
    assert "Skip logic: who was asked" in report and "separate_beds is not Never" in report
    assert "Select all that apply: share choosing each option" in report and "| reasons | One of us snores |" in report
    assert "missing: Other (please specify)" in report
    assert "Scales: mean score" in report
    questions = pd.read_csv(run_dir / "report" / "questions.csv")
    assert "reasons[One of us snores]" in set(questions["question"])
    asked_real = questions[(questions["question"] == "where_you_sleep") & (questions["source"] == "real")
                           & (questions["group"] == "all")]
    heldout = pd.read_parquet(run_dir / "heldout.parquet")
    assert asked_real["n"].iloc[0] == heldout["where_you_sleep"].notna().sum() < len(heldout)


def test_report_scores_rankings_multi_select_and_skips(tmp_path: Path) -> None:
    """End to end on the steak questionnaire (hash LM: fast): the report's questionnaire section and its
    per-option rank items."""
    from popsim.cli import main

    path = _steak_scenario(tmp_path, agents=12)
    assert main(["run", str(path), "--quiet"]) == 0
    assert main(["report", str(tmp_path / "run")]) == 0
    report = (tmp_path / "run" / "report" / "report.md").read_text()
    for part in ("Skip logic: who was asked", "eats_steak is Yes", "Select all that apply", "| sides | Salad |",
                 "Rankings: mean rank of each option", "| cuts | Ribeye |", "missing: Don't know"):
        assert part in report, part
    shares = pd.read_csv(tmp_path / "run" / "report" / "questions.csv")
    ribeye = shares[(shares["question"] == "cuts[Ribeye]") & (shares["group"] == "all")]
    assert set(ribeye["option"].astype(str)) == {"1", "2", "3"}
    real = ribeye[ribeye["source"] == "real"]
    assert abs(real["share"].sum() - 1) < 1e-9 and real["n"].iloc[0] > 0
    responses = pd.read_parquet(tmp_path / "run" / "responses.parquet")  # no agent asked `how`: still a report
    responses[responses["question"] != "how"].to_parquet(tmp_path / "run" / "responses.parquet")
    assert main(["report", str(tmp_path / "run")]) == 0
    shares = pd.read_csv(tmp_path / "run" / "report" / "questions.csv")
    how = shares[(shares["question"] == "how") & (shares["group"] == "all")].set_index("source")
    assert how.loc["real", "n"].min() > 0 and (how.loc["mop", "n"] == 0).all()


def test_scale_points_and_validate_counts_invalid_rankings(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from popsim.cli import main
    from popsim.eval.questionnaire import _points

    scale = QuestionSpec.model_validate({"id": "nps", "type": "scale", "text": "Recommend us?", "points": [0, 10]})
    assert scale.option_labels == [str(p) for p in range(11)] and list(_points(scale)) == list(range(11))
    agree = QuestionSpec(id="a", text="Agree?", type="scale", options={1: "disagree", 2: "neutral", 3: "agree"})
    assert list(_points(agree)) == [1, 2, 3]
    assert main(["validate", str(_steak_scenario(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "missing: invalid ranking (ties or gaps) removed 1 answer (cuts 1)" in out
    assert "missing: 'Don't know' removed" in out
