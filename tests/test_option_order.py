"""simulation.option_order: options listed in an order drawn per agent, or averaged over forward and reversed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from popsim import runner
from popsim.config import QuestionSpec, load_scenario
from popsim.data import load_population, survey_records
from popsim.lm.testing import HashLM
from popsim.mop.prompts import PromptStyle
from popsim.option_order import orders_for
from popsim.rundir import fit_key
from popsim.sim.model import PopulationModel

from .helpers import small_survey

QUESTION = QuestionSpec(id="q0", text="Is it good?", options=["yes", "no", "maybe"])


class FirstListedLM(HashLM):
    """Puts 0.9 on whichever option is listed first (the first-named option when none is listed)."""

    def option_logprobs(self, prompts, options, *, temperature=1.0):
        out = []
        for prompt, opts in zip(prompts, options, strict=True):
            text = self.render(prompt)
            listed = text.split("Options: ")[-1].split("\n")[0].split(" / ") if "Options: " in text else opts
            p = np.full(len(opts), 0.1 / (len(opts) - 1))
            p[list(opts).index(listed[0])] = 0.9
            out.append(np.log(p))
        return out


def _model(order: str, n: int = 300, seed: int = 0) -> PopulationModel:
    profiles = pd.DataFrame({"attr_sex": ["man", "woman"] * (n // 2)})
    texts = [f"sex: {s}" for s in profiles["attr_sex"]]
    return PopulationModel(questions=[QUESTION], lm=FirstListedLM(), mop=None, profiles=profiles,
                           profile_texts=texts, method="silicon", style=PromptStyle.survey(), progress=False,
                           seed=seed, option_order=order)


def _shares(model: PopulationModel) -> np.ndarray:
    answers = model.responses()["answer"]
    return np.array([(answers == o).mean() for o in QUESTION.option_labels])


def test_orders_are_seeded_per_agent_and_question_alone():
    a = orders_for("shuffled", 4, seed=3, who=17, question="q1")
    assert a == orders_for("shuffled", 4, seed=3, who=17, question="q1")  # no hidden state
    assert sorted(a[0]) == [0, 1, 2, 3]
    drawn = {orders_for("shuffled", 4, seed=3, who=w, question="q1")[0] for w in range(200)}
    assert len(drawn) == 24  # every permutation occurs across agents
    assert orders_for("averaged", 3, seed=0, who=0, question="q") == [(0, 1, 2), (2, 1, 0)]
    assert orders_for("unlisted", 3, seed=0, who=0, question="q") == [None]
    with pytest.raises(ValueError, match="option order must be one of"):
        orders_for("sideways", 3, seed=0, who=0, question="q")


def test_shuffling_spreads_a_first_position_lean_and_maps_answers_back():
    listed = _model("listed")
    listed.step()
    assert _shares(listed)[0] > 0.8  # everyone leans to the first-listed option
    shuffled = _model("shuffled")
    shuffled.step()
    shares = _shares(shuffled)
    assert shares.max() < 0.5 and shares.min() > 0.2  # the lean lands on a different option per agent
    frame = shuffled.responses()
    # each recorded order names the option the agent leaned to: the answer is the listed-first option most often
    first = frame["option_order"].map(lambda o: QUESTION.option_labels[int(o.split()[0])])
    assert (first == frame["answer"]).mean() > 0.8
    again = _model("shuffled")
    again.step()
    pd.testing.assert_frame_equal(frame, again.responses())  # same seed, same orders and answers


def test_averaging_forward_and_reversed_cancels_a_first_position_lean():
    model = _model("averaged", n=4)
    model.step()
    agent = model.agents[0]
    probs = agent.probs[(1, "q0")]
    # forward puts 0.9 on "yes", reversed 0.9 on "maybe": the mean is 0.475 / 0.05 / 0.475
    assert probs["yes"] == pytest.approx(0.475, abs=1e-5) and probs["maybe"] == pytest.approx(0.475, abs=1e-5)
    assert model.responses()["option_order"].iloc[0] == "0 1 2 | 2 1 0"


def test_training_records_use_the_same_rendering(tmp_path):
    scenario = load_scenario(small_survey(tmp_path, simulation__option_order="averaged"))
    population = load_population(scenario)
    plain = survey_records(population)
    both = survey_records(population, option_order="averaged", seed=scenario.seed)
    assert len(both.contexts) == 2 * len(plain.contexts)
    assert "Options:" in both.contexts[0] and "Options:" not in plain.contexts[0]
    assert np.isclose(both.weights.sum(), plain.weights.sum())  # each answer keeps its weight in total
    assert fit_key(scenario) != fit_key(load_scenario(small_survey(tmp_path / "b")))


@pytest.mark.slow
def test_shuffled_run_on_the_packaged_smollm2(tmp_path):
    """End to end on the real LM: every answer records its order, and the orders vary across agents."""
    path = small_survey(tmp_path, lm="smollm2-135m-instruct", agents=6, simulation__option_order="shuffled")
    result = runner.run(load_scenario(path), verbose=False)
    responses = pd.read_parquet(result.run_dir / "responses.parquet")
    assert responses["option_order"].notna().all()
    assert responses["option_order"].nunique() > 1
    scenario = load_scenario(path)
    labels = {q.id: set(q.option_labels) for q in scenario.questions}
    assert all(a in labels[q] for q, a in zip(responses["question"], responses["answer"], strict=True))


@pytest.mark.slow
def test_smollm2_reads_the_shuffled_listing_and_its_answers_map_back(smollm):
    """On the real LM, an agent shown a shuffled listing gets exactly the probabilities of a questionnaire that
    lists its options in that order (mapped back to the same wordings), and the order changes them."""
    question = QuestionSpec(id="q0", text="Are we spending too much, too little or about the right amount on "
                            "space exploration?", options=["too little", "about right", "too much"])
    profiles = pd.DataFrame({"attr_sex": ["man"] * 8})
    texts = ["sex: man; age: 40"] * 8  # one profile: only the listing differs between agents

    def step(order: str, q: QuestionSpec) -> PopulationModel:
        model = PopulationModel(questions=[q], lm=smollm, mop=None, profiles=profiles, profile_texts=texts,
                                method="silicon", style=PromptStyle.survey(), progress=False, seed=0,
                                option_order=order)
        model.step()
        return model

    frame = step("shuffled", question).responses()
    probs = {row.agent: np.array([row.probs[o] for o in question.option_labels])
             for row in frame.itertuples()}
    assert frame["option_order"].nunique() > 1
    for order, rows in frame.groupby("option_order"):
        listed_as = QuestionSpec(id="q0", text=question.text,
                                 options=[question.option_labels[int(i)] for i in order.split()])
        reference = step("listed", listed_as).responses()["probs"].iloc[0]
        expected = np.array([reference[o] for o in question.option_labels])
        for agent in rows["agent"]:
            np.testing.assert_allclose(probs[agent], expected, atol=1e-4)
    distinct = {tuple(np.round(p, 3)) for p in probs.values()}
    assert len(distinct) > 1  # the same person answers differently as the listing changes
