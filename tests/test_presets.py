"""MoP presets: one home for the defaults, resolved per kind of record, overridden key by key."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from popsim.config import MopConfig, validate_scenario
from popsim.exceptions import ScenarioError
from popsim.lm.testing import HashLM
from popsim.mop import MixtureOfPersonas, PromptStyle, Records
from popsim.mop.presets import PRESET_KEYS, PRESETS

CONTEXTS = [f"a movie you rate {1 + i % 10}/10, number {i}" for i in range(30)]
REVIEWS = [("great fun film" if i % 3 else "boring slow plot") for i in range(30)]
SCALE = ("yes", "no")


@pytest.mark.parametrize("preset", ["tuned", "paper"])
def test_fit_resolves_the_preset_for_the_kind_of_record_and_user_keys_win(encoder, preset, tmp_path):
    text = Records(CONTEXTS, REVIEWS)
    choice = Records(CONTEXTS, ["yes" if i % 2 else "no" for i in range(30)], [SCALE] * 30)
    base = dict(n_personas=2, n_exemplars=10, epochs=1, batch_size=8, verbose=False, preset=preset)
    on_text = MixtureOfPersonas(HashLM(), encoder, style=PromptStyle.reviews(), **base).fit(text)
    on_choice = MixtureOfPersonas(HashLM(), encoder, style=PromptStyle.survey(), **base).fit(choice)
    assert on_text.settings_ == PRESETS[preset]["free_text"]
    assert on_choice.settings_ == PRESETS[preset]["choice"]
    fixed = PRESETS[preset]["free_text"]["tau_learning_rate"] == 0  # else one epoch moves tau a little
    np.testing.assert_allclose(on_text.temperatures_, PRESETS[preset]["free_text"]["tau_init"],
                               rtol=1e-6 if fixed else 0.05)
    assert bool(on_choice.option_offsets_) == PRESETS[preset]["choice"]["learn_option_offsets"]
    overridden = MixtureOfPersonas(HashLM(), encoder, style=PromptStyle.reviews(), balance=0.25, tau_init=0.7,
                                   **base).fit(text)
    assert overridden.settings_["balance"] == 0.25 and overridden.settings_["tau_init"] == 0.7
    overridden.save(tmp_path / "m")
    assert MixtureOfPersonas.load(tmp_path / "m", encoder=encoder).settings_ == overridden.settings_


def test_presets_differ_where_the_paper_leaves_choices_open():
    paper, tuned = PRESETS["paper"]["choice"], PRESETS["tuned"]["choice"]
    assert paper["balance"] == 0 and paper["stickiness"] == 1 and paper["gate_init_scale"] == 0
    assert not paper["learn_option_offsets"] and paper["tau_init"] == 0.6
    assert tuned["gate_init_scale"] > 0 and tuned["learn_option_offsets"]
    assert PRESETS["tuned"]["free_text"]["tau_learning_rate"] == 0  # free text samples at a fixed temperature


def test_the_scenario_schema_holds_no_default_of_its_own():
    """Every `mop:` key is an estimator parameter, unset unless the scenario sets it, so the defaults live in
    the estimator's signature and the presets only."""
    estimator = inspect.signature(MixtureOfPersonas.__init__).parameters
    for name, field in MopConfig.model_fields.items():
        if name in {"exemplar_questions", "exemplar_asked", "exemplars_per_agent"}:  # how exemplars are built, shown
            continue
        assert name in estimator, name
        if name != "preset":
            assert field.default is None, name
    assert MopConfig.model_fields["preset"].default == estimator["preset"].default == "tuned"
    for key in PRESET_KEYS:
        assert estimator[key].default is None, key  # a preset-governed key defers to the preset
    assert MopConfig(n_personas=3).estimator_params() == {"preset": "tuned", "n_personas": 3}


def test_get_params_lists_every_constructor_argument():
    model = MixtureOfPersonas(n_personas=5, preset="paper")
    names = [p for p in inspect.signature(MixtureOfPersonas.__init__).parameters if p != "self"]
    assert list(model.get_params()) == names
    assert model.get_params()["preset"] == "paper" and model.set_params(top_m=2).top_m == 2


def test_an_unknown_preset_is_a_one_line_error():
    raw = {"name": "x", "kind": "reviews", "data": {"source": "x.csv"}, "reviews": {"text_column": "t"},
           "mop": {"preset": "best"}}
    with pytest.raises(ScenarioError, match=r"mop\.preset") as err:
        validate_scenario(raw)
    assert "\n" not in str(err.value)
