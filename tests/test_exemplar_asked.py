"""`mop.exemplar_asked`: an exemplar's transcript always holds its answer to the question the agent is asked, in
the prompts MoP trains on, in the saved model and in simulation; on the real SmolLM2 that answer moves the
agent's."""

from __future__ import annotations

import numpy as np
import torch

from popsim.config import load_scenario
from popsim.data import load_population, profile_text, survey_exemplars, survey_records
from popsim.mop import MixtureOfPersonas, PromptStyle
from popsim.mop.objective import PairObjective
from popsim.sim.model import PopulationModel

from .helpers import small_survey


def test_transcripts_show_the_asked_answer_in_place_of_another(tmp_path):
    population = load_population(load_scenario(small_survey(tmp_path)))
    plain = survey_exemplars(population, 12, n_questions=2, seed=0)
    pool = survey_exemplars(population, 12, n_questions=2, seed=0, asked=True)
    assert pool.outputs == plain.outputs  # the default transcripts (and the pair embeddings) are unchanged
    assert all(plain.output_for(j, "natsci") == plain.outputs[j] for j in range(len(plain)))
    swapped = 0
    for j in range(len(pool)):
        assert pool.output_for(j, None) == pool.outputs[j]
        for qid, line in pool.answers[j].items():
            shown = pool.output_for(j, qid)
            assert line in shown and len(shown.splitlines()) == len(pool.outputs[j].splitlines())
            if qid in pool.shown[j]:
                assert shown == pool.outputs[j]
            else:
                swapped += 1
                assert shown != pool.outputs[j]
                # survey order kept: the lines appear in the order of the exemplar's answers
                ids = [q for q, text in pool.answers[j].items() if text in shown]
                assert ids == [q for q in pool.answers[j] if q in ids]
    assert swapped > 0


def test_training_simulation_and_saved_model_use_the_asked_answer(tmp_path, encoder):
    from popsim.lm.testing import HashLM

    population = load_population(load_scenario(small_survey(tmp_path)))
    records = survey_records(population).subset(np.arange(24))
    pool = survey_exemplars(population, 12, n_questions=1, seed=0, asked=True)
    mop = MixtureOfPersonas(HashLM(), encoder, n_personas=2, n_exemplars=12, epochs=1, batch_size=8,
                            val_fraction=0, style=PromptStyle.survey(), verbose=False).fit(records, pool)
    # the objective builds each pair's prompt with the record's question
    seen = []
    build = mop.prompt
    mop.prompt = lambda k, j, context, question_id=None: seen.append((j, question_id)) or build(k, j, context,
                                                                                                 question_id)
    PairObjective(mop, records, torch.from_numpy(encoder.encode(records.gate_inputs))).loss(np.arange(8))
    del mop.prompt
    assert {q for _, q in seen} <= set(records.question_ids[:8]) and all(q is not None for _, q in seen)
    mop.save(tmp_path / "mop")
    loaded = MixtureOfPersonas.load(tmp_path / "mop", lm=HashLM(), encoder=encoder)
    assert loaded.exemplars_.answers == pool.answers and loaded.exemplars_.shown == pool.shown
    agents = population.test.head(6).reset_index(drop=True)
    model = PopulationModel(questions=population.questions, lm=HashLM(), mop=loaded,
                            profiles=agents[[f"attr_{a}" for a in population.attributes]],
                            profile_texts=[profile_text(r, population.attributes) for _, r in agents.iterrows()],
                            method="mop", style=loaded.style_, seed=0, progress=False)
    checked = 0
    for agent in model.agents:
        for q in population.questions:
            expected = pool.answers[agent.exemplar].get(q.id)
            if expected is not None:
                prompt = model.prompt_for(agent, q)
                text = prompt if isinstance(prompt, str) else "\n".join(c for _, c in prompt.messages)
                assert expected in text
                checked += 1
    assert checked >= len(model.agents)


def test_real_smollm_follows_the_exemplars_answer_to_the_asked_question(tmp_path, smollm, encoder):
    """SmolLM2, real GSS answers: with the asked answer in every transcript, agents' answers agree with their
    exemplar's answer to that question more often than with transcripts of other questions."""
    population = load_population(load_scenario(small_survey(tmp_path, lm="smollm2-135m-instruct")))
    records = survey_records(population)
    records = records.subset(np.random.default_rng(0).choice(len(records), 24, replace=False))
    agents = population.test.head(24).reset_index(drop=True)

    def agreement(asked: bool) -> float:
        pool = survey_exemplars(population, 12, n_questions=1, seed=0, asked=asked)
        mop = MixtureOfPersonas(smollm, encoder, n_personas=2, n_exemplars=12, epochs=1, batch_size=8,
                                val_fraction=0, style=PromptStyle.survey(), verbose=False).fit(records, pool)
        model = PopulationModel(questions=population.questions, lm=smollm, mop=mop,
                                profiles=agents[[f"attr_{a}" for a in population.attributes]],
                                profile_texts=[profile_text(r, population.attributes) for _, r in agents.iterrows()],
                                method="mop", style=mop.style_, seed=0, progress=False)
        model.step()
        exemplar = {a.person_id: a.exemplar for a in model.agents}
        full = survey_exemplars(population, 12, n_questions=1, seed=0, asked=True).answers
        p = []
        for r in model.responses().itertuples():
            line = full[exemplar[r.agent]].get(r.question)
            if line is not None:
                p.append(r.probs[line.rsplit("A: ", 1)[1]])
        return float(np.mean(p))

    with_asked, without = agreement(True), agreement(False)
    assert with_asked > without + 0.05, (with_asked, without)


def test_stand_ins_show_the_most_similar_other_question_on_the_same_scale(tmp_path, encoder):
    """``nearest_questions`` + ``stand_ins``: an agent asked a question no exemplar answered (protocol b, a new
    item) sees its exemplar's answer to the most similar other question on that scale; saved and loaded."""
    from popsim.data import nearest_questions
    from popsim.lm.testing import HashLM

    population = load_population(load_scenario(small_survey(tmp_path)))
    ids = [q.id for q in population.questions]
    seen = set(ids[:-1])  # the last item is new: no pool member answered it
    stand_ins = nearest_questions(population.questions, seen, encoder, k=2)
    assert set(stand_ins) == set(ids)
    # every item here is on one scale: none has a neighbour on another scale
    assert set(nearest_questions(population.questions, seen, encoder, same_scale=False).values()) == {()}
    for q in population.questions:
        assert q.id not in stand_ins[q.id] and set(stand_ins[q.id]) <= seen and len(stand_ins[q.id]) == 2
        cosine = {o: float(encoder.encode([q.text])[0] @ encoder.encode([population.questions[ids.index(o)].text])[0])
                  for o in stand_ins[q.id]}
        assert cosine[stand_ins[q.id][0]] >= cosine[stand_ins[q.id][1]]
    pool = survey_exemplars(population, 12, n_questions=1, seed=0, question_ids=seen, asked=True,
                            stand_ins=stand_ins)
    new = ids[-1]
    for j in range(len(pool)):
        shown = pool.output_for(j, new)
        first = next(q for q in stand_ins[new] if q in pool.answers[j])
        assert shown == pool.answers[j][first]  # one answer, the nearest answered neighbour's
        for q in seen:  # seen questions show a neighbour too (never their own answer), as new ones will
            assert pool.answers[j].get(q, "\0") not in pool.output_for(j, q) or q in pool.shown[j]
    records = survey_records(population, question_ids=seen).subset(np.arange(16))
    mop = MixtureOfPersonas(HashLM(), encoder, n_personas=2, n_exemplars=12, epochs=1, batch_size=8,
                            val_fraction=0, style=PromptStyle.survey(), verbose=False).fit(records, pool)
    mop.save(tmp_path / "mop")
    loaded = MixtureOfPersonas.load(tmp_path / "mop", lm=HashLM(), encoder=encoder)
    assert loaded.exemplars_.stand_ins == stand_ins
    assert loaded.exemplars_.output_for(0, new) == pool.output_for(0, new)
