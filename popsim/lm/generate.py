"""Sampling for the transformers backend: a static slot cache, continuous batching and a compiled decode step.

:class:`KVCacheGeneration` is mixed into :class:`~popsim.lm.hf.HFLanguageModel`, which provides the
decoder body, the vocabulary projection and the token ids it reads (listed on the class).

How a ``generate`` call runs:

* one :class:`~popsim.lm.slot_cache.SlotCache` is allocated for the call: ``batch_tokens // max_len``
  slots (at most one per prompt, at least two) of ``max_len`` = longest prompt + ``max_new_tokens``, rounded up to
  64 tokens;
* waiting prompts (longest first) are encoded into free slots together (a *prefill*, which also samples
  their first token); prompts of one prefill that share a long prefix have it encoded once and copied into
  each other's slots (:func:`shared_prefixes`); every other token comes from one *decode step* over all slots;
* when a row ends (end of text or ``max_new_tokens``) its slot is refilled from the waiting prompts as
  soon as an eighth of the slots are free (or none is busy), so the batch stays full instead of idling
  until its longest text ends (continuous batching);
* the decode step - decoder body over the cache, vocabulary projection and sampling - is one
  ``torch.compile``'d function where the model's blocks are compiled (bf16 on CPU by default; see
  :mod:`popsim.lm.compile`) and the call asks for at least ``compile_decode_tokens`` new tokens (rows x
  ``max_new_tokens``); elsewhere it runs eagerly, the same code. Compiling the step costs 30-170 s per
  process (dynamo traces the whole decoder) and gains 1.2-1.4x per step on 1-2 cores, so it pays only
  for ~100k new tokens or more: persona summaries, a review scenario or one benchmark method stay eager;
* sampling is Gumbel-max with counter-based noise (:mod:`popsim.lm.sampling`): vectorised over rows,
  and a row's token depends only on its own logits, temperature, seed and step.

So a row's text depends only on its own prompt, temperature and seed: its keys sit at the same cache
indices in any batch, its noise is its own, and in fp32 its logits do not depend on the other rows
(tested). In bf16 a matmul's rounding can depend on the batch's shape, which may flip a near-tie.
"""

from __future__ import annotations

import functools
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import torch

from popsim.lm.base import generation_rows, plain_stops
from popsim.lm.prefix_tree import common_prefix_length
from popsim.lm.sampling import pick_tokens, seed_keys
from popsim.lm.slot_cache import SlotCache

__all__ = ["KVCacheGeneration", "cut_at_stop", "shared_prefixes"]

_LEN_STEP = 64  # cache lengths are rounded up to this, so compiled steps see few distinct shapes
_REFILL_FRACTION = 8  # refill once 1/8 of the slots are free


class KVCacheGeneration:
    """``generate`` over a slot cache with continuous batching.

    Comes first among the bases (its ``generate`` implements the abstract one). Needs from the class it is
    mixed into: ``_body`` (the decoder), ``_project`` (hidden -> fp32 logits), ``_cache_kwarg``,
    ``_pad_id``, ``_eos_ids``, ``model``, ``dtype``, ``device``, ``tokenizer``, ``batch_tokens``,
    ``compiled_blocks``, ``compile_sampler``, ``compile_decode_tokens``, ``prefix_sharing``,
    ``min_shared_prefix`` and ``encode_prompt``.
    """

    _body: Any
    _cache_kwarg: str
    _pad_id: int
    _eos_ids: set[int]
    model: Any
    dtype: torch.dtype
    device: torch.device
    tokenizer: Any
    batch_tokens: int
    compiled_blocks: int
    compile_sampler: bool
    compile_decode_tokens: int
    prefix_sharing: bool
    min_shared_prefix: int
    _project: Callable[[torch.Tensor], torch.Tensor]
    encode_prompt: Callable[[Any], list[int]]
    _decode_step_fn: Callable[..., torch.Tensor] | None = None

    def generate(self, prompts, *, max_new_tokens=64, temperature=1.0, seed=0, stop=(),
                 ignore_eos: bool = False) -> list[str]:
        """See :meth:`LanguageModel.generate`; ``ignore_eos`` (this backend only, as vLLM's) samples
        exactly ``max_new_tokens`` per row, end-of-text tokens included (for throughput benchmarks)."""
        temps, seeds = generation_rows(prompts, max_new_tokens, temperature, seed)
        prompt_ids = [self.encode_prompt(p) for p in prompts]
        stops = [plain_stops(self.tokenizer, p, stop) for p in prompts]
        # a template-free chat's answer: a blank line it opens with ends nothing, so leading space is dropped
        strip = [len(s) > len(tuple(stop)) for s in stops]
        eos = set() if ignore_eos else self._eos_ids
        compiled = self.compiled_blocks > 0 and len(prompts) * max_new_tokens >= self.compile_decode_tokens
        outs = self._generate_ids(prompt_ids, temps, seeds, max_new_tokens, eos, compiled=compiled)
        return [cut_at_stop(self._row_text(toks, lead), st) for toks, lead, st in zip(outs, strip, stops, strict=True)]

    def _row_text(self, tokens: list[int], strip: bool) -> str:
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        return text.lstrip() if strip else text

    # ------------------------------------------------------------------ the loop
    @torch.inference_mode()
    def _generate_ids(self, prompt_ids: list[list[int]], temps: list[float], seeds: list[int],
                      max_new_tokens: int, eos_ids: set[int], *, compiled: bool = False) -> list[list[int]]:
        """New token ids per row (end-of-text excluded), continuous batching over one slot cache; ``compiled``:
        decode steps through the compiled step (else eagerly)."""
        n, dev = len(prompt_ids), self.device
        max_len = -(-(max(map(len, prompt_ids)) + max_new_tokens) // _LEN_STEP) * _LEN_STEP
        # at least two slots even for one prompt: compiled graphs specialise on a batch of one
        n_slots = max(2, min(n, self.batch_tokens // max_len))
        config = self.model.config.get_text_config() if hasattr(self.model.config, "get_text_config") \
            else self.model.config
        cache = SlotCache(config, n_slots, max_len, self.dtype, dev)
        row_keys = seed_keys(seeds, dev)
        row_temps = torch.tensor(temps, dtype=torch.float32, device=dev)
        # per-slot state, on the device: the step reads it without a copy
        slot_keys = torch.zeros((n_slots, 2), dtype=torch.long, device=dev)
        slot_temps = torch.ones(n_slots, dtype=torch.float32, device=dev)
        slot_steps = torch.zeros(n_slots, dtype=torch.long, device=dev)
        next_ids = torch.full((n_slots,), self._pad_id, dtype=torch.long, device=dev)
        out: list[list[int]] = [[] for _ in range(n)]
        owner: list[int | None] = [None] * n_slots  # row held by each slot
        index_of: list[int] = [0] * n_slots  # the cache index each slot writes its next token at
        waiting = deque(sorted(range(n), key=lambda r: -len(prompt_ids[r])))

        def take(slot: int, token: int) -> None:
            """Record a slot's sampled token; free the slot when its row ends."""
            row = owner[slot]
            assert row is not None
            if token in eos_ids:
                owner[slot] = None
                return
            out[row].append(token)
            if len(out[row]) >= max_new_tokens:
                owner[slot] = None

        while waiting or any(o is not None for o in owner):
            free = [s for s, o in enumerate(owner) if o is None]
            busy = n_slots - len(free)
            if waiting and free and (busy == 0 or len(free) >= max(1, n_slots // _REFILL_FRACTION)):
                slots = free[: len(waiting)]
                rows = [waiting.popleft() for _ in slots]
                slot_index = torch.tensor(slots, device=dev)
                row_index = torch.tensor(rows, device=dev)
                first = self._prefill(cache, slot_index, [prompt_ids[r] for r in rows],
                                      row_temps[row_index], row_keys[row_index])
                slot_keys[slot_index] = row_keys[row_index]
                slot_temps[slot_index] = row_temps[row_index]
                slot_steps[slot_index] = 1
                next_ids[slot_index] = first
                for s, r, tok in zip(slots, rows, first.tolist(), strict=True):
                    owner[s], index_of[s] = r, len(prompt_ids[r])
                    take(s, tok)
                continue  # rows that ended at their first token free their slot before a step runs
            live = 1 + max(index_of[s] for s, o in enumerate(owner) if o is not None)
            slot_pos = torch.tensor(index_of, dtype=torch.long, device=dev)
            tokens = self._decode_step(cache, next_ids, slot_pos, slot_temps, slot_keys, slot_steps, live,
                                       compiled=compiled)
            for s, tok in enumerate(tokens.tolist()):
                if owner[s] is not None:
                    take(s, tok)
            next_ids = tokens
            # idle slots keep writing at their last index, which their next occupant's prefill masks
            index_of = [min(i + 1, max_len - 1) for i in index_of]
            slot_steps = slot_steps + 1
        return out

    # ------------------------------------------------------------------ passes
    def _prefill(self, cache: SlotCache, slots: torch.Tensor, prompts: list[list[int]], temps: torch.Tensor,
                 keys: torch.Tensor) -> torch.Tensor:
        """Encode ``prompts`` into ``slots`` (token i at index i) and sample each first token.

        Rows that share a long leading run of tokens (an instruction, a persona, an exemplar) have it encoded
        once, by one of them, and copied into the others' slots (:func:`shared_prefixes`); then every row
        encodes the rest of its prompt."""
        shares = (shared_prefixes(prompts, self.min_shared_prefix) if self.prefix_sharing
                  else [(r, 0) for r in range(len(prompts))])
        leaders = [r for r, (lead, length) in enumerate(shares) if lead == r and length]
        if leaders:
            self._encode(cache, slots[leaders], [prompts[r][: shares[r][1]] for r in leaders], [0] * len(leaders))
            for r, (lead, length) in enumerate(shares):
                if lead != r:
                    cache.copy_prefix(int(slots[lead]), int(slots[r]), length)
        starts = [length for _, length in shares]
        hidden = self._encode(cache, slots, [p[s:] for p, s in zip(prompts, starts, strict=True)], starts)
        return self._sample(self._project(hidden), temps, keys, torch.zeros(len(prompts), dtype=torch.long,
                                                                               device=self.device))

    def _encode(self, cache: SlotCache, slots: torch.Tensor, parts: list[list[int]], starts: list[int]
                ) -> torch.Tensor:
        """Run ``parts`` (right-padded) at cache indices ``starts`` onwards of ``slots``; each row's last hidden
        state. Padding writes past a row's end (clamped into the slot), where its decode steps overwrite it."""
        width = max(map(len, parts))
        ids = torch.full((len(parts), width), self._pad_id, dtype=torch.long)
        for r, p in enumerate(parts):
            ids[r, : len(p)] = torch.tensor(p)
        first = torch.tensor(starts, device=self.device).unsqueeze(1)
        positions = (first + torch.arange(width, device=self.device)).clamp_max(cache.max_len - 1)
        cache.set_pass(slots, positions, live=max(s + len(p) for s, p in zip(starts, parts, strict=True)))
        hidden = self._body(input_ids=ids.to(self.device), attention_mask=cache.mask(positions),
                            position_ids=positions, use_cache=True, **{self._cache_kwarg: cache}).last_hidden_state
        last = torch.tensor([len(p) - 1 for p in parts], device=self.device)
        return hidden[torch.arange(len(parts), device=self.device), last]

    def _sample(self, logits: torch.Tensor, temps: torch.Tensor, keys: torch.Tensor,
                steps: torch.Tensor) -> torch.Tensor:
        """:func:`pick_tokens`, compiled on CPU (eagerly its ~30 integer ops over rows x vocabulary each
        make a full tensor: slower than the float64 sampler it replaced) unless compiling is off."""
        if self.device.type == "cpu" and self.compile_sampler:
            try:
                return _compiled_sampler()(logits, temps, keys, steps)
            except Exception as exc:  # noqa: BLE001 - any backend failure means "sample eagerly"
                self.compile_sampler = False
                warnings.warn(f"compiled sampling unavailable ({type(exc).__name__}); sampling eagerly",
                              RuntimeWarning, stacklevel=2)
        return pick_tokens(logits, temps, keys, steps)

    def _decode_step(self, cache: SlotCache, ids: torch.Tensor, positions: torch.Tensor, temps: torch.Tensor,
                     keys: torch.Tensor, steps: torch.Tensor, live: int, *, compiled: bool = False) -> torch.Tensor:
        """One token per slot (every slot runs; idle ones are ignored by the caller), reading the cache below
        ``live`` (past every busy row's current index); ``compiled``: through the compiled step, compiled on
        first use (if compiling fails, every later step runs eagerly)."""
        cache.set_pass(None, positions.unsqueeze(1), live=live)
        args = (cache, ids, positions, temps, keys, steps)
        if not compiled:
            return self._step(*args)
        if self._decode_step_fn is None:
            self._decode_step_fn = torch.compile(self._step, dynamic=True)
            try:
                return self._decode_step_fn(*args)
            except Exception as exc:  # noqa: BLE001 - any backend failure means "step eagerly"
                warnings.warn(f"compiled decode step unavailable ({type(exc).__name__}: {exc}); "
                              "decoding eagerly", RuntimeWarning, stacklevel=2)
                self._decode_step_fn = self._step
        return self._decode_step_fn(*args)

    def _step(self, cache: SlotCache, ids: torch.Tensor, positions: torch.Tensor, temps: torch.Tensor,
              keys: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        pos = positions.unsqueeze(1)
        hidden = self._body(input_ids=ids.unsqueeze(1), attention_mask=cache.mask(pos), position_ids=pos,
                            use_cache=True, **{self._cache_kwarg: cache}).last_hidden_state[:, -1]
        if torch.compiler.is_compiling():
            return pick_tokens(self._project(hidden), temps, keys, steps)
        return self._sample(self._project(hidden), temps, keys, steps)


def shared_prefixes(prompts: list[list[int]], min_shared: int = 16) -> list[tuple[int, int]]:
    """For each prompt, ``(leader, length)``: its first ``length`` tokens equal those of prompt ``leader``, which
    encodes them once for its group (a leader names itself; ``length`` 0: the prompt shares nothing).

    Prompts sorted by their tokens put long common prefixes next to each other; groups are runs of that order,
    chosen (dynamic programming over run boundaries) to save the most encoded tokens, each sharing the run's
    common prefix of at least ``min_shared`` tokens and at most every member's length - 1 (every row encodes at
    least its last token, whose logits give its first sample)."""
    order = sorted(range(len(prompts)), key=lambda r: prompts[r])
    n = len(order)

    adjacent = [common_prefix_length(prompts[order[i - 1]], prompts[order[i]]) for i in range(1, n)]
    best = [0] * (n + 1)  # tokens saved by the first i prompts of the order
    cut: list[tuple[int, int]] = [(0, 0)] * (n + 1)  # (start of the last run, its shared length)
    for i in range(1, n + 1):
        best[i], cut[i] = best[i - 1], (i - 1, 0)
        common, shortest = 1 << 30, len(prompts[order[i - 1]])
        for j in range(i - 2, -1, -1):  # the last run is order[j:i]
            common = min(common, adjacent[j])
            shortest = min(shortest, len(prompts[order[j]]))
            length = min(common, shortest - 1)
            if length < min_shared:
                break
            if best[j] + (i - j - 1) * length > best[i]:
                best[i], cut[i] = best[j] + (i - j - 1) * length, (j, length)
    out: list[tuple[int, int]] = [(r, 0) for r in range(n)]
    i = n
    while i > 0:
        j, length = cut[i]
        if length:
            for k in order[j:i]:
                out[k] = (order[j], length)
        i = j
    return out


@functools.cache
def _compiled_sampler() -> Callable[..., torch.Tensor]:
    return torch.compile(pick_tokens, dynamic=True)


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to the first occurrence of any stop string."""
    cut = len(text)
    for s in stop:
        if s and (i := text.find(s)) >= 0:
            cut = min(cut, i)
    return text[:cut]

