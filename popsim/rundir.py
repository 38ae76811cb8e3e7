"""The run folder, with one owner: what may live in it, the manifest, the fit key, the parts, resume.

A run directory is the unit of output and of resumption. The layout (unchanged since the first release, so
every earlier run folder still resumes):

    manifest.json                       config, config hash, seed, versions, status, timings
    mop/                                the fitted model; ``mop/fit_key`` says which settings fitted it
    parts/part-NNNNNN.parquet           answers flushed chunk by chunk by one process
    parts/part-wSSS-NNNNNN.parquet      the same, written by Ray shard SSS (:mod:`popsim.sim.distributed`)

A part holds one row per (agent, round, question) with ``probs`` as a JSON string. Part numbers are never
reused, so a part written before a crash is never overwritten by one written after it. Every file is
written atomically (:mod:`popsim.io`); the runner decides what goes in it, this module where and how.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from popsim.config import Scenario, config_hash
from popsim.exceptions import RunDirectoryError
from popsim.io import atomic_write_json, atomic_write_parquet, atomic_write_text, check_writable

__all__ = ["RunDirectory", "PartWriter", "RUN_FILES", "fit_key"]

# what popsim itself writes in a run directory (a folder without a manifest may hold only these)
RUN_FILES = frozenset({"manifest.json", "mop", "parts", "personas.json", "responses.parquet", "agents.parquet",
                       "summary.parquet", "summary.csv", "heldout.parquet", "report", "option_bias.json",
                       "population.json", "text_fidelity.csv", "text_fidelity.json"})
# the sections whose settings decide the fitted model; any other change reuses ``mop/``
FIT_SECTIONS = ("data", "questions", "reviews", "mop", "encoder", "seed")
# a part file's name: optional Ray shard, then its number; ``.corrupt`` ones were set aside but keep theirs
_PART = re.compile(r"^part-(?:w(\d+)-)?(\d+)\.parquet(?:\.corrupt)?$")
_KEYS = ("agent", "round", "question")


def _changed_sections(old: Any, new: dict[str, Any] | None) -> str:
    """' (simulation changed)': the top-level sections whose settings differ, or '' when unknown."""
    if not isinstance(old, dict) or new is None:
        return ""
    changed = [k for k in new if k not in {"output", "base_dir"} and k in old and old[k] != new[k]]
    return f" ({', '.join(changed)} changed)" if changed else ""


def fit_key(scenario: Scenario) -> str:
    """The hash of the settings a fit depends on; ``mop/fit_key`` holds the one the saved model was fitted with."""
    key = config_hash(scenario, *FIT_SECTIONS)
    order = scenario.simulation.option_order  # MoP trains on the options as simulation shows them
    return key if order == "unlisted" else hashlib.sha256(f"{key}|{order}".encode()).hexdigest()[:16]


class RunDirectory:
    """One run folder. Cheap to build (nothing is read or written until a method is called), so the runner
    and every Ray worker make their own from the same path."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDirectory({str(self.path)!r})"

    @property
    def parts_dir(self) -> Path:
        return self.path / "parts"

    @property
    def mop_dir(self) -> Path:
        return self.path / "mop"

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    # ------------------------------------------------------------------ who may write here
    def check(self, config_hash: str, config: dict[str, Any] | None = None) -> Path:
        """Check this folder can hold a run of the config with ``config_hash``, writing nothing: absent, empty,
        or written by the same config (resume); refuse one from another config (naming the sections that
        changed, where ``config`` gives the new one), a corrupt manifest, or a folder of someone else's files."""
        run_dir = self.path
        if run_dir.exists() and not run_dir.is_dir():
            raise RunDirectoryError(f"output path {run_dir} is a file, not a folder; choose another --out")
        if not run_dir.is_dir():
            return run_dir
        if self.manifest_path.is_file():
            manifest = self.manifest()
            old = manifest.get("config_hash")
            if old and old != config_hash:
                changed = _changed_sections(manifest.get("config"), config)
                raise RunDirectoryError(
                    f"run directory {run_dir} was written by a different config{changed}; a run folder holds one "
                    "config's answers: pass --out to a new folder or delete it to start over"
                )
            return run_dir
        foreign = sorted(p.name for p in run_dir.iterdir() if p.name not in RUN_FILES and not p.name.startswith("."))
        if foreign:
            raise RunDirectoryError(f"--out folder {run_dir} already holds files popsim did not write (e.g. "
                                    f"'{foreign[0]}'); choose a new or empty folder")
        return run_dir

    def prepare(self, config_hash: str, config: dict[str, Any] | None = None) -> Path:
        """:meth:`check`, then create the folder, prove it is writable and clear what a killed run left behind
        (temporary files of writes it never finished), so a resumed run starts from committed files only."""
        self.check(config_hash, config)
        check_writable(self.path)
        self.remove_temporary()
        return self.path

    def remove_temporary(self) -> list[Path]:
        """Delete the hidden ``.*.tmp`` files of atomic writes a kill interrupted; returns them. Only popsim's
        own folders are swept (not ``report/``, which another command may be writing at the same moment)."""
        removed = []
        for folder in (self.path, self.mop_dir, self.parts_dir):
            for tmp in folder.glob(".*.tmp") if folder.is_dir() else ():
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
        return removed

    # ------------------------------------------------------------------ manifest
    def manifest(self) -> dict[str, Any]:
        """The manifest's fields ({} when there is none yet)."""
        if not self.manifest_path.is_file():
            return {}
        try:
            data = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (ValueError, OSError):
            data = None
        if not isinstance(data, dict):
            raise RunDirectoryError(f"{self.manifest_path} is corrupt (not a JSON manifest); delete it to reuse "
                                    f"{self.path}, or choose another --out")
        return data

    def write_manifest(self, **fields: Any) -> Path:
        """Merge ``fields`` into the manifest and write it atomically (earlier fields, e.g. a first run's
        timings, stay unless overwritten)."""
        return atomic_write_json(self.manifest_path, {**self.manifest(), **fields})

    # ------------------------------------------------------------------ fitted model
    def stored_fit_key(self) -> str | None:
        """The key in ``mop/fit_key``, or None when no complete fit is saved."""
        path = self.mop_dir / "fit_key"
        return path.read_text(encoding="utf-8", errors="replace").strip() if path.is_file() else None

    def has_fit(self, key: str) -> bool:
        """True when ``mop/`` holds a model fitted with the settings whose key is ``key``."""
        return self.stored_fit_key() == key

    def write_fit(self, save: Callable[[Path], object], key: str) -> Path:
        """Save a fitted model with ``save(mop_dir)``, then its key. The old key goes first, so a crash part-way
        through never pairs a key with a half-replaced model: that folder is refitted, not reused."""
        (self.mop_dir / "fit_key").unlink(missing_ok=True)
        save(self.mop_dir)
        atomic_write_text(self.mop_dir / "fit_key", key + "\n")
        return self.mop_dir

    # ------------------------------------------------------------------ parts
    def part_writer(self, shard: int | None = None) -> PartWriter:
        """The ``on_chunk`` callback that flushes answers to ``parts/`` (``shard``: a Ray worker's number)."""
        return PartWriter(self.parts_dir, shard)

    def part_files(self) -> list[Path]:
        """Every readable-looking part, in name order (a process's own, then each shard's)."""
        return sorted(self.parts_dir.glob("part-*.parquet"))

    def load_parts(self) -> pd.DataFrame:
        """Every answer on disk, ``probs`` still JSON strings (duplicates possible around a crash).

        A part that cannot be read is set aside as ``<name>.corrupt`` with a warning naming it, and its
        answers are simply missing, so the run recomputes them. Atomic writes cannot tear a part, but a disk
        fault or a hand-copied folder can, and silently deleting evidence would hide that.
        """
        frames = []
        for f in self.part_files():
            try:
                frame = pd.read_parquet(f)
                missing = [c for c in (*_KEYS, "answer", "probs") if c not in frame.columns]
                if missing:
                    raise ValueError(f"no column {missing[0]!r}")
            except Exception as exc:  # whatever broke the file, recomputing it is the fix
                aside = f.with_name(f.name + ".corrupt")
                os.replace(f, aside)
                warnings.warn(f"run directory part {f} is unreadable ({type(exc).__name__}: {exc}); moved aside "
                              f"to {aside.name}, its answers will be recomputed", stacklevel=2)
                continue
            frames.append(frame)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def completed(self, parts: pd.DataFrame | None = None) -> dict[tuple[int, int, str], tuple[Any, dict | None]]:
        """(agent, round, question) -> (answer, probs) for every answer on disk: what a resumed model skips."""
        parts = self.load_parts() if parts is None else parts
        done = {}
        for row in parts.itertuples(index=False):
            probs = None if row.probs is None or pd.isna(row.probs) else json.loads(row.probs)
            done[(int(row.agent), int(row.round), str(row.question))] = (row.answer, probs)
        return done


class PartWriter:
    """Writes each chunk of answer rows as the next part file. Numbering starts after the highest part this
    writer's prefix has on disk (corrupt ones included), so no name is ever reused, also after a resume."""

    def __init__(self, parts_dir: Path, shard: int | None = None) -> None:
        self.parts_dir = Path(parts_dir)
        self.shard = shard
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        numbers = [int(m.group(2)) for p in self.parts_dir.iterdir()
                   if (m := _PART.match(p.name)) and (None if m.group(1) is None else int(m.group(1))) == shard]
        self.next = max(numbers, default=-1) + 1
        self.written = 0

    def name(self, number: int) -> str:
        prefix = "part-" if self.shard is None else f"part-w{self.shard:03d}-"
        return f"{prefix}{number:06d}.parquet"

    def __call__(self, rows: list[dict]) -> Path:
        frame = pd.DataFrame(rows)
        frame["probs"] = [None if p is None else json.dumps(p) for p in frame["probs"]]
        path = atomic_write_parquet(self.parts_dir / self.name(self.next), frame)
        self.next += 1
        self.written += 1
        return path
