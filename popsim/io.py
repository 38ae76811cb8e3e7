"""Atomic files in a run directory: write to a temporary file in the same folder, fsync, then rename.

A crash or Ctrl-C therefore leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path

import pandas as pd

from popsim.exceptions import RunDirectoryError

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_write_parquet", "inside",
           "check_writable"]


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
        _fsync_dir(path.parent)  # the rename itself survives a power cut
    except OSError as exc:
        raise RunDirectoryError(f"cannot write {path} ({_why(exc)}); {_fix(exc)}") from None
    return path


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _fix(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the disk is full: free disk space and rerun the same command to resume"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return "the folder is read-only: choose a writable --out directory"
    return "free disk space or choose a writable --out directory"


def check_writable(folder: str | Path) -> Path:
    """Create ``folder`` if needed and prove a file can be written in it (a probe file, removed at once).

    ``os.access`` is not enough: it says yes to root on a read-only mount and knows nothing of full disks.
    """
    folder = Path(folder)
    try:
        if folder.exists() and not folder.is_dir():
            raise RunDirectoryError(f"output path {folder} is a file, not a folder; choose another --out")
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".popsim-probe.", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise RunDirectoryError(f"cannot write in {folder} ({_why(exc)}); {_fix(exc)}") from None
    return folder


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
