"""Target populations: agents raked to margins (single and joint), synthetic profiles from margins alone,
oversampled small cells, and the agents' weights in every share (summary, question shares, subgroup TV)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from popsim import runner
from popsim.config import load_scenario
from popsim.data import load_population
from popsim.eval import cell_fidelity, question_shares
from popsim.eval.headline import report_command
from popsim.population import draw_agents, kish_design_effect

from .helpers import SURVEY_QUESTIONS, small_survey

# sex and race margins, and a joint race x sex margin consistent with both
SEX = {"man": 0.48, "woman": 0.52}
RACE = {"white": 0.62, "black": 0.20, "other": 0.18}
RACE_SEX = {"white": {"man": 0.30, "woman": 0.32}, "black": {"man": 0.09, "woman": 0.11},
            "other": {"man": 0.09, "woman": 0.09}}
OPTIONS = {q["id"]: list(q["options"].values()) for q in SURVEY_QUESTIONS}


def scenario_with(tmp_path: Path, population: dict, *, agents: int = 60, lm: str = "hash-lm"):
    path = small_survey(tmp_path, agents=agents, lm=lm)
    cfg = yaml.safe_load(path.read_text())
    cfg["population"] = population
    path.write_text(yaml.safe_dump(cfg))
    return load_scenario(path)


def weighted_share(frame: pd.DataFrame, column: str, value: str, weights: np.ndarray) -> float:
    hit = (frame[column].astype(str) == value).to_numpy()
    return float(weights[hit].sum() / weights.sum())


def check_margins(profiles: pd.DataFrame, tol: float = 0.01) -> None:
    """Achieved weighted shares, computed here from the agents' rows, within ``tol`` of every target."""
    w = profiles["weight"].to_numpy(float)
    for cat, target in SEX.items():
        assert abs(weighted_share(profiles, "attr_sex", cat, w) - target) <= tol
    for race, by_sex in RACE_SEX.items():
        for sex, target in by_sex.items():
            hit = ((profiles["attr_race"].astype(str) == race) & (profiles["attr_sex"].astype(str) == sex)).to_numpy()
            assert abs(w[hit].sum() / w.sum() - target) <= tol


@pytest.mark.parametrize("mode", ["reweighted", "synthetic"])
def test_agents_meet_single_and_joint_margins_with_oversampled_cells(tmp_path, mode):
    scenario = scenario_with(tmp_path, {"mode": mode, "margins": {"sex": SEX, "race x sex": RACE_SEX},
                                        "oversample": {"by": ["race"], "min_agents": 12}})
    population = load_population(scenario)
    draw = draw_agents(scenario, population, 60, np.random.default_rng(1))
    profiles = draw.profiles
    check_margins(profiles)
    assert (profiles["attr_race"].value_counts() >= 12).all()  # small cells filled up
    # ... and down-weighted: the oversampled black and other agents weigh less than the white ones
    mean_w = profiles.groupby("attr_race")["weight"].mean()
    assert mean_w["black"] < mean_w["white"] and mean_w["other"] < mean_w["white"]
    assert np.isclose(profiles["weight"].mean(), 1.0)
    table = draw.margins
    assert (table["achieved"] - table["target"]).abs().max() <= 0.01
    assert set(table["margin"]) == {"sex", "race x sex", "race"}  # the oversampled cells' shares join the raking
    race = table[table["margin"] == "race"].set_index("category")["target"]
    assert race.to_dict() == pytest.approx(RACE)  # ... at the shares the joint margin implies
    w = profiles["weight"].to_numpy()
    assert draw.design_effect == pytest.approx(len(w) * (w**2).sum() / w.sum() ** 2)
    assert draw.effective_n == pytest.approx(w.sum() ** 2 / (w**2).sum())
    if mode == "synthetic":  # profiles name only the margins' attributes
        assert profiles["attr_party"].isna().all()
    else:  # profiles are held-out respondents; they too are raked to the targets for the real comparison
        assert set(profiles["attr_party"].dropna()) <= set(population.test["attr_party"].dropna())
        held = population.test.assign(weight=draw.heldout_weights)
        check_margins(held[held["weight"] > 0].reset_index(drop=True))
    again = draw_agents(scenario, population, 60, np.random.default_rng(1))
    pd.testing.assert_frame_equal(again.profiles, profiles)  # same seed, same agents


def test_oversampling_respondents_keeps_population_shares(tmp_path):
    scenario = scenario_with(tmp_path, {"oversample": {"by": ["race"], "min_agents": 10}})
    population = load_population(scenario)
    draw = draw_agents(scenario, population, 40, np.random.default_rng(0))
    counts = draw.profiles["attr_race"].value_counts()
    assert (counts >= 10).all() and counts.sum() == 40
    real = population.test
    real_w = real["weight"].to_numpy(float)
    w = draw.profiles["weight"].to_numpy(float)
    for race in counts.index:  # weighted agent shares are the held-out respondents' shares, exactly
        assert weighted_share(draw.profiles, "attr_race", race, w) == pytest.approx(
            weighted_share(real, "attr_race", race, real_w), abs=1e-9)
    assert kish_design_effect(w) > 1.0


def test_agent_weights_count_in_question_shares_and_subgroup_tv():
    """A weight of 2 counts exactly like the same agent listed twice."""
    rng = np.random.default_rng(0)
    opts = ["yes", "no", "maybe"]
    real = pd.DataFrame({"q": rng.choice(opts, 80), "attr_sex": rng.choice(["a", "b"], 80), "weight": 1.0})
    synth = pd.DataFrame({"agent": range(12), "q": rng.choice(opts, 12), "attr_sex": rng.choice(["a", "b"], 12),
                          "weight": rng.choice([1.0, 2.0], 12)})
    doubled = pd.concat([synth, synth[synth["weight"] == 2.0]], ignore_index=True).assign(weight=1.0)
    a = question_shares({"m": synth}, real, {"q": opts}, by="sex")
    b = question_shares({"m": doubled}, real, {"q": opts}, by="sex")
    np.testing.assert_allclose(a.loc[a["source"] == "m", "share"], b.loc[b["source"] == "m", "share"])
    first = a[(a["source"] == "m") & (a["group"] == "all")].set_index("option")["share"]
    assert first["yes"] == pytest.approx(synth.loc[synth["q"] == "yes", "weight"].sum() / synth["weight"].sum())
    ca = cell_fidelity(synth, real, {"q": opts}, ["sex"], min_n=1, n_boot=20)
    cb = cell_fidelity(doubled, real, {"q": opts}, ["sex"], min_n=1, n_boot=20)
    np.testing.assert_allclose(ca["tv"], cb["tv"])


@pytest.fixture(scope="module")
def raked_run(tmp_path_factory) -> tuple[Path, str]:
    """A real SmolLM2 run aimed at sex and race x sex margins, race cells oversampled."""
    import contextlib
    import io

    tmp = tmp_path_factory.mktemp("raked")
    scenario = scenario_with(tmp, {"mode": "reweighted", "margins": {"sex": SEX, "race x sex": RACE_SEX},
                                   "oversample": {"by": ["race"], "min_agents": 5}},
                             agents=16, lm="smollm2-135m-instruct")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        runner.run(scenario, verbose=True)
    return scenario.run_dir, out.getvalue()


def test_real_lm_run_carries_weights_into_responses_summary_and_report(raked_run, capsys):
    run_dir, printed = raked_run
    assert "population margins (target vs achieved" in printed
    assert "design effect (Kish)" in printed and "effective sample size" in printed
    responses = pd.read_parquet(run_dir / "responses.parquet")
    assert {"agent", "round", "question", "answer", "attr_sex", "attr_race", "weight"} <= set(responses.columns)
    agents = responses.drop_duplicates("agent").reset_index(drop=True)
    check_margins(agents)
    assert (agents["attr_race"].value_counts() >= 5).all()
    info = json.loads((run_dir / "population.json").read_text())
    assert max(abs(m["achieved"] - m["target"]) for m in info["margins"]) <= 0.01
    assert info["effective_n"] == pytest.approx(agents["weight"].sum() ** 2 / (agents["weight"] ** 2).sum())
    # summary.csv's shares are weighted: recompute one independently from the responses
    summary = pd.read_csv(run_dir / "summary.csv")
    natfare = responses[responses["question"] == "natfare"]
    for answer, share in summary[(summary["question"] == "natfare") & (summary["subgroup"] == "all")][
            ["answer", "share"]].itertuples(index=False):
        expected = natfare.loc[natfare["answer"] == answer, "weight"].sum() / natfare["weight"].sum()
        assert share == pytest.approx(expected, abs=1e-4)
    held = pd.read_parquet(run_dir / "heldout.parquet")  # real respondents raked to the same targets
    check_margins(held[held["weight"] > 0].reset_index(drop=True))
    report_command([str(run_dir)], out=str(run_dir / "report"))
    text = (run_dir / "report" / "report.md").read_text()
    assert "Whom the agents stand for" in text and "Target vs achieved margins" in text
    assert f"{info['design_effect']:.2f}" in text and f"{info['effective_n']:.1f}" in text
    questions = pd.read_csv(run_dir / "report" / "questions.csv")
    sim = questions[(questions["source"] == "mop") & (questions["group"] == "all")
                    & (questions["question"] == "natfare")]
    for option, share in sim[["option", "share"]].itertuples(index=False):
        expected = natfare.loc[natfare["answer"] == option, "weight"].sum() / natfare["weight"].sum()
        assert share == pytest.approx(expected)


def test_real_lm_synthetic_population_from_margins_alone(tmp_path):
    """Profiles built from the margins (no respondent row), answered by the real SmolLM2, weighted to the targets."""
    scenario = scenario_with(tmp_path, {"mode": "synthetic", "margins": {"sex": SEX, "race": RACE}},
                             agents=10, lm="smollm2-135m-instruct")
    result = runner.run(scenario, verbose=False)
    agents = result.responses.drop_duplicates("agent").reset_index(drop=True)
    assert agents["attr_party"].isna().all()  # only the margins' attributes describe a synthetic agent
    w = agents["weight"].to_numpy(float)
    for column, targets in (("attr_sex", SEX), ("attr_race", RACE)):
        for cat, target in targets.items():
            assert abs(weighted_share(agents, column, cat, w) - target) <= 0.01
    profiles = pd.read_parquet(result.run_dir / "agents.parquet")["profile"]
    assert all("party" not in p and "sex:" in p and "race:" in p for p in profiles)
    assert set(result.responses["answer"]) <= {"too little", "about right", "too much"}


def test_respondents_of_weight_zero_are_never_agents_even_when_fewer_than_the_agents(tmp_path):
    """Two thirds of the respondents weigh 0 (allowed: only negative or all-zero weights are refused). The agents
    are fewer than the held-out respondents but more than those of positive weight: drawn with replacement from
    those (the draw without replacement failed), and MoP trains on the records of positive weight."""
    from .helpers import local_survey, survey_table

    frame = survey_table(60)
    frame["wt"] = np.where(np.arange(60) % 3 == 0, frame["wt"], 0.0)
    path = local_survey(tmp_path, lambda c: c["simulation"].update(agents=10), frame)
    result = runner.run(load_scenario(path), verbose=False)
    agents = pd.read_parquet(result.run_dir / "agents.parquet")
    heldout = pd.read_parquet(result.run_dir / "heldout.parquet")
    assert len(heldout) >= len(agents) == 10 > int((heldout["weight"] > 0).sum())
    assert (agents["weight"] > 0).all()


def test_a_population_run_folder_holds_only_files_popsim_owns(tmp_path):
    """Every file a population run writes is one popsim knows as its own, so a folder whose corrupt manifest
    was deleted (as the error tells) can be reused; the run summary lists the files a user opens."""
    from popsim.cli import _OUTPUTS
    from popsim.rundir import RUN_FILES

    scenario = scenario_with(tmp_path, {"mode": "reweighted", "margins": {"sex": SEX}}, agents=8)
    result = runner.run(scenario, verbose=False)
    written = {p.name for p in result.run_dir.iterdir()}
    assert "population.json" in written and written <= RUN_FILES and set(_OUTPUTS) <= RUN_FILES
    (result.run_dir / "manifest.json").unlink()
    runner.run(scenario, verbose=False)  # refused before: "holds files popsim did not write ('population.json')"


def test_held_out_respondents_that_cannot_be_raked_are_flagged_not_silently_kept(tmp_path):
    """Synthetic agents can meet a joint margin whose cell no held-out respondent is in; the respondents then
    keep their survey weights for the comparison, and population.json says so (it was silent)."""
    scenario = scenario_with(tmp_path, {"mode": "synthetic", "margins": {"race x sex": RACE_SEX}})
    population = load_population(scenario)
    test = population.test
    population.test = test[~((test["attr_race"] == "other") & (test["attr_sex"] == "man"))].reset_index(drop=True)
    draw = draw_agents(scenario, population, 40, np.random.default_rng(0))
    assert draw.heldout_weights is None
    summary = draw.summary()
    assert summary["heldout_raked"] is False and "could not be raked" in summary["heldout_note"]
    from popsim.eval.population import population_section

    (tmp_path / "population.json").write_text(json.dumps(summary))
    assert "could not be raked" in str(population_section(tmp_path).blocks[0])
    assert draw_agents(scenario, load_population(scenario), 40, np.random.default_rng(0)).summary()["heldout_raked"]
