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
    "EndpointURLError",
    "EndpointUnreachableError",
    "AuthenticationError",
    "CapabilityError",
    "first_line",
]


def first_line(exc: BaseException, limit: int = 160) -> str:
    """The first non-blank line of another library's error, cut to ``limit`` characters (its type's name when
    it says nothing), for quoting inside popsim's own one-line messages."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:limit]


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


class EndpointURLError(BackendError, ValueError):
    """A remote LM endpoint URL is malformed (not ``http(s)://host[:port]/...``)."""


class EndpointUnreachableError(BackendError, ConnectionError):
    """A remote LM endpoint did not answer after the retries (server down, wrong host or port)."""


class AuthenticationError(BackendError, PermissionError):
    """A remote LM endpoint rejected the API key (HTTP 401/403)."""


class CapabilityError(BackendError):
    """A backend cannot do what was asked (no prompt logprobs, no GPU, temperature scoring over HTTP, ...)."""
