"""Evaluation metrics for simulated survey answers and generated text (see :mod:`popsim.eval.metrics`)."""

from popsim.eval.metrics import (
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

__all__ = [
    "weighted_distribution",
    "total_variation",
    "js_distance",
    "wasserstein_ordinal",
    "representativeness",
    "kish_effective_n",
    "fid",
    "mauve_score",
    "kl_cosine",
    "distinct_n",
    "downstream_scores",
]
