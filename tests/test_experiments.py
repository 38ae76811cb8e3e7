"""Survey experiments: balanced seeded arms, what each arm's agents are asked, the effects analysis checked
against hand computation, and the shipped wording experiment on the real SmolLM2 with its report and notebook."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from popsim import runner
from popsim.config import load_scenario
from popsim.eval.experiments import experiment_effects
from popsim.eval.headline import report_command
from popsim.lm import load_lm
from popsim.sim.arms import arm_plans, assign_arms
from popsim.sim.model import PopulationModel

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "scenarios" / "wording_experiment.yaml"
OPTIONS = ["too little", "about right", "too much"]
SMALL = {"data.max_rows": 300, "mop.n_personas": 2, "mop.n_exemplars": 12, "mop.max_train_records": 16,
         "mop.epochs": 1, "mop.batch_size": 8, "mop.exemplar_questions": 2, "simulation.agents": 12,
         "simulation.chunk_agents": 6}


def scenario(tmp_path: Path, **more):
    return load_scenario(SCENARIO, {**SMALL, "output": str(tmp_path / "run"), **more})


def test_arms_are_balanced_and_seeded(tmp_path):
    spec = scenario(tmp_path).experiments
    arms = assign_arms(spec, 11, seed=0)
    counts = pd.Series(arms).value_counts()
    assert set(counts.index) == {"welfare", "assistance to the poor"} and counts.max() - counts.min() == 1
    assert list(arms) == list(assign_arms(spec, 11, seed=0))
    assert list(arms) != list(assign_arms(spec, 11, seed=1))


def test_each_arm_is_asked_its_wording_order_and_treatment(tmp_path):
    spec = {"experiments": {"arms": [
        {"name": "a"},
        {"name": "b", "wording": {"natfare": "How about assistance to the poor?"}, "preamble": "Intro here.",
         "information": "Fact: welfare is 1% of the budget.", "option_order": {"natfare": "reversed"}}]}}
    sc = scenario(tmp_path, **spec)
    lm = load_lm("hash-lm")
    profiles = pd.DataFrame({"attr_sex": ["man", "woman"], "weight": 1.0, "arm": ["a", "b"]})
    model = PopulationModel(questions=sc.questions, lm=lm, mop=None, profiles=profiles,
                            profile_texts=["sex: man", "sex: woman"], method="no-persona", progress=False,
                            arms=arm_plans(sc.experiments, sc.questions))
    first, second = (model.by_id[i].requests(1) for i in (0, 1))
    assert first[0].options == tuple(OPTIONS) and second[0].options == tuple(OPTIONS[::-1])
    shown = [lm.render(r.prompt) for r in (first[0], second[0])]
    assert "on welfare?" in shown[0] and "Fact:" not in shown[0] and "Intro here." not in shown[0]
    assert "assistance to the poor" in shown[1] and "welfare?" not in shown[1]
    assert shown[1].index("Intro here.") < shown[1].index("Fact: welfare") < shown[1].index("assistance")
    assert "Fact: welfare" in lm.render(second[1].prompt)  # the treatment comes before every question
    assert second[1].options == tuple(OPTIONS)  # other questions keep their order
    model.step()
    assert model.by_id[1].answers[(1, "natfare")] in OPTIONS  # recorded by wording, whatever the order shown


def test_arms_reword_multi_select_and_ranking_items_and_reorder_a_ranking():
    """The simulator asks a multi-select or a ranking as items (``m[a]``, ``r[#1]``); an arm's wording and
    option order, keyed by the question, reach those items (they were silently ignored)."""
    from popsim.config import QuestionSpec
    from popsim.population_config import ExperimentsConfig
    from popsim.questions import expand_items

    questions = [QuestionSpec(id="m", type="multi_select", text="Which do you own?", options=["car", "bike"]),
                 QuestionSpec(id="r", type="ranking", text="Rank these.", options=["x", "y", "z"])]
    spec = ExperimentsConfig.model_validate({"arms": [
        {"name": "a"},
        {"name": "b", "wording": {"m": "Which of these do you have?", "r": "Order these."},
         "option_order": {"r": ["z", "y", "x"]}}]})
    plan = arm_plans(spec, questions)["b"]
    items = {q.id: q for q in expand_items(questions)}
    assert set(plan.variants) == set(items) == {"m[car]", "m[bike]", "r[#1]", "r[#2]"}
    assert plan.question(items["m[car]"]).text.startswith("Which of these do you have?")
    assert plan.question(items["m[car]"]).options == items["m[car]"].options
    assert plan.question(items["r[#2]"]).text.startswith("Order these.")
    assert plan.question(items["r[#1]"]).option_labels == ["z", "y", "x"]
    assert arm_plans(spec, questions)["a"].question(items["r[#1]"]) is items["r[#1]"]


def test_an_arm_reordering_a_multi_select_is_a_one_line_error(tmp_path):
    from popsim.exceptions import ScenarioError

    multi = {"id": "own", "type": "multi_select", "text": "Which do you own?", "options": ["car", "bike"],
             "columns": {"car": "natfare", "bike": "natenvir"}}
    with pytest.raises(ScenarioError, match="multi-select question 'own'.*asked one option at a time"):
        scenario(tmp_path, questions=[multi], experiments={"arms": [
            {"name": "a"}, {"name": "b", "option_order": {"own": "reversed"}}]})


def test_effects_match_hand_computation():
    rng = np.random.default_rng(0)
    n = 400
    arm = np.where(np.arange(n) % 2 == 0, "control", "treated")
    p = {"control": [0.5, 0.3, 0.2], "treated": [0.2, 0.3, 0.5]}
    answers = [rng.choice(OPTIONS, p=p[a]) for a in arm]
    sex = rng.choice(["man", "woman"], n)
    weight = rng.choice([1.0, 3.0], n)
    wide = pd.DataFrame({"agent": range(n), "q": answers, "arm": arm, "attr_sex": sex, "weight": weight})
    wide.loc[:2, "attr_sex"] = "tiny"  # a group with 2 control agents and 1 treated one
    result = experiment_effects(wide, {"q": OPTIONS}, control="control", by=["sex"], n_boot=400, seed=1)
    score = pd.Series(answers).map({o: k for k, o in enumerate(OPTIONS)}).to_numpy(float)

    def mean(mask):
        return np.average(score[mask], weights=weight[mask])

    effects = result.effects.set_index(["group", "measure"])
    ate = effects.loc[("all", "mean")]
    assert ate["effect"] == pytest.approx(mean(arm == "treated") - mean(arm == "control"))
    assert ate["ci_low"] < ate["effect"] < ate["ci_high"] and ate["ci_low"] > 0  # true effect is 0.6
    assert 0.2 < ate["ci_high"] - ate["ci_low"] < 0.5  # about 2 x 1.96 x 0.09, its standard error here
    share = effects.loc[("all", "share: too much")]
    much = np.array(answers) == "too much"
    treated_share = weight[(arm == "treated") & much].sum() / weight[arm == "treated"].sum()
    control_share = weight[(arm == "control") & much].sum() / weight[arm == "control"].sum()
    assert share["effect"] == pytest.approx(treated_share - control_share)
    assert not ate["too_wide"] and effects.loc[("sex=tiny", "mean"), "too_wide"]
    shares = result.shares.set_index(["arm", "option"])
    assert shares.loc[("treated", "too much"), "share"] == pytest.approx(treated_share)


@pytest.fixture(scope="module")
def experiment_run(tmp_path_factory) -> Path:
    """The shipped wording experiment, shrunk (12 agents, a tiny MoP), on the real SmolLM2."""
    return runner.run(scenario(tmp_path_factory.mktemp("wording")), verbose=False).run_dir


def test_shipped_experiment_runs_and_reports_effects(experiment_run):
    responses = pd.read_parquet(experiment_run / "responses.parquet")
    agents = responses.drop_duplicates("agent")
    assert agents["arm"].value_counts().to_dict() == {"welfare": 6, "assistance to the poor": 6}
    assert set(responses["answer"]) <= set(OPTIONS)
    assert (responses.groupby("agent")["arm"].nunique() == 1).all()
    report_command([str(experiment_run)])
    text = (experiment_run / "report" / "report.md").read_text()
    assert "Survey experiment" in text and "Average treatment effects" in text and "95% interval" in text
    assert "assistance to the poor vs welfare" in text
    assert "too wide to read" in text  # 6 agents per arm: subgroup intervals cannot be read


def test_wording_notebook_executes(experiment_run, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("POPSIM_RUN_DIR", str(experiment_run))
    nb = nbformat.read(ROOT / "notebooks" / "wording_experiment.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("12 agents" in "".join(o.get("text", "")) for o in outputs)
    assert any("image/png" in o.get("data", {}) for o in outputs)
