"""In-process vLLM on a GPU (``load_lm("vllm:<model>")``): paged attention and automatic prefix caching.

``vllm.LLM(enable_prefix_caching=True)`` keeps the KV cache of shared prefixes (instruction + persona +
exemplar + profile) across calls, which is what popsim's prefix tree does on the transformers backend.

* ``generate`` - one ``SamplingParams`` per row (its seed and temperature), so a row's text depends only
  on its own prompt, temperature and seed;
* ``score`` - ``prompt_logprobs`` of ``prompt ids + continuation ids`` (tokenised apart, as the
  transformers backend does), summed over the continuation. vLLM's prompt logprobs are at temperature 1;
  other temperatures are approximated from the top-``top_logprobs`` (see
  :func:`popsim.lm.remote.tempered_logprob`; exact at 1, close for tau <= 1). Not differentiable, so MoP
  is fitted on the transformers backend and simulated here;
* ``option_logprobs`` - derived from ``score`` (prefix caching shares each prompt across its options).

Needs ``pip install 'popsim[vllm]'`` and an NVIDIA GPU; otherwise loading raises a one-line
:class:`~popsim.exceptions.CapabilityError`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from popsim.exceptions import CapabilityError, LMInputError
from popsim.lm.base import (
    LanguageModel,
    Prompt,
    as_row_values,
    check_batch,
    generation_rows,
    render_with_tokenizer,
)
from popsim.lm.identity import weights_digest
from popsim.lm.remote import tempered_logprob

__all__ = ["VLLMLanguageModel"]

_NEEDS = ("the vllm backend needs the vllm package and an NVIDIA GPU: on a CUDA machine run "
          "`pip install 'popsim[vllm]'`, or serve the model there with `vllm serve MODEL` and use "
          "--lm openai:MODEL@http://HOST:8000/v1")


class VLLMLanguageModel(LanguageModel):
    """A vLLM engine behind popsim's three-call interface.

    Args:
        model: a Hugging Face id or local folder vLLM can load.
        dtype: ``auto``, ``bf16``, ``fp16`` or ``fp32``.
        device: ``auto`` or ``cuda`` (vLLM runs on the GPU).
        gpu_memory_utilization: share of GPU memory vLLM may take.
        max_model_len: context length cap (smaller leaves more room for the KV cache).
        top_logprobs: alternatives per prompt token for temperature-scaled scoring.
    """

    backend = "vllm"

    def __init__(self, model: str, *, dtype: str = "auto", device: str = "auto",
                 gpu_memory_utilization: float = 0.85, max_model_len: int | None = None,
                 top_logprobs: int = 20) -> None:
        if device not in {"auto", "cuda"} and not device.startswith("cuda"):
            raise CapabilityError(f"the vllm backend runs on a GPU; lm.device '{device}' is not a CUDA device")
        try:
            import vllm
        except ImportError:
            raise CapabilityError(_NEEDS) from None
        if not torch.cuda.is_available():
            raise CapabilityError("no GPU is visible; " + _NEEDS)
        dtypes = {"auto": "auto", "bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
        if dtype not in dtypes:
            raise LMInputError(f"lm.dtype '{dtype}' is not one of {', '.join(dtypes)}")
        self._vllm = vllm
        self.top_logprobs = top_logprobs
        self.llm = vllm.LLM(model=model, dtype=dtypes[dtype], enable_prefix_caching=True,
                            gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
                            max_logprobs=max(top_logprobs, 1))
        self.tokenizer = self.llm.get_tokenizer()
        self.name = model  # the id vLLM loaded; recorded in manifests
        config = getattr(getattr(self.llm, "llm_engine", None), "model_config", None)
        loaded = str(getattr(config, "dtype", dtypes[dtype])).removeprefix("torch.")
        # vLLM cannot sketch, so nothing caches its scores; the identity still tells runs apart in manifests
        self._identity = f"{model}@{weights_digest(model)}/{loaded}/cuda/vllm"

    @property
    def identity(self) -> str:
        return self._identity

    def render(self, prompt: Prompt) -> str:
        return render_with_tokenizer(self.tokenizer, prompt)

    def generate(self, prompts, *, max_new_tokens=64, temperature=1.0, seed=0, stop=()) -> list[str]:
        temps, seeds = generation_rows(prompts, max_new_tokens, temperature, seed)
        params = [self._vllm.SamplingParams(max_tokens=max_new_tokens, temperature=t, seed=s, stop=list(stop) or None)
                  for t, s in zip(temps, seeds, strict=True)]
        inputs = [{"prompt_token_ids": self.encode_prompt(p)} for p in prompts]
        outputs = self.llm.generate(inputs, sampling_params=params, use_tqdm=False)
        return [out.outputs[0].text for out in outputs]

    def score(self, prompts, continuations, *, temperature=1.0) -> torch.Tensor:
        check_batch("prompts", prompts)
        check_batch("continuations", continuations, expected=len(prompts))
        temps_t = as_row_values(temperature, len(prompts))
        if temps_t.requires_grad:
            raise CapabilityError("vLLM scores are not differentiable in the temperature; fit MoP on the "
                                  "transformers backend and simulate with vllm")
        temps = temps_t.detach().double().tolist()
        prompt_ids = [self.encode_prompt(p) for p in prompts]
        cont_ids = [self.encode_continuation(c) for c in continuations]
        params = self._vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=self.top_logprobs)
        inputs = [{"prompt_token_ids": p + c} for p, c in zip(prompt_ids, cont_ids, strict=True)]
        outputs = self.llm.generate(inputs, sampling_params=params, use_tqdm=False)
        values = [self._sum_continuation(out.prompt_logprobs, len(p), c, t)
                  for out, p, c, t in zip(outputs, prompt_ids, cont_ids, temps, strict=True)]
        return torch.tensor(values, dtype=torch.float32)

    @staticmethod
    def _sum_continuation(prompt_logprobs: Sequence, start: int, cont: Sequence[int], tau: float) -> float:
        """Sum over continuation positions of ``log p_tau(token)`` from vLLM's per-position dicts."""
        total = 0.0
        for pos, token in enumerate(cont, start=start):
            ranked = prompt_logprobs[pos]  # {token id: Logprob(logprob, rank, decoded_token)}
            target = float(ranked[token].logprob)
            others = [float(v.logprob) for k, v in ranked.items() if k != token]
            total += tempered_logprob(target, others, tau)
        return total
