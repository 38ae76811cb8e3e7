"""Text fidelity of a review run: generated vs held-out real texts, beside the real-vs-real floor.

The survey report judges a subgroup by its distance above a noise floor; this module does the same for
texts. For the whole run and for each value of every ``attr_*`` column (rating, context) it scores the
generated texts against held-out real ones with the MoP paper's metrics (FID, MAUVE and KL-cosine on
sentence embeddings, :mod:`popsim.eval.metrics`) plus distinct-1/2 and length, and scores a second half of
the real texts against the first in the same way, at the same sample size. Why halves: every one of these
metrics moves with the sample size (FID and KL-cosine shrink and MAUVE rises as sets grow), so a number
means little without what real texts score against each other at that size.

Per group and split: the real texts are cut at random into halves A and B; A is the reference; the
generated texts and an equally large sample of B (as many texts as both have, ``m``) are each scored
against A. Scores are averaged over ``n_splits`` seeded splits; the floor's lowest and highest split are
kept as its spread. Groups with fewer than ``min_real`` real or ``min_generated`` generated texts are
not scored.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from popsim.eval.metrics import distinct_n, fid, kl_cosine, mauve_score
from popsim.exceptions import DataError, RunDirectoryError
from popsim.io import atomic_write_json, atomic_write_text

__all__ = ["ASSISTANT_IDENTITY", "assistant_identity_share", "METRICS", "text_fidelity", "verdict",
           "table_for_people", "sample_texts", "run_texts", "write_text_fidelity", "printed"]


ASSISTANT_IDENTITY = re.compile(r"smol ?lm|hugging ?face|\bAI assistant|\bas an AI\b|\bAI language model", re.I)
"""Phrases of a chat model speaking as itself rather than as a reviewer."""


def assistant_identity_share(texts: Sequence[str]) -> float:
    """Share of ``texts`` that mention the model's assistant identity (:data:`ASSISTANT_IDENTITY`)."""
    texts = list(texts)
    return sum(bool(ASSISTANT_IDENTITY.search(t)) for t in texts) / len(texts) if texts else 0.0


def _fid(ref: np.ndarray, sample: np.ndarray) -> float:
    """:func:`~popsim.eval.metrics.fid`, computed in the span of the two sets' centred rows and their mean
    difference: every term of FID lives there, so the value is the same, but the matrix square root is of
    a (n_ref + n_sample - 1)-square matrix instead of the embedding dimension's (384 for MiniLM), which for
    a few dozen texts is ~50x faster."""
    span = np.vstack([ref - ref.mean(axis=0), sample - sample.mean(axis=0), ref.mean(axis=0) - sample.mean(axis=0)])
    if span.shape[0] >= span.shape[1]:
        return fid(ref, sample)
    basis, _ = np.linalg.qr(span.T)
    return fid(ref @ basis, sample @ basis)


# name -> (function of (reference embeddings, sample embeddings), higher is better)
METRICS: dict[str, tuple[Callable[..., float], bool]] = {
    "fid": (_fid, False),
    "mauve": (mauve_score, True),
    "kl_cosine": (kl_cosine, False),
}


def _groups(generated: pd.DataFrame, real: pd.DataFrame) -> list[tuple[str, str | None, str | None]]:
    """("all", None, None), then (name=value, column, value) for every attribute value on both sides."""
    out: list[tuple[str, str | None, str | None]] = [("all", None, None)]
    for col in [c for c in real.columns if c.startswith("attr_") and c in generated.columns]:
        values = sorted(set(real[col].dropna().astype(str)) & set(generated[col].dropna().astype(str)))
        out += [(f"{col.removeprefix('attr_')}={v}", col, v) for v in values]
    return out


def _split_scores(ref: np.ndarray, gen: np.ndarray, other: np.ndarray, gen_texts: list[str],
                  other_texts: list[str], seed: int) -> dict[str, float]:
    """One split's scores: generated vs reference and the real second half vs reference."""
    row: dict[str, float] = {}
    for name, (metric, _) in METRICS.items():
        kwargs = {"seed": seed} if name != "fid" else {}
        row[name] = metric(ref, gen, **kwargs)
        row[f"{name}_floor"] = metric(ref, other, **kwargs)
    for n in (1, 2):
        row[f"distinct{n}"] = distinct_n(gen_texts, n)
        row[f"distinct{n}_real"] = distinct_n(other_texts, n)
    row["words"] = float(np.mean([len(t.split()) for t in gen_texts]))
    row["words_real"] = float(np.mean([len(t.split()) for t in other_texts]))
    return row


def text_fidelity(generated: pd.DataFrame, real: pd.DataFrame, embed: Callable[[Sequence[str]], np.ndarray], *,
                  n_splits: int = 5, min_real: int = 20, min_generated: int = 10, seed: int = 0) -> pd.DataFrame:
    """The text-fidelity table: one row per scored group (``all`` first, then each attribute value).

    Args:
        generated: one row per generated text: ``text`` and optional ``attr_*`` columns.
        real: one row per held-out real text, the same columns.
        embed: texts -> sentence embeddings (e.g. ``SentenceEncoder.encode``).
        n_splits: random halvings of the real texts averaged over.
        min_real / min_generated: smallest group scored (real texts before halving / generated texts).

    Columns: ``group``, ``n_generated``, ``n_real``, ``n_scored`` (texts per side in each comparison),
    then for each metric the generated score, its ``_floor`` (real half vs real half) and the floor's
    ``_floor_low`` / ``_floor_high`` over the splits; ``distinct1``/``distinct2`` and ``words`` for the
    generated texts and ``_real`` for a real sample of the same size.
    """
    for name, frame in (("generated", generated), ("real", real)):
        if "text" not in frame.columns:
            raise DataError(f"text_fidelity: the {name} table has no `text` column")
    if n_splits < 1:
        raise DataError(f"text_fidelity: n_splits must be at least 1; got {n_splits}")
    gen_texts, real_texts = generated["text"].astype(str).tolist(), real["text"].astype(str).tolist()
    unique = list(dict.fromkeys(gen_texts + real_texts))
    vectors = np.asarray(embed(unique), dtype=np.float64)
    where = {t: i for i, t in enumerate(unique)}
    # The matrices here are small (a few hundred rows): one BLAS thread is fast, while several spin-waiting
    # on a busy CPU made one QR take 3 s instead of 10 ms (measured).
    with threadpool_limits(1), _quiet_native_stderr():
        return _table(generated, real, gen_texts, real_texts, gen_emb=vectors[[where[t] for t in gen_texts]],
                      real_emb=vectors[[where[t] for t in real_texts]], n_splits=n_splits, min_real=min_real,
                      min_generated=min_generated, seed=seed)


@contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Silence what native code prints on file descriptor 2 (faiss, inside MAUVE, warns "please provide at
    least 39 training points" for every small group: expected here, and noise at the end of a run)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _table(generated: pd.DataFrame, real: pd.DataFrame, gen_texts: list[str], real_texts: list[str], *,
           gen_emb: np.ndarray, real_emb: np.ndarray, n_splits: int, min_real: int, min_generated: int,
           seed: int) -> pd.DataFrame:
    rows = []
    for g, (name, col, value) in enumerate(_groups(generated, real)):
        gi = np.arange(len(generated)) if col is None else np.flatnonzero(generated[col].astype(str) == value)
        ri = np.arange(len(real)) if col is None else np.flatnonzero(real[col].astype(str) == value)
        if len(ri) < max(min_real, 4) or len(gi) < max(min_generated, 2):
            continue
        splits = []
        for s in range(n_splits):
            rng = np.random.default_rng([seed, g, s])
            order = rng.permutation(ri)
            half_a, half_b = order[: len(order) // 2], order[len(order) // 2:]
            m = min(len(gi), len(half_b))
            gs = gi if m == len(gi) else np.sort(rng.choice(gi, size=m, replace=False))
            bs = np.sort(rng.choice(half_b, size=m, replace=False))
            splits.append(_split_scores(real_emb[half_a], gen_emb[gs], real_emb[bs],
                                        [gen_texts[i] for i in gs], [real_texts[i] for i in bs], seed + s))
        frame = pd.DataFrame(splits)
        row = {"group": name, "n_generated": len(gi), "n_real": len(ri), "n_scored": m}
        for metric in METRICS:
            row[metric] = frame[metric].mean()
            row[f"{metric}_floor"] = frame[f"{metric}_floor"].mean()
            row[f"{metric}_floor_low"] = frame[f"{metric}_floor"].min()
            row[f"{metric}_floor_high"] = frame[f"{metric}_floor"].max()
        for key in ("distinct1", "distinct1_real", "distinct2", "distinct2_real", "words", "words_real"):
            row[key] = frame[key].mean()
        rows.append(row)
    if not rows:
        raise DataError(f"text_fidelity: too few texts to score ({len(generated)} generated, {len(real)} real; "
                        f"needs at least {min_generated} and {min_real}); simulate more agents")
    return pd.DataFrame(rows)


def verdict(row: pd.Series | dict) -> str:
    """One group's fidelity in plain words: within the real-vs-real spread or how far outside it."""
    fid_ok = row["fid"] <= row["fid_floor_high"]
    mauve_ok = row["mauve"] >= row["mauve_floor_low"]
    if fid_ok and mauve_ok:
        text = "as close to the real texts as another sample of real texts (FID and MAUVE within the floor's spread)"
    else:
        text = (f"further from the real texts than real texts are from each other: FID {row['fid']:.2f} vs "
                f"{row['fid_floor']:.2f} for real texts ({row['fid'] / max(row['fid_floor'], 1e-9):.1f}x), MAUVE "
                f"{row['mauve']:.2f} vs {row['mauve_floor']:.2f}")
    if row["distinct1"] < 0.9 * row["distinct1_real"]:
        text += (f"; less varied wording (distinct-1 {row['distinct1']:.2f} vs {row['distinct1_real']:.2f})")
    elif row["distinct1"] > 1.1 * row["distinct1_real"]:
        text += (f"; more varied wording than real texts (distinct-1 {row['distinct1']:.2f} vs "
                 f"{row['distinct1_real']:.2f})")
    return text


def table_for_people(table: pd.DataFrame) -> pd.DataFrame:
    """The table with names in words and each score beside its floor, two decimals, for printing."""
    def pair(a: float, b: float) -> str:
        return f"{a:.2f} ({b:.2f})"

    return pd.DataFrame({
        "Group": table["group"],
        "Generated": table["n_generated"].astype(int).astype(str),
        "Real": table["n_real"].astype(int).astype(str),
        "Texts per side": table["n_scored"].astype(int).astype(str),
        "FID, lower is better (floor)": [pair(a, b) for a, b in zip(table["fid"], table["fid_floor"])],
        "MAUVE, higher is better (floor)": [pair(a, b) for a, b in zip(table["mauve"], table["mauve_floor"])],
        "KL-cosine, lower is better (floor)": [pair(a, b) for a, b in
                                                zip(table["kl_cosine"], table["kl_cosine_floor"])],
        "Distinct-1 (real)": [pair(a, b) for a, b in zip(table["distinct1"], table["distinct1_real"])],
        "Distinct-2 (real)": [pair(a, b) for a, b in zip(table["distinct2"], table["distinct2_real"])],
        "Words (real)": [f"{a:.0f} ({b:.0f})" for a, b in zip(table["words"], table["words_real"])],
    })


def sample_texts(generated: pd.DataFrame, real: pd.DataFrame, *, by: str | None = "attr_rating", k: int = 3,
                 seed: int = 0) -> pd.DataFrame:
    """``k`` generated texts beside ``k`` real ones per value of ``by`` (all texts when absent), seeded."""
    rows = []
    values = (sorted(set(generated[by].astype(str)) & set(real[by].astype(str)))
              if by and by in generated.columns and by in real.columns else [None])
    for i, value in enumerate(values):
        gen = generated if value is None else generated[generated[by].astype(str) == value]
        ref = real if value is None else real[real[by].astype(str) == value]
        rng = np.random.default_rng([seed, i])
        picks = [rng.choice(len(f), size=min(k, len(f)), replace=False) for f in (gen, ref)]
        for j in range(max(len(p) for p in picks)):
            rows.append({"group": "all" if value is None else f"{by.removeprefix('attr_')}={value}",
                         "generated": str(gen["text"].iloc[picks[0][j]]) if j < len(picks[0]) else "",
                         "real": str(ref["text"].iloc[picks[1][j]]) if j < len(picks[1]) else ""})
    return pd.DataFrame(rows, columns=["group", "generated", "real"])


def run_texts(run_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A review run's generated texts (last round) and its held-out real texts, as ``text`` + ``attr_*``."""
    run_dir = Path(run_dir)
    try:
        responses = pd.read_parquet(run_dir / "responses.parquet")
        real = pd.read_parquet(run_dir / "heldout.parquet")
    except (OSError, ValueError):
        raise RunDirectoryError(f"{run_dir} has no responses.parquet and heldout.parquet of a complete review "
                                "run; run `popsim run` on the review scenario first") from None
    last = responses[responses["round"] == responses["round"].max()]
    generated = last.rename(columns={"answer": "text"})[["text"] + [c for c in last if c.startswith("attr_")]]
    return generated.reset_index(drop=True), real


def write_text_fidelity(run_dir: str | Path, embed: Callable[[Sequence[str]], np.ndarray], *,
                        seed: int = 0) -> pd.DataFrame | None:
    """Score a review run and write ``text_fidelity.csv`` and ``text_fidelity.json`` into its folder; a run
    with too few texts to score gets neither (and None), not an error after its texts were written."""
    run_dir = Path(run_dir)
    try:
        table = text_fidelity(*run_texts(run_dir), embed, seed=seed)
    except DataError:
        for name in ("text_fidelity.csv", "text_fidelity.json"):
            (run_dir / name).unlink(missing_ok=True)  # a stale table of an earlier, larger run
        return None
    atomic_write_text(run_dir / "text_fidelity.csv", table.to_csv(index=False))
    atomic_write_json(run_dir / "text_fidelity.json", table.to_dict(orient="records"))
    return table


def printed(table: pd.DataFrame) -> str:
    """What a review run prints at its end: the table, scores beside their floors, and the verdict."""
    overall = table.iloc[0]
    return ("\nGenerated vs held-out real texts (real vs real floor in brackets: a second half of the real texts "
            "scored against the first, at the same number of texts):\n"
            + table_for_people(table).to_string(index=False)
            + f"\nOverall: {verdict(overall)}.")
