"""Evaluation metrics: survey answer distributions and generated text, as plain functions over arrays.

Survey metrics compare answer distributions of real and simulated respondents (all honour survey
weights); text metrics compare sentence-embedding sets of real and generated texts, as in the MoP paper
(Bui et al., Findings of ACL 2025): FID, MAUVE, KL-cosine, plus distinct-n and train-on-synthetic /
test-on-real downstream scores. Malformed inputs raise :class:`~popsim.exceptions.DataError` (a
``ValueError``) with a one-line message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from popsim.exceptions import DataError

__all__ = [
    "column_weights",
    "weighted_distribution",
    "total_variation",
    "js_distance",
    "wasserstein_ordinal",
    "representativeness",
    "kish_effective_n",
    "fid",
    "conditional_fid",
    "mauve_score",
    "kl_cosine",
    "distinct_n",
    "downstream_scores",
]

# FID: diagonal offset added to both covariances when sqrtm of their product is not finite (pytorch-fid).
FID_EPS = 1e-6


# ----------------------------------------------------------------------------------------------------
# validation helpers


def _check_weights(weights: ArrayLike, n: int | None = None, *, name: str = "weights") -> np.ndarray:
    """Return ``weights`` as a 1-D float array; raise DataError if negative, non-finite or all zero."""
    w = np.asarray(weights, dtype=float)
    if w.ndim != 1:
        raise DataError(f"`{name}` must be 1-D; got shape {w.shape}")
    if n is not None and w.shape[0] != n:
        raise DataError(f"`{name}` has {w.shape[0]} values but there are {n} codes; pass one weight per code")
    if w.size == 0:
        raise DataError(f"`{name}` is empty; pass at least one weight")
    if not np.all(np.isfinite(w)):
        raise DataError(f"`{name}` contains NaN or infinite values; drop or impute those rows first")
    if np.any(w < 0):
        raise DataError(f"`{name}` must be non-negative; got minimum {w.min():g}")
    if not np.any(w > 0):
        raise DataError(f"`{name}` are all zero; at least one weight must be positive")
    return w


def _as_distribution(p: ArrayLike, name: str) -> np.ndarray:
    """Return ``p`` as a 1-D float array normalised to sum 1 (non-negative, finite, positive sum)."""
    a = np.asarray(p, dtype=float)
    if a.ndim != 1 or a.size == 0:
        raise DataError(f"`{name}` must be a non-empty 1-D array of shares; got shape {a.shape}")
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise DataError(f"`{name}` must hold finite non-negative shares; got {a.tolist()}")
    total = a.sum()
    if total <= 0:
        raise DataError(f"`{name}` sums to zero; pass at least one positive share")
    return a / total


def _pair(p: ArrayLike, q: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    pa, qa = _as_distribution(p, "p"), _as_distribution(q, "q")
    if pa.shape != qa.shape:
        raise DataError(f"`p` and `q` must have the same number of options; got {pa.size} and {qa.size}")
    return pa, qa


def _check_embeddings(x: ArrayLike, name: str, *, min_rows: int = 2) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise DataError(f"`{name}` must be a 2-D array (n_texts, dim); got shape {a.shape}")
    if a.shape[0] < min_rows:
        raise DataError(f"`{name}` has {a.shape[0]} rows; pass at least {min_rows}")
    if not np.all(np.isfinite(a)):
        raise DataError(f"`{name}` contains NaN or infinite values")
    return a


def _check_embedding_pair(real: ArrayLike, synth: ArrayLike, *, min_rows: int = 2):
    r = _check_embeddings(real, "real_emb", min_rows=min_rows)
    s = _check_embeddings(synth, "synth_emb", min_rows=min_rows)
    if r.shape[1] != s.shape[1]:
        raise DataError(f"`real_emb` and `synth_emb` differ in dimension: {r.shape[1]} vs {s.shape[1]}")
    return r, s


def _is_missing(codes: np.ndarray) -> np.ndarray:
    if codes.dtype.kind in "fc":
        return np.isnan(codes)
    if codes.dtype.kind == "O":
        import pandas as pd

        return np.asarray(pd.isna(codes), dtype=bool)
    return np.zeros(codes.shape, dtype=bool)


# ----------------------------------------------------------------------------------------------------
# survey distribution metrics


def column_weights(frame: pd.DataFrame, column: str | None) -> np.ndarray:
    """The weights in ``frame[column]`` (equal weights when there is no such column), checked as
    :func:`weighted_distribution` checks weights: one rule for every table a report reads."""
    if not column or column not in frame.columns or frame.empty:
        return np.ones(len(frame))
    return _check_weights(pd.to_numeric(frame[column], errors="coerce").to_numpy(float), name=f"column {column}")


def weighted_distribution(
    codes: ArrayLike, options: Sequence[Any], weights: ArrayLike | None = None
) -> np.ndarray:
    """Weighted share of each answer option, in ``options`` order.

    share_k = sum_i w_i [code_i == option_k] / sum_i w_i [code_i in options]. Missing codes (NaN, None,
    ``pd.NA``) and codes not in ``options`` (e.g. refusals, kept apart as in OpinionQA) are left out.

    Args:
        codes: one answer code per respondent.
        options: the answer options to report, in order (ordinal order for W1-based metrics).
        weights: survey weights, one per respondent; ``None`` means equal weights.

    Raises:
        DataError: weights negative, NaN or all zero; duplicate options; no respondent left.
    """
    c = np.asarray(codes)
    if c.ndim != 1:
        raise DataError(f"`codes` must be 1-D; got shape {c.shape}")
    opts = list(options)
    if len(opts) == 0:
        raise DataError("`options` is empty; pass the answer options to count")
    if len(set(opts)) != len(opts):
        raise DataError(f"`options` has duplicates: {opts}")
    w = np.ones(c.shape[0]) if weights is None else _check_weights(weights, c.shape[0])
    keep = ~_is_missing(c)
    c, w = c[keep], w[keep]
    totals = np.array([w[np.asarray(c == o, dtype=bool)].sum() for o in opts], dtype=float)
    if totals.sum() <= 0:
        raise DataError(
            f"no weighted respondent answered one of the options {opts}; check the codes and the options"
        )
    return totals / totals.sum()


def total_variation(p: ArrayLike, q: ArrayLike) -> float:
    """Total variation distance 0.5 * sum_k |p_k - q_k| (inputs normalised to sum 1); in [0, 1]."""
    pa, qa = _pair(p, q)
    return float(min(1.0, 0.5 * np.abs(pa - qa).sum()))


def js_distance(p: ArrayLike, q: ArrayLike) -> float:
    """Jensen-Shannon distance (square root of the JS divergence, base 2), via scipy; in [0, 1]."""
    from scipy.spatial.distance import jensenshannon

    pa, qa = _pair(p, q)
    with np.errstate(invalid="ignore"):
        d = float(jensenshannon(pa, qa, base=2))
    # the divergence can round to a tiny negative number for (near-)identical inputs -> sqrt gives NaN
    return 0.0 if np.isnan(d) else min(1.0, d)


def wasserstein_ordinal(p: ArrayLike, q: ArrayLike) -> float:
    """Wasserstein-1 (earth mover's) distance between ``p`` and ``q`` placed on positions 0..n-1."""
    from scipy.stats import wasserstein_distance

    pa, qa = _pair(p, q)
    positions = np.arange(pa.size, dtype=float)
    return float(wasserstein_distance(positions, positions, u_weights=pa, v_weights=qa))


def representativeness(p: ArrayLike, q: ArrayLike) -> float:
    """OpinionQA representativeness 1 - W1(p, q) / (n_options - 1) (Santurkar et al. 2023); in [0, 1].

    ``p`` and ``q`` are shares over ordinal options in order; keep refusals out of them.
    """
    pa, qa = _pair(p, q)
    if pa.size < 2:
        raise DataError("representativeness needs at least 2 ordinal options")
    return float(np.clip(1.0 - wasserstein_ordinal(pa, qa) / (pa.size - 1), 0.0, 1.0))


def kish_effective_n(weights: ArrayLike) -> float:
    """Kish's effective sample size (sum w)^2 / sum w^2 (Kish 1965); equals n for equal weights."""
    w = _check_weights(weights)
    w = w / w.max()  # scale-free, and no underflow of w**2 for tiny weights (1e-200 -> 0 -> NaN)
    return float(w.sum() ** 2 / np.square(w).sum())


# ----------------------------------------------------------------------------------------------------
# text metrics on sentence embeddings


def fid(real_emb: ArrayLike, synth_emb: ArrayLike) -> float:
    """Fréchet distance between Gaussians fit to two embedding sets (Heusel et al. 2017).

    ||mu_r - mu_s||^2 + Tr(S_r + S_s - 2 (S_r S_s)^(1/2)), as in pytorch-fid: if the matrix square root
    is not finite, ``FID_EPS`` (1e-6) is added to both covariance diagonals; the real part is kept. The
    MoP paper reports it on sentence embeddings. Clipped at 0 (rounding can give -1e-12 for equal sets).
    """
    from scipy.linalg import sqrtm

    r, s = _check_embedding_pair(real_emb, synth_emb)
    mu_r, mu_s = r.mean(axis=0), s.mean(axis=0)
    cov_r = np.atleast_2d(np.cov(r, rowvar=False))
    cov_s = np.atleast_2d(np.cov(s, rowvar=False))
    covmean = sqrtm(cov_r @ cov_s)
    if not np.all(np.isfinite(covmean)):
        offset = np.eye(cov_r.shape[0]) * FID_EPS
        covmean = sqrtm((cov_r + offset) @ (cov_s + offset))
    covmean = np.real(covmean)
    diff = mu_r - mu_s
    value = diff @ diff + np.trace(cov_r) + np.trace(cov_s) - 2.0 * np.trace(covmean)
    return float(max(value, 0.0))


def conditional_fid(
    real_emb: ArrayLike, real_labels: Sequence, synth_emb: ArrayLike, synth_labels: Sequence
) -> float:
    """FID within each label (texts written for label c vs real texts of label c), averaged over the real
    labels weighted by their shares.

    The pooled :func:`fid` cannot tell whether a text fits the context it was written for: swapping the
    texts of two labels leaves it unchanged. Labels with fewer than two texts on either side are left out
    (their weight goes to the others); none left is an error.
    """
    real, synth = _check_embedding_pair(real_emb, synth_emb)
    real_labels, synth_labels = np.asarray(real_labels), np.asarray(synth_labels)
    if len(real_labels) != len(real) or len(synth_labels) != len(synth):
        raise DataError("conditional_fid: one label per embedding row is needed on both sides")
    labels, counts = np.unique(real_labels, return_counts=True)
    scores, weights = [], []
    for label, count in zip(labels, counts, strict=True):
        r, s = real[real_labels == label], synth[synth_labels == label]
        if len(r) >= 2 and len(s) >= 2:
            scores.append(fid(r, s))
            weights.append(count)
    if not scores:
        raise DataError("conditional_fid: no label has two or more texts on both sides")
    return float(np.average(scores, weights=weights))


def mauve_score(
    real_emb: ArrayLike, synth_emb: ArrayLike, *, seed: int = 0, num_buckets: int | str = "auto"
) -> float:
    """MAUVE (Pillutla et al. 2021) between real (P) and generated (Q) embeddings, via ``mauve-text``.

    Features are precomputed, so nothing is downloaded. Settings: ``num_buckets='auto'`` (n/10 k-means
    clusters), ``kmeans_num_redo=1``, ``kmeans_max_iter=100``, scaling factor 5 (the default), CPU.
    In [0, 1]; higher means closer.
    """
    import mauve

    r, s = _check_embedding_pair(real_emb, synth_emb)
    if num_buckets != "auto" and (not isinstance(num_buckets, int) or num_buckets < 2):
        raise DataError(f"`num_buckets` must be 'auto' or an integer >= 2; got {num_buckets!r}")
    out = mauve.compute_mauve(
        p_features=r, q_features=s, num_buckets=num_buckets, kmeans_num_redo=1, kmeans_max_iter=100,
        device_id=-1, verbose=False, seed=int(seed),
    )
    return float(np.clip(out.mauve, 0.0, 1.0))


def _pairwise_cosines(x: np.ndarray, max_points: int, rng: np.random.Generator) -> np.ndarray:
    if x.shape[0] > max_points:
        x = x[np.sort(rng.choice(x.shape[0], size=max_points, replace=False))]
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise DataError("an embedding row is all zeros; cosine similarity is undefined for it")
    x = x / norms
    iu = np.triu_indices(x.shape[0], k=1)
    return np.clip((x @ x.T)[iu], -1.0, 1.0)


def kl_cosine(
    real_emb: ArrayLike,
    synth_emb: ArrayLike,
    *,
    bins: int = 50,
    eps: float = 1e-6,
    max_points: int = 2000,
    seed: int = 0,
) -> float:
    """KL-cosine (MoP paper): KL(H_real || H_synth) between histograms of pairwise cosine similarities.

    Each histogram counts the cosine similarities of all pairs i < j within one set, in ``bins`` equal
    bins over [-1, 1] (default 50); shares are smoothed by adding ``eps`` (default 1e-6) to every bin and
    renormalising, so empty bins give a finite value. A set with more than ``max_points`` rows is first
    subsampled to ``max_points`` rows with ``numpy.random.default_rng(seed)`` (deterministic).
    KL in nats via ``scipy.stats.entropy``; 0 for identical sets, lower is closer.
    """
    from scipy.stats import entropy

    if bins < 1 or eps <= 0 or max_points < 2:
        raise DataError(
            f"kl_cosine needs bins >= 1, eps > 0 and max_points >= 2; got {bins}, {eps}, {max_points}"
        )
    r, s = _check_embedding_pair(real_emb, synth_emb)
    rng = np.random.default_rng(seed)
    edges = np.linspace(-1.0, 1.0, bins + 1)
    hists = []
    for x in (r, s):
        counts, _ = np.histogram(_pairwise_cosines(x, max_points, rng), bins=edges)
        h = counts / counts.sum() + eps
        hists.append(h / h.sum())
    return float(entropy(hists[0], hists[1]))


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Distinct-n (Li et al. 2016): unique n-grams / total n-grams over the corpus.

    Tokens are the lowercased whitespace-split words of each text; n-grams do not cross texts. Returns
    0.0 when no text has n tokens.
    """
    if isinstance(texts, str):
        raise DataError("`texts` must be a list of texts, not a single string")
    if n < 1:
        raise DataError(f"`n` must be a positive integer; got {n}")
    grams: list[tuple[str, ...]] = []
    for text in texts:
        tokens = text.lower().split()
        grams.extend(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    return len(set(grams)) / len(grams) if grams else 0.0


def downstream_scores(
    train_emb: ArrayLike,
    train_labels: ArrayLike,
    test_emb: ArrayLike,
    test_labels: ArrayLike,
    *,
    seed: int = 0,
) -> dict[str, float]:
    """Train on synthetic, test on real: logistic regression on embeddings -> accuracy and macro F1.

    A lightweight stand-in for the MoP paper's DistilBERT classifier. ``LogisticRegression(max_iter=1000)``;
    macro F1 averages over the labels in the test set or the predictions (``zero_division=0``). A
    training set with a single class predicts that class for every test text.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    x_train = _check_embeddings(train_emb, "train_emb", min_rows=1)
    x_test = _check_embeddings(test_emb, "test_emb", min_rows=1)
    y_train, y_test = np.asarray(train_labels), np.asarray(test_labels)
    if x_train.shape[1] != x_test.shape[1]:
        raise DataError(
            f"`train_emb` and `test_emb` differ in dimension: {x_train.shape[1]} vs {x_test.shape[1]}"
        )
    if y_train.shape != (x_train.shape[0],) or y_test.shape != (x_test.shape[0],):
        raise DataError("pass one label per embedding row for both the training and the test set")
    classes = np.unique(y_train)
    if classes.size == 1:
        pred = np.full(y_test.shape, classes[0], dtype=y_train.dtype)
    else:
        model = LogisticRegression(max_iter=1000, random_state=seed).fit(x_train, y_train)
        pred = model.predict(x_test)
    return {
        "accuracy": float(accuracy_score(y_test, pred)),
        "macro_f1": float(f1_score(y_test, pred, average="macro", zero_division=0)),
    }
