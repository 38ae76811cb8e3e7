"""Simulation on Mesa: batching through one LM, determinism, resume after SIGKILL, networks, real LM."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from popsim import runner
from popsim.config import QuestionSpec, load_scenario
from popsim.lm.testing import CountingLM, HashLM
from popsim.mop.presets import PRESETS
from popsim.mop.prompts import PromptStyle
from popsim.sim.model import PopulationModel

from .helpers import local_survey, small_survey

QUESTIONS = [QuestionSpec(id=f"q{i}", text=f"Question {i}?", options=["yes", "no", "maybe"]) for i in range(5)]


def _model(lm, n=50, **kw):
    profiles = pd.DataFrame({"attr_sex": ["man", "woman"] * (n // 2)})
    texts = [f"sex: {s}; id {i}" for i, s in enumerate(profiles["attr_sex"])]
    return PopulationModel(questions=QUESTIONS, lm=lm, mop=None, profiles=profiles, profile_texts=texts,
                           method="silicon", style=PromptStyle.survey(), progress=False, **kw)


def test_population_step_batches_requests_through_one_lm():
    lm = CountingLM(HashLM())
    model = _model(lm, n=50, requests_per_call=64, chunk_agents=50)
    model.step()
    calls = lm.count("option_logprobs")
    assert calls == math.ceil(50 * 5 / 64)  # not one call per agent or per question
    assert all(len(a.answers) == 5 for a in model.agents)
    shares = model.datacollector.get_model_vars_dataframe()
    assert np.isclose(shares[[c for c in shares.columns if c.startswith("share:q0:")]].iloc[0].sum(), 1.0)


def test_identical_prompts_are_deduplicated():
    lm = CountingLM(HashLM())
    profiles = pd.DataFrame({"attr_sex": ["man"] * 20})
    model = PopulationModel(questions=QUESTIONS[:1], lm=lm, mop=None, profiles=profiles,
                            profile_texts=["sex: man"] * 20, method="silicon", progress=False)
    model.step()
    assert sum(c.batch_size for c in lm.calls) == 1  # twenty agents, one distinct prompt
    answers = [a.answers[(1, "q0")] for a in model.agents]
    assert len(set(answers)) > 1  # each agent still samples its own answer


class _PromptRecordingLM(HashLM):
    """HashLM that keeps every prompt the population step sends it, as rendered text."""

    def __init__(self) -> None:
        super().__init__()
        self.prompts: list[str] = []

    def option_logprobs(self, prompts, options, **kwargs):
        self.prompts.extend(p if isinstance(p, str) else self.render(p) for p in prompts)
        return super().option_logprobs(prompts, options, **kwargs)


@pytest.mark.parametrize("kind", ["small_world", "scale_free"])
def test_generated_networks_have_every_agent_and_a_lone_agent_has_no_neighbours(kind):
    from popsim.config import NetworkConfig
    from popsim.sim.network import build_network

    graph = build_network(NetworkConfig(kind=kind, degree=4), 30, seed=0)
    assert sorted(graph.nodes) == list(range(30)) and graph.number_of_edges() > 0
    lone = build_network(NetworkConfig(kind=kind, degree=4), 1, seed=0)  # networkx refuses a 1-node scale-free graph
    assert list(lone.nodes) == [0] and lone.number_of_edges() == 0


def test_user_mesa_loop_runs_rounds_with_a_network():
    """From round 2 on, the prompts the LM really receives list the neighbours' previous answers, and those
    answers move the agents' probabilities; round 1 shows none."""
    import networkx as nx

    lm = _PromptRecordingLM()
    model = _model(lm, n=20, network=nx.watts_strogatz_graph(20, 4, 0.1, seed=1))
    model.step()
    first = list(lm.prompts)
    model.step()
    second = lm.prompts[len(first):]
    assert first and not any("People you know answered" in p for p in first)
    assert second and all("People you know answered" in p for p in second)
    responses = model.responses()
    assert len(responses) == 20 * 5 * 2
    probs = responses.pivot_table(index=["agent", "question"], columns="round", values="probs", aggfunc="first")
    assert (probs[1].map(json.dumps) != probs[2].map(json.dumps)).mean() > 0.5


@pytest.mark.parametrize(("method", "shows_profile"), [("silicon", True), ("no-persona", False)])
def test_the_profile_reaches_the_prompt_except_without_persona(method, shows_profile):
    """silicon answers as the respondent's profile; no-persona, the bare LM baseline, never sees it."""
    lm = _PromptRecordingLM()
    profiles = pd.DataFrame({"attr_sex": ["man", "woman"]})
    model = PopulationModel(questions=QUESTIONS[:1], lm=lm, mop=None, profiles=profiles,
                            profile_texts=["sex: man; id 0", "sex: woman; id 1"], method=method,
                            style=PromptStyle.survey(), progress=False)
    model.step()
    assert lm.prompts and all("Question 0?" in p for p in lm.prompts)  # no-persona: one prompt for both
    assert all(("sex: " in p) == shows_profile for p in lm.prompts)


def test_same_seed_same_responses(tmp_path):
    a = runner.run(load_scenario(small_survey(tmp_path / "a")), verbose=False)
    b = runner.run(load_scenario(small_survey(tmp_path / "b")), verbose=False)
    assert (a.run_dir / "responses.parquet").read_bytes() == (b.run_dir / "responses.parquet").read_bytes()
    assert len(a.responses) == 12 * 4
    assert {"agent", "round", "question", "answer", "probs", "persona", "exemplar", "temperature",
            "attr_sex", "attr_race", "attr_party"} <= set(a.responses.columns)
    assert (a.run_dir / "summary.csv").is_file() and (a.run_dir / "heldout.parquet").is_file()


def test_fitted_model_is_reused(tmp_path):
    scenario = load_scenario(small_survey(tmp_path))
    runner.run(scenario, verbose=False)
    stamp = (scenario.run_dir / "mop" / "gate.safetensors").stat().st_mtime_ns
    bigger = load_scenario(small_survey(tmp_path, agents=16))  # a different simulation, same fit
    with pytest.raises(Exception, match="different config"):
        runner.run(bigger, verbose=False)
    other = load_scenario(small_survey(tmp_path), {"output": str(scenario.run_dir)})
    runner.run(other, verbose=False)
    assert (scenario.run_dir / "mop" / "gate.safetensors").stat().st_mtime_ns == stamp


def test_sigkill_mid_simulation_then_resume_gives_identical_responses(tmp_path):
    reference = runner.run(load_scenario(small_survey(tmp_path / "ref", agents=40)), verbose=False)
    path = small_survey(tmp_path / "killed", agents=40)
    cmd = [sys.executable, "-m", "popsim", "run", str(path), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = tmp_path / "killed" / "run" / "parts"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(parts.glob("part-*.parquet"))) < 2:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(list(parts.glob("part-*.parquet")))
    assert 0 < done_before
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    resumed = pd.read_parquet(tmp_path / "killed" / "run" / "responses.parquet")
    pd.testing.assert_frame_equal(resumed, reference.responses)


def test_cli_prints_outputs_and_subgroup_table(tmp_path):
    path = small_survey(tmp_path)
    out = subprocess.run([sys.executable, "-m", "popsim", "run", str(path), "--quiet"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "Outputs in" in out.stdout and "mean_tv_expected" in out.stdout and "sex=woman" in out.stdout
    assert "it/s" not in out.stderr + out.stdout  # --quiet: no progress bar, popsim's or a library's


def test_subgroup_table_scores_the_answer_probabilities(tmp_path):
    """``mean_tv_expected`` scores the agents' recorded answer probabilities: one-hot probabilities of the sampled
    answers reproduce ``mean_tv`` in every subgroup, and agents that all hold the real answer shares score 0."""
    import json

    from popsim.eval.headline import headline_table, load_run
    from popsim.eval.metrics import weighted_distribution

    run_dir = runner.run(load_scenario(small_survey(tmp_path, agents=30)), verbose=False).run_dir
    table = headline_table(run_dir)
    assert table["mean_tv_expected"].between(0, 1).all()
    assert (table["mean_tv_expected"] != table["mean_tv"]).any()  # the draws' noise is gone
    responses = pd.read_parquet(run_dir / "responses.parquet")
    _, options, _ = load_run(run_dir)
    onehot = responses.assign(probs=[json.dumps({o: float(o == a) for o in options[q]})
                                     for q, a in zip(responses["question"], responses["answer"], strict=True)])
    onehot.to_parquet(run_dir / "responses.parquet")
    table = headline_table(run_dir)
    assert (table["mean_tv_expected"] == table["mean_tv"]).all()
    real = pd.read_parquet(run_dir / "heldout.parquet")
    shares = {q: weighted_distribution(real[q].dropna().to_numpy(object), opts,
                                       real.loc[real[q].notna(), "weight"].to_numpy()) for q, opts in options.items()}
    responses.assign(probs=[json.dumps(dict(zip(options[q], map(float, shares[q]), strict=True)))
                            for q in responses["question"]]).to_parquet(run_dir / "responses.parquet")
    table = headline_table(run_dir).set_index("subgroup")
    assert table.loc["all", "mean_tv_expected"] == 0.0 < table.loc["all", "mean_tv"]


def test_real_smollm_survey_run(tmp_path, smollm, encoder):
    """The whole pipeline once on the real packaged SmolLM2 and MiniLM (tiny sizes)."""
    scenario = load_scenario(small_survey(tmp_path, lm="smollm2-135m-instruct", agents=6))
    result = runner.run(scenario, lm=smollm, encoder=encoder, verbose=False)
    assert len(result.responses) == 6 * 4
    probs = result.responses["probs"].map(lambda s: sum(__import__("json").loads(s).values()))
    assert np.allclose(probs, 1.0, atol=1e-5)
    assert set(result.responses["answer"]) <= {"too little", "about right", "too much"}
    # the LM reads each agent's prompt: a constant model would give one distribution per question (4)
    assert result.responses["probs"].nunique() > 8
    from popsim.eval.headline import headline_table

    assert headline_table(result.run_dir)["mean_tv_expected"].between(0, 1).all()


@pytest.mark.parametrize("name", ["reviews", "network_survey"])
def test_shipped_scenarios_run_shrunk(tmp_path, name, smollm, encoder):
    """The shipped scenarios run as written, shrunk in size, on the real LM and encoder."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scenarios" / f"{name}.yaml"
    overrides = {"output": str(tmp_path / name), "simulation.agents": 4, "mop.n_personas": 2,
                 "mop.n_exemplars": 10, "mop.max_train_records": 8, "mop.epochs": 1, "data.max_rows": 200}
    scenario = load_scenario(path, overrides)
    result = runner.run(scenario, lm=smollm, encoder=encoder, verbose=False)
    rounds = scenario.simulation.rounds
    per_agent = 1 if scenario.kind == "reviews" else len(scenario.questions)
    assert len(result.responses) == 4 * per_agent * rounds
    if scenario.kind == "reviews":
        assert (result.responses["answer"].str.len() > 0).mean() >= 0.75
    if rounds > 1:
        assert sorted(result.responses["round"].unique()) == list(range(1, rounds + 1))


def test_every_method_runs_from_one_flag_and_reports_side_by_side(tmp_path, capsys):
    """`--method` switches MoP for each baseline on the same scenario; `popsim report` puts them side by side."""
    from popsim.cli import main

    path = small_survey(tmp_path)
    dirs = {}
    for method in ("mop", "uniform", "persona-only", "no-persona", "silicon"):
        dirs[method] = tmp_path / method
        assert main(["run", str(path), "--method", method, "--out", str(dirs[method]), "--quiet"]) == 0
    agents = {m: pd.read_parquet(d / "agents.parquet") for m, d in dirs.items()}
    for method in ("mop", "uniform"):
        assert (agents[method]["persona"] >= 0).all() and (agents[method]["exemplar"] >= 0).all()
    assert (agents["persona-only"]["persona"] >= 0).all() and (agents["persona-only"]["exemplar"] == -1).all()
    for method in ("no-persona", "silicon"):
        assert (agents[method][["persona", "exemplar"]] == -1).all().all()
        assert not (dirs[method] / "mop").exists()  # nothing to fit
    assert agents["uniform"]["temperature"].nunique() == 1  # tau_init, no learned temperatures
    # survey baselines without exemplars answer from the LM's own option probabilities (tau 1); reviews below
    for method in ("persona-only", "no-persona", "silicon"):
        assert set(agents[method]["temperature"]) == {1.0}
    reviews = load_scenario(Path(__file__).resolve().parents[1] / "scenarios" / "reviews.yaml")
    assert runner._baseline_temperature(reviews) == PRESETS["tuned"]["free_text"]["tau_init"]  # as MoP's
    # the same people are simulated by every method; only how they are prompted differs
    for method in agents:
        pd.testing.assert_series_equal(agents[method]["profile"], agents["mop"]["profile"])
    capsys.readouterr()
    assert main(["report", *map(str, dirs.values()), "--out", str(tmp_path / "report")]) == 0
    cells = pd.read_csv(tmp_path / "report" / "cells.csv")
    assert set(cells["method"]) == set(dirs)
    assert "no-persona" in (tmp_path / "report" / "report.md").read_text()


def test_fit_then_simulate_from_the_cli_equals_one_run(tmp_path, capsys):
    """`popsim fit` + `popsim simulate` give the responses `popsim run` gives, and `fit` applies lm.threads;
    `simulate` refuses a fit made with other settings."""
    import torch

    from popsim.cli import main

    path = small_survey(tmp_path, lm__threads=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert main(["fit", str(path), "--out", str(tmp_path / "split"), "--quiet"]) == 0
        assert torch.get_num_threads() == 1
        assert (tmp_path / "split" / "mop" / "fit_key").is_file()
        assert not (tmp_path / "split" / "responses.parquet").exists()
        # a fit made with other settings (here the seed) is refused, not silently refitted
        assert main(["simulate", str(path), "--out", str(tmp_path / "split"), "--seed", "1", "--quiet"]) == 2
        assert "fitted with other settings" in capsys.readouterr().err
        assert not (tmp_path / "split" / "manifest.json").exists()
        assert main(["simulate", str(path), "--out", str(tmp_path / "split"), "--quiet"]) == 0
        assert main(["run", str(path), "--out", str(tmp_path / "whole"), "--quiet"]) == 0
    finally:
        torch.set_num_threads(threads)
    split, whole = (pd.read_parquet(tmp_path / d / "responses.parquet") for d in ("split", "whole"))
    assert len(split) == 12 * 4
    pd.testing.assert_frame_equal(split, whole)


def test_reviews_prompt_layout_comes_from_the_scenario():
    """`reviews.persona_in_system` / `reviews.exemplar_turn` reach the prompts; the paper's layout by default."""
    from pathlib import Path

    from popsim.mop.prompts import build_prompt

    path = Path(__file__).resolve().parents[1] / "scenarios" / "reviews.yaml"
    plain = runner.prompt_style(load_scenario(path))
    assert plain == PromptStyle.reviews()
    style = runner.prompt_style(load_scenario(path, {"reviews.persona_in_system": True,
                                                     "reviews.exemplar_turn": True}))
    assert style.persona_in_system and style.exemplar_turn and style.task_intro == plain.task_intro
    prompt = build_prompt("You are a critic.", ("a cake you rate 2", "Dry."), "a tea you rate 5", style)
    assert [role for role, _ in prompt.messages] == ["system", "user", "assistant", "user"]
    assert runner.prompt_style(load_scenario(Path(path).with_name("survey.yaml"))) == PromptStyle.survey()


def test_every_mop_key_of_a_scenario_reaches_the_estimator():
    """Each `mop:` key is the MixtureOfPersonas parameter of the same name, set to the scenario's value."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scenarios" / "survey.yaml"
    changed = {"mop.n_personas": 5, "mop.n_exemplars": 40, "mop.top_m": 3, "mop.dim": 64, "mop.tau_init": 0.9,
               "mop.epochs": 2, "mop.learning_rate": 0.01, "mop.tau_learning_rate": 0.0, "mop.batch_size": 4,
               "mop.max_train_records": 50, "mop.balance": 0.5, "mop.stickiness": 2.0, "mop.gate_init_scale": 30.0,
               "mop.pair_embedding": "mean", "mop.calibrate_exemplars": True, "mop.persona_gate_init": "clusters",
               "mop.calibrate_personas": False, "mop.check_personas": True, "mop.learn_option_offsets": True,
               "mop.offset_learning_rate": 0.5, "seed": 11}
    scenario = load_scenario(path, changed)
    params = runner.mop_estimator(scenario, None, None, verbose=False).get_params()
    for key, value in changed.items():
        name = key.removeprefix("mop.")
        assert params["random_state" if name == "seed" else name] == value, name
    unset = set(type(scenario.mop).model_fields) - {k.removeprefix("mop.") for k in changed} - {
        "exemplar_questions", "exemplar_asked", "exemplars_per_agent"}
    assert all(params[name] == getattr(scenario.mop, name) for name in unset)
    assert params["style"] == PromptStyle.survey()


def test_a_setting_at_its_default_does_not_change_the_config_hash(tmp_path):
    """A new option whose default keeps the old behaviour must not make earlier run directories unresumable."""
    import json
    from pathlib import Path

    from popsim.config import config_hash
    from popsim.exceptions import RunDirectoryError

    path = Path(__file__).resolve().parents[1] / "scenarios" / "survey.yaml"
    plain = load_scenario(path)
    explicit = load_scenario(path, {"mop.persona_gate_init": "uniform", "mop.check_personas": False,
                                    "mop.exemplars_per_agent": 1})  # the file leaves them at their defaults
    changed = load_scenario(path, {"mop.check_personas": True})
    assert config_hash(explicit) == config_hash(plain) and config_hash(explicit, "mop") == config_hash(plain, "mop")
    assert config_hash(changed) != config_hash(plain) and config_hash(changed, "mop") != config_hash(plain, "mop")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "manifest.json").write_text(json.dumps({"config_hash": config_hash(plain)}))
    assert runner.check_run_dir(explicit, run_dir) == run_dir  # resumes
    with pytest.raises(RunDirectoryError, match="different config"):
        runner.check_run_dir(changed, run_dir)


def test_scale_covering_transcripts_show_every_answer_scale(tmp_path):
    """`cover_scales`: each exemplar transcript answers one question of every scale before it fills up at random,
    so an agent asked an agree / disagree item has seen its exemplar answer one (random picks often miss it)."""
    from popsim.data import load_population, survey_exemplars

    from .helpers import local_survey, survey_table

    data = survey_table(120)
    data["q3"] = np.random.default_rng(1).choice([1, 0, -1], len(data))

    def three_questions(cfg: dict) -> None:
        cfg["questions"][1]["options"] = {1: "agree", 0: "not sure", -1: "disagree"}
        cfg["questions"].append({"id": "q3", "column": "q3", "text": "Should we spend on schools?",
                                 "options": cfg["questions"][0]["options"]})

    population = load_population(load_scenario(local_survey(tmp_path, three_questions, data=data)))

    def share_showing_q2(cover: bool) -> float:
        pool = survey_exemplars(population, 60, n_questions=2, seed=0, cover_scales=cover)
        assert all(len(t.splitlines()) == 4 for t in pool.outputs)  # two questions, two answers each
        return float(np.mean(["Should we spend on roads?" in t for t in pool.outputs]))

    assert share_showing_q2(True) == 1.0
    assert share_showing_q2(False) < 0.85


@pytest.mark.parametrize("method", ["mop", "silicon"])
def test_a_new_question_without_data_is_asked_and_left_unscored(tmp_path, method):
    """A question with no `column` (a new question, as docs/scenarios.md's first example adds) is trained
    around and asked of every agent; the run table scores only the questions with real answers."""
    from popsim.cli import main

    def add_new_question(cfg):
        cfg["questions"].append({"id": "q3", "text": "Should we spend on museums?", "options": ["yes", "no"]})

    path = local_survey(tmp_path, add_new_question)
    assert main(["run", str(path), "--method", method, "--quiet"]) == 0
    responses = pd.read_parquet(tmp_path / "run" / "responses.parquet")
    assert responses.groupby("question")["agent"].nunique().to_dict() == {"q1": 6, "q2": 6, "q3": 6}
    assert set(responses.loc[responses["question"] == "q3", "answer"]) <= {"yes", "no"}
    assert "q_q3" not in pd.read_parquet(tmp_path / "run" / "heldout.parquet").columns
