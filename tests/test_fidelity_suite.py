"""The fidelity benchmark's survey pieces that need no LM: protocol (c)'s scale split and the calibration map."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from popsim.config import QuestionSpec
from popsim.sim.calibration import OptionBias

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from fidelity_suite.calibration import Calibration  # noqa: E402
from fidelity_suite.data import split_scales  # noqa: E402


def _questions(sizes: dict[tuple[str, ...], int]) -> list[QuestionSpec]:
    return [QuestionSpec(id=f"{scale[0]}{i}", text="?", options=list(scale))
            for scale, n in sizes.items() for i in range(n)]


def test_split_scales_holds_out_whole_scales_between_a_third_and_a_half():
    scales = {("a", "b"): 9, ("yes", "no"): 3, ("x", "y", "z"): 1, ("p", "q"): 1, ("m", "n"): 1}
    pop = SimpleNamespace(questions=_questions(scales))
    for seed in range(5):
        seen, unseen = split_scales(pop, seed)
        assert seen | unseen == {q.id for q in pop.questions} and not seen & unseen
        assert 15 / 3 <= len(unseen) <= 15 / 2
        held = {tuple(q.option_labels) for q in pop.questions if q.id in unseen}
        fitted = {tuple(q.option_labels) for q in pop.questions if q.id in seen}
        assert not held & fitted  # no held-out item shares a scale with a fitted one
    assert split_scales(pop, 3) == split_scales(pop, 3)


def test_split_scales_one_scale_holds_out_nothing():
    pop = SimpleNamespace(questions=_questions({("too little", "about right", "too much"): 6}))
    assert split_scales(pop, 0)[1] == set()


def test_calibration_sharpens_then_shifts_only_its_scale():
    p = np.array([0.6, 0.3, 0.1])
    same = Calibration(1.0, OptionBias({}), 0.0)
    assert same.adjust(("a", "b", "c"), p) == pytest.approx(p)
    sharp = Calibration(2.0, OptionBias({("a", "b", "c"): np.log([1.0, 2.0, 1.0])}), 0.0)
    expected = p**2 * [1.0, 2.0, 1.0]
    assert sharp.adjust(("a", "b", "c"), p) == pytest.approx(expected / expected.sum())
    other = p**2 / (p**2).sum()  # a scale without offsets (protocol (c)): only the sharpness transfers
    assert sharp.adjust(("x", "y", "z"), p) == pytest.approx(other)
