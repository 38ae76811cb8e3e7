"""The fidelity benchmark's data: text datasets and their splits, the surveys, item splits and agents.

Text: IMDB, AG News and SST-2 from ``../shared/data`` as (context, text, label) frames, dev carved from train.
Surveys: GSS 2018 spending (``scenarios/survey.yaml``, one answer scale), FiveThirtyEight non-voters (weighted,
two scales) and FiveThirtyEight flying etiquette (unweighted, five scales). ``HELD_OUT_SURVEY`` (FiveThirtyEight
masculinity, weighted, five scales) is kept out of every tuning run and never loads on dev splits: it is only for
the final new-survey check of the defaults (``--surveys masculinity``).
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


RUDE = ["Yes, very rude", "Yes, somewhat rude", "No, not rude at all"]
FLYING = {  # column number in flying-etiquette.csv -> (question id, wording, scale or None for the data's own)
    8: ("seat_unsold", "Is it rude to move to an unsold seat on a plane?", RUDE),
    9: ("talk_stranger", "Generally speaking, is it rude to say more than a few words to the stranger sitting next "
                         "to you on a plane?", RUDE),
    12: ("recline_rude", "Is it rude to recline your seat on a plane?", RUDE),
    14: ("switch_friends", "Is it rude to ask someone to switch seats with you in order to be closer to friends?",
         RUDE),
    15: ("switch_family", "Is it rude to ask someone to switch seats with you in order to be closer to family?", RUDE),
    16: ("wake_bathroom", "Is it rude to wake a passenger up if you are trying to go to the bathroom?", RUDE),
    17: ("wake_walk", "Is it rude to wake a passenger up if you are trying to walk around?", RUDE),
    18: ("baby", "In general, is it rude to bring a baby on a plane?", RUDE),
    19: ("unruly_children", "In general, is it rude to knowingly bring unruly children on a plane?", RUDE),
    13: ("ban_recline", "Given the opportunity, would you eliminate the possibility of reclining seats on planes "
                        "entirely?", ["Yes", "No"]),
    20: ("electronics", "Have you ever used personal electronics during take off or landing in violation of a "
                        "flight attendant's direction?", ["Yes", "No"]),
    21: ("smoked", "Have you ever smoked a cigarette in an airplane bathroom when it was against the rules?",
         ["Yes", "No"]),
    2: ("recline_often", "Do you ever recline your seat when you fly?",
        ["Always", "Usually", "About half the time", "Once in a while", "Never"]),
    7: ("window_shade", "Who should have control over the window shade?",
        ["The person in the window seat should have exclusive control", "Everyone in the row should have some say"]),
    11: ("recline_obligation", "Under normal circumstances, does a person who reclines their seat during a flight "
                               "have any obligation to the person sitting behind them?",
         ["Yes, they should not recline their chair if the person behind them asks them not to",
          "No, the person on the flight has no obligation to the person behind them"]),
}


def flying_scenario(max_rows: int | None, seed: int) -> Scenario:
    """FiveThirtyEight flying etiquette (1,040 respondents, unweighted): 15 items on five answer scales (nine
    "is it rude" items, three yes / no, one frequency, two two-way choices), for protocol (c).

    The data spells "not rude at all" two ways; a cleaned copy (one wording, respondents who answered no item
    dropped, short column names) is written to the popsim cache folder.
    """
    frame = pd.read_csv(DATA / "fte-flying-etiquette-survey" / "flying-etiquette.csv", encoding="latin-1")
    names = list(frame.columns)
    clean = pd.DataFrame({"id": frame[names[0]], "gender": frame["Gender"], "age": frame["Age"],
                          "income": frame["Household Income"].replace({"150000": "$150,000+"}),
                          "education": frame["Education"], "region": frame["Location (Census Region)"]})
    for col, (qid, _, _) in FLYING.items():
        clean[qid] = frame[names[col]].replace({"No, not at all rude": "No, not rude at all"})
    clean = clean[clean[[q for q, _, _ in FLYING.values()]].notna().any(axis=1)]
    path = cache_dir() / "flying_clean.csv"  # never inside the repo
    path.parent.mkdir(parents=True, exist_ok=True)
    clean.to_csv(path, index=False)
    return Scenario.model_validate({
        "name": "flying", "kind": "survey", "seed": seed,
        "data": {"source": str(path), "id_column": "id", "test_fraction": 0.3, "max_rows": max_rows,
                 "attributes": {a: {"column": a} for a in ("gender", "age", "income", "education", "region")}},
        "questions": [{"id": qid, "column": qid, "text": text, "options": list(scale)}
                      for qid, text, scale in FLYING.values()]})


OFTEN = ["Often", "Sometimes", "Rarely", "Never, but open to it", "Never, and not open to it"]
YES_NO = ["Yes", "No"]
MASCULINITY = {  # column of raw-responses.csv -> (wording from masculinity-survey.pdf, scale)
    "q0001": ('In general, how masculine or "manly" do you feel?',
              ["Very masculine", "Somewhat masculine", "Not very masculine", "Not at all masculine"]),
    "q0002": ("How important is it to you that others see you as masculine?",
              ["Very important", "Somewhat important", "Not too important", "Not at all important"]),
    "q0005": ("Do you think that society puts pressure on men in a way that is unhealthy or bad for them?", YES_NO),
    **{f"q0007_{i:04d}": (f"How often would you say you do the following: {item}?", OFTEN) for i, item in enumerate([
        "Ask a friend for professional advice", "Ask a friend for personal advice",
        "Express physical affection to male friends, like hugging, rubbing shoulders", "Cry",
        "Get in a physical fight with another person",
        "Have sexual relations with women, including anything from kissing to sex",
        "Have sexual relations with men, including anything from kissing to sex", "Watch sports of any kind",
        "Work out", "See a therapist", "Feel lonely or isolated"], start=1)},
    "q0017": ("Do you typically feel as though you're expected to make the first move in romantic relationships?",
              YES_NO),
    "q0018": ("How often do you try to be the one who pays when on a date?",
              ["Always", "Often", "Sometimes", "Rarely", "Never"]),
    "q0022": ("Have you changed your behavior in romantic relationships in the wake of #MeToo movement?", YES_NO),
}


def masculinity_scenario(max_rows: int | None, seed: int) -> Scenario:
    """FiveThirtyEight / WNYC masculinity survey (1,615 adult men, weighted): 17 items on five answer scales.
    Kept out of all tuning (``HELD_OUT_SURVEY``): run once, with every setting frozen, as the new-survey check.
    "No answer" becomes missing (a cleaned copy is written to the popsim cache folder)."""
    frame = pd.read_csv(DATA / "fte-masculinity-survey" / "raw-responses.csv")
    clean = frame[["Unnamed: 0", "weight", "age3", "racethn4", "educ3", "orientation", "kids", *MASCULINITY]]
    clean = clean.rename(columns={"Unnamed: 0": "id"}).replace({"No answer": None})
    path = cache_dir() / "masculinity_clean.csv"  # never inside the repo
    path.parent.mkdir(parents=True, exist_ok=True)
    clean.to_csv(path, index=False)
    attributes = {"age": "age3", "race": "racethn4", "education": "educ3", "orientation": "orientation",
                  "children": "kids"}
    return Scenario.model_validate({
        "name": "masculinity", "kind": "survey", "seed": seed,
        "data": {"source": str(path), "id_column": "id", "weight": "weight", "test_fraction": 0.3,
                 "max_rows": max_rows, "attributes": {a: {"column": c} for a, c in attributes.items()}},
        "questions": [{"id": qid, "column": qid, "text": text, "options": list(scale)}
                      for qid, (text, scale) in MASCULINITY.items()]})


SURVEYS = {"gss": ("race", "party"), "nonvoters": ("race", "voter_category"), "flying": ("gender", "age"),
           "masculinity": ("age", "race")}  # name -> the hot-deck's cells
# the survey kept out of all tuning (never in the default --surveys, never run on dev): the final new-survey check
HELD_OUT_SURVEY = "masculinity"


def load_survey(name: str, cfg: dict, seed: int, workdir: Path, dev: bool) -> Population:
    """One survey's population (train / test respondents); with ``dev`` the training respondents split 70/30."""
    if name == "gss":
        scenario = load_scenario(ROOT / "scenarios" / "survey.yaml", {"data.max_rows": cfg["max_rows"], "seed": seed})
    elif name == "nonvoters":
        scenario = nonvoters_scenario(cfg["max_rows"], seed, workdir)
    elif name == "flying":
        scenario = flying_scenario(cfg["max_rows"], seed)
    elif name == HELD_OUT_SURVEY and not dev:
        scenario = masculinity_scenario(cfg["max_rows"], seed)
    else:
        raise ValueError(f"--surveys: unknown survey {name!r}; use {', '.join(SURVEYS)} ({HELD_OUT_SURVEY} only on "
                         "test splits: it is never tuned on)")
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


def split_scales(pop: Population, seed: int) -> tuple[set[str], set[str]]:
    """(seen, unseen) question ids for protocol (c), new questions on a new answer scale: whole scales (tuples
    of option wordings) held out, in a seeded order of the scales, each taken while the held-out items stay at
    most half of all items, until they are at least a third; empty unseen when the survey has one scale."""
    scales: dict[tuple[str, ...], list[str]] = {}
    for q in pop.questions:
        scales.setdefault(tuple(q.option_labels), []).append(q.id)
    if len(scales) < 2:
        return {q.id for q in pop.questions}, set()
    n = len(pop.questions)
    unseen: set[str] = set()
    keys = list(scales)
    for i in np.random.default_rng([seed, 13]).permutation(len(keys)):
        if len(unseen) >= n / 3:
            break
        if len(unseen) + len(scales[keys[i]]) <= n / 2:
            unseen |= set(scales[keys[i]])
    return {q.id for q in pop.questions} - unseen, unseen


def agent_rows(pop: Population, seed: int) -> pd.DataFrame:
    """As many agents as held-out respondents: each once if unweighted, else drawn by weight."""
    test = pop.test
    w = test["weight"].to_numpy(float)
    if np.allclose(w, w[0]):
        return test.reset_index(drop=True)
    idx = np.random.default_rng([seed, 1]).choice(len(test), size=len(test), replace=True, p=w / w.sum())
    return test.iloc[idx].reset_index(drop=True)
