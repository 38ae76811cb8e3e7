"""Atomic files in a run directory: write to a temporary file in the same folder, fsync, then rename.

A crash or Ctrl-C therefore leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pandas as pd

from popsim.exceptions import RunDirectoryError

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_write_parquet", "inside"]


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are meant to be read by others
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise RunDirectoryError(
            f"cannot write {path} ({exc.strerror or type(exc).__name__}); free disk space or choose a "
            "writable --out directory"
        ) from None
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj):
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def atomic_write_parquet(path: str | Path, frame: pd.DataFrame) -> Path:
    import io

    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return atomic_write_bytes(path, buf.getvalue())


def inside(root: str | Path, name: str) -> Path:
    """Resolve ``name`` under ``root`` and refuse paths that escape it (e.g. ``../x``)."""
    base = Path(root).resolve()
    target = (base / name).resolve()
    if base != target and base not in target.parents:
        raise RunDirectoryError(f"output path {name!r} escapes the run directory {base}; use a plain file name")
    return target
