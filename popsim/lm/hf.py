"""Hugging Face transformers backend: the embedded SmolLM2, any local folder, GGUF file or cached hub id.

Speed notes (LM passes are nearly all of popsim's cost):

* batches are filled up to a token budget after sorting by length, so padding stays small;
* scoring runs the decoder body once and projects onto the vocabulary *only* at continuation positions,
  in fp32 (log-softmax accumulates in fp32 whatever the weights' dtype);
* scoring follows a prefix tree (:mod:`popsim.lm.prefix_tree`): a prefix shared by many prompts (an
  agent's persona + exemplar + profile) and a prompt shared by many continuations (a question's options)
  are encoded once and their KV cache is expanded, so ``option_logprobs`` (derived from ``score``) costs
  little more than the options' own tokens;
* generation is a small KV-cached loop with one torch ``Generator`` per row, so a row's sample depends
  only on its own prompt, temperature and seed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from popsim.exceptions import LMInputError, ModelLoadError
from popsim.lm.base import Chat, LanguageModel, Prompt, as_row_values, check_batch
from popsim.lm.loading import convert_gguf, pick_device, pick_dtype, resolve_lm
from popsim.lm.prefix_tree import batch_groups, group_by_shared_prefix
from popsim.lm.sketch import LogitSketch, sketch_logits

__all__ = ["HFLanguageModel", "token_budget_batches"]


def token_budget_batches(lengths: Sequence[int], budget: int, max_rows: int = 256) -> Iterator[list[int]]:
    """Yield index batches, longest first, whose padded size (rows x longest) stays within ``budget``."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batch: list[int] = []
    longest = 0
    for i in order:
        new_longest = max(longest, lengths[i])
        if batch and (new_longest * (len(batch) + 1) > budget or len(batch) >= max_rows):
            yield batch
            batch, new_longest = [], lengths[i]
        batch.append(i)
        longest = new_longest
    if batch:
        yield batch


class HFLanguageModel(LanguageModel):
    """A causal LM from transformers, frozen, behind popsim's three-call interface.

    Args:
        name: ``smollm2-135m-instruct`` (embedded), a folder, a ``.gguf`` file or a cached hub id.
        device: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda``, ``cuda:1`` ...
        dtype: ``auto`` (bf16 where the hardware multiplies it natively, else fp32), ``fp32``, ``bf16``.
        batch_tokens: padded tokens per forward pass; larger uses more memory.
        prefix_sharing: score through the prefix tree (shared prefixes and repeated prompts encoded
            once); off encodes every (prompt, continuation) pair in full (for benchmarks).
        min_shared_prefix: tokens two prompts must share to be encoded as one prefix.
    """

    def __init__(
        self,
        name: str = "smollm2-135m-instruct",
        *,
        device: str = "auto",
        dtype: str = "auto",
        batch_tokens: int = 8192,
        prefix_sharing: bool = True,
        min_shared_prefix: int = 8,
    ) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if batch_tokens < 16:
            raise ModelLoadError(f"lm.batch_tokens must be >= 16; got {batch_tokens}")
        source = resolve_lm(name)
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        location = str(convert_gguf(source)) if source.gguf_file else source.location
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=True)
            self.model = AutoModelForCausalLM.from_pretrained(
                location, dtype=self.dtype, local_files_only=True
            ).to(self.device)
        except OSError as exc:
            raise ModelLoadError(
                f"lm '{name}' could not be loaded offline ({str(exc).splitlines()[0][:160]}); "
                "download it beforehand (e.g. `huggingface-cli download ID`) or pass a local folder"
            ) from None
        self.model.eval()
        self.model.requires_grad_(False)
        self.name = source.name
        self.batch_tokens = batch_tokens
        self.prefix_sharing = prefix_sharing
        self.min_shared_prefix = min_shared_prefix
        self._pad_id = self.tokenizer.pad_token_id
        if self._pad_id is None:
            self._pad_id = self.tokenizer.eos_token_id or 0
        self._eos_ids = self._collect_eos_ids()
        self._body = self.model.get_decoder() if hasattr(self.model, "get_decoder") else self.model.base_model
        head = self.model.get_output_embeddings()
        self._head_weight = head.weight.detach().float()
        self._head_bias = None if getattr(head, "bias", None) is None else head.bias.detach().float()
        self._softcap = getattr(self.model.config, "final_logit_softcapping", None)

    # ------------------------------------------------------------------ text <-> tokens
    def _collect_eos_ids(self) -> set[int]:
        ids = {self.tokenizer.eos_token_id}
        gen_cfg = getattr(self.model, "generation_config", None)
        extra = getattr(gen_cfg, "eos_token_id", None)
        ids.update(extra if isinstance(extra, list) else [extra])
        return {i for i in ids if i is not None}

    def render(self, prompt: Prompt) -> str:
        if isinstance(prompt, str):
            return prompt
        if not isinstance(prompt, Chat):
            raise LMInputError(f"a prompt must be str or Chat; got {type(prompt).__name__}")
        if not self.tokenizer.chat_template:
            return prompt.plain_text()
        messages = [{"role": r, "content": c} for r, c in prompt.messages]
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return text + prompt.assistant_prefix

    def encode_prompt(self, prompt: Prompt) -> list[int]:
        """Token ids of a rendered prompt (BOS added only if the text does not carry it already)."""
        text = self.render(prompt)
        bos = self.tokenizer.bos_token
        add_special = not (bos and text.startswith(bos))
        ids = self.tokenizer(text, add_special_tokens=add_special)["input_ids"]
        if not ids:  # an empty prompt still needs one position to predict from
            ids = [self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self._pad_id]
        return ids

    def encode_continuation(self, text: str) -> list[int]:
        """Continuation ids, tokenised apart from the prompt so the boundary is exact."""
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    # ------------------------------------------------------------------ forward helpers
    def _project(self, hidden: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits in fp32 for selected hidden states only."""
        logits = torch.nn.functional.linear(hidden.float(), self._head_weight, self._head_bias)
        if self._softcap:
            logits = torch.tanh(logits / self._softcap) * self._softcap
        return logits

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

    def _right_padded(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, s in enumerate(seqs):
            ids[r, : len(s)] = torch.tensor(s)
            mask[r, : len(s)] = 1
        return ids.to(self.device), mask.to(self.device)

    def _continuation_logits(
        self, prompt_ids: list[list[int]], cont_ids: list[list[int]]
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per batch: (pair of each token (N,), fp32 logits (N, V), target ids (N,)).

        Uses the prefix tree (shared prefixes and repeated prompts encoded once) unless
        ``prefix_sharing`` is off, in which case every pair is encoded in full.
        """
        if self.prefix_sharing:
            yield from self._tree_logits(prompt_ids, cont_ids)
        else:
            yield from self._flat_logits(prompt_ids, cont_ids)

    def _flat_logits(self, prompt_ids, cont_ids):
        seqs = [p + c for p, c in zip(prompt_ids, cont_ids, strict=True)]
        for rows in token_budget_batches([len(s) for s in seqs], self.batch_tokens):
            ids, mask = self._right_padded([seqs[r] for r in rows])
            with torch.inference_mode():
                hidden = self._body(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
                sel_b, sel_t, targets, owner = [], [], [], []
                for b, r in enumerate(rows):
                    start, n = len(prompt_ids[r]), len(cont_ids[r])
                    sel_b += [b] * n
                    sel_t += list(range(start - 1, start + n - 1))
                    targets += cont_ids[r]
                    owner += [r] * n
                logits = self._project(hidden[torch.tensor(sel_b), torch.tensor(sel_t)])
            yield torch.tensor(owner, dtype=torch.long), logits.cpu(), torch.tensor(targets)

    def _tree_logits(self, prompt_ids, cont_ids):
        """Three-level prefix-tree scoring; see :mod:`popsim.lm.prefix_tree`."""
        unique: dict[tuple[int, ...], int] = {}
        prompt_of_pair = [unique.setdefault(tuple(p), len(unique)) for p in prompt_ids]
        prompts = [list(p) for p in unique]
        pairs_of_prompt: list[list[int]] = [[] for _ in prompts]
        for pair, u in enumerate(prompt_of_pair):
            if cont_ids[pair]:
                pairs_of_prompt[u].append(pair)
        groups = group_by_shared_prefix(prompts, min_shared=self.min_shared_prefix)
        costs = []
        for g in groups:
            width = max(len(prompts[m]) for m in g.members)
            n_pairs = sum(len(pairs_of_prompt[m]) for m in g.members)
            longest = max([len(cont_ids[q]) for m in g.members for q in pairs_of_prompt[m]] or [1])
            costs.append(width * len(g.members) + n_pairs * (width + longest))
        for batch in batch_groups(costs, self.batch_tokens * 4):
            yield self._tree_batch([groups[i] for i in batch], prompts, pairs_of_prompt, cont_ids)

    @torch.inference_mode()
    def _tree_batch(self, groups, prompts, pairs_of_prompt, cont_ids):
        dev = self.device
        # level 1: each group's shared prefix, left-padded
        ids1, mask1, pos1 = self._left_padded([prompts[g.members[0]][: g.prefix_len] for g in groups])
        out1 = self._body(input_ids=ids1, attention_mask=mask1, position_ids=pos1, use_cache=True)
        cache = out1.past_key_values
        last1 = out1.last_hidden_state[:, -1]

        # level 2: each distinct prompt's suffix on its group's cache (right-padded; may be empty)
        members = [m for g in groups for m in g.members]
        group_row = [gi for gi, g in enumerate(groups) for _ in g.members]
        suffixes = [prompts[m][groups[gi].prefix_len :] for m, gi in zip(members, group_row, strict=True)]
        g_idx = torch.tensor(group_row, device=dev)
        cache.batch_select_indices(g_idx)
        mask12 = mask1[g_idx]
        if any(suffixes):
            ids2, mask2 = self._right_padded([s or [self._pad_id] for s in suffixes])
            for r, s in enumerate(suffixes):
                if not s:
                    mask2[r, 0] = 0
            start2 = torch.tensor([groups[gi].prefix_len for gi in group_row], device=dev).unsqueeze(1)
            pos2 = start2 + torch.arange(ids2.shape[1], device=dev).unsqueeze(0)
            mask12 = torch.cat([mask12, mask2], dim=1)
            out2 = self._body(
                input_ids=ids2, attention_mask=mask12, position_ids=pos2, past_key_values=cache,
                use_cache=True,
            )
            cache = out2.past_key_values
            last_col = torch.tensor([max(len(s) - 1, 0) for s in suffixes], device=dev)
            last2 = out2.last_hidden_state[torch.arange(len(members), device=dev), last_col]
            has_suffix = torch.tensor([bool(s) for s in suffixes], device=dev).unsqueeze(1)
            prompt_last = torch.where(has_suffix, last2, last1[g_idx])
        else:
            prompt_last = last1[g_idx]

        # first continuation token of every pair: predicted from its prompt's last position
        pair_member = [mi for mi, m in enumerate(members) for _ in pairs_of_prompt[m]]
        pairs = [q for m in members for q in pairs_of_prompt[m]]
        owner = list(pairs)
        targets = [cont_ids[q][0] for q in pairs]
        hidden_rows = [prompt_last[torch.tensor(pair_member, device=dev)]] if pairs else []

        # level 3: remaining continuation tokens on the expanded prompt cache
        long_pairs = [(mi, q) for mi, q in zip(pair_member, pairs, strict=True) if len(cont_ids[q]) > 1]
        if long_pairs:
            m_idx = torch.tensor([mi for mi, _ in long_pairs], device=dev)
            cache.batch_select_indices(m_idx)
            ids3, mask3 = self._right_padded([cont_ids[q][:-1] for _, q in long_pairs])
            start3 = torch.tensor([len(prompts[members[mi]]) for mi, _ in long_pairs], device=dev)
            start3 = start3.unsqueeze(1)
            pos3 = start3 + torch.arange(ids3.shape[1], device=dev).unsqueeze(0)
            hidden3 = self._body(
                input_ids=ids3, attention_mask=torch.cat([mask12[m_idx], mask3], dim=1), position_ids=pos3,
                past_key_values=cache, use_cache=False,
            ).last_hidden_state
            sel_b, sel_t = [], []
            for b, (_, q) in enumerate(long_pairs):
                n = len(cont_ids[q]) - 1
                sel_b += [b] * n
                sel_t += list(range(n))
                owner += [q] * n
                targets += cont_ids[q][1:]
            hidden_rows.append(hidden3[torch.tensor(sel_b, device=dev), torch.tensor(sel_t, device=dev)])
        if not hidden_rows:
            empty = torch.zeros((0, self._head_weight.shape[0]))
            return torch.zeros(0, dtype=torch.long), empty, torch.zeros(0, dtype=torch.long)
        logits = self._project(torch.cat(hidden_rows)).cpu()
        return torch.tensor(owner, dtype=torch.long), logits, torch.tensor(targets, dtype=torch.long)

    def _tokenize_pairs(
        self, prompts: Sequence[Prompt], continuations: Sequence[str]
    ) -> tuple[list[list[int]], list[list[int]]]:
        check_batch("prompts", prompts)
        check_batch("continuations", continuations, expected=len(prompts))
        prompt_ids = [self.encode_prompt(p) for p in prompts]
        cont_ids = [self.encode_continuation(c) for c in continuations]
        return prompt_ids, cont_ids

    # ------------------------------------------------------------------ public calls
    def score(self, prompts, continuations, *, temperature=1.0) -> torch.Tensor:
        prompt_ids, cont_ids = self._tokenize_pairs(prompts, continuations)
        temps = as_row_values(temperature, len(prompts))
        needs_grad = temps.requires_grad
        temps = temps.float() if needs_grad else temps.detach().float().clamp_min(1e-4)
        pieces: list[torch.Tensor] = []
        index: list[torch.Tensor] = []
        for owner, logits, targets in self._continuation_logits(prompt_ids, cont_ids):
            if logits.shape[0] == 0:
                continue
            if needs_grad:  # inference-mode tensors cannot enter autograd; a clone can
                owner, logits, targets = owner.clone(), logits.clone(), targets.clone()
            tau = temps[owner].unsqueeze(1)
            token_lp = (logits / tau).log_softmax(dim=1).gather(1, targets.view(-1, 1)).squeeze(1)
            pieces.append(token_lp)
            index.append(owner)
        total = torch.zeros(len(prompts), dtype=torch.float32)
        if pieces:
            total = total.index_add(0, torch.cat(index), torch.cat(pieces))
        return total if needs_grad else total.detach()

    def score_sketches(self, prompts, continuations) -> list[LogitSketch]:
        """Per-continuation logit sketches (see :mod:`popsim.lm.sketch`) for temperature learning."""
        prompt_ids, cont_ids = self._tokenize_pairs(prompts, continuations)
        empty = sketch_logits(torch.zeros((0, self._head_weight.shape[0])), torch.zeros(0, dtype=torch.long))
        out = [LogitSketch(*(part.numpy() for part in empty))] * len(prompts)
        for owner, logits, targets in self._continuation_logits(prompt_ids, cont_ids):
            parts = sketch_logits(logits, targets)
            for r in owner.unique().tolist():
                sel = (owner == r).nonzero().squeeze(1)
                out[r] = LogitSketch(*(part[sel].numpy() for part in parts))
        return out

    def generate(self, prompts, *, max_new_tokens=64, temperature=1.0, seed=0, stop=()) -> list[str]:
        check_batch("prompts", prompts)
        if max_new_tokens < 1:
            raise LMInputError(f"`max_new_tokens` must be >= 1; got {max_new_tokens}")
        n = len(prompts)
        temps = as_row_values(temperature, n).detach().double().tolist()
        seeds = _row_seeds(seed, n)
        prompt_ids = [self.encode_prompt(p) for p in prompts]
        texts: list[str] = [""] * n
        budget = max(self.batch_tokens, 1)
        lengths = [len(p) + max_new_tokens for p in prompt_ids]
        for rows in token_budget_batches(lengths, budget):
            outs = self._generate_batch(
                [prompt_ids[r] for r in rows], [temps[r] for r in rows], [seeds[r] for r in rows],
                max_new_tokens,
            )
            for r, toks in zip(rows, outs, strict=True):
                texts[r] = _cut_at_stop(self.tokenizer.decode(toks, skip_special_tokens=True), stop)
        return texts

    @torch.inference_mode()
    def _generate_batch(
        self, prompt_ids: list[list[int]], temps: list[float], seeds: list[int], max_new_tokens: int
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
                input_ids=step_ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                use_cache=True,
            )
            cache = out.past_key_values
            logits = self._project(out.last_hidden_state[:, -1]).cpu()
            next_tokens = []
            for r in range(n):
                if done[r]:
                    next_tokens.append(self._pad_id)
                    continue
                tok = _sample(logits[r], temps[r], generators[r])
                if tok in self._eos_ids:
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


def _sample(logits: torch.Tensor, temperature: float, generator: torch.Generator) -> int:
    if temperature <= 1e-6:
        return int(logits.argmax())
    probs = torch.softmax(logits.double() / temperature, dim=0)
    return int(torch.multinomial(probs, 1, generator=generator))


def _row_seeds(seed: int | Sequence[int], n: int) -> list[int]:
    """Per-row seeds: a list is used as given; an int spawns one independent seed per row."""
    if isinstance(seed, (int, np.integer)):
        children = np.random.SeedSequence(int(seed)).generate_state(n, dtype=np.uint32)
        return [int(c) for c in children]
    seeds = [int(s) for s in seed]
    if len(seeds) != n:
        raise LMInputError(f"`seed` has {len(seeds)} values but there are {n} prompts; pass one or {n}")
    return seeds


def _cut_at_stop(text: str, stop: Sequence[str]) -> str:
    cut = len(text)
    for s in stop:
        if s and (i := text.find(s)) >= 0:
            cut = min(cut, i)
    return text[:cut]

