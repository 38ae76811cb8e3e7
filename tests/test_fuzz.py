"""Property tests (hypothesis, the fixed "ci" profile from conftest): the config loader and the data loader
either succeed or raise their own one-line error, never another exception; the survey metrics keep their
ranges, symmetries and invariances on any valid input and raise DataError on any invalid one."""

from __future__ import annotations

import copy
import math
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from popsim.config import Scenario, load_scenario, validate_scenario
from popsim.data import load_population
from popsim.eval import metrics
from popsim.exceptions import DataError, ScenarioError

from .helpers import local_survey_config, survey_table


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    """One folder for the whole module (hypothesis cannot use function-scoped fixtures per example)."""
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder)


# ------------------------------------------------------------------ config loader

scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)
PATHS = ["name", "kind", "seed", "data", "data.source", "data.weight", "data.test_fraction", "data.max_rows",
         "data.attributes", "data.attributes.sex", "data.attributes.sex.labels", "data.attributes.age.bins",
         "data.attributes.age.bin_labels", "questions", "questions.0", "questions.0.options", "questions.1.id",
         "questions.0.free_text", "mop", "mop.n_personas", "mop.n_exemplars", "mop.personas", "mop.tau_init",
         "simulation", "simulation.agents", "simulation.method", "simulation.network", "simulation.network.kind",
         "lm", "lm.name", "lm.dtype", "lm.threads", "encoder", "reviews", "output", "unknown", "mop.typo"]
DELETE = object()


def _mutate(cfg: dict, dotted: str, value: Any) -> None:
    """Set (or delete, for DELETE) the dotted key; list items are addressed by number; impossible paths are skipped."""
    node: Any = cfg
    *parents, leaf = dotted.split(".")
    for key in parents:
        if isinstance(node, list) and node and key.isdigit():
            node = node[int(key) % len(node)]
        elif isinstance(node, dict):
            node = node.setdefault(key, {})
        else:
            return
    if isinstance(node, list) and node and leaf.isdigit() and value is not DELETE:
        node[int(leaf) % len(node)] = value
    elif isinstance(node, dict):
        if value is DELETE:
            node.pop(leaf, None)
        else:
            node[leaf] = value


@given(st.lists(st.tuples(st.sampled_from(PATHS), values | st.just(DELETE)), min_size=1, max_size=4))
def test_mutated_config_gives_scenario_or_scenario_error(changes: list[tuple[str, Any]]) -> None:
    cfg = copy.deepcopy(local_survey_config(Path("run")))
    for dotted, value in changes:
        _mutate(cfg, dotted, value)
    try:
        assert isinstance(validate_scenario(cfg), Scenario)
    except ScenarioError as exc:
        assert len(str(exc).splitlines()) == 1


@given(st.dictionaries(st.text(max_size=10), values, max_size=6))
def test_random_mapping_gives_scenario_or_scenario_error(raw: dict) -> None:
    try:
        validate_scenario(raw)
    except ScenarioError as exc:
        assert len(str(exc).splitlines()) == 1


@given(st.text(max_size=200) | st.binary(max_size=200))
def test_random_file_gives_scenario_or_scenario_error(scratch: Path, content: str | bytes) -> None:
    path = scratch / "fuzz.yaml"
    path.write_bytes(content.encode("utf-8", "surrogatepass") if isinstance(content, str) else content)
    try:
        load_scenario(path)
    except ScenarioError as exc:
        assert len(str(exc).splitlines()) == 1


# ------------------------------------------------------------------ data loader

cells = st.one_of(st.none(), st.integers(-2, 3), st.floats(allow_nan=True, allow_infinity=True),
                  st.sampled_from(["1", "0", "-1", "", "NA", "x", "{0}"]), st.text(max_size=4))
COLUMNS = ["id", "sex", "age", "wt", "q1", "q2", "other"]


@given(st.lists(st.sampled_from(COLUMNS), unique=True, max_size=len(COLUMNS)), st.integers(0, 12), st.data())
def test_random_table_loads_or_raises_data_error(scratch: Path, columns: list[str], n_rows: int,
                                                 data: st.DataObject) -> None:
    frame = pd.DataFrame({c: data.draw(st.lists(cells, min_size=n_rows, max_size=n_rows), label=c) for c in columns})
    frame.to_csv(scratch / "data.csv", index=False)
    scenario = validate_scenario({**local_survey_config(scratch / "run"), "base_dir": str(scratch)})
    try:
        population = load_population(scenario)
    except DataError as exc:
        assert len(str(exc).splitlines()) == 1
        return
    assert len(population.train) + len(population.test) == len(population.respondents) > 0
    for q in ("q1", "q2"):
        assert set(population.respondents[f"q_{q}"].dropna()) <= {"more", "the same", "less"}
    assert (population.respondents["weight"] >= 0).all()


@given(st.binary(max_size=300))
def test_random_bytes_as_data_file_raise_data_error_or_load(scratch: Path, content: bytes) -> None:
    (scratch / "data.csv").write_bytes(content)
    scenario = validate_scenario({**local_survey_config(scratch / "run"), "base_dir": str(scratch)})
    try:
        load_population(scenario)
    except DataError as exc:
        assert len(str(exc).splitlines()) == 1


def test_fuzzed_table_base_case_loads(scratch: Path) -> None:
    """The unfuzzed table loads, so the property above does not pass by always raising."""
    survey_table().to_csv(scratch / "data.csv", index=False)
    scenario = validate_scenario({**local_survey_config(scratch / "run"), "base_dir": str(scratch)})
    assert len(load_population(scenario).respondents) == 40


# ------------------------------------------------------------------ metrics

shares = st.lists(st.floats(0, 1000, allow_subnormal=False), min_size=1, max_size=8).filter(lambda x: sum(x) > 1e-3)


@st.composite
def pairs(draw: st.DrawFn) -> tuple[list[float], list[float]]:
    p = draw(shares)
    q = draw(st.lists(st.floats(0, 1000, allow_subnormal=False), min_size=len(p), max_size=len(p))
             .filter(lambda x: sum(x) > 1e-3))
    return p, q


scales = st.floats(1e-3, 1e3)


@given(pairs(), scales)
def test_tv_and_js_are_symmetric_bounded_and_scale_free(pq: tuple[list[float], list[float]], c: float) -> None:
    p, q = pq
    for distance in (metrics.total_variation, metrics.js_distance):
        d = distance(p, q)
        assert 0.0 <= d <= 1.0
        assert d == pytest.approx(distance(q, p), abs=1e-9)
        assert d == pytest.approx(distance(np.multiply(p, c), q), abs=1e-9)
        assert distance(p, np.multiply(p, c)) == pytest.approx(0.0, abs=1e-6)


@given(pairs(), scales)
def test_wasserstein_and_representativeness(pq: tuple[list[float], list[float]], c: float) -> None:
    p, q = pq
    w = metrics.wasserstein_ordinal(p, q)
    assert 0.0 <= w <= len(p) - 1 + 1e-9
    assert w == pytest.approx(metrics.wasserstein_ordinal(q, p), abs=1e-9)
    assert w == pytest.approx(metrics.wasserstein_ordinal(np.multiply(p, c), q), abs=1e-9)
    assert metrics.wasserstein_ordinal(p, p) == pytest.approx(0.0, abs=1e-9)
    if len(p) >= 2:
        r = metrics.representativeness(p, q)
        assert 0.0 <= r <= 1.0
        assert metrics.representativeness(p, p) == pytest.approx(1.0)


@given(st.lists(st.sampled_from(["a", "b", "c", None, "refused"]), min_size=1, max_size=30), st.data())
def test_weighted_distribution_sums_to_one_and_ignores_weight_scale(codes: list[str | None],
                                                                    data: st.DataObject) -> None:
    weights = data.draw(st.lists(st.floats(0, 100, allow_subnormal=False), min_size=len(codes), max_size=len(codes)))
    c = data.draw(scales)
    try:
        dist = metrics.weighted_distribution(np.array(codes, dtype=object), ["a", "b", "c"], weights)
    except DataError:  # nobody (with positive weight) answered a, b or c
        return
    assert dist.sum() == pytest.approx(1.0) and (dist >= 0).all()
    scaled = metrics.weighted_distribution(np.array(codes, dtype=object), ["a", "b", "c"], np.multiply(weights, c))
    np.testing.assert_allclose(scaled, dist, atol=1e-9)


@given(st.lists(st.floats(0, 100, allow_subnormal=False), min_size=1, max_size=30), scales)
def test_kish_effective_n_is_between_one_and_n(weights: list[float], c: float) -> None:
    if not any(w > 0 for w in weights):
        with pytest.raises(DataError):
            metrics.kish_effective_n(weights)
        return
    n_eff = metrics.kish_effective_n(weights)
    assert 1.0 - 1e-9 <= n_eff <= len(weights) + 1e-9
    assert n_eff == pytest.approx(metrics.kish_effective_n(np.multiply(weights, c)))


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=0, max_size=6),
       st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=0, max_size=6))
def test_metrics_on_any_input_return_a_number_or_raise_data_error(p: list[float], q: list[float]) -> None:
    for metric in (metrics.total_variation, metrics.js_distance, metrics.wasserstein_ordinal,
                   metrics.representativeness):
        try:
            value = metric(p, q)
        except DataError as exc:
            assert len(str(exc).splitlines()) == 1
        else:
            assert math.isfinite(value) and value >= 0
