"""The fidelity benchmark's survey pieces that need no LM: protocol (c)'s scale split, the calibration map, the
no-LM scale-shares reference and expected answer shares."""

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
from fidelity_suite.survey import (  # noqa: E402
    draw_distributions,
    expected_cell_tv,
    fixed_distributions,
    pooled_scale_shares,
    share_draws,
    stand_in_shares,
)


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


def test_scale_shares_draw_the_seen_items_pooled_weighted_shares_and_uniform_on_a_new_scale():
    import pandas as pd

    questions = _questions({("a", "b"): 2, ("x", "y", "z"): 1})  # a0, a1 seen; x0 on a scale nobody saw
    train = pd.DataFrame({"q_a0": ["a", "a", "b", "b"], "q_a1": ["a", "b", "b", None], "q_x0": ["x"] * 4,
                          "weight": [3.0, 1.0, 1.0, 1.0], "attr_sex": ["f", "m", "f", "m"]})
    pop = SimpleNamespace(questions=questions, train=train, attributes=["sex"])
    agents = pd.DataFrame({"attr_sex": ["f", "m"] * 5000})
    out = share_draws(pop, agents, questions, pooled_scale_shares(pop, questions, {"a0", "a1"}),
                      np.random.default_rng(0))
    assert list(out["attr_sex"]) == list(agents["attr_sex"]) and len(out) == len(agents)
    # pooled over a0 and a1, weighted: "a" has weight 3 + 1 + 3 = 7 of 3 + 1 + 1 + 1 + 3 + 1 + 1 = 11
    for q in ("a0", "a1"):
        assert (out[q] == "a").mean() == pytest.approx(7 / 11, abs=0.02)
    assert out["x0"].value_counts(normalize=True).to_numpy() == pytest.approx([1 / 3] * 3, abs=0.02)


class _WordEncoder:
    """Question texts embedded as one-hot vectors of their first word: same first word, most similar."""

    def encode(self, texts):
        words = sorted({t.split()[0] for t in texts})
        return np.array([[1.0 if t.split()[0] == w else 0.0 for w in words] for t in texts])


def test_stand_in_shares_are_the_most_similar_seen_items_shares_on_the_same_scale():
    import pandas as pd

    questions = [QuestionSpec(id="fly", text="planes are fine", options=["a", "b"]),
                 QuestionSpec(id="sit", text="seats are fine", options=["a", "b"]),
                 QuestionSpec(id="fly2", text="planes are rude", options=["a", "b"]),  # asked: fly is its stand-in
                 QuestionSpec(id="new", text="planes again", options=["x", "y"])]  # no seen item on its scale
    train = pd.DataFrame({"q_fly": ["a", "a", "a", "b"], "q_sit": ["b", "b", "b", "b"], "q_fly2": ["b"] * 4,
                          "q_new": ["x"] * 4, "weight": [1.0, 1.0, 2.0, 4.0]})
    pop = SimpleNamespace(questions=questions, train=train, attributes=[])
    asked = [questions[2], questions[3]]
    shares = stand_in_shares(pop, asked, {"fly", "sit"}, _WordEncoder())
    assert shares["fly2"] == pytest.approx([0.5, 0.5])  # fly's weighted shares (4 of 8 on "a"), not sit's
    assert shares["new"] == pytest.approx([0.5, 0.5])  # the pooled fallback: uniform on an unseen scale
    pooled = pooled_scale_shares(pop, asked, {"fly", "sit"})
    assert pooled["fly2"] == pytest.approx([0.25, 0.75])  # the scale-shares reference pools fly and sit


def _fake_calibration_run(aligned: bool):
    """Six items on one yes/no scale, real P(a) alternating 0.8 / 0.2; 40 agents whose option probabilities
    follow the real shares item by item (``aligned``) or oppose them."""
    import pandas as pd
    from fidelity_suite.calibration import fit_calibration

    questions = _questions({("a", "b"): 6})
    rng = np.random.default_rng(0)
    real_a = {q.id: 0.8 if i % 2 == 0 else 0.2 for i, q in enumerate(questions)}
    train = pd.DataFrame({f"q_{q}": np.where(rng.random(400) < p, "a", "b") for q, p in real_a.items()})
    train["weight"] = 1.0
    rows = train.iloc[:40].reset_index(drop=True)
    responses = pd.DataFrame([{"agent": i, "question": q, "probs": {"a": pa, "b": 1 - pa}}
                              for i in range(40) for q, p in real_a.items()
                              for pa in [0.7 if (p > 0.5) == aligned else 0.3]])
    model = SimpleNamespace(question_by_id={q.id: q for q in questions}, responses=lambda: responses)
    pop = SimpleNamespace(train=train)
    return fit_calibration(model, rows, pop, set(real_a), hold_out="items")


def test_transfer_calibration_keeps_signal_that_transfers_and_drops_signal_that_does_not():
    good, bad = _fake_calibration_run(aligned=True), _fake_calibration_run(aligned=False)
    assert good.sharpness > 1 and good.item_tv < 0.05
    # answers that oppose the real item differences: held out, only the scale's pooled shares are left
    assert bad.sharpness == 0 and bad.item_tv == pytest.approx(0.3, abs=0.05)
    assert "shares" in bad.describe() and "tau x" in good.describe()


def _survey_tables(n: int, seed: int):
    """A real table (weighted) and ``n`` agents with answers on two questions, attribute ``sex``."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    sex = rng.choice(["f", "m"], size=n)
    real = pd.DataFrame({"id": np.arange(n), "attr_sex": sex, "weight": rng.uniform(0.5, 2.0, n),
                         "q1": rng.choice(["yes", "no"], size=n), "q2": rng.choice(["lo", "mid", "hi"], size=n)})
    return real, {"q1": ["yes", "no"], "q2": ["lo", "mid", "hi"]}


def test_expected_shares_equal_sampled_shares_for_certain_answers():
    """One-hot distributions of the sampled answers: expected and sampled cell TVs are the same numbers."""
    from popsim.eval.subgroups import cell_fidelity

    real, options = _survey_tables(120, 0)
    synth = real.drop(columns=["weight", "id"]).sample(frac=1.0, random_state=1).reset_index(drop=True)
    synth.insert(0, "agent", np.arange(len(synth)))
    dists = {q: (synth[q].to_numpy(object)[:, None] == np.asarray(opts, dtype=object)[None, :]).astype(float)
             for q, opts in options.items()}
    expected = expected_cell_tv(dists, synth, real, options, ["sex"], max_order=1).set_index("cell")["tv_expected"]
    sampled = cell_fidelity(synth, real, options, ["sex"], max_order=1, n_boot=2).set_index("cell")["tv"]
    assert expected.to_dict() == pytest.approx(sampled.to_dict())
    assert set(expected.index) == {"all", "sex=f", "sex=m"}


def test_expected_shares_remove_the_draw_noise_of_a_perfect_simulator():
    """Agents whose distributions are their cell's real shares score TV 0 on expected shares, while one sampled
    answer each scores the draw noise; draw_distributions averages draws into the same shares."""
    import pandas as pd

    from popsim.eval.metrics import weighted_distribution

    real, options = _survey_tables(200, 2)
    agents = real[["attr_sex"]].copy()
    dists = {q: np.zeros((len(agents), len(o))) for q, o in options.items()}
    for s, g in real.groupby("attr_sex"):
        rows = (agents["attr_sex"] == s).to_numpy()
        for q, opts in options.items():
            dists[q][rows] = weighted_distribution(g[q].to_numpy(object), opts, g["weight"].to_numpy(float))
    tv = expected_cell_tv(dists, agents, real, options, ["sex"], max_order=1).set_index("cell")["tv_expected"]
    assert tv[["sex=f", "sex=m"]].to_numpy() == pytest.approx([0.0, 0.0], abs=1e-12)
    # the whole population mixes the cells by head count here, the real one by weight: close, not equal
    assert tv["all"] < 0.01

    rng = np.random.default_rng(3)

    def draw(_: int) -> pd.DataFrame:
        return pd.DataFrame({q: [opts[rng.choice(len(opts), p=p)] for p in dists[q]] for q, opts in options.items()})

    one_draw = draw(0)
    one_hot = {q: (one_draw[q].to_numpy(object)[:, None] == np.asarray(o, dtype=object)).astype(float)
               for q, o in options.items()}
    sampled = expected_cell_tv(one_hot, agents, real, options, ["sex"], max_order=1)["tv_expected"]
    assert (sampled.to_numpy() > tv.to_numpy() + 0.02).all()  # ~100 agents per cell: visible draw noise
    averaged = draw_distributions(draw, options, len(agents), 400)
    assert averaged["q2"] == pytest.approx(dists["q2"], abs=0.12)
    assert averaged["q1"].sum(axis=1) == pytest.approx(np.ones(len(agents)))
    flat = fixed_distributions({"q1": np.array([2.0, 2.0])}, 3)
    assert flat["q1"] == pytest.approx(np.full((3, 2), 0.5))


def test_text_methods_from_saved_fits_give_the_rows_of_the_fitted_models(shared_data, tiny_lm, encoder, tmp_path,
                                                                       monkeypatch):
    """The command line runs a text dataset as a fit job (fits saved) and one job per method (fits loaded): each
    method's row must be the one the fitted models in memory give (same texts, same scores)."""
    from fidelity_suite.config import settings
    from fidelity_suite.text import fit_text_models, generate_method, load_text_models

    monkeypatch.setenv("POPSIM_CACHE_DIR", str(tmp_path / "cache"))
    cfg = settings("quick", ["text.n_train=40", "text.n_real=16", "text.n_gen=8", "text.n_personas=2",
                             "text.n_exemplars=12", "text.max_train_records=8", "text.max_new_tokens=8",
                             "text.mauve_seeds=1", "text.mauve_buckets=2"])["text"]
    fitted = fit_text_models("sst2", cfg, tiny_lm, encoder, dev=True, seed=0, log=lambda msg: None,
                             save_dir=tmp_path / "fits")
    loaded = load_text_models(tmp_path / "fits", tiny_lm, encoder)
    columns = ["fid", "mauve", "kl_cos", "label_fid", "distinct2", "accuracy", "mean_words"]
    for method in ("mop", "mop-random-personas"):  # one per saved fit
        (row, texts), (row2, texts2) = (generate_method("sst2", method, *models, cfg, tiny_lm, encoder, dev=True,
                                                        seed=0, log=lambda msg: None) for models in (fitted, loaded))
        assert texts == texts2  # the same persona, exemplar, temperature and text per context
        assert [row[c] for c in columns] == pytest.approx([row2[c] for c in columns])
    assert fitted[0].personas_[0].text != fitted[1].personas_[0].text  # the ablation's own personas came back
    assert [p.text for p in loaded[1].personas_] == [p.text for p in fitted[1].personas_]
