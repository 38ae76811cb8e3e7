"""Language-model backends behind one narrow interface (see :mod:`popsim.lm.base`)."""

from popsim.lm.base import Chat, LanguageModel, Prompt
from popsim.lm.loading import EMBEDDED_LMS, cache_dir, resolve_lm

__all__ = ["Chat", "LanguageModel", "Prompt", "EMBEDDED_LMS", "cache_dir", "resolve_lm", "load_lm"]


_LOCAL_WEIGHT_OPTIONS = ("device", "dtype", "batch_tokens", "compile")


def load_lm(name: str = "smollm2-135m-instruct", **options) -> LanguageModel:
    """Load a backend by name.

    ``hash-lm`` (the deterministic test double); ``openai:[MODEL@]URL`` (an OpenAI-compatible server such
    as ``popsim serve`` or ``vllm serve``); ``vllm:MODEL`` (in-process vLLM on a GPU); else transformers.
    Remote backends ignore the local-weights options (device, dtype, batch_tokens, compile).
    """
    if name == "hash-lm":
        from popsim.lm.testing import HashLM

        return HashLM()
    if name.startswith("openai:"):
        from popsim.lm.openai_backend import OpenAILanguageModel

        remote = {k: v for k, v in options.items() if k not in _LOCAL_WEIGHT_OPTIONS}
        return OpenAILanguageModel.from_name(name, **remote)
    if name.startswith("vllm:"):
        from popsim.lm.vllm_backend import VLLMLanguageModel

        local = {k: v for k, v in options.items() if k not in {"batch_tokens", "compile"}}
        return VLLMLanguageModel(name.removeprefix("vllm:"), **local)
    from popsim.lm.hf import HFLanguageModel

    return HFLanguageModel(name, **options)
