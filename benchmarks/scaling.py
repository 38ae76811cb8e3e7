"""Scaling of a full ``popsim run`` with population size: time and peak memory for 100 -> 800 agents.

Each size runs in its own process (peak RSS is a per-process high-water mark) through the same code as
``python -m popsim run``: the GSS survey scenario cut to 4 questions, MoP fitted once beforehand and
copied into every run directory (so only simulation, streaming to disk and the final parquet files are
timed), answers flushed to ``parts/`` chunk by chunk. Time is the run's own ``simulate`` timing from
its manifest; memory is the process's peak RSS (model weights and torch included). The smallest size
runs again after the largest and the time ratio uses the mean of its two timings: the sizes run one after
another for ~9 minutes, and a machine that drifts over that span would otherwise move the ratio (two
otherwise identical runs gave 8.77 and 9.63 with a single 100-agent timing).

Last line::

    RESULT time_ratio_8x=X rss_ratio_8x=Y

(800 agents over 100 agents; linear scaling would be 8.0 and flat memory 1.0).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from common import ROOT, load_average, peak_rss_mb

SIZES = (100, 200, 400, 800)


def scenario_overrides(out: Path, agents: int) -> dict:
    raw = yaml.safe_load((ROOT / "scenarios" / "survey.yaml").read_text())
    return {"output": str(out), "simulation.agents": agents, "questions": raw["questions"][:4]}


def worker(out: Path, agents: int) -> None:
    """Run one size in this process and print its timings and peak RSS as JSON."""
    from popsim.config import load_scenario
    from popsim.runner import run

    scenario = load_scenario(ROOT / "scenarios" / "survey.yaml", scenario_overrides(out, agents))
    result = run(scenario, verbose=False)
    print(json.dumps({"agents": agents, "simulate_s": result.timings["simulate"], "total_s": result.timings["total"],
                      "lm_calls": result.lm_calls, "responses": len(result.responses), "peak_rss_mb": peak_rss_mb()}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    ap.add_argument("--worker", nargs=2, metavar=("OUT", "AGENTS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(Path(args.worker[0]), int(args.worker[1]))
        return
    print(f"load average {load_average()}; sizes {args.sizes}, 4 questions each")
    script = str(Path(__file__).resolve())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        fitted = Path(tmp) / "fit"
        subprocess.run([sys.executable, script, "--worker", str(fitted), "4"], check=True, capture_output=True)
        for k, n in enumerate([*args.sizes, args.sizes[0]]):
            out = Path(tmp) / f"run{k}-{n}"
            out.mkdir()
            shutil.copytree(fitted / "mop", out / "mop")
            shutil.copy(fitted / "personas.json", out / "personas.json")
            proc = subprocess.run([sys.executable, script, "--worker", str(out), str(n)], check=True,
                                  capture_output=True, text=True)
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(row)
            again = " (again, for drift)" if k == len(args.sizes) else ""
            print(f"{n:5d} agents: simulate {row['simulate_s']:7.1f} s ({row['lm_calls']} LM calls, "
                  f"{row['responses']} responses), peak RSS {row['peak_rss_mb']:7.0f} MiB{again}", flush=True)
    repeat = rows.pop()
    first, last = rows[0], rows[-1]
    scale = last["agents"] / first["agents"]
    base = (first["simulate_s"] + repeat["simulate_s"]) / 2
    print(f"{scale:.0f}x agents -> {last['simulate_s'] / base:.2f}x time (over the mean of the two "
          f"{first['agents']}-agent runs; {last['simulate_s'] / first['simulate_s']:.2f}x over the first alone), "
          f"{last['peak_rss_mb'] / first['peak_rss_mb']:.2f}x peak RSS; load average {load_average()}")
    print(f"RESULT time_ratio_8x={last['simulate_s'] / base:.2f} "
          f"rss_ratio_8x={last['peak_rss_mb'] / first['peak_rss_mb']:.2f}")


if __name__ == "__main__":
    main()
