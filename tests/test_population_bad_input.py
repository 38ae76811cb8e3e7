"""Bad input in `population:` and `experiments:`: one exact error class, one line naming the key and the fix,
exit 2 from the CLI, and nothing written (the same matrix as tests/test_bad_input.py, for these sections)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from popsim.exceptions import DataError, ScenarioError

from .test_bad_input import Case, fails_in_one_line, put, scenario, tree

SEX = {"man": 0.48, "woman": 0.52}


def margins(value: dict, mode: str = "reweighted", **extra) -> object:
    return put("population", {"mode": mode, "margins": value, **extra})


def arms(*specs: dict) -> object:
    return put("experiments", {"arms": list(specs)})


CASES = [
    Case("margins-not-summing-to-one", ScenarioError,
         ("population.margins.sex shares sum to 0.900, not 1", "add up to 1"),
         scenario(margins({"sex": {"man": 0.4, "woman": 0.5}}))),
    Case("joint-margin-not-summing-to-one", ScenarioError,
         ("population.margins.sex x age shares sum to 1.200", "add up to 1"),
         scenario(margins({"sex x age": {"man": {"18-45": 0.3, "45-90": 0.3},
                                         "woman": {"18-45": 0.3, "45-90": 0.3}}}))),
    Case("margin-unknown-attribute", ScenarioError,
         ("population.margins.gender names attribute 'gender'", "not in data.attributes (sex, age)", "add it there"),
         scenario(margins({"gender": SEX}))),
    Case("joint-margin-too-shallow", ScenarioError,
         ("population.margins.sex x age needs one level of categories per attribute", "age's categories"),
         scenario(margins({"sex x age": SEX}))),
    Case("margin-unknown-category", DataError,
         ("population.margins.sex names category 'female' of attribute 'sex'", "(man, woman)", "use one of those"),
         scenario(margins({"sex": {"female": 0.5, "man": 0.5}}), command="run")),
    Case("margins-impossible", DataError,
         ("population.margins", "cannot be reached", "did not converge", "make the margins agree"),
         scenario(margins({"sex": SEX, "sex x age": {"man": {"18-45": 0.4, "45-90": 0.4},
                                                     "woman": {"18-45": 0.1, "45-90": 0.1}}}), command="run")),
    Case("reweighted-without-margins", ScenarioError,
         ("mode reweighted needs target `margins`", "add population.margins"),
         scenario(put("population", {"mode": "reweighted"}))),
    Case("margins-with-respondents-mode", ScenarioError,
         ("margins are targets for mode reweighted or synthetic", "set population.mode"),
         scenario(margins({"sex": SEX}, mode="respondents"))),
    Case("oversample-unknown-attribute", ScenarioError,
         ("population.oversample.by names attribute 'race'", "add it there"),
         scenario(put("population", {"oversample": {"by": ["race"], "min_agents": 2}}))),
    Case("oversample-more-than-agents", DataError,
         ("population.oversample puts 4 agents in each of 2 cells", "raise simulation.agents to at least 8"),
         scenario(put("population", {"oversample": {"by": ["sex"], "min_agents": 4}}), command="run")),
    Case("arm-without-agents", ScenarioError,
         ("experiments has 7 arms but simulation.agents is 6", "arm 'a6' would have no agents",
          "raise simulation.agents to at least 7"),
         scenario(arms(*({"name": f"a{i}"} for i in range(7))))),
    Case("arm-unknown-question", ScenarioError,
         ("experiments.arms.1.wording names question 'q9'", "use one of their ids"),
         scenario(arms({"name": "a"}, {"name": "b", "wording": {"q9": "Should we?"}}))),
    Case("arm-option-order-not-the-options", ScenarioError,
         ("experiments.arms.1.option_order.q1 must list each of", "got ['more', 'less']"),
         scenario(arms({"name": "a"}, {"name": "b", "option_order": {"q1": ["more", "less"]}}))),
    Case("single-arm", ScenarioError, ("an experiment needs at least two arms",), scenario(arms({"name": "a"}))),
    Case("control-not-an-arm", ScenarioError, ("control 'c' is not an arm (a, b)", "name one of them"),
         scenario(put("experiments", {"control": "c", "arms": [{"name": "a"}, {"name": "b"}]}))),
]


@pytest.fixture(scope="module", autouse=True)
def _own_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("POPSIM_CACHE_DIR", str(tmp_path_factory.mktemp("popsim-cache")))
        yield


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_population_or_experiment(case: Case, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    case_dir = tmp_path / "case"
    case_dir.mkdir()
    argv = case.make(case_dir, None)
    fails_in_one_line(case, argv, case_dir, tree(case_dir), capsys)
