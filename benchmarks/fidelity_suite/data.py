"""The fidelity benchmark's data: text datasets and their splits, the two surveys, item splits and agents.

Text: IMDB, AG News and SST-2 from ``../shared/data`` as (context, text, label) frames, dev carved from train.
Surveys: GSS 2018 spending (``scenarios/survey.yaml``) and FiveThirtyEight non-voters (weighted).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from popsim.config import Scenario, load_scenario
from popsim.data import Population, load_population
from popsim.lm.loading import cache_dir

from .config import DATA, ROOT

# ----------------------------------------------------------------------------------------------------- text data


def _cut(texts: pd.Series, max_words: int) -> list[str]:
    return list(texts.astype(str).str.replace("<br />", " ", regex=False).str.replace("\\", " ", regex=False)
                .str.split().str[:max_words].str.join(" "))


def _text_frame(contexts, texts, labels, max_words) -> pd.DataFrame:
    frame = pd.DataFrame({"context": list(contexts), "text": _cut(pd.Series(list(texts)), max_words),
                          "label": [str(v) for v in labels]})
    return frame[frame["text"].str.len() > 0].reset_index(drop=True)


def load_text(name: str, max_words: int, seed: int) -> dict[str, pd.DataFrame]:
    """train / dev / test frames (context, text, label) for one text dataset; dev is carved from train."""
    if name == "imdb":
        folder = DATA / "imdb-reviews-ratings"
        out = {}
        for split in ("train", "test"):
            f = pd.read_csv(folder / f"imdb_{split}_sample2500.csv")
            out[split] = _text_frame([f"a review of a movie you rate {r}/10" for r in f["rating"]], f["text"],
                                     f["label"], max_words)
        order = np.random.default_rng(seed).permutation(len(out["train"]))
        cut = int(0.8 * len(order))
        return {"train": out["train"].iloc[np.sort(order[:cut])].reset_index(drop=True),
                "dev": out["train"].iloc[np.sort(order[cut:])].reset_index(drop=True), "test": out["test"]}
    if name == "agnews":
        folder = DATA / "ag-news-test"
        topics = dict(enumerate((folder / "classes.txt").read_text().split(), start=1))
        f = pd.read_csv(folder / "ag_news_test.csv", header=None, names=["label", "title", "text"])
        titles = f["title"].astype(str).str.replace("\\", " ", regex=False).str.strip()
        topic = [topics[int(c)] for c in f["label"]]
        frame = _text_frame([f"a {c} news article titled \"{t}\"" for c, t in zip(topic, titles)], f["text"],
                            topic, max_words)
        order = np.random.default_rng(seed).permutation(len(frame))
        a, b = int(0.6 * len(order)), int(0.8 * len(order))
        return {"train": frame.iloc[np.sort(order[:a])].reset_index(drop=True),
                "dev": frame.iloc[np.sort(order[a:b])].reset_index(drop=True),
                "test": frame.iloc[np.sort(order[b:])].reset_index(drop=True)}
    if name == "sst2":
        folder = DATA / "sst-stanford-sentiment-treebank"
        out = {}
        for split in ("train", "dev", "test"):
            lines = (folder / f"stsa.binary.{split}.txt").read_text().splitlines()
            labels = ["positive" if ln[0] == "1" else "negative" for ln in lines if ln.strip()]
            texts = [ln[2:] for ln in lines if ln.strip()]
            out[split] = _text_frame([f"a {lab} one-sentence movie review" for lab in labels], texts, labels,
                                     max_words)
        return out
    raise ValueError(name)


def sample_frame(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """A seeded sample of up to ``n`` rows of ``frame`` (the text part's training sample)."""
    return frame.sample(min(n, len(frame)), random_state=seed).reset_index(drop=True)


def heldout_samples(heldout: pd.DataFrame, cfg: dict, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Three disjoint held-out samples: the real reference set (also the downstream test set), the contexts
    every method writes for, and a real-vs-real ceiling sample of the generated size."""
    perm = np.random.default_rng(seed + 1).permutation(len(heldout))
    n_real, n_gen = min(cfg["n_real"], len(heldout) // 2), cfg["n_gen"]
    return tuple(heldout.iloc[idx].reset_index(drop=True)
                 for idx in (perm[:n_real], perm[n_real : n_real + n_gen], perm[n_real + n_gen : n_real + 2 * n_gen]))


# ----------------------------------------------------------------------------------------------------- survey data

NV_Q2 = ["voting in elections", "serving on a jury", "following what happens in government and politics",
         "displaying the American flag", "participating in the U.S. Census every ten years",
         "knowing the Pledge of Allegiance", "supporting the military",
         "respecting the opinions of those who disagree with you", "believing in God",
         "protesting if you believe government actions are wrong"]
NV_Q3 = ["Systemic racism is a problem in the United States.",
         "Systemic racism in policing is a bigger problem than violence and vandalism in protests.",
         "Society as a whole has become too soft and feminine.",
         "The mainstream media is more interested in making money than telling the truth.",
         "Traditional parties and politicians don't care about people like me.",
         "The way people talk needs to change with the times to be more sensitive to people with different "
         "backgrounds."]


def nonvoters_scenario(max_rows: int | None, seed: int, workdir: Path) -> Scenario:
    """FiveThirtyEight non-voters (weighted): Q2 (10 'good American' items) and Q3 (6 agree items).

    Wording from the codebook; -1 (skipped) becomes missing (a cleaned copy is written to the popsim cache folder).
    """
    frame = pd.read_csv(DATA / "fte-non-voters" / "nonvoters_data.csv")
    cols = [f"Q2_{i}" for i in range(1, 11)] + [f"Q3_{i}" for i in range(1, 7)]
    frame[cols] = frame[cols].where(frame[cols] > 0)
    path = cache_dir() / "nonvoters_clean.csv"  # a cleaned copy of the data; never inside the repo
    path.parent.mkdir(parents=True, exist_ok=True)
    frame[["RespId", "weight", "ppage", "educ", "race", "gender", "income_cat", "voter_category", *cols]].to_csv(
        path, index=False)
    imp = {"1": "very important", "2": "somewhat important", "3": "not so important", "4": "not at all important"}
    agr = {"1": "strongly agree", "2": "somewhat agree", "3": "somewhat disagree", "4": "strongly disagree"}
    questions = [{"id": f"Q2_{i}", "column": f"Q2_{i}", "options": imp,
                  "text": f"In your view, how important is {item} to being a good American: very important, "
                          "somewhat important, not so important, or not at all important?"}
                 for i, item in enumerate(NV_Q2, start=1)]
    questions += [{"id": f"Q3_{i}", "column": f"Q3_{i}", "options": agr,
                   "text": f"How much do you agree or disagree: {s} Strongly agree, somewhat agree, somewhat "
                           "disagree, or strongly disagree?"} for i, s in enumerate(NV_Q3, start=1)]
    return Scenario.model_validate({
        "name": "nonvoters", "kind": "survey", "seed": seed,
        "data": {"source": str(path), "id_column": "RespId", "weight": "weight", "test_fraction": 0.3,
                 "max_rows": max_rows, "attributes": {
                     "age": {"column": "ppage", "bins": [17, 34, 49, 64, 120],
                             "bin_labels": ["22-34", "35-49", "50-64", "65+"]},
                     "education": {"column": "educ"}, "race": {"column": "race"}, "gender": {"column": "gender"},
                     "income": {"column": "income_cat"}, "voter_category": {"column": "voter_category"}}},
        "questions": questions})


SURVEYS = {"gss": ("race", "party"), "nonvoters": ("race", "voter_category")}  # hot-deck cells


def load_survey(name: str, cfg: dict, seed: int, workdir: Path, dev: bool) -> Population:
    """One survey's population (train / test respondents); with ``dev`` the training respondents split 70/30."""
    if name == "gss":
        scenario = load_scenario(ROOT / "scenarios" / "survey.yaml", {"data.max_rows": cfg["max_rows"], "seed": seed})
    else:
        scenario = nonvoters_scenario(cfg["max_rows"], seed, workdir)
    pop = load_population(scenario)
    if dev:  # tuning: split the training respondents again; the test respondents are never touched
        rng = np.random.default_rng(seed + 1)
        is_dev = np.zeros(len(pop.train), dtype=bool)
        is_dev[rng.permutation(len(pop.train))[: int(round(0.3 * len(pop.train)))]] = True
        pop = Population(pop.train, pop.train[~is_dev].reset_index(drop=True),
                         pop.train[is_dev].reset_index(drop=True), pop.attributes, pop.questions)
    return pop


def split_items(pop: Population, seed: int) -> tuple[set[str], set[str]]:
    """(seen, unseen) question ids: a seeded third of the items is held out entirely."""
    ids = [q.id for q in pop.questions]
    order = np.random.default_rng([seed, 11]).permutation(len(ids))
    unseen = {ids[i] for i in order[: int(round(len(ids) / 3))]}
    return set(ids) - unseen, unseen


def agent_rows(pop: Population, seed: int) -> pd.DataFrame:
    """As many agents as held-out respondents: each once if unweighted, else drawn by weight."""
    test = pop.test
    w = test["weight"].to_numpy(float)
    if np.allclose(w, w[0]):
        return test.reset_index(drop=True)
    idx = np.random.default_rng([seed, 1]).choice(len(test), size=len(test), replace=True, p=w / w.sum())
    return test.iloc[idx].reset_index(drop=True)
