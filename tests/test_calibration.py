"""Learned option bias: offsets that reproduce real answer shares, applied by the model, learned by `run`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from popsim import runner
from popsim.config import QuestionSpec, load_scenario
from popsim.exceptions import ModelLoadError, ScenarioError
from popsim.lm.testing import HashLM
from popsim.mop.prompts import PromptStyle
from popsim.sim.calibration import OptionBias, answer_shares
from popsim.sim.model import PopulationModel

from .helpers import local_survey, small_survey, survey_table

SCALE = ("too little", "about right", "too much")


def _lean(n: int, seed: int) -> list[tuple[tuple[str, ...], np.ndarray]]:
    """Answer probabilities leaning hard on the last option, as SmolLM2's do on GSS items."""
    rng = np.random.default_rng(seed)
    return [(SCALE, p) for p in rng.dirichlet([0.5, 0.5, 6.0], size=n)]


def test_offsets_reproduce_the_target_shares_and_keep_each_answers_lean():
    probs = _lean(400, 0)
    target = {SCALE: np.array([0.5, 0.35, 0.15])}
    bias = OptionBias.fit(probs, target)
    adjusted = np.array([bias.adjust(SCALE, p) for _, p in probs])
    assert np.allclose(adjusted.mean(0), target[SCALE], atol=1e-4)
    assert np.allclose(bias.before[SCALE], np.mean([p for _, p in probs], axis=0))
    raw = np.array([p for _, p in probs])
    # the offsets move the marginal, not the order of answers: log-odds between options shift by a constant
    assert np.allclose(np.log(adjusted[:, 0] / adjusted[:, 2]) - np.log(raw[:, 0] / raw[:, 2]),
                       bias.offsets[SCALE][0] - bias.offsets[SCALE][2], atol=1e-6)
    other = np.array([0.2, 0.8])
    assert bias.adjust(("yes", "no"), other) is other  # a scale it was not fitted on passes through


def test_offsets_survive_json_and_a_missing_option_stays_finite():
    bias = OptionBias.fit(_lean(100, 1), {SCALE: np.array([0.6, 0.4, 0.0])})
    again = OptionBias.from_json(json.loads(json.dumps(bias.to_json())))
    assert set(again.offsets) == {SCALE}
    assert np.allclose(again.offsets[SCALE], bias.offsets[SCALE], atol=1e-6)
    assert np.isfinite(bias.offsets[SCALE]).all()
    shares = np.mean([bias.adjust(SCALE, p) for _, p in _lean(100, 1)], axis=0)
    assert shares[2] < 0.001


def test_answer_shares_pool_a_scales_questions_by_weight_and_skip_missing():
    qs = [QuestionSpec(id=i, text="?", options=list(SCALE)) for i in ("a", "b")]
    frame = pd.DataFrame({"q_a": ["too little", "too much", None], "q_b": ["about right", "too little", "too much"]})
    shares = answer_shares(frame, qs, np.array([2.0, 1.0, 1.0]))[SCALE]
    weights = {"too little": 2.0 + 1.0, "about right": 2.0, "too much": 1.0 + 1.0}  # row 3 of q_a is missing
    assert np.allclose(shares, [weights[o] / 7.0 for o in SCALE])


def test_population_model_draws_answers_from_the_shifted_probabilities():
    questions = [QuestionSpec(id=f"q{i}", text=f"Question {i}?", options=list(SCALE)) for i in range(3)]
    profiles = pd.DataFrame({"attr_sex": ["man", "woman"] * 20})
    texts = [f"sex: {s}; id {i}" for i, s in enumerate(profiles["attr_sex"])]

    def answers(bias):
        model = PopulationModel(questions=questions, lm=HashLM(), mop=None, profiles=profiles, profile_texts=texts,
                                method="silicon", style=PromptStyle.survey(), progress=False, option_bias=bias)
        model.step()
        return model.responses()

    raw = answers(None)
    pushed = answers(OptionBias({SCALE: np.array([0.0, 200.0, 0.0])}))
    assert (raw["answer"] != "about right").any()
    assert (pushed["answer"] == "about right").all()
    assert np.allclose([sum(p.values()) for p in pushed["probs"]], 1.0)


def test_learned_bias_moves_a_run_to_the_real_shares_and_is_reused_on_resume(tmp_path):
    plain = runner.run(load_scenario(small_survey(tmp_path / "plain", agents=40)), verbose=False)
    path = small_survey(tmp_path / "learned", agents=40, simulation__option_bias="learned",
                        simulation__calibration_agents=48)
    scenario = load_scenario(path)
    learned = runner.run(scenario, verbose=False)
    saved = scenario.run_dir / "option_bias.json"
    entry = json.loads(saved.read_text())[0]
    target = dict(zip(entry["options"], entry["target"], strict=True))

    def tv(responses: pd.DataFrame) -> float:
        shares = responses["answer"].value_counts(normalize=True)
        return 0.5 * sum(abs(shares.get(o, 0.0) - t) for o, t in target.items())

    assert tv(plain.responses) > 0.4  # the hash LM leans on one option like the real one does
    assert tv(learned.responses) < tv(plain.responses) / 2
    assert np.allclose(entry["after"], entry["target"], atol=1e-5)  # the fit reached the real shares
    assert "option_bias" in json.loads((scenario.run_dir / "manifest.json").read_text())["timings"]
    # killed after its first chunk of answers (offsets already on disk), then resumed: the same bytes
    killed = small_survey(tmp_path / "killed", agents=40, simulation__option_bias="learned",
                          simulation__calibration_agents=48)
    cmd = [sys.executable, "-m", "popsim", "run", str(killed), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts, deadline = tmp_path / "killed" / "run" / "parts", time.monotonic() + 300
    while not list(parts.glob("part-*.parquet")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)  # from outside, once the first chunk of answers is on disk
    assert proc.wait() == -signal.SIGKILL and not (tmp_path / "killed" / "run" / "responses.parquet").exists()
    saved_killed = tmp_path / "killed" / "run" / "option_bias.json"
    stamp = saved_killed.stat().st_mtime_ns
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    assert saved_killed.stat().st_mtime_ns == stamp  # reused, not refitted
    assert ((tmp_path / "killed" / "run" / "responses.parquet").read_bytes()
            == (scenario.run_dir / "responses.parquet").read_bytes())


def test_a_garbled_option_bias_file_is_a_one_line_error_naming_it(tmp_path):
    path = small_survey(tmp_path, agents=8, simulation__option_bias="learned", simulation__calibration_agents=8)
    runner.run(load_scenario(path), verbose=False)
    saved = tmp_path / "run" / "option_bias.json"
    saved.write_text('[{"options": ["too little"], "offsets": "oops"}]')
    (tmp_path / "run" / "responses.parquet").unlink()
    with pytest.raises(ModelLoadError, match="option_bias.json is not a readable option-bias file.*delete it"):
        runner.run(load_scenario(path), verbose=False)


def test_calibration_counts_only_the_questions_each_respondent_answered(tmp_path, monkeypatch):
    """Real shares skip missing answers, so the simulated side must skip the same (agent, question) pairs:
    here q2 was asked of men only (a split ballot), and the offsets see 48 q1 answers but only the men's q2."""
    data = survey_table(200)
    data.loc[data["sex"] == 1, "q2"] = np.nan
    path = local_survey(tmp_path, lambda c: c["simulation"].update(option_bias="learned", calibration_agents=48),
                        data=data)
    seen = []
    fit = OptionBias.fit.__func__
    monkeypatch.setattr(OptionBias, "fit", classmethod(lambda cls, probs, target, **kw: seen.append(probs)
                                                       or fit(cls, probs, target, **kw)))
    runner.run(load_scenario(path), verbose=False)
    assert len(seen) == 1 and 48 + 10 < len(seen[0]) < 96 - 10  # q1 for all 48, q2 for the men drawn


def test_non_finite_probabilities_refuse_to_fit():
    with pytest.raises(ValueError, match="non-finite"):
        OptionBias.fit([(SCALE, np.array([np.nan, 0.5, 0.5]))], {SCALE: np.array([0.4, 0.4, 0.2])})


def test_option_bias_is_for_surveys_only(tmp_path):
    from pathlib import Path

    reviews = Path(__file__).resolve().parents[1] / "scenarios" / "reviews.yaml"
    with pytest.raises(ScenarioError, match="option_bias: learned is for surveys"):
        load_scenario(reviews, {"simulation.option_bias": "learned"})


def test_real_smollm_learned_bias_undoes_its_option_lean(tmp_path, smollm):
    """On the real packaged SmolLM2 (silicon: profile in the prompt, no MoP), which says "too much" to most GSS
    spending items: learned offsets bring the simulated shares near the training respondents'."""
    common = dict(lm="smollm2-135m-instruct", agents=24, simulation__method="silicon")
    plain = runner.run(load_scenario(small_survey(tmp_path / "plain", **common)), lm=smollm, verbose=False)
    scenario = load_scenario(small_survey(tmp_path / "learned", **common, simulation__option_bias="learned",
                                          simulation__calibration_agents=24))
    learned = runner.run(scenario, lm=smollm, verbose=False)
    entry = json.loads((scenario.run_dir / "option_bias.json").read_text())[0]
    target = dict(zip(entry["options"], entry["target"], strict=True))
    before = dict(zip(entry["options"], entry["before"], strict=True))
    assert before["too much"] > 0.6 > target["too much"] + 0.3  # the lean the offsets have to undo

    def tv(responses: pd.DataFrame) -> float:
        shares = responses["answer"].value_counts(normalize=True)
        return 0.5 * sum(abs(shares.get(o, 0.0) - t) for o, t in target.items())

    assert tv(plain.responses) > 0.4
    assert tv(learned.responses) < 0.2


def test_cli_flag_sets_the_option_bias():
    from popsim.cli import _overrides, _parser

    args = _parser().parse_args(["run", "survey.yaml", "--option-bias", "learned"])
    assert _overrides(args) == {"simulation.option_bias": "learned"}
    with pytest.raises(SystemExit):
        _parser().parse_args(["run", "survey.yaml", "--option-bias", "maybe"])


def test_real_smollm_mop_learns_option_offsets_and_simulates_with_them(tmp_path, smollm, encoder):
    """`learn_option_offsets` on the real SmolLM2 and real GSS answers: the offsets learned beside the gates lower
    the training objective on the answers they were fitted to (what they are for), survive save / load, and
    the population's answers are drawn with them (the same agents without them answer differently)."""
    import copy

    import torch

    from popsim.data import load_population, profile_text, survey_exemplars, survey_records
    from popsim.mop import MixtureOfPersonas
    from popsim.mop.objective import PairObjective

    population = load_population(load_scenario(small_survey(tmp_path, lm="smollm2-135m-instruct")))
    records = survey_records(population)
    records = records.subset(np.random.default_rng(0).choice(len(records), 40, replace=False))
    pool = survey_exemplars(population, 12, n_questions=2)
    mop = MixtureOfPersonas(smollm, encoder, n_personas=2, n_exemplars=12, epochs=3, batch_size=8, val_fraction=0,
                            style=PromptStyle.survey(), learn_option_offsets=True, verbose=False).fit(records, pool)
    (scale, learned), = mop.option_offsets_.items()  # GSS spending items share one scale
    assert np.abs(learned).max() > 0.1
    bare = copy.copy(mop)
    bare.option_offset_params_ = {}  # the same gates, pairs and answer streams, without the offsets
    h_x = torch.from_numpy(encoder.encode(records.gate_inputs))
    with torch.no_grad():  # the training objective (top-M pairs) over the records it was fitted on
        trained, without = (float(PairObjective(m, records, h_x).loss(np.arange(len(records)))) for m in (mop, bare))
    assert trained < without - 0.01
    mop.save(tmp_path / "mop")
    mop = MixtureOfPersonas.load(tmp_path / "mop", lm=smollm, encoder=encoder)
    np.testing.assert_array_equal(mop.option_offsets_[scale], learned)
    bare = copy.copy(mop)
    bare.option_offset_params_ = {}
    agents = population.test.head(16).reset_index(drop=True)

    def answers(model_mop) -> pd.Series:
        model = PopulationModel(questions=population.questions, lm=smollm, mop=model_mop,
                                profiles=agents[[f"attr_{a}" for a in population.attributes]],
                                profile_texts=[profile_text(r, population.attributes) for _, r in agents.iterrows()],
                                method="mop", style=mop.style_, seed=0, progress=False)
        model.step()
        return model.responses()["answer"].value_counts(normalize=True)

    shifted, raw = answers(mop), answers(bare)
    lowest = scale[int(np.argmin(learned))]  # the option the offsets push down is chosen less
    assert shifted.get(lowest, 0.0) < raw.get(lowest, 0.0) - 0.05
