"""Subgroup fidelity and the HTML/Markdown report, on a small synthetic survey generated here.

The real population (600 weighted respondents) answers 3 ordinal questions with probabilities that depend on
sex, race and age group. A "good" run draws its agents' answers from the same model; a "bad" run answers
uniformly. Round 1 of both runs is uniform noise, so only the last round must be scored.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from popsim.eval import (
    BANNER,
    build_report,
    cell_fidelity,
    cell_question_fidelity,
    noise_floor_curve,
    persona_composition,
    question_errors,
    question_order,
    question_shares,
    respondent_table,
    split_half_noise_floor,
    subgroup_cells,
    total_variation,
    weighted_distribution,
)
from popsim.eval.answers import wilson_band
from popsim.eval.page import Figure, Table
from popsim.eval.subgroups import _norm, _onehot, _tv_rows
from popsim.eval.verdicts import family_verdicts

OPTS = ["low", "mid", "high"]
OPTIONS = {"q1": OPTS, "q2": OPTS, "q3": OPTS}
ATTRS = ["sex", "race", "age_group"]
N_BOOT = 100


def _attributes(rng: np.random.Generator, n: int) -> pd.DataFrame:
    return pd.DataFrame({
        "attr_sex": rng.choice(["female", "male"], n),
        "attr_race": rng.choice(["white", "black", "other"], n, p=[0.6, 0.25, 0.15]),
        "attr_age_group": rng.choice(["18-29", "30-44", "45-64", "65+"], n, p=[0.2, 0.3, 0.3, 0.2]),
    })


def _probs(a: pd.DataFrame, j: int) -> np.ndarray:
    s = 1.5 * (a["attr_sex"] == "female").to_numpy() - 2.0 * (a["attr_race"] == "black").to_numpy() + 0.5 * j
    s = s + a["attr_age_group"].map({"18-29": -1.0, "30-44": 0.0, "45-64": 0.5, "65+": 1.5}).to_numpy()
    logits = np.stack([np.zeros_like(s), 0.5 * s, s], axis=1)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _draw(rng: np.random.Generator, p: np.ndarray) -> np.ndarray:
    return np.array(OPTS)[(rng.random(len(p))[:, None] > p.cumsum(axis=1)).sum(axis=1).clip(max=2)]


def make_real(n: int = 600, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    real = _attributes(rng, n)
    for j, q in enumerate(OPTIONS):
        real[q] = _draw(rng, _probs(real, j))
    real.loc[rng.random(n) < 0.05, "q2"] = np.nan  # some item non-response
    real["weight"] = rng.lognormal(0.0, 0.3, n)
    return real


def make_responses(n: int = 600, seed: int = 2, *, uniform: bool = False) -> pd.DataFrame:
    """Long responses frame with 2 rounds; round 1 is uniform noise for both runs."""
    rng = np.random.default_rng(seed)
    agents = _attributes(rng, n)
    persona = rng.integers(0, 4, n)
    parts = []
    for rnd in (1, 2):
        for j, q in enumerate(OPTIONS):
            p = np.full((n, 3), 1 / 3) if uniform or rnd == 1 else _probs(agents, j)
            part = agents.assign(agent=np.arange(n), round=rnd, question=q, answer=_draw(rng, p), persona=persona,
                                 exemplar=0, temperature=1.0)
            part["probs"] = [json.dumps(dict(zip(OPTS, row))) for row in p]
            parts.append(part)
    return pd.concat(parts, ignore_index=True)


@pytest.fixture(scope="module")
def real() -> pd.DataFrame:
    return make_real()


@pytest.fixture(scope="module")
def good() -> pd.DataFrame:
    return make_responses()


@pytest.fixture(scope="module")
def bad() -> pd.DataFrame:
    return make_responses(uniform=True, seed=3)


@pytest.fixture(scope="module")
def good_cells(good, real) -> pd.DataFrame:
    return cell_fidelity(good, real, OPTIONS, ATTRS, n_boot=N_BOOT, seed=0, persona_col="persona")


@pytest.fixture(scope="module")
def bad_cells(bad, real) -> pd.DataFrame:
    return cell_fidelity(bad, real, OPTIONS, ATTRS, n_boot=N_BOOT, seed=0)


@pytest.fixture(scope="module")
def report(good, bad, real, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("report")
    return build_report({"good": good, "uniform": bad}, real, OPTIONS, ATTRS, out, n_boot=N_BOOT, worst_k=5,
                        by="age_group", wording={"q1": "How much do you like soup?"})


def test_subgroup_cells_cover_all_values_and_pairs(real):
    cells = subgroup_cells(real, ATTRS)
    names = [c.name for c in cells]
    assert names[0] == "all" and len(names) == len(set(names))
    assert len(cells) == 1 + (2 + 3 + 4) + (2 * 3 + 2 * 4 + 3 * 4)
    assert "sex=female" in names and "sex=female & race=black" in names
    by_name = dict(zip(names, cells))
    assert by_name["sex=female & race=black"].order == 2
    expected = ((real["attr_sex"] == "female") & (real["attr_race"] == "black")).to_numpy()
    np.testing.assert_array_equal(by_name["sex=female & race=black"].mask(real), expected)
    # the values of one attribute partition the population
    assert sum(c.mask(real).sum() for c in cells if c.attributes == "race") == len(real)
    third = subgroup_cells(real, ["attr_sex", "race", "age_group"], max_order=3)
    assert len(third) == len(cells) + 2 * 3 * 4 and third[-1].order == 3


def test_respondent_table_keeps_last_round(good):
    wide = respondent_table(good)
    assert len(wide) == 600 and set(OPTIONS) <= set(wide.columns) and "attr_race" in wide.columns
    last = good[(good["round"] == 2) & (good["question"] == "q1")].set_index("agent")["answer"]
    assert (wide.set_index("agent")["q1"] == last).all()


def test_good_run_beats_uniform_run(good_cells, bad_cells):
    overall_good = good_cells.loc[good_cells["cell"] == "all", "tv"].item()
    overall_bad = bad_cells.loc[bad_cells["cell"] == "all", "tv"].item()
    assert overall_good < overall_bad
    assert good_cells["tv"].mean() < bad_cells["tv"].mean()
    assert good_cells["representativeness"].mean() > bad_cells["representativeness"].mean()
    assert good_cells["worse_than_floor"].mean() < bad_cells["worse_than_floor"].mean()
    assert bad_cells.loc[bad_cells["cell"] == "all", "worse_than_floor"].item()


def test_cell_table_columns_and_sizes(good_cells, real):
    for col in ["cell", "attributes", "order", "real_n", "real_eff_n", "synth_n", "tv", "tv_ci_low", "tv_ci_high",
                "representativeness", "noise_floor_tv", "suppressed", "worse_than_floor", "top_persona"]:
        assert col in good_cells.columns
    overall = good_cells.iloc[0]
    assert overall["cell"] == "all" and overall["real_n"] == len(real) and overall["synth_n"] == 600
    assert (good_cells["real_eff_n"] <= good_cells["real_n"] + 1e-9).all()


def test_point_estimate_uses_the_metrics(good, real):
    long = cell_question_fidelity(good, real, OPTIONS, ATTRS, max_order=0)
    wide = respondent_table(good)
    for q in OPTIONS:
        ok = real[q].notna()
        p = weighted_distribution(real.loc[ok, q], OPTS, real.loc[ok, "weight"])
        expected = total_variation(p, weighted_distribution(wide[q], OPTS))
        assert long.loc[long["question"] == q, "tv"].item() == pytest.approx(expected)


def test_vectorised_bootstrap_tv_matches_total_variation(real):
    codes = pd.Categorical(real["q2"], categories=OPTS).codes
    w = real["weight"].to_numpy()
    shares = _norm((w[None, :]) @ _onehot(codes, 3))
    np.testing.assert_allclose(shares[0], weighted_distribution(real["q2"], OPTS, w))
    q = np.array([[0.2, 0.3, 0.5]])
    assert _tv_rows(shares, q)[0] == pytest.approx(total_variation(shares[0], q[0]))


def test_suppression_below_min_n(good, real):
    cells = cell_fidelity(good, real, OPTIONS, ATTRS, min_n=100, n_boot=20)
    small = cells["real_n"] < 100
    assert small.any() and (~small).any()
    assert cells.loc[small, "suppressed"].all() and not cells.loc[~small, "suppressed"].any()
    figures = ["tv", "tv_ci_low", "tv_ci_high", "representativeness", "noise_floor_tv"]
    assert cells.loc[small, figures].isna().all().all()
    assert cells.loc[~small, figures].notna().all().all()
    assert not cells.loc[small, "worse_than_floor"].any()


def test_confidence_intervals_contain_the_estimate(good_cells, bad_cells):
    for cells in (good_cells, bad_cells):
        scored = cells[~cells["suppressed"]]
        assert len(scored) > 20
        assert (scored["tv_ci_low"] <= scored["tv"]).all() and (scored["tv"] <= scored["tv_ci_high"]).all()
        assert (scored["tv_ci_high"] > scored["tv_ci_low"]).all()


def test_seeded_results_are_reproducible(good, real, good_cells):
    again = cell_fidelity(good, real, OPTIONS, ATTRS, n_boot=N_BOOT, seed=0, persona_col="persona")
    pd.testing.assert_frame_equal(again, good_cells)


def test_noise_floor_decreases_with_cell_size(real, good_cells):
    curve = noise_floor_curve(real, OPTIONS, [10, 40, 160, 600], n_rep=100, seed=0)
    assert list(curve.columns) == ["n", "tv", "tv_low", "tv_high"]
    assert np.all(np.diff(curve["tv"]) < 0)
    assert ((curve["tv_low"] <= curve["tv"]) & (curve["tv"] <= curve["tv_high"])).all()
    # the per-cell floor is larger for small cells than for the whole population
    scored = good_cells[~good_cells["suppressed"]]
    small = scored.loc[scored["real_n"] < 60, "noise_floor_tv"].mean()
    assert small > scored.loc[scored["cell"] == "all", "noise_floor_tv"].item()


def test_split_half_floor_is_real_vs_real_and_tracks_the_bootstrap_floor(real, good_cells):
    halves = split_half_noise_floor(real, OPTIONS, ATTRS, n_rep=100, seed=0)
    assert list(halves["cell"]) == list(good_cells["cell"])
    scored = halves.merge(good_cells, on="cell")
    scored = scored[~scored["suppressed"]]
    assert ((scored["split_half_low"] <= scored["split_half_tv"])
            & (scored["split_half_tv"] <= scored["split_half_high"])).all()
    # halves of n/2 vs a size-matched n-vs-n floor: about sqrt(2) apart, never wildly different
    ratio = (scored["split_half_tv"] / scored["noise_floor_tv"]).to_numpy()
    assert 1.0 < np.median(ratio) < 2.0, ratio
    # smaller cells: larger real-vs-real distance
    assert np.corrcoef(np.log(scored["real_n_x"]), scored["split_half_tv"])[0, 1] < -0.5
    # a perfect copy of the real table split against itself is what the simulator's "good" run approaches
    good_all = good_cells.loc[good_cells["cell"] == "all", "tv"].item()
    assert halves.loc[halves["cell"] == "all", "split_half_tv"].item() < good_all + 0.05


def test_persona_composition_shares_sum_to_one(good):
    comp = persona_composition(good, ["sex", "race"])
    assert set(comp.columns) == {"persona", "n_agents", "attribute", "value", "share"}
    sums = comp.groupby(["persona", "attribute"])["share"].sum()
    np.testing.assert_allclose(sums, 1.0)
    assert comp.groupby("persona")["n_agents"].first().sum() == 600


def test_report_files(report):
    for key in ["cells", "worst_cells", "noise_floor", "longtail", "report_md", "report_html"]:
        assert report[key].is_file() and report[key].stat().st_size > 0
    out = report["cells"].parent
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    cells = pd.read_csv(report["cells"])
    assert set(cells["method"]) == {"good", "uniform"}
    assert {"cell", "real_n", "real_eff_n", "synth_n", "tv", "tv_ci_low", "tv_ci_high", "noise_floor_tv",
            "suppressed", "worse_than_floor", "representativeness", "split_half_tv"} <= set(cells.columns)
    worst = pd.read_csv(report["worst_cells"])
    assert worst.groupby("method").size().max() <= 5
    assert report["longtail"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = report["report_html"].read_text()
    assert BANNER in page and 'id="longtail-plot"' in page and "data:image/png;base64," in page
    assert "http://" not in page and "https://" not in page  # self-contained
    assert BANNER in report["report_md"].read_text()


def test_report_reads_real_beside_simulated_per_question(report):
    out = report["report_html"].parent
    shares = pd.read_csv(report["questions"])
    assert set(shares["source"]) == {"real", "good", "uniform"}
    assert set(shares["group"]) == {"all", "age_group=18-29", "age_group=30-44", "age_group=45-64", "age_group=65+"}
    sums = shares.groupby(["question", "group", "source"])["share"].sum()
    np.testing.assert_allclose(sums, 1.0)
    real_rows = shares[shares["source"] == "real"]
    assert ((real_rows["band_low"] <= real_rows["share"]) & (real_rows["share"] <= real_rows["band_high"])).all()
    page = report["report_html"].read_text()
    # the summary block comes first, then the questions, then the long-tail plot
    assert page.index('id="synthetic-banner"') < page.index('id="summary"') < page.index('id="questions"') \
        < page.index('id="longtail-plot"')
    headers = re.findall(r"<th[^>]*>(.*?)</th>", page)
    assert headers and not [h for h in headers if re.fullmatch(r"[a-z0-9]+(_[a-z0-9]+)+", html.unescape(h))]
    assert "Overall TV (0-1, lower is better)" in page and "95% interval" in page and "Noise floor" in page
    # one panel per question, worst first, each with alt text; markdown points at the same figures
    order = question_order(pd.read_csv(report["question_errors"]))
    panels = re.findall(r'<figure class="panel" id="panel-([^"]+)" data-question="([^"]+)">.*?<img alt="([^"]+)"',
                        page, flags=re.S)
    assert [q for _, q, _ in panels] == order and sorted(order) == sorted(OPTIONS)
    assert all(len(alt) > 40 for _, _, alt in panels)
    assert "q1: How much do you like soup?" in page
    md = report["report_md"].read_text()
    for q in OPTIONS:
        assert f"](question_{q}.png)" in md and (out / f"question_{q}.png").read_bytes()[:4] == b"\x89PNG"
    assert md.index("## Summary") < md.index("## What each group answered")
    assert "| Overall TV (0-1, lower is better) |" in md


def test_report_says_whether_real_answers_are_weighted_and_how_personas_were_used(report, good, real, tmp_path):
    """The fixture's real table has survey weights and its agents four personas drawn evenly; a run whose every
    agent drew one persona is flagged on the first screen, and an unweighted real table is not called weighted."""
    md = report["report_md"].read_text()
    assert "real held-out respondents (weighted)" in md and "Kish" in md
    assert "Personas (good): the agents drew 4 distinct personas" in md and "gate hardly routes" not in md
    one = good.assign(persona=5)
    paths = build_report({"mop": one}, real.assign(weight=1.0), OPTIONS, ATTRS, tmp_path, n_boot=5)
    md = paths["report_md"].read_text()
    assert "(unweighted)" in md and "count each respondent once" in md and "Kish" not in md
    assert "persona 5 is in 100% of their prompts" in md and "gate hardly routes" in md
    assert "mop (Mixture of Personas)" in md
    ratio = re.search(r"median over these subgroups is ([0-9.]+)x", md)
    assert ratio and 0.5 < float(ratio.group(1)) < 3


def test_the_group_vs_everyone_reference_on_a_hand_made_table(report):
    """Women all say yes, men all say no, equal weight in all: each group is 0.5 TV from everyone; and the
    report counts the subgroups where the simulation beats that reference."""
    from popsim.eval.subgroups import split_half_noise_floor

    real = pd.DataFrame({"attr_sex": ["f"] * 4 + ["m"] * 4, "q": ["yes"] * 4 + ["no"] * 4,
                         "weight": [1.0, 3.0, 1.0, 3.0, 2.0, 2.0, 2.0, 2.0]})
    halves = split_half_noise_floor(real, {"q": ["yes", "no"]}, ["sex"], min_n=2, n_rep=5).set_index("cell")
    assert halves.loc["all", "group_vs_all_tv"] == 0.0
    assert halves.loc["sex=f", "group_vs_all_tv"] == pytest.approx(0.5)
    assert halves.loc["sex=m", "group_vs_all_tv"] == pytest.approx(0.5)
    page = report["report_md"].read_text()
    assert "closer to the group's answers than \"it answers like everyone\"" in page
    assert "Real group vs all real respondents" in page


def test_question_shares_are_the_weighted_shares_of_a_small_hand_made_table():
    real = pd.DataFrame({"attr_sex": ["f", "f", "f", "m", "m", "m"], "q": ["yes", "no", "yes", "no", "no", None],
                         "weight": [1.0, 2.0, 3.0, 1.0, 3.0, 5.0]})
    sim = pd.DataFrame({"attr_sex": ["f", "f", "m", "m"], "q": ["yes", "yes", "no", "yes"]})
    shares = question_shares({"sim": sim}, real, {"q": ["yes", "no"]}, by="sex", min_n=3)
    got = shares.set_index(["group", "source", "option"])["share"]
    # real, all: yes = (1 + 3) / 10, no = (2 + 1 + 3) / 10; the non-answer (weight 5) counts for nothing
    assert got[("all", "real", "yes")] == pytest.approx(0.4) and got[("all", "real", "no")] == pytest.approx(0.6)
    assert got[("sex=f", "real", "yes")] == pytest.approx(4 / 6) and got[("sex=m", "real", "no")] == 1.0
    assert got[("all", "sim", "yes")] == 0.75 and got[("sex=f", "sim", "yes")] == 1.0
    assert got[("sex=m", "sim", "yes")] == 0.5
    row = shares[(shares["group"] == "all") & (shares["source"] == "real")].iloc[0]
    assert row["n"] == 5 and row["eff_n"] == pytest.approx(10**2 / 24)  # Kish: (sum w)^2 / sum w^2
    suppressed = shares.groupby("group")["suppressed"].first()
    assert not suppressed["all"] and not suppressed["sex=f"] and suppressed["sex=m"]  # 2 real answers < 3
    assert shares.loc[shares["source"] == "sim", "band_low"].isna().all()
    with pytest.raises(ValueError, match="real"):
        question_shares({"real": sim}, real, {"q": ["yes", "no"]})


def test_real_band_is_the_wilson_interval():
    from scipy.stats import binomtest

    low, high = wilson_band(np.array([0.25]), 40)
    ci = binomtest(10, 40).proportion_ci(0.95, method="wilson")
    assert low[0] == pytest.approx(ci.low, abs=2e-4) and high[0] == pytest.approx(ci.high, abs=2e-4)
    wide, narrow = wilson_band(np.array([0.5]), 20), wilson_band(np.array([0.5]), 2000)
    assert wide[1][0] - wide[0][0] > 5 * (narrow[1][0] - narrow[0][0])


def _answers(counts: dict[str, list[int]]) -> pd.DataFrame:
    """A wide table of answers with these counts per question over the options too little / about right / too much."""
    opts = ["too little", "about right", "too much"]
    return pd.DataFrame({q: np.repeat(opts, c) for q, c in counts.items()})


def test_worst_question_comes_first_and_the_gap_is_told_in_words():
    real = _answers({"ok": [10, 7, 3], "bad": [10, 7, 3], "mid": [10, 7, 3]}).assign(weight=1.0)
    runs = {"mop": _answers({"ok": [10, 7, 3], "bad": [6, 3, 11], "mid": [9, 6, 5]}),
            "other": _answers({"ok": [2, 9, 9], "bad": [10, 7, 3], "mid": [10, 7, 3]})}
    opts = {q: ["too little", "about right", "too much"] for q in ("ok", "bad", "mid")}
    errors = question_errors(question_shares(runs, real, opts, min_n=1))
    assert question_order(errors) == ["bad", "mid", "ok"]  # by the first method
    assert question_order(errors, method="other") == ["ok", "bad", "mid"]
    e = errors[errors["group"] == "all"].set_index(["method", "question"])
    bad = e.loc[("mop", "bad")]
    assert bad["option"] == "too much" and bad["gap_pp"] == pytest.approx(40) and bad["tv"] == pytest.approx(0.4)
    assert bad["direction"] == "mop says 'too much' 40 points more often than real respondents (55% vs 15%)"
    ok = e.loc[("other", "ok")]
    assert ok["option"] == "too little" and ok["gap_pp"] == pytest.approx(-40)
    assert "says 'too little' 40 points less often" in ok["direction"]
    assert e.loc[("mop", "ok"), "direction"].startswith("mop matches real respondents")
    assert e.loc[("mop", "ok"), "in_band"] and not bad["in_band"]


def _cells(rows: list[tuple]) -> pd.DataFrame:
    cols = ["attributes", "order", "real_n", "tv", "noise_floor_tv", "suppressed"]
    cells = pd.DataFrame(rows, columns=cols).assign(method="mop")
    cells["worse_than_floor"] = cells["tv"] > 1.5 * cells["noise_floor_tv"]
    return cells


def test_verdicts_in_plain_words_follow_the_stated_thresholds():
    cells = _cells([("all", 0, 700, 0.06, 0.05, False),
                    ("age", 1, 300, 0.09, 0.05, False), ("age", 1, 400, 0.07, 0.05, False),
                    ("party & race", 2, 100, 0.30, 0.10, False), ("party & race", 2, 60, 0.20, 0.10, False),
                    ("party & race", 2, 30, 0.25, 0.20, False), ("party & race", 2, 10, np.nan, np.nan, True)])
    v = family_verdicts(cells, min_n=20).set_index("family")["verdict"]
    assert v["whole population"] == "yes: within the noise floor (1.2x)"
    assert v["by age"] == "with care: within 2x the noise floor (1.6x)"
    assert v["by party x race"] == ("no: 2.5x the noise floor; not usable below n=60; 1 under 20 real respondents "
                                    "not scored")
    # groups left out only for being under min_n: no size threshold is claimed for the judged ones
    unscored = _cells([("all", 0, 700, 0.06, 0.05, False), ("party", 1, 74, 0.09, 0.06, False),
                       ("party", 1, 19, np.nan, np.nan, True)])
    assert family_verdicts(unscored, min_n=20).set_index("family").loc["by party", "verdict"] == (
        "with care: within 2x the noise floor (1.5x); 1 under 20 real respondents not scored")
    small = _cells([("all", 0, 700, 0.06, 0.05, False), ("race", 1, 15, np.nan, np.nan, True)])
    assert family_verdicts(small, min_n=20).set_index("family").loc["by race", "verdict"].startswith("not scored")


def test_tables_refuse_code_names_and_figures_need_alt_text():
    with pytest.raises(ValueError, match="overall_tv"):
        Table(pd.DataFrame({"overall_tv": [0.1]}))
    with pytest.raises(ValueError, match="alt"):
        Figure(id="x", png=b"", alt=" ", file="x.png")


# ----------------------------------------------------------------------------------------------------
# the report in a real browser


_PROBE = """<script>
window.addEventListener('load', function () {
  document.querySelectorAll('details').forEach(function (d) { d.open = true; });
  var vw = window.innerWidth, wide = [];
  document.querySelectorAll('body *').forEach(function (el) {
    var r = el.getBoundingClientRect();
    if (r.width > 0 && r.right > vw + 0.5) { wide.push(el.tagName.toLowerCase() + (el.id ? '#' + el.id : '')); }
  });
  var panels = Array.from(document.querySelectorAll('figure.panel[data-question]')).map(function (f) {
    var img = f.querySelector('img');
    return {question: f.getAttribute('data-question'), alt: img ? img.getAttribute('alt') : '',
            width: img ? img.naturalWidth : 0, shown: img ? img.getBoundingClientRect().width : 0};
  });
  document.body.setAttribute('data-layout', JSON.stringify({viewport: window.innerWidth,
    scroll_width: document.documentElement.scrollWidth, wide: wide, panels: panels}));
});
</script>"""


def chromium_or_skip() -> str:
    """The chromium binary; skipped locally without one, a failure under CI (which installs it)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("CI"):  # a skip there would hide that the report was never looked at
            pytest.fail("chromium is not installed; .ci/run installs it with apt-get install chromium")
        pytest.skip("chromium is not installed (apt-get install chromium); needed to render report.html")
    return chromium


def _chromium(chromium: str, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp / 'profile'}", "--window-size=1280,900", "--virtual-time-budget=5000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def browser_layout(page: Path, tmp: Path) -> dict:
    """Open a copy of ``page`` at 1280 px with a script that measures it (all <details> opened) and read back
    what it wrote into the DOM: viewport and scroll widths, elements past the right edge, question panels."""
    chromium = chromium_or_skip()
    probe = tmp / "probe.html"
    probe.write_text(page.read_text().replace("</body>", _PROBE + "</body>"))
    result = _chromium(chromium, tmp, "--dump-dom", probe.as_uri())
    found = re.search(r'data-layout="([^"]*)"', result.stdout)
    assert found, result.stderr[-2000:]
    return json.loads(html.unescape(found.group(1)))


def screenshot(page: Path, tmp: Path) -> np.ndarray:
    """The first screen (1280 x 900) of ``page`` as RGB floats in [0, 1]."""
    from matplotlib.image import imread

    shot = tmp / "first-screen.png"
    result = _chromium(chromium_or_skip(), tmp, f"--screenshot={shot}", page.as_uri())
    assert shot.is_file() and shot.stat().st_size > 0, result.stderr[-2000:]
    return imread(shot)[..., :3]


def test_report_fits_the_page_in_headless_chromium(report, tmp_path):
    layout = browser_layout(report["report_html"].resolve(), tmp_path)
    assert layout["viewport"] == 1280
    assert layout["scroll_width"] <= layout["viewport"] and layout["wide"] == [], layout
    assert sorted(p["question"] for p in layout["panels"]) == sorted(OPTIONS)
    assert all(p["alt"] and p["width"] > 0 and 0 < p["shown"] <= 1280 for p in layout["panels"])
    pixels = screenshot(report["report_html"].resolve(), tmp_path)
    assert pixels.shape[:2] == (900, 1280) and pixels.var() > 0
    # the banner's fill colour (#fff3cd) is on the first screen
    banner = np.all(np.abs(pixels - np.array([255, 243, 205]) / 255) < 0.02, axis=-1)
    assert banner.sum() > 1000


def test_report_on_a_review_run_without_held_out_texts_says_so_in_one_line(tmp_path, capsys):
    from popsim.cli import main

    run = tmp_path / "reviews"
    run.mkdir()
    pd.DataFrame({"agent": [0], "round": [1], "question": ["review"], "answer": ["Great soup."]}).to_parquet(
        run / "responses.parquet")
    (run / "manifest.json").write_text(json.dumps({"config": {"kind": "reviews", "questions": []}}))
    assert main(["report", str(run), "--out", str(tmp_path / "rep")]) == 2
    err = capsys.readouterr().err
    assert "heldout.parquet" in err and "--real" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "rep").exists()


def test_report_with_a_missing_real_file_names_the_flag(tmp_path, capsys):
    from popsim.cli import main

    assert main(["report", str(tmp_path), "--real", str(tmp_path / "nope.parquet")]) == 2
    err = capsys.readouterr().err.strip()
    assert "nope.parquet does not exist; fix --real" in err and "data.source" not in err and len(err.splitlines()) == 1
