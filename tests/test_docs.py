"""The reference in docs/scenarios.md ("Every key") lists exactly the keys the scenario schema accepts.

A key added to the schema without a row, or a row left behind by a removed key, is a doc that lies to users:
validation would reject a documented key, or accept one nobody can find.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from popsim.config import (
    AttributeSpec,
    DataConfig,
    EncoderConfig,
    LMConfig,
    MopConfig,
    NetworkConfig,
    ReviewsSpec,
    Scenario,
    SimulationConfig,
)
from popsim.population_config import ArmSpec, ExperimentsConfig, OversampleConfig, PopulationConfig
from popsim.questions import Condition, QuestionSpec

DOC = Path(__file__).resolve().parents[1] / "docs" / "scenarios.md"

SECTIONS: dict[str, type[BaseModel]] = {
    "Top level": Scenario, "data": DataConfig, "data.attributes.NAME": AttributeSpec, "questions": QuestionSpec,
    "questions[].ask_if": Condition, "reviews": ReviewsSpec, "mop": MopConfig, "simulation": SimulationConfig,
    "simulation.network": NetworkConfig, "lm": LMConfig, "encoder": EncoderConfig, "population": PopulationConfig,
    "population.oversample": OversampleConfig, "experiments": ExperimentsConfig, "experiments.arms": ArmSpec,
}
INTERNAL = {"base_dir"}  # set by the loader from the file's folder, never written in YAML


def documented_keys() -> dict[str, set[str]]:
    """Each '### heading' of the 'Every key' part -> the keys in its table's first column."""
    text = DOC.read_text(encoding="utf-8").split("## Every key", 1)[1]
    out: dict[str, set[str]] = {}
    for block in re.split(r"^### ", text, flags=re.M)[1:]:
        heading, _, body = block.partition("\n")
        out[heading.strip()] = set(re.findall(r"^\| `([^`]+)` \|", body, flags=re.M))
    return out


def schema_keys(model: type[BaseModel]) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items()} - INTERNAL


def test_every_key_section_is_mapped_to_a_schema_model():
    assert set(documented_keys()) == set(SECTIONS)


@pytest.mark.parametrize("heading", sorted(SECTIONS))
def test_documented_keys_match_the_schema(heading):
    documented = documented_keys()[heading]
    accepted = schema_keys(SECTIONS[heading])
    where = f"docs/scenarios.md '### {heading}'"
    assert not accepted - documented, f"{where} has no row for {sorted(accepted - documented)}"
    assert not documented - accepted, f"{where} documents keys the schema rejects: {sorted(documented - accepted)}"
