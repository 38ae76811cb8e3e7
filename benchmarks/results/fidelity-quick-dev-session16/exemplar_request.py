"""Why do label-matched exemplars cost SST-2? The repeated request, or the exemplar's content? (dev, no gate)

    python benchmarks/results/fidelity-quick-dev-session16/exemplar_request.py [--text sst2] [--seed 0]

For the quick text setting's dev generation contexts, exemplars are drawn uniformly from the pool among any
label, the context's own label, or the other label (as `../fidelity-quick-dev-session7/label_match.py`),
and the exemplar turn's request (the user message before the exemplar's text) is rendered three ways: as
the benchmark renders it ("Please write a positive one-sentence movie review."), reworded ("Write a
positive ..."; never identical to the task that follows), or without its label ("Please write a
one-sentence movie review."). Personas uniform, tau 0.9, the same per-text seeds. Prints pooled FID /
MAUVE, per-label FID and mean words of each set.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import fidelity as fb  # noqa: E402

from popsim.eval.metrics import conditional_fid, fid  # noqa: E402
from popsim.lm.base import Chat  # noqa: E402

ARMS = [("any label", "as is"), ("same label", "as is"), ("same label", "reworded"), ("any label", "reworded"),
        ("same label", "no label"), ("any label", "no label"), ("other label", "no label")]


def render(chat: Chat, request: str) -> Chat:
    """``chat`` with its exemplar turn's request rendered as ``request`` says (system, user, assistant, user)."""
    messages = list(chat.messages)
    i = next(n for n, (role, _) in enumerate(messages) if role == "user")
    text = messages[i][1]
    assert text.startswith("Please write "), text
    if request == "reworded":
        messages[i] = ("user", "Write " + text[len("Please write "):])
    elif request == "no label":
        messages[i] = ("user", "Please write a one-sentence movie review.")
    return Chat(messages=tuple(messages))


def main() -> None:
    for fit in fb.dev_text_fits("sst2"):
        name, cfg, seed, lm, encoder, mop = fit.name, fit.cfg, fit.seed, fit.lm, fit.encoder, fit.mop
        pool_labels, real, gen_ctx = fit.pool_labels, fit.real, fit.gen_ctx
        contexts, labels = list(gen_ctx["context"]), np.asarray(gen_ctx["label"])
        real_emb, real_lab = encoder.encode(list(real["text"])), list(real["label"])
        seeds = [seed * 100_003 + i for i in range(len(contexts))]
        for way, request in ARMS:
            rng = np.random.default_rng(seed)
            ks = rng.integers(len(mop.personas_), size=len(contexts))
            js = []
            for lab in labels:
                allowed = {"any label": np.arange(len(pool_labels)), "same label": np.flatnonzero(pool_labels == lab),
                           "other label": np.flatnonzero(pool_labels != lab)}[way]
                js.append(int(rng.choice(allowed)))
            prompts = [render(mop.prompt(int(k), j, c), request) for k, j, c in zip(ks, js, contexts, strict=True)]
            texts = lm.generate(prompts, max_new_tokens=cfg["max_new_tokens"], temperature=cfg["tau_init"], seed=seeds)
            emb = encoder.encode([" ".join(t.split()) or "." for t in texts])
            print(f"[{name} seed {seed}] {way:>11}, request {request:>8}: FID {fid(real_emb, emb):.3f} MAUVE "
                  f"{fb._mauve(real_emb, emb, cfg):.3f} per-label FID "
                  f"{conditional_fid(real_emb, real_lab, emb, list(labels)):.3f} words "
                  f"{np.mean([len(t.split()) for t in texts]):.1f}", flush=True)


if __name__ == "__main__":
    main()
