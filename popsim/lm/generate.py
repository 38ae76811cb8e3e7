"""KV-cached sampling for the transformers backend, apart from its scoring passes.

:class:`KVCacheGeneration` is mixed into :class:`~popsim.lm.hf.HFLanguageModel`, which provides the
decoder body, the vocabulary projection and the token ids it reads (listed on the class). Each row has
its own torch ``Generator``, so a row's sample depends only on its own prompt, temperature and seed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from popsim.lm.base import generation_rows
from popsim.lm.prefix_tree import token_budget_batches

__all__ = ["KVCacheGeneration", "sample_rows", "cut_at_stop"]


class KVCacheGeneration:
    """``generate`` as a small KV-cached loop over token-budget batches of rows.

    Comes first among the bases (its ``generate`` implements the abstract one). Needs from the class it is
    mixed into: ``_body`` (the decoder), ``_project`` (hidden -> fp32 logits),
    ``_cache_kwarg``, ``_pad_id``, ``_eos_ids``, ``device``, ``tokenizer``, ``batch_tokens`` and
    ``encode_prompt``.
    """

    _body: Any
    _cache_kwarg: str
    _pad_id: int
    _eos_ids: set[int]
    device: torch.device
    tokenizer: Any
    batch_tokens: int
    _project: Callable[[torch.Tensor], torch.Tensor]
    encode_prompt: Callable[[Any], list[int]]

    def generate(self, prompts, *, max_new_tokens=64, temperature=1.0, seed=0, stop=(),
                 ignore_eos: bool = False) -> list[str]:
        """See :meth:`LanguageModel.generate`; ``ignore_eos`` (this backend only, as vLLM's) samples
        exactly ``max_new_tokens`` per row, end-of-text tokens included (for throughput benchmarks)."""
        temps, seeds = generation_rows(prompts, max_new_tokens, temperature, seed)
        n = len(prompts)
        prompt_ids = [self.encode_prompt(p) for p in prompts]
        texts: list[str] = [""] * n
        budget = max(self.batch_tokens, 1)
        lengths = [len(p) + max_new_tokens for p in prompt_ids]
        for rows in token_budget_batches(lengths, budget):
            outs = self._generate_batch(
                [prompt_ids[r] for r in rows], [temps[r] for r in rows], [seeds[r] for r in rows],
                max_new_tokens, set() if ignore_eos else self._eos_ids,
            )
            for r, toks in zip(rows, outs, strict=True):
                texts[r] = cut_at_stop(self.tokenizer.decode(toks, skip_special_tokens=True), stop)
        return texts

    def _left_padded(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Left-padded ids, mask and position ids (positions count real tokens only)."""
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, s in enumerate(seqs):
            if s:
                ids[r, width - len(s) :] = torch.tensor(s)
                mask[r, width - len(s) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        return ids, mask, (mask.cumsum(1) - 1).clamp_min(0)

    @torch.inference_mode()
    def _generate_batch(
        self, prompt_ids: list[list[int]], temps: list[float], seeds: list[int], max_new_tokens: int,
        eos_ids: set[int],
    ) -> list[list[int]]:
        n = len(prompt_ids)
        ids, mask, positions = self._left_padded(prompt_ids)
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        out_tokens: list[list[int]] = [[] for _ in range(n)]
        done = [False] * n
        cache = None
        step_ids = ids
        for _ in range(max_new_tokens):
            out = self._body(
                input_ids=step_ids, attention_mask=mask, position_ids=positions, use_cache=True,
                **{self._cache_kwarg: cache},
            )
            cache = getattr(out, self._cache_kwarg)
            logits = self._project(out.last_hidden_state[:, -1]).cpu()
            sampled = sample_rows(logits, temps, generators, done)
            next_tokens = []
            for r, tok in enumerate(sampled):
                if done[r]:
                    next_tokens.append(self._pad_id)
                    continue
                if tok in eos_ids:
                    done[r] = True
                else:
                    out_tokens[r].append(tok)
                next_tokens.append(tok)
            if all(done):
                break
            step_ids = torch.tensor(next_tokens, device=self.device).view(n, 1)
            mask = torch.cat([mask, torch.ones((n, 1), dtype=mask.dtype, device=self.device)], dim=1)
            positions = positions[:, -1:] + 1
        return out_tokens


def sample_rows(
    logits: torch.Tensor, temps: list[float], generators: list[torch.Generator], done: list[bool]
) -> list[int]:
    """One token per row by the exponential race (Gumbel-max): argmax(logits / t - log E), E ~ Exp(1).

    Each live row draws its noise from its own generator, so its text depends only on its seed, never on
    the other rows (done rows draw nothing). Unlike inverse-CDF sampling, whose cumulative sum drifts
    with float noise from batch make-up and flips tokens near interval edges, the race only flips when
    the two best perturbed scores tie to within that noise. Temperature <= 1e-6 means greedy.
    """
    n, vocab = logits.shape
    noise = torch.ones((n, vocab), dtype=torch.float64)
    for r, (g, d) in enumerate(zip(generators, done, strict=True)):
        if not d and temps[r] > 1e-6:
            noise[r].exponential_(generator=g)
    t = torch.tensor(temps, dtype=torch.float64).clamp_min(1e-6).unsqueeze(1)
    picks = (logits.double() / t - noise.log()).argmax(dim=1)
    greedy = logits.argmax(dim=1)
    return [int(greedy[r]) if temps[r] <= 1e-6 else int(picks[r]) for r in range(n)]


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to the first occurrence of any stop string."""
    cut = len(text)
    for s in stop:
        if s and (i := text.find(s)) >= 0:
            cut = min(cut, i)
    return text[:cut]
