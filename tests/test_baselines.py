import numpy as np
import pandas as pd
import pytest

from popsim.baselines import hot_deck
from popsim.exceptions import DataError


def _donors():
    return pd.DataFrame({
        "attr_race": ["a", "a", "b", "b", "c"],
        "attr_party": ["x", "y", "x", "x", "y"],
        "q1": ["yes", "no", "maybe", "maybe", "no"],
        "weight": [1.0, 1.0, 1.0, 0.0, 1.0],
    })


def test_hot_deck_copies_a_donor_of_the_same_cell():
    recipients = pd.DataFrame({"attr_race": ["a", "a", "b"], "attr_party": ["x", "y", "x"]})
    out = hot_deck(_donors(), recipients, ["attr_race", "attr_party"], ["q1"], np.random.default_rng(0))
    assert out["q1"].tolist() == ["yes", "no", "maybe"]
    assert out["donor"].tolist() == [0, 1, 2]  # donor 3 has weight 0
    assert out["donor_level"].tolist() == [2, 2, 2]


def test_hot_deck_falls_back_to_coarser_cells():
    recipients = pd.DataFrame({"attr_race": ["c", "d"], "attr_party": ["x", "x"]})
    out = hot_deck(_donors(), recipients, ["attr_race", "attr_party"], ["q1"], np.random.default_rng(0))
    assert out["donor_level"].tolist() == [1, 0]
    assert out.loc[0, "q1"] == "no"


def test_hot_deck_treats_a_missing_attribute_as_a_cell_of_its_own():
    donors = _donors().assign(attr_party=["x", None, "x", "x", "y"])  # GSS has respondents without a party
    recipients = pd.DataFrame({"attr_race": ["a", "a"], "attr_party": [np.nan, "x"]})
    out = hot_deck(donors, recipients, ["attr_race", "attr_party"], ["q1"], np.random.default_rng(0))
    assert out["donor"].tolist() == [1, 0]
    assert out["donor_level"].tolist() == [2, 2]


def test_hot_deck_needs_the_columns():
    with pytest.raises(DataError):
        hot_deck(_donors(), pd.DataFrame({"attr_race": ["a"]}), ["attr_sex"], ["q1"], np.random.default_rng(0))
