"""popsim's error hierarchy.

Every error a user can cause derives from :class:`PopsimError`; the CLI prints its message on one line
and exits with status 2 instead of showing a traceback. Messages name the offending field, value or
file and say what to do.
"""

from __future__ import annotations

__all__ = [
    "PopsimError",
    "ScenarioError",
    "DataError",
    "ModelLoadError",
    "NotFittedError",
    "LMInputError",
    "RunDirectoryError",
    "BackendError",
]


class PopsimError(Exception):
    """Base class of every error popsim raises on purpose."""


class ScenarioError(PopsimError, ValueError):
    """A scenario file or override is invalid (bad YAML, unknown key, wrong type or value)."""


class DataError(PopsimError, ValueError):
    """A population data file is missing, unreadable or does not match the scenario."""


class ModelLoadError(PopsimError, OSError):
    """A language model or encoder name/path cannot be resolved or loaded."""


class NotFittedError(PopsimError, AttributeError):
    """An estimator was used before ``fit`` (or ``load``)."""


class LMInputError(PopsimError, ValueError):
    """Arguments to a LanguageModel call are malformed (empty batch, mismatched lengths, ...)."""


class RunDirectoryError(PopsimError, OSError):
    """A run directory cannot be used: written by another config, read-only, full, or corrupt."""


class BackendError(PopsimError, RuntimeError):
    """A remote LM backend failed (endpoint down, authentication, missing capability)."""
