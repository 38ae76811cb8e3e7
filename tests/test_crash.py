"""Crash safety and determinism across processes.

* A run killed with SIGKILL right after its n-th part flush (``POPSIM_TEST_KILL_AFTER_PARTS``, a test-only
  hook in :func:`popsim.runner.run`) at ten seeded random points, and rerun after each kill, ends with
  exactly the files of an uninterrupted run: nothing lost, nothing duplicated, no temporary files.
* Two runs of the same config and seed in separate processes (different ``PYTHONHASHSEED``) write
  byte-identical parquet files; the manifest records the pinned thread count and package versions.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
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


def crash_config(cfg: dict) -> None:
    """40 agents on a small world, 2 rounds, 2 agents per part: 40 part flushes in all."""
    cfg["simulation"].update(agents=40, rounds=2, chunk_agents=2,
                             network={"kind": "small_world", "degree": 4, "rewire": 0.1})


def popsim_run(path: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "popsim", "run", str(path), "--quiet"], capture_output=True,
                          text=True, timeout=300, env={**os.environ, **env})


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
    kills = np.random.default_rng(2026).integers(1, 4, size=10)  # parts each process writes before dying
    written = 0
    for i, n in enumerate(kills):
        out = popsim_run(path, POPSIM_TEST_KILL_AFTER_PARTS=str(n), PYTHONHASHSEED=str(i), POPSIM_CACHE_DIR=cache)
        assert out.returncode == -signal.SIGKILL, out.stderr[-2000:]
        written += int(n)
        assert len(list(parts.glob("part-*.parquet"))) == written
        assert not (tmp_path / "run" / "responses.parquet").exists()
    assert written < 40  # every kill happened mid-simulation
    out = popsim_run(path, PYTHONHASHSEED="99", POPSIM_CACHE_DIR=cache)
    assert out.returncode == 0, out.stderr[-2000:]
    run_dir = tmp_path / "run"
    same_model_files(run_dir, reference)
    assert not [p for p in run_dir.rglob("*") if p.name.endswith(".tmp")]
    rows = sum(len(pd.read_parquet(p)) for p in parts.glob("part-*.parquet"))
    responses = pd.read_parquet(run_dir / "responses.parquet")
    assert rows == len(responses) == 40 * 2 * 2  # no answer computed twice, none lost
    assert not responses.duplicated(["agent", "round", "question"]).any()


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
