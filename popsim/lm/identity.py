"""What a model's scores depend on, as a short string: the weights' content, not the folder's name.

The LM score cache (``scores.sqlite`` under :func:`~popsim.lm.loading.cache_dir`) is shared by every
run on a machine, so its key must change whenever the numbers could: two checkpoints in folders with the
same basename, or one checkpoint loaded in fp32 and in bf16, must never share a cached score. A name
cannot tell them apart; :func:`weights_digest` can:

* a folder in the Hugging Face hub cache (``.../models--OWNER--NAME/snapshots/COMMIT``) or a hub id is
  identified by its commit hash, which the hub derives from the files;
* any other folder by a sha256 over its files' names and contents (weights, config and tokenizer).
  Each file is hashed once and the digest memoised by (path, size, mtime, ctime, inode) in
  ``file_hashes.sqlite``, so later loads cost a stat per file (hashing SmolLM2's 517 MB takes ~1 s).

Size and mtime alone would not do: a fine-tuned checkpoint has the same size as its base, and copies
can keep mtimes. Backends combine the digest with the dtype and any setting that moves the numbers
(see ``HFLanguageModel.identity``).
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

from popsim.lm.loading import cache_dir

__all__ = ["file_digest", "weights_digest"]

_SKIP_SUFFIXES = {".md", ".lock"}


def _memo() -> sqlite3.Connection | None:
    """The per-file digest memo, or None when the cache folder cannot be written (then files are rehashed)."""
    try:
        path = cache_dir() / "file_hashes.sqlite"
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(str(path), timeout=30)
        db.execute("CREATE TABLE IF NOT EXISTS digest (key TEXT PRIMARY KEY, sha256 TEXT)")
        return db
    except (OSError, sqlite3.Error):
        return None


def file_digest(path: str | Path, memo: sqlite3.Connection | None = None) -> str:
    """sha256 of a file's content, memoised by its resolved path, size, mtime, ctime and inode."""
    real = Path(path).resolve()
    st = real.stat()
    key = f"{real}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}"
    if memo is not None:
        row = memo.execute("SELECT sha256 FROM digest WHERE key = ?", (key,)).fetchone()
        if row:
            return str(row[0])
    with open(real, "rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    if memo is not None:
        try:
            with memo:
                memo.execute("INSERT OR REPLACE INTO digest VALUES (?, ?)", (key, digest))
        except sqlite3.Error:
            pass  # a read-only or locked memo only costs a rehash next time
    return digest


def _hub_commit(folder: Path) -> str | None:
    """The commit hash of a hub-cache snapshot folder (``models--*/snapshots/COMMIT``), else None."""
    if folder.parent.name == "snapshots" and folder.parent.parent.name.startswith("models--"):
        return folder.name
    return None


def _hub_snapshot(repo_id: str) -> Path | None:
    """The local snapshot folder of a hub id (its default revision), or None when it is not cached."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(repo_id, "config.json")
    return Path(found).parent if isinstance(found, str) else None


def _model_files(folder: Path) -> list[Path]:
    """The files that can change scores: every file in the folder but hidden ones, READMEs and licences."""
    return sorted(
        p for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() not in _SKIP_SUFFIXES
        and not p.name.upper().startswith("LICEN")
    )


def weights_digest(location: str | Path) -> str:
    """A short digest of the model at ``location`` (a folder or a cached hub id); see the module docstring.

    Returns ``hub-COMMIT`` for hub snapshots and ``sha256-HEX16`` for other folders.
    """
    folder = Path(location).expanduser()
    if not folder.is_dir():
        snapshot = _hub_snapshot(str(location))
        if snapshot is None:
            return "unknown-" + hashlib.sha256(str(location).encode()).hexdigest()[:16]
        folder = snapshot
    commit = _hub_commit(folder.resolve()) or _hub_commit(folder)
    if commit:
        return f"hub-{commit}"
    memo = _memo()
    try:
        outer = hashlib.sha256()
        for path in _model_files(folder):
            outer.update(f"{path.name}\x00{file_digest(path, memo)}\x00".encode())
    finally:
        if memo is not None:
            memo.close()
    return "sha256-" + outer.hexdigest()[:16]
