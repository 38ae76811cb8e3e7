"""mop.exemplars_per_agent: an agent draws k exemplars from its Omega_k(x) and is shown all k."""

from __future__ import annotations

import pandas as pd
import pytest

from popsim import runner
from popsim.config import load_scenario
from popsim.mop.prompts import PromptStyle, build_prompt

from .helpers import small_survey


def test_several_exemplars_render_in_order_and_one_renders_as_before():
    style = PromptStyle.survey()
    one = build_prompt("A persona.", ("x1", "Q: a?\nA: yes"), "Q: b?", style)
    assert one == build_prompt("A persona.", [("x1", "Q: a?\nA: yes")], "Q: b?", style)
    two = build_prompt("A persona.", [("x1", "Q: a?\nA: yes"), ("x2", "Q: c?\nA: no")], "Q: b?", style)
    assert two.index("A: yes") < two.index("A: no") < two.index("Q: b?")
    chat = build_prompt(None, [("a film", "Great."), ("a book", "Dull.")], "a song",
                        PromptStyle(kind="chat", exemplar_turn=True))
    texts = [m[1] for m in chat.messages]  # the instruction opens the first user turn
    assert texts[0].endswith("a film") and texts[1:] == ["Great.", "a book", "Dull.", "a song"]


def _run(tmp_path, k: int, method: str = "mop") -> tuple[pd.DataFrame, runner.RunResult]:
    path = small_survey(tmp_path, agents=12, mop__exemplars_per_agent=k, simulation__method=method)
    result = runner.run(load_scenario(path), verbose=False)
    return pd.read_parquet(result.run_dir / "responses.parquet"), result


@pytest.mark.parametrize("method", ["mop", "uniform"])
def test_agents_hold_distinct_extra_exemplars_and_keep_their_first_draw(tmp_path, method):
    one, _ = _run(tmp_path / "k1", 1, method)
    three, _ = _run(tmp_path / "k3", 3, method)
    first = one.groupby("agent")["exemplar"].first()
    assert first.equals(three.groupby("agent")["exemplar"].first())  # the paper's draw is unchanged
    assert one["more_exemplars"].isna().all()
    extra = three.groupby("agent")["more_exemplars"].first().str.split().map(lambda js: [int(j) for j in js])
    assert (extra.map(len) == 2).all()
    assert all(first[a] not in js and len(set(js)) == 2 for a, js in extra.items())
    again, _ = _run(tmp_path / "k3b", 3, method)
    assert again["more_exemplars"].equals(three["more_exemplars"])  # seeded
    # the extras reach the prompts: with the first draw unchanged, only they can move the answer probabilities
    moved = one.set_index(["agent", "question"])["probs"] != three.set_index(["agent", "question"])["probs"]
    assert moved.mean() > 0.5  # not all: hash-lm's extreme probabilities can round to the same values


@pytest.mark.slow
def test_two_exemplars_on_the_packaged_smollm2(tmp_path):
    path = small_survey(tmp_path, lm="smollm2-135m-instruct", agents=4, mop__exemplars_per_agent=2)
    result = runner.run(load_scenario(path), verbose=False)
    responses = pd.read_parquet(result.run_dir / "responses.parquet")
    assert responses["more_exemplars"].notna().all()
    assert len(responses) == 4 * len(load_scenario(path).questions)
