"""Dev check (no fidelity run): do the LM's persona summaries describe their own cluster?

For each dataset at the quick (or full) sizes, builds the exemplar pool exactly as `fidelity.py --dev` does,
clusters it and summarises each cluster with the shipped summary request, and measures each summary by its
sentence embedding: is it nearer its own cluster's centroid than any other (hit), and by how much (margin =
own cosine minus the best other). Fallback descriptions (built from the cluster's terms) are counted apart.

    python benchmarks/results/fidelity-quick-dev-session10/persona_summaries.py [--full] [--seed 0]
        [--request shipped|grounded] [--check]
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import fidelity as F  # noqa: E402

from popsim.data import survey_exemplars  # noqa: E402
from popsim.mop import personas as P  # noqa: E402
from popsim.mop.model import embed_pairs  # noqa: E402
from popsim.mop.records import ExemplarPool, Records  # noqa: E402

REQUESTS = {
    "shipped": P.SUMMARY_REQUEST,
    "grounded": (
        "Here are texts written by people from one group:\n{examples}\n\n{facts}\n\n"
        "Describe this kind of person in one sentence that starts with 'You are'. "
        "Mention their attitude and style."
    ),
}


def text_pool(name: str, cfg: dict, seed: int) -> ExemplarPool:
    splits = F.load_text(name, cfg["max_words"], seed)
    train = F._sample(splits["train"], cfg["n_train"], seed)
    return ExemplarPool.from_records(Records(list(train["context"]), list(train["text"])), cfg["n_exemplars"],
                                     seed=seed)


def survey_pool(name: str, cfg: dict, seed: int) -> ExemplarPool:
    pop = F.load_survey(name, cfg, seed, Path("/tmp/persona-summaries"), True)
    seen, _ = F.split_items(pop, seed)
    return survey_exemplars(pop, cfg["n_exemplars"], n_questions=cfg["exemplar_questions"], seed=seed,
                            question_ids=seen)


def measure(personas, labels, h_e, encoder) -> list[tuple[str, bool, float]]:
    k = len(personas)
    cent = np.stack([h_e[labels == m].mean(axis=0) for m in range(k)])
    cent /= np.linalg.norm(cent, axis=1, keepdims=True)
    emb = encoder.encode([p.text for p in personas])
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sims = emb @ cent.T
    out = []
    for m in range(k):
        others = np.delete(sims[m], m)
        out.append((personas[m].source, bool(sims[m].argmax() == m), float(sims[m, m] - others.max())))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--request", choices=list(REQUESTS), default="shipped")
    parser.add_argument("--check", action="store_true", help="check_personas: summaries must sit nearest their cluster")
    parser.add_argument("--datasets", default="imdb,agnews,sst2,gss,nonvoters")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sizes = F.SIZES["full" if args.full else "quick"]
    totals: dict[str, list] = {}
    for name in args.datasets.split(","):
        part = "survey" if name in {"gss", "nonvoters"} else "text"
        cfg = sizes[part]
        lm, encoder = F.models(part)
        pool = survey_pool(name, cfg, args.seed) if part == "survey" else text_pool(name, cfg, args.seed)
        h_e = embed_pairs(encoder, pool, cfg["pair_embedding"])
        personas, labels = P.synthesize_personas(pool.texts, h_e, n_personas=cfg["n_personas"], lm=lm,
                                                 attributes=pool.attributes, seed=args.seed,
                                                 summary_request=REQUESTS[args.request],
                                                 check_encoder=encoder if args.check else None)
        rows = measure(personas, labels, h_e, encoder)
        print(f"== {name} (K={cfg['n_personas']}, N={len(pool)})")
        for p, (source, hit, margin) in zip(personas, rows, strict=True):
            print(f"  [{source:8}] hit={hit!s:5} margin={margin:+.3f}  {p.text[:150]}"
                  + (f"\n      (rejected: {p.rejected[:120]})" if p.rejected else ""))
        totals.setdefault("all", []).extend(rows)
        totals.setdefault(part, []).extend(rows)
    for key, rows in totals.items():
        lm_rows = [r for r in rows if r[0] == "lm"]
        print(f"SUMMARY {key}: {len(rows)} personas, {len(lm_rows)} LM summaries "
              f"({sum(r[1] for r in lm_rows)} hit own centroid), {len(rows) - len(lm_rows)} fallbacks "
              f"({sum(r[1] for r in rows if r[0] != 'lm')} hit); mean margin LM "
              f"{np.mean([r[2] for r in lm_rows]) if lm_rows else float('nan'):+.3f}")


if __name__ == "__main__":
    main()
