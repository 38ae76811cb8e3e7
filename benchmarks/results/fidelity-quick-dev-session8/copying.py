"""Does the exemplar SmolLM2 is shown shape what it writes? (dev, quick text settings)

    python benchmarks/results/fidelity-quick-dev-session8/copying.py [--text sst2,imdb,agnews] [--seed 0]

Fits the quick text setting's MoP on dev (score cache: seconds), draws (persona, exemplar) pairs for the dev
generation contexts as ``fidelity.py`` does for MoP and the uniform mixture, writes the texts with the same
per-text seeds, and prints, split by whether the exemplar's label matches the context's: the mean cosine
(MiniLM) between each text and the exemplar it was shown, the mean cosine between each text and the whole
pool (what an ignored exemplar would give), the share of texts whose word bigrams are >= 50% the
exemplar's, and mean words.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import fidelity as fb  # noqa: E402

from popsim.sim.model import assign_mixture  # noqa: E402


def bigrams(text: str) -> set:
    w = text.lower().split()
    return set(zip(w, w[1:]))


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main() -> None:
    for fit in fb.dev_text_fits("sst2,imdb,agnews"):
        name, cfg, seed, lm, encoder, mop = fit.name, fit.cfg, fit.seed, fit.lm, fit.encoder, fit.mop
        pool_labels, gen_ctx = fit.pool_labels, fit.gen_ctx
        pool_texts = list(mop.exemplars_.texts)
        pool_emb = unit(encoder.encode(pool_texts))
        contexts, labels = list(gen_ctx["context"]), np.asarray(gen_ctx["label"])
        seeds = [seed * 100_003 + i for i in range(len(contexts))]
        for method in ("mop", "uniform"):
            draw = assign_mixture(method, mop, contexts, np.random.default_rng(seed))
            js = np.asarray(draw["exemplar"])
            prompts = [mop.prompt(int(k), int(j), c) for k, j, c in zip(draw["persona"], js, contexts, strict=True)]
            texts = lm.generate(prompts, max_new_tokens=cfg["max_new_tokens"],
                                temperature=[float(x) for x in draw["temperature"]], seed=seeds)
            texts = [" ".join(x.split()) or "." for x in texts]
            emb = unit(encoder.encode(texts))
            same = pool_labels[js] == labels
            cos = np.sum(emb * pool_emb[js], axis=1)
            base = (emb @ pool_emb.T).mean(axis=1)
            overlap = np.asarray([len(bigrams(t) & bigrams(pool_texts[j])) / max(1, len(bigrams(t)))
                                  for t, j in zip(texts, js)])
            words = np.asarray([len(t.split()) for t in texts])
            for part, mask in (("all", np.ones_like(same)), ("same label", same), ("other label", ~same)):
                if mask.sum():
                    print(f"[{name}] {method:>7} {part:>11} (n={mask.sum():3d}): cos(text, its exemplar) "
                          f"{cos[mask].mean():.3f}  cos(text, pool) {base[mask].mean():.3f}  "
                          f"copies {np.mean(overlap[mask] >= 0.5):.3f}  words {words[mask].mean():.1f}", flush=True)
            print(f"[{name}] {method:>7} distinct exemplars drawn: {len(set(js.tolist()))} of {len(pool_texts)}",
                  flush=True)


if __name__ == "__main__":
    main()
