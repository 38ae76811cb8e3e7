"""``python -m popsim``: a thin command layer over :func:`popsim.runner.run` and friends.

Commands: run (fit if needed, simulate, summarise), validate, fit, simulate, report, serve, init (draft a
scenario from a data file). User errors print
one line (``popsim: error: ...``) and exit 2; Ctrl-C keeps completed responses and says how to resume.
"""

from __future__ import annotations

import argparse
import os
import sys

from popsim.exceptions import PopsimError
from popsim.option_order import OPTION_ORDERS

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="popsim", description="Simulate populations with Mixture of Personas.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_ in [("run", "fit if needed, simulate, summarise"), ("validate", "check a scenario file"),
                        ("fit", "fit the MoP model only"), ("simulate", "simulate with the fitted model")]:
        p = sub.add_parser(name, help=help_)
        p.add_argument("scenario", help="scenario YAML file")
        p.add_argument("--out", help="run directory (default runs/<name>)")
        p.add_argument("--agents", type=int, help="population size")
        p.add_argument("--seed", type=int, help="random seed")
        p.add_argument("--lm", help="LM name, folder or .gguf")
        p.add_argument("--method", help="mop, uniform, persona-only, no-persona or silicon")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        if name in {"run", "simulate"}:
            p.add_argument("--option-bias", choices=["none", "learned"],
                           help="learned: correct the LM's preference for some option wordings from training answers")
            p.add_argument("--option-order", choices=OPTION_ORDERS,
                           help="how options are shown: shuffled per agent, or averaged over forward and reversed")
            p.add_argument("--ray", action="store_true", help="shard the population over Ray workers "
                           "(same responses as one process; RAY_ADDRESS joins a cluster)")
            p.add_argument("--workers", type=int, help="Ray workers, each with its own LM (default: GPUs, else CPUs)")
    rep = sub.add_parser("report", help="per-subgroup summary / fidelity report of a run")
    rep.add_argument("run_dirs", nargs="+", help="one or more run directories (methods side by side)")
    rep.add_argument("--real", help="held-out real respondents (parquet/CSV); default RUN_DIR/heldout.parquet")
    rep.add_argument("--out", help="report folder (default RUN_DIR/report)")
    rep.add_argument("--by", metavar="ATTRIBUTE", help="attribute whose groups get their own panel per question "
                     "(default: the first attribute)")
    ini = sub.add_parser("init", help="draft a scenario YAML from a data file (CSV, SPSS, Stata, ...)")
    ini.add_argument("data_file", help="the survey data file")
    ini.add_argument("-o", "--output", help="write the YAML here (default: standard output)")
    ini.add_argument("--force", action="store_true", help="overwrite an existing -o FILE")
    srv = sub.add_parser("serve", help="serve an LM over an OpenAI-compatible HTTP API")
    srv.add_argument("--lm", default="smollm2-135m-instruct", help="LM name, folder or .gguf")
    srv.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    srv.add_argument("--port", type=int, default=8000)
    srv.add_argument("--api-key", help="require this bearer key (default $POPSIM_API_KEY; none if unset)")
    srv.add_argument("--max-batch", type=int, default=64, help="most rows per batched LM call")
    srv.add_argument("--batch-window-ms", type=float, default=5.0, help="how long a request waits for company")
    srv.add_argument("--dtype", default="auto", help="auto, fp32, bf16 or fp16")
    srv.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    return parser


def _overrides(args: argparse.Namespace) -> dict:
    out = {}
    if args.out:
        out["output"] = args.out
    if args.agents is not None:
        out["simulation.agents"] = args.agents
    if args.seed is not None:
        out["seed"] = args.seed
    if args.lm:
        out["lm.name"] = args.lm
    if args.method:
        out["simulation.method"] = args.method
    if getattr(args, "option_bias", None):
        out["simulation.option_bias"] = args.option_bias
    if getattr(args, "option_order", None):
        out["simulation.option_order"] = args.option_order
    return out


def _workers(args: argparse.Namespace, scenario) -> int | None:
    """Ray workers for ``--ray [--workers N]``; None runs in this process."""
    if not args.ray:
        if args.workers is not None:
            raise PopsimError("--workers needs --ray; add --ray to shard the population over Ray workers")
        return None
    if args.workers is not None and args.workers < 1:
        raise PopsimError(f"--workers must be a positive integer; got {args.workers}")
    from popsim.sim.distributed import default_workers

    return args.workers or default_workers(scenario.lm)


_OUTPUTS = ("responses.parquet", "agents.parquet", "summary.csv", "summary.parquet", "heldout.parquet",
            "personas.json", "population.json", "option_bias.json", "text_fidelity.csv", "text_fidelity.json",
            "manifest.json")


def _check_fitted(scenario, path: str) -> None:
    """`simulate` uses the saved fit as it is: refuse a missing one, and one fitted with other settings (which
    `run` would silently refit), naming the command that fits it."""
    from popsim.rundir import FIT_SECTIONS, RunDirectory, fit_key

    folder = RunDirectory(scenario.run_dir)
    stored = folder.stored_fit_key()
    if stored is None:
        raise PopsimError(f"no fitted model in {folder.mop_dir}; run `popsim fit {path}` first")
    if stored != fit_key(scenario):
        raise PopsimError(f"the model in {folder.mop_dir} was fitted with other settings ({', '.join(FIT_SECTIONS)} or "
                          f"simulation.option_order changed); run `popsim fit {path}` again")


def _print_run(result) -> None:
    from popsim.eval.headline import headline_table

    written = [f for f in _OUTPUTS if (result.run_dir / f).is_file()]
    print(f"\nOutputs in {result.run_dir}/: {', '.join(written)}")
    table = headline_table(result.run_dir)
    if table is not None:
        print("\nSimulated vs real held-out answers, by subgroup (mean total variation over questions; "
              "mean_tv_expected: from the agents' answer probabilities, without the noise of one draw each):")
        print(table.to_string(index=False))
    if (result.run_dir / "text_fidelity.csv").is_file():
        import pandas as pd

        from popsim.eval.text_fidelity import printed

        print(printed(pd.read_csv(result.run_dir / "text_fidelity.csv")))
    elif "text_fidelity" in result.timings:
        print("\nToo few texts to score against the held-out real ones (at least 10 generated and 20 real); "
              "raise simulation.agents")
    print("\nTimings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in result.timings.items())
          + f"; LM calls: {result.lm_calls}")


def _print_missing(scenario) -> None:
    """With `missing` rules (or a ranking, whose ties and gaps are no answer): load the data and say how many
    answers each rule removed, per question."""
    if scenario.kind != "survey" or not (scenario.data.missing or any(q.missing or q.type == "ranking"
                                                                      for q in scenario.questions)):
        return
    from popsim.data import load_population

    for rule, per_question in load_population(scenario).missing_removed.items():
        total = sum(per_question.values())
        where = ", ".join(f"{qid} {n}" for qid, n in per_question.items() if n)
        print(f"missing: {rule} removed {total} answer{'' if total == 1 else 's'}" + (f" ({where})" if where else ""))


def _command(args: argparse.Namespace) -> int:
    from popsim.config import load_scenario

    if args.command == "report":
        from popsim.eval.headline import report_command

        return report_command(args.run_dirs, real=args.real, out=args.out, by=args.by)
    if args.command == "init":
        from popsim.init_scenario import init_command

        return init_command(args.data_file, args.output, args.force)
    if args.command == "serve":
        from popsim.serve import serve

        serve(args.lm, host=args.host, port=args.port, api_key=args.api_key or os.environ.get("POPSIM_API_KEY"),
              max_batch=args.max_batch, window_ms=args.batch_window_ms, dtype=args.dtype, device=args.device)
        return 0
    scenario = load_scenario(args.scenario, _overrides(args))
    if args.command == "validate":
        print(f"{args.scenario}: valid {scenario.kind} scenario '{scenario.name}' "
              f"({len(scenario.questions)} questions, {scenario.simulation.agents} agents)")
        _print_missing(scenario)
        return 0
    from popsim import runner

    if args.command == "fit":
        model, run_dir = runner.fit(scenario, verbose=not args.quiet)
        print(f"fitted {len(model.personas_)} personas, {len(model.exemplars_)} exemplars -> {run_dir / 'mop'}")
        return 0
    if args.command == "simulate" and scenario.simulation.method not in {"no-persona", "silicon"}:
        _check_fitted(scenario, args.scenario)
    try:
        result = runner.run(scenario, verbose=not args.quiet, workers=_workers(args, scenario))
    except KeyboardInterrupt:
        parts = scenario.run_dir / "parts"
        if parts.is_dir() and any(parts.glob("part-*.parquet")):
            print(f"\ninterrupted: completed responses are saved in {parts}; rerun the same command to resume",
                  file=sys.stderr)
        else:
            print("\ninterrupted before any response was saved; rerun the same command to start again (a model "
                  "fitted before the stop and the LM scores cached so far are reused)", file=sys.stderr)
        return 130
    _print_run(result)
    return 0


def _quiet_model_loading() -> None:
    """--quiet: no "Loading weights" bars from transformers / huggingface_hub either, nor tqdm's own (each
    reads its setting at import, which the CLI has not done yet)."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ["TQDM_DISABLE"] = "1"  # bars libraries draw with tqdm itself (transformers' GGUF conversion)
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = _parser().parse_args(argv)
    if getattr(args, "quiet", False):
        _quiet_model_loading()
    try:
        return _command(args)
    except PopsimError as exc:
        print(f"popsim: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
