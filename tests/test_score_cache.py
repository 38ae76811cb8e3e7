"""The machine-wide LM score cache is keyed by the model's identity, never by its name alone.

Before the fix the key was (name, prompt, continuation): an fp32 fit reused bf16 scores, and two
checkpoints in folders of the same basename shared them - a silent wrong result. Every test uses a tmp
``POPSIM_CACHE_DIR``.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch

from popsim import runner
from popsim.config import load_scenario
from popsim.lm.hf import HFLanguageModel
from popsim.lm.identity import weights_digest
from popsim.mop.scoring import ScoreCache

from .helpers import local_survey

PROMPTS = ["The capital of France is", "Q: Should we spend more on roads?\nA:", "I like to eat"]
CONTS = [" Paris", " too little", " apples"]


@pytest.fixture
def cache_root(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "popsim-cache"
    monkeypatch.setenv("POPSIM_CACHE_DIR", str(root))
    return root


def _keys(db: Path) -> set[str]:
    with sqlite3.connect(db) as con:
        return {k for (k,) in con.execute("SELECT key FROM sketch")}


def test_fp32_and_bf16_runs_of_one_scenario_share_no_cached_score(tmp_path, cache_root, tiny_lm_dir, encoder,
                                                                  monkeypatch):
    """End to end: the same scenario fitted in fp32, then in bf16, on one machine-wide cache."""
    requested: list[str] = []
    original = ScoreCache._key

    def recording(self, rendered: str, continuation: str) -> str:
        key = original(self, rendered, continuation)
        requested.append(key)
        return key

    monkeypatch.setattr(ScoreCache, "_key", recording)

    def scenario(dtype: str):
        def change(cfg: dict) -> None:
            cfg["lm"] = {"name": str(tiny_lm_dir), "dtype": dtype, "compile": "off"}
        return load_scenario(local_survey(tmp_path / dtype, change))

    runner.run(scenario("fp32"), encoder=encoder, verbose=False)
    db = cache_root / "scores.sqlite"
    first = _keys(db)
    assert first and set(requested) == first
    requested.clear()
    runner.run(scenario("bf16"), encoder=encoder, verbose=False)
    assert requested, "the bf16 run scored nothing"
    shared = set(requested) & first
    assert not shared, f"the bf16 fit read {len(shared)} of {len(first)} scores cached by the fp32 fit"
    assert _keys(db) == first | set(requested)


@pytest.fixture
def same_basename_models(tmp_path, tiny_lm_dir) -> tuple[Path, Path]:
    """tmp/a/model and tmp/b/model: the tiny Llama, and a copy whose weights are perturbed."""
    from transformers import AutoModelForCausalLM

    a, b = tmp_path / "a" / "model", tmp_path / "b" / "model"
    shutil.copytree(tiny_lm_dir, a)
    shutil.copytree(tiny_lm_dir, b)
    model = AutoModelForCausalLM.from_pretrained(b, dtype=torch.float32)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p, generator=torch.Generator().manual_seed(1)))
    model.save_pretrained(b)
    return a, b


def test_checkpoints_in_same_named_folders_share_no_cached_score(cache_root, same_basename_models):
    a, b = same_basename_models
    db = cache_root / "scores.sqlite"
    lm_a, lm_b = HFLanguageModel(str(a), dtype="fp32"), HFLanguageModel(str(b), dtype="fp32")
    assert lm_a.name == lm_b.name == "model" and lm_a.identity != lm_b.identity
    sketches_a = ScoreCache(lm_a, db).get(PROMPTS, CONTS)
    cache_b = ScoreCache(lm_b, db)
    sketches_b = cache_b.get(PROMPTS, CONTS)
    assert cache_b.hits == 0 and cache_b.misses == len(PROMPTS)
    assert not np.allclose(sketches_a[0].target, sketches_b[0].target)
    # the same checkpoint loaded again (a new process would do the same) does reuse its scores
    again = ScoreCache(HFLanguageModel(str(a), dtype="fp32"), db)
    again.get(PROMPTS, CONTS)
    assert again.hits == len(PROMPTS) and again.misses == 0


def test_identity_names_weights_dtype_and_path(tiny_lm_dir, cache_root):
    fp32 = HFLanguageModel(str(tiny_lm_dir), dtype="fp32")
    bf16 = HFLanguageModel(str(tiny_lm_dir), dtype="bf16", compile="off")
    assert fp32.identity.startswith(f"{fp32.name}@sha256-") and "/float32/cpu/" in fp32.identity
    assert bf16.identity.replace("bfloat16", "float32") == fp32.identity


def test_weights_digest_sees_content_not_size_or_mtime(tmp_path, cache_root):
    """A rewrite with the same size and mtime (e.g. a copy that keeps times) still changes the digest;
    an untouched folder is hashed once and then read from the memo."""
    folder = tmp_path / "ckpt"
    folder.mkdir()
    weights = folder / "model.safetensors"
    weights.write_bytes(b"\x00" * 4096)
    (folder / "config.json").write_text("{}")
    (folder / "README.md").write_text("notes do not change scores")
    first = weights_digest(folder)
    assert first.startswith("sha256-") and weights_digest(folder) == first
    with sqlite3.connect(cache_root / "file_hashes.sqlite") as con:
        assert con.execute("SELECT COUNT(*) FROM digest").fetchone()[0] == 2  # weights and config, not README
    (folder / "README.md").write_text("edited")
    assert weights_digest(folder) == first
    st = weights.stat()
    weights.write_bytes(b"\x01" + b"\x00" * 4095)
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert weights.stat().st_size == st.st_size and weights.stat().st_mtime_ns == st.st_mtime_ns
    assert weights_digest(folder) != first


def test_hub_snapshot_is_identified_by_its_commit(tmp_path, cache_root):
    snapshot = tmp_path / "hub" / "models--owner--name" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    assert weights_digest(snapshot) == "hub-0123abcd"
    assert weights_digest("owner/not-cached-anywhere").startswith("unknown-")
