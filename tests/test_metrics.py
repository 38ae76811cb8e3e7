"""popsim.eval.metrics: hand-computed values, agreement with scipy, and properties (hypothesis)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import jensenshannon
from scipy.stats import wasserstein_distance

from popsim.eval import (
    conditional_fid,
    distinct_n,
    downstream_scores,
    fid,
    js_distance,
    kish_effective_n,
    kl_cosine,
    mauve_score,
    representativeness,
    total_variation,
    wasserstein_ordinal,
    weighted_distribution,
)
from popsim.exceptions import DataError


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    """MAUVE's PCA (a dense SVD) slows ~30x when BLAS threads compete with other busy processes on 2 cores."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield

# ----------------------------------------------------------------------------------------------------
# survey distributions


def test_total_variation_hand_values():
    assert total_variation([1, 0], [0, 1]) == pytest.approx(1.0)
    assert total_variation([0.5, 0.5], [1, 0]) == pytest.approx(0.5)
    assert total_variation([2, 2], [1, 0]) == pytest.approx(0.5)  # inputs are normalised
    assert total_variation([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == 0.0


def test_js_distance_hand_values_and_scipy():
    assert js_distance([1, 0], [0, 1]) == pytest.approx(1.0)
    assert js_distance([0.3, 0.7], [0.3, 0.7]) == 0.0
    rng = np.random.default_rng(1)
    for _ in range(5):
        p, q = rng.random(6), rng.random(6)
        assert js_distance(p, q) == pytest.approx(jensenshannon(p / p.sum(), q / q.sum(), base=2))


def test_wasserstein_ordinal_hand_values_and_scipy():
    assert wasserstein_ordinal([1, 0, 0], [0, 0, 1]) == pytest.approx(2.0)
    assert wasserstein_ordinal([0.5, 0.5, 0], [0, 0.5, 0.5]) == pytest.approx(1.0)
    # shares [2, 1, 1]/4 over positions 0..2 are the samples [0, 0, 1, 2]
    assert wasserstein_ordinal([2, 1, 1], [0, 1, 3]) == pytest.approx(
        wasserstein_distance([0, 0, 1, 2], [1, 2, 2, 2])
    )


def test_representativeness_hand_values():
    assert representativeness([0.1, 0.2, 0.7], [0.1, 0.2, 0.7]) == pytest.approx(1.0)
    assert representativeness([1, 0, 0], [0, 0, 1]) == pytest.approx(0.0)
    assert representativeness([1, 0, 0], [0, 1, 0]) == pytest.approx(0.5)  # 1 - 1/2
    with pytest.raises(DataError, match="at least 2"):
        representativeness([1], [1])


def test_distribution_inputs_are_checked():
    with pytest.raises(DataError, match="same number of options"):
        total_variation([0.5, 0.5], [0.2, 0.3, 0.5])
    with pytest.raises(DataError, match="non-negative"):
        js_distance([-0.1, 1.1], [0.5, 0.5])
    with pytest.raises(DataError, match="sums to zero"):
        wasserstein_ordinal([0, 0], [0.5, 0.5])


def test_weighted_distribution_counts_weights_and_skips_missing():
    codes = [1, 2, 2, np.nan, 9]  # NaN is missing, 9 (a refusal) is not an option
    assert np.allclose(weighted_distribution(codes, [1, 2, 3]), [1 / 3, 2 / 3, 0])
    assert np.allclose(weighted_distribution(codes, [1, 2, 3], [1, 1, 2, 5, 5]), [0.25, 0.75, 0])
    assert np.allclose(weighted_distribution(codes, [3, 2, 1], [1, 1, 2, 5, 5]), [0, 0.75, 0.25])
    text = np.array(["yes", "no", None, "yes"], dtype=object)
    assert np.allclose(weighted_distribution(text, ["yes", "no"], [1, 2, 9, 1]), [0.5, 0.5])
    nullable = pd.Series([1, 2, None, 2], dtype="Int64")
    assert np.allclose(weighted_distribution(nullable, [1, 2]), [1 / 3, 2 / 3])


def test_weighted_distribution_is_invariant_to_weight_scale():
    rng = np.random.default_rng(0)
    codes, weights = rng.integers(1, 5, 200), rng.gamma(2.0, 1.0, 200)
    base = weighted_distribution(codes, [1, 2, 3, 4], weights)
    assert np.allclose(weighted_distribution(codes, [1, 2, 3, 4], 1234.5 * weights), base)


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ([1, -1, 1], "non-negative"),
        ([1, np.nan, 1], "NaN"),
        ([0, 0, 0], "all zero"),
        ([1, 1], "one weight per code"),
    ],
)
def test_bad_weights_raise_data_error(weights, message):
    with pytest.raises(DataError, match=message):
        weighted_distribution([1, 2, 1], [1, 2], weights)


def test_weighted_distribution_without_any_valid_answer_raises():
    with pytest.raises(DataError, match="no weighted respondent"):
        weighted_distribution([np.nan, 9], [1, 2])
    with pytest.raises(DataError, match="duplicates"):
        weighted_distribution([1, 2], [1, 1])


def test_kish_effective_n():
    assert kish_effective_n(np.ones(10)) == pytest.approx(10.0)
    assert kish_effective_n([1, 1, 2]) == pytest.approx(16 / 6)
    assert kish_effective_n([3.0, 3.0, 6.0]) == pytest.approx(16 / 6)
    with pytest.raises(DataError, match="all zero"):
        kish_effective_n([0, 0])


# ----------------------------------------------------------------------------------------------------
# hypothesis properties


@st.composite
def distribution_pairs(draw):
    n = draw(st.integers(2, 8))
    share = st.floats(0, 100, allow_nan=False, allow_infinity=False)
    p = draw(st.lists(share, min_size=n, max_size=n).filter(lambda v: sum(v) > 0))
    q = draw(st.lists(share, min_size=n, max_size=n).filter(lambda v: sum(v) > 0))
    return np.array(p), np.array(q)


@settings(max_examples=50, deadline=None)
@given(distribution_pairs())
def test_tv_and_js_lie_in_unit_interval(pq):
    p, q = pq
    assert 0.0 <= total_variation(p, q) <= 1.0
    assert 0.0 <= js_distance(p, q) <= 1.0


@settings(max_examples=50, deadline=None)
@given(distribution_pairs())
def test_tv_js_w1_are_symmetric(pq):
    p, q = pq
    assert total_variation(p, q) == pytest.approx(total_variation(q, p), abs=1e-12)
    assert js_distance(p, q) == pytest.approx(js_distance(q, p), abs=1e-9)
    assert wasserstein_ordinal(p, q) == pytest.approx(wasserstein_ordinal(q, p), abs=1e-9)


@settings(max_examples=50, deadline=None)
@given(distribution_pairs())
def test_representativeness_lies_in_unit_interval(pq):
    p, q = pq
    assert 0.0 <= representativeness(p, q) <= 1.0
    assert representativeness(p, p) == pytest.approx(1.0)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.floats(0.01, 100, allow_nan=False)), min_size=1, max_size=40
    ),
    st.floats(1e-3, 1e3, allow_nan=False),
)
def test_weighted_distribution_scale_invariance(rows, scale):
    codes = np.array([c for c, _ in rows])
    weights = np.array([w for _, w in rows])
    base = weighted_distribution(codes, [0, 1, 2, 3], weights)
    assert np.allclose(weighted_distribution(codes, [0, 1, 2, 3], scale * weights), base)
    assert base.sum() == pytest.approx(1.0)


# ----------------------------------------------------------------------------------------------------
# text metrics on synthetic Gaussian embeddings


@pytest.fixture(scope="module")
def gaussians():
    rng = np.random.default_rng(0)
    same_a = rng.normal(size=(300, 32))
    same_b = rng.normal(size=(300, 32))
    other = rng.normal(size=(300, 32)) * 0.3 + 2.0
    return same_a, same_b, other


def test_fid_of_a_set_with_itself_is_zero_and_shift_adds_its_squared_norm(gaussians):
    a, b, other = gaussians
    assert fid(a, a) == pytest.approx(0.0, abs=1e-6)
    assert fid(a, a + 1.0) == pytest.approx(32.0, rel=1e-6)  # same covariance: ||shift||^2
    assert 0 < fid(a, b) < fid(a, other)


def test_conditional_fid_sees_texts_written_for_the_wrong_label_which_pooled_fid_cannot(gaussians):
    a, b, other = gaussians
    real = np.vstack([a[:150], other[:150]])
    real_labels = ["x"] * 150 + ["y"] * 150
    synth = np.vstack([b[:100], other[150:250]])
    right, swapped = ["x"] * 100 + ["y"] * 100, ["y"] * 100 + ["x"] * 100
    # pooled FID scores the same texts the same whatever they were written for (finite-sample level, ~2.4)
    assert fid(real, synth) < 5.0
    assert conditional_fid(real, real_labels, synth, right) < 5.0
    assert conditional_fid(real, real_labels, synth, swapped) > 100.0  # each label's texts sit on the other's
    by_hand = np.average([fid(a[:150], b[:100]), fid(other[:150], other[150:250])], weights=[150, 150])
    assert conditional_fid(real, real_labels, synth, right) == pytest.approx(by_hand)
    with pytest.raises(DataError, match="one label per embedding row"):
        conditional_fid(real, real_labels[:-1], synth, right)


def test_fid_matches_closed_form_in_one_dimension():
    rng = np.random.default_rng(3)
    x, y = rng.normal(0, 1, (500, 1)), rng.normal(2, 3, (400, 1))
    expected = (x.mean() - y.mean()) ** 2 + (x.std(ddof=1) - y.std(ddof=1)) ** 2
    assert fid(x, y) == pytest.approx(expected, rel=1e-9)


def test_fid_handles_singular_covariances():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(10, 32)), rng.normal(size=(12, 32))  # fewer points than dimensions
    value = fid(a, b)
    assert np.isfinite(value) and value > 0


def test_mauve_same_distribution_high_unrelated_low(gaussians):
    a, b, other = gaussians
    same = mauve_score(a, b)
    assert same > 0.9
    assert mauve_score(a, other) < 0.2
    assert mauve_score(a, b) == same  # seeded: deterministic


def test_kl_cosine_identical_zero_and_different_positive(gaussians):
    a, b, other = gaussians
    assert kl_cosine(a, a) == pytest.approx(0.0, abs=1e-12)
    assert kl_cosine(a, b) < 0.05
    assert kl_cosine(a, other) > 1.0


def test_kl_cosine_subsampling_is_deterministic(gaussians):
    a, _, other = gaussians
    first = kl_cosine(a, other, max_points=100, seed=7)
    assert kl_cosine(a, other, max_points=100, seed=7) == first
    assert np.isfinite(first) and first > 0
    with pytest.raises(DataError, match="bins"):
        kl_cosine(a, other, bins=0)


def test_embedding_shapes_are_checked(gaussians):
    a, _, _ = gaussians
    with pytest.raises(DataError, match="dimension"):
        fid(a, a[:, :10])
    with pytest.raises(DataError, match="2-D"):
        kl_cosine(a[0], a)


def test_distinct_n_hand_values():
    texts = ["the cat sat", "The cat ran"]
    assert distinct_n(texts, n=1) == pytest.approx(4 / 6)  # the, cat, sat, ran of 6 tokens
    assert distinct_n(texts, n=2) == pytest.approx(3 / 4)  # (the cat) twice
    assert distinct_n(["a a a a"], n=1) == pytest.approx(1 / 4)
    assert distinct_n(["one"], n=2) == 0.0
    with pytest.raises(DataError, match="list of texts"):
        distinct_n("the cat sat")


def test_downstream_on_separable_data_is_accurate():
    rng = np.random.default_rng(5)

    def sample(n):
        y = rng.integers(0, 3, n)
        return rng.normal(size=(n, 16)) + 3.0 * np.eye(16)[y], y

    x_train, y_train = sample(150)
    x_test, y_test = sample(150)
    scores = downstream_scores(x_train, y_train, x_test, y_test)
    assert set(scores) == {"accuracy", "macro_f1"}
    assert scores["accuracy"] > 0.9 and scores["macro_f1"] > 0.9


def test_downstream_with_a_single_training_class_predicts_it():
    rng = np.random.default_rng(6)
    scores = downstream_scores(
        rng.normal(size=(5, 4)), ["a"] * 5, rng.normal(size=(4, 4)), ["a", "a", "b", "b"]
    )
    assert scores["accuracy"] == pytest.approx(0.5)
    assert scores["macro_f1"] == pytest.approx((2 / 3 + 0) / 2)  # F1_a = 2*0.5*1/1.5, F1_b = 0


# ----------------------------------------------------------------------------------------------------
# real sentence embeddings (packaged MiniLM on real AG News titles)


def test_text_metrics_on_real_sentence_embeddings(encoder, shared_data):
    news = pd.read_csv(
        shared_data / "ag-news-test" / "ag_news_test.csv", header=None, names=["label", "title", "text"]
    )
    sports = news.loc[news.label == 2, "title"].tolist()[:200]
    business = news.loc[news.label == 3, "title"].tolist()[:100]
    emb = encoder.encode(sports + business)
    sports_a, sports_b, biz = emb[:100], emb[100:200], emb[200:]
    assert mauve_score(sports_a, sports_b) > mauve_score(sports_a, biz) + 0.3
    assert fid(sports_a, sports_b) < fid(sports_a, biz)
    train_x, train_y = np.vstack([sports_a, biz[:50]]), np.r_[np.zeros(100), np.ones(50)]
    test_x, test_y = np.vstack([sports_b, biz[50:]]), np.r_[np.zeros(100), np.ones(50)]
    assert downstream_scores(train_x, train_y, test_x, test_y)["accuracy"] > 0.8


def test_column_weights_is_one_rule_for_every_table():
    """Absent column: equal weights; otherwise the checks of weighted_distribution, naming the column (the
    questionnaire section turned NaN into 0 while the subgroup tables raised, and the experiment section took
    all-zero weights)."""
    import pandas as pd

    from popsim.eval.metrics import column_weights

    frame = pd.DataFrame({"w": [1.0, 2.0, 0.0]})
    assert column_weights(frame, None).tolist() == [1, 1, 1] and column_weights(frame, "weight").tolist() == [1, 1, 1]
    assert column_weights(frame, "w").tolist() == [1.0, 2.0, 0.0]
    for bad, says in [([1.0, np.nan, 1.0], "NaN"), ([1.0, -1.0, 1.0], "non-negative"), ([0.0, 0.0, 0.0], "all zero")]:
        with pytest.raises(DataError, match=f"column w.*{says}"):
            column_weights(pd.DataFrame({"w": bad}), "w")
