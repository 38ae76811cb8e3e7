"""Crash safety and determinism across processes.

* A ``popsim run`` killed from outside with SIGKILL once it has flushed n more parts (n drawn, seeded, ten
  times; the kill may land mid-write), and rerun after each kill, ends with exactly the files of an
  uninterrupted run: nothing lost, nothing duplicated, no temporary files. Ctrl-C (SIGINT) likewise.
* Two runs of the same config and seed in separate processes (different ``PYTHONHASHSEED``) write
  byte-identical parquet files; the manifest records the pinned thread count and package versions.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from popsim import runner
from popsim.config import load_scenario

from .helpers import local_survey

OUTPUTS = ("responses.parquet", "agents.parquet", "summary.parquet", "summary.csv", "heldout.parquet",
           "personas.json", "mop/gate.safetensors")


def same_model_files(a: Path, b: Path) -> None:
    """Byte-identical outputs; mop.json equal but for the fit's timings and score-cache statistics."""
    for name in OUTPUTS:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    meta = [json.loads((run / "mop" / "mop.json").read_text()) for run in (a, b)]
    volatile = {"seconds", "cache_hit_rate", "cache_hits", "cache_misses"}
    for m in meta:
        m["history"] = [{k: v for k, v in epoch.items() if k not in volatile} for epoch in m["history"]]
        m["fit_info"] = {k: v for k, v in m["fit_info"].items() if k not in volatile}
    assert meta[0] == meta[1]


AGENTS, ROUNDS = 150, 2
PARTS = AGENTS * ROUNDS


def crash_config(cfg: dict) -> None:
    """150 agents on a small world, 2 rounds, 1 agent per part: 300 part flushes in all (~15 ms each with the
    tiny LM), so each signal lands mid-simulation with seconds to spare even when the test process is slow to
    send it."""
    cfg["simulation"].update(agents=AGENTS, rounds=ROUNDS, chunk_agents=1,
                             network={"kind": "small_world", "degree": 4, "rewire": 0.1})


def popsim_run(path: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "popsim", "run", str(path), "--quiet"], capture_output=True,
                          text=True, timeout=300, env={**os.environ, **env})


def n_parts(parts: Path) -> int:
    return len(list(parts.glob("part-*.parquet")))  # committed parts only: temporary files start with "."


def signal_after_parts(path: Path, n: int, sig: signal.Signals, *, timeout: float = 300,
                       **env: str) -> tuple[subprocess.Popen, str]:
    """Start ``popsim run``, wait until its run folder holds at least ``n`` parts, send ``sig``; returns the
    finished process and its stderr. Fails, rather than passing vacuously, if the run ends first."""
    parts = path.parent / "run" / "parts"
    # SIGINT back to its default in the child: a test run started in the background (`cmd &`, nohup, some CI
    # runners) inherits SIGINT ignored, and Python then never turns it into KeyboardInterrupt (exit 0, not 130)
    proc = subprocess.Popen([sys.executable, "-m", "popsim", "run", str(path), "--quiet"], text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, **env},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + timeout
    while n_parts(parts) < n:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            _, err = proc.communicate()
            pytest.fail(f"the run stopped (exit {proc.returncode}) before it wrote {n} parts; if it finished, "
                        f"give crash_config more parts\n{err[-2000:]}")
        time.sleep(0.002)
    proc.send_signal(sig)
    if proc.poll() == 0:
        pytest.fail(f"the run finished before the signal reached it (it wrote {n_parts(parts)} parts); give "
                    "crash_config more parts")
    _, err = proc.communicate(timeout=120)
    return proc, err


def same_as_uninterrupted(run_dir: Path, reference: Path) -> None:
    same_model_files(run_dir, reference)
    assert not [p for p in run_dir.rglob("*") if p.name.endswith(".tmp")]
    rows = sum(len(pd.read_parquet(p)) for p in (run_dir / "parts").glob("part-*.parquet"))
    responses = pd.read_parquet(run_dir / "responses.parquet")
    assert rows == len(responses) == AGENTS * ROUNDS * 2  # two questions: none computed twice, none lost
    assert not responses.duplicated(["agent", "round", "question"]).any()


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("popsim-cache"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, cache: str) -> Path:
    """The uninterrupted run, in this process."""
    folder = tmp_path_factory.mktemp("reference")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("POPSIM_CACHE_DIR", cache)
        runner.run(load_scenario(local_survey(folder, crash_config)), verbose=False)
    return folder / "run"


@pytest.mark.slow
def test_sigkill_at_ten_random_part_flushes_then_resume(tmp_path: Path, reference: Path, cache: str) -> None:
    path = local_survey(tmp_path, crash_config)
    parts = tmp_path / "run" / "parts"
    kills = np.random.default_rng(2026).integers(1, 4, size=10)  # new parts each process writes before dying
    written = 0
    for i, n in enumerate(kills):
        proc, err = signal_after_parts(path, written + int(n), signal.SIGKILL, PYTHONHASHSEED=str(i),
                                       POPSIM_CACHE_DIR=cache)
        assert proc.returncode == -signal.SIGKILL, err[-2000:]
        assert n_parts(parts) >= written + n  # what was flushed before the kill stays flushed
        written = n_parts(parts)
        assert not (tmp_path / "run" / "responses.parquet").exists()
    assert written < PARTS  # every kill happened mid-simulation
    out = popsim_run(path, PYTHONHASHSEED="99", POPSIM_CACHE_DIR=cache)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "unreadable" not in out.stderr  # a kill leaves whole parts or none
    same_as_uninterrupted(tmp_path / "run", reference)


@pytest.mark.slow
def test_ctrl_c_mid_simulation_keeps_the_parts_then_resume(tmp_path: Path, reference: Path, cache: str) -> None:
    path = local_survey(tmp_path, crash_config)
    proc, err = signal_after_parts(path, 5, signal.SIGINT, POPSIM_CACHE_DIR=cache)
    assert proc.returncode == 130, err[-2000:]
    assert "rerun the same command to resume" in err and "Traceback" not in err, err[-2000:]
    assert 5 <= n_parts(tmp_path / "run" / "parts") < PARTS
    out = popsim_run(path, POPSIM_CACHE_DIR=cache)
    assert out.returncode == 0, out.stderr[-2000:]
    same_as_uninterrupted(tmp_path / "run", reference)


@pytest.mark.slow
def test_same_seed_and_config_give_byte_identical_files_across_processes(tmp_path: Path, cache: str) -> None:
    runs = []
    for hash_seed in ("1", "2"):
        path = local_survey(tmp_path / hash_seed, lambda cfg: cfg["lm"].update(threads=1))
        out = popsim_run(path, PYTHONHASHSEED=hash_seed, POPSIM_CACHE_DIR=cache)
        assert out.returncode == 0, out.stderr[-2000:]
        runs.append(tmp_path / hash_seed / "run")
    same_model_files(runs[0], runs[1])
    manifest = json.loads((runs[0] / "manifest.json").read_text())
    assert manifest["torch_threads"] == 1 and manifest["seed"] == 3 and manifest["status"] == "complete"
    assert {"python", "popsim", "torch", "numpy", "pandas", "mesa"} <= set(manifest["versions"])
    assert all(manifest["versions"][k] for k in ("python", "torch", "numpy", "pandas"))


def test_ctrl_c_before_any_response_does_not_promise_a_resume(tmp_path, monkeypatch, capsys):
    """Interrupted while loading or fitting, nothing is in parts/: the message says the run starts again."""
    from popsim.cli import main

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run", interrupted)
    assert main(["run", str(local_survey(tmp_path)), "--quiet"]) == 130
    err = capsys.readouterr().err
    assert "before any response was saved" in err and "resume" not in err
