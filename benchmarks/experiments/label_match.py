"""Does a label-matched exemplar make SmolLM2's texts less like the real ones? (dev splits, no gate involved)

    python -m benchmarks.experiments.label_match [--text sst2,imdb] [--seed 0]   # from the repository root

For the quick text setting's dev generation contexts, exemplars are drawn uniformly from the pool three
ways: any label (the uniform mixture), the context's own label, the other label(s). Personas uniform,
tau 0.9, the same per-text seeds. Prints pooled FID / MAUVE, per-label FID and mean words of each set.
``run`` takes other arms and a ``render`` hook that rewrites each prompt per arm (the exemplar-request
variants of 2026-12-05 were run through it; see docs/experiments.md).
"""

from __future__ import annotations

import numpy as np

from benchmarks.fidelity_suite import dev_text_fits, mean_mauve
from popsim.eval.metrics import conditional_fid, fid

WAYS = ("any label", "same label", "other label")


def run(arms, render=lambda chat, variant: chat, default_text: str = "sst2,imdb") -> None:
    """Generate and score one text set per arm ``(way, variant)``: exemplars drawn uniformly among the
    labels ``way`` allows, each prompt passed through ``render(chat, variant)`` (as built by default)."""
    for fit in dev_text_fits(default_text):
        name, cfg, seed, lm, encoder, mop = fit.name, fit.cfg, fit.seed, fit.lm, fit.encoder, fit.mop
        pool_labels, real, gen_ctx = fit.pool_labels, fit.real, fit.gen_ctx
        contexts, labels = list(gen_ctx["context"]), np.asarray(gen_ctx["label"])
        real_emb, real_lab = encoder.encode(list(real["text"])), list(real["label"])
        seeds = [seed * 100_003 + i for i in range(len(contexts))]
        for way, variant in arms:
            rng = np.random.default_rng(seed)
            ks = rng.integers(len(mop.personas_), size=len(contexts))
            js = []
            for lab in labels:
                allowed = {"any label": np.arange(len(pool_labels)), "same label": np.flatnonzero(pool_labels == lab),
                           "other label": np.flatnonzero(pool_labels != lab)}[way]
                js.append(int(rng.choice(allowed)))
            prompts = [render(mop.prompt(int(k), j, c), variant) for k, j, c in zip(ks, js, contexts, strict=True)]
            texts = lm.generate(prompts, max_new_tokens=cfg["max_new_tokens"], temperature=cfg["tau_init"], seed=seeds)
            emb = encoder.encode([" ".join(t.split()) or "." for t in texts])
            arm = way if variant is None else f"{way}, {variant}"
            print(f"[{name}] {arm:>11}: FID {fid(real_emb, emb):.3f} MAUVE {mean_mauve(real_emb, emb, cfg):.3f} "
                  f"per-label FID {conditional_fid(real_emb, real_lab, emb, list(labels)):.3f} words "
                  f"{np.mean([len(t.split()) for t in texts]):.1f}", flush=True)


def main() -> None:
    run([(way, None) for way in WAYS])


if __name__ == "__main__":
    main()
