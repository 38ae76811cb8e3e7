"""Evaluation metrics for simulated survey answers and generated text (see :mod:`popsim.eval.metrics`)."""

from popsim.eval.answers import question_errors, question_order, question_shares
from popsim.eval.composition import persona_composition
from popsim.eval.metrics import (
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
from popsim.eval.report import BANNER, build_report, method_headline, worst_cells
from popsim.eval.subgroups import (
    Cell,
    cell_fidelity,
    cell_question_fidelity,
    noise_floor_curve,
    respondent_table,
    split_half_noise_floor,
    subgroup_cells,
)

__all__ = [
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
    "Cell",
    "respondent_table",
    "subgroup_cells",
    "cell_question_fidelity",
    "cell_fidelity",
    "noise_floor_curve",
    "split_half_noise_floor",
    "persona_composition",
    "BANNER",
    "build_report",
    "method_headline",
    "worst_cells",
    "question_shares",
    "question_errors",
    "question_order",
]
