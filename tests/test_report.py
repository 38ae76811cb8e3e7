"""Subgroup fidelity and the HTML/Markdown report, on a small synthetic survey generated here.

The real population (600 weighted respondents) answers 3 ordinal questions with probabilities that depend on
sex, race and age group. A "good" run draws its agents' answers from the same model; a "bad" run answers
uniformly. Round 1 of both runs is uniform noise, so only the last round must be scored.
"""

from __future__ import annotations

import json
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
    respondent_table,
    split_half_noise_floor,
    subgroup_cells,
    total_variation,
    weighted_distribution,
)
from popsim.eval.subgroups import _norm, _onehot, _tv_rows

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
    return build_report({"good": good, "uniform": bad}, real, OPTIONS, ATTRS, out, n_boot=N_BOOT, worst_k=5)


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


def test_report_html_renders_in_headless_chromium(report, tmp_path):
    chromium = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install chromium); needed to render report.html")
    from matplotlib.image import imread

    shot = tmp_path / "report.png"
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,2000",
           report["report_html"].resolve().as_uri()]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert shot.is_file() and shot.stat().st_size > 0, result.stderr[-2000:]
    pixels = imread(shot)[..., :3]
    assert pixels.shape[0] >= 1000 and pixels.var() > 0
    # the banner's fill colour (#fff3cd) is on the page
    banner = np.all(np.abs(pixels - np.array([255, 243, 205]) / 255) < 0.02, axis=-1)
    assert banner.sum() > 1000
