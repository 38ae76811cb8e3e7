"""Language-model backends behind one narrow interface (see :mod:`popsim.lm.base`)."""

from popsim.lm.base import Chat, LanguageModel, Prompt
from popsim.lm.loading import EMBEDDED_LMS, cache_dir, resolve_lm

__all__ = ["Chat", "LanguageModel", "Prompt", "EMBEDDED_LMS", "cache_dir", "resolve_lm", "load_lm"]


def load_lm(name: str = "smollm2-135m-instruct", **options) -> LanguageModel:
    """Load a backend by name: ``hash-lm`` (the deterministic test double), else transformers."""
    if name == "hash-lm":
        from popsim.lm.testing import HashLM

        return HashLM()
    from popsim.lm.hf import HFLanguageModel

    return HFLanguageModel(name, **options)
