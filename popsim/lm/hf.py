"""Hugging Face transformers backend: the embedded SmolLM2, any local folder, GGUF file or cached hub id.

Speed notes (LM passes are nearly all of popsim's cost):

* batches are filled up to a token budget after sorting by length, so padding stays small;
* scoring runs the decoder body once and projects onto the vocabulary *only* at continuation positions,
  in fp32 (log-softmax accumulates in fp32 whatever the weights' dtype);
* ``option_logprobs`` encodes each prompt once and reuses its KV cache for all of its options;
* generation is a small KV-cached loop with one torch ``Generator`` per row, so a row's sample depends
  only on its own prompt, temperature and seed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from popsim.exceptions import LMInputError, ModelLoadError
from popsim.lm.base import Chat, LanguageModel, Prompt, as_row_values, check_batch, split_and_normalise
from popsim.lm.loading import convert_gguf, pick_device, pick_dtype, resolve_lm
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
    """

    def __init__(
        self,
        name: str = "smollm2-135m-instruct",
        *,
        device: str = "auto",
        dtype: str = "auto",
        batch_tokens: int = 8192,
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
    ) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per token-budget batch: (rows, fp32 logits (N, V), targets (N,), row of each token (N,))."""
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
            yield rows, logits.cpu(), torch.tensor(targets), torch.tensor(owner)

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
        for _rows, logits, targets, owner in self._continuation_logits(prompt_ids, cont_ids):
            if logits.shape[0] == 0:
                continue
            if needs_grad:  # inference-mode tensors cannot enter autograd; a clone can
                logits = logits.clone()
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
        out: list[LogitSketch | None] = [None] * len(prompts)
        for rows, logits, targets, owner in self._continuation_logits(prompt_ids, cont_ids):
            parts = sketch_logits(logits, targets)
            for r in rows:
                sel = (owner == r).nonzero().squeeze(1)
                out[r] = LogitSketch(*(part[sel].numpy() for part in parts))
        return out  # type: ignore[return-value]

    def option_logprobs(self, prompts, options, *, temperature=1.0) -> list[np.ndarray]:
        check_batch("prompts", prompts)
        check_batch("options", options, expected=len(prompts))
        temps = as_row_values(temperature, len(prompts)).detach().double().clamp_min(1e-4).tolist()
        prompt_ids = [self.encode_prompt(p) for p in prompts]
        option_ids = []
        for opts in options:
            if len(opts) == 0:
                raise LMInputError("each prompt needs at least one option; got an empty option list")
            option_ids.append([self.encode_continuation(o) for o in opts])
        flat = np.zeros(sum(len(o) for o in options))
        offsets = np.cumsum([0] + [len(o) for o in options])
        # cost of a prompt ~ its length x number of options (the cache is expanded per option)
        cost = [len(p) + len(o) * max(len(x) for x in o) for p, o in zip(prompt_ids, option_ids, strict=True)]
        for rows in token_budget_batches(cost, self.batch_tokens):
            scores = self._shared_prefix_option_scores(
                [prompt_ids[r] for r in rows], [option_ids[r] for r in rows], [temps[r] for r in rows]
            )
            for r, s in zip(rows, scores, strict=True):
                flat[offsets[r] : offsets[r + 1]] = s
        return split_and_normalise(flat, [len(o) for o in options])

    @torch.inference_mode()
    def _shared_prefix_option_scores(
        self, prompt_ids: list[list[int]], option_ids: list[list[list[int]]], temps: list[float]
    ) -> list[np.ndarray]:
        """Encode each prompt once (left-padded batch), then all options on its expanded KV cache."""
        n = len(prompt_ids)
        width = max(len(p) for p in prompt_ids)
        ids = torch.full((n, width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        for r, p in enumerate(prompt_ids):
            ids[r, width - len(p) :] = torch.tensor(p)
            mask[r, width - len(p) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(1) - 1).clamp_min(0)
        out = self._body(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
        first_logits = self._project(out.last_hidden_state[:, -1])  # predicts every option's 1st token
        cache = out.past_key_values

        owner = [r for r, opts in enumerate(option_ids) for _ in opts]
        flat_opts = [o for opts in option_ids for o in opts]
        longest = max(len(o) for o in flat_opts)
        scores = torch.zeros(len(flat_opts), dtype=torch.float64)
        tau = torch.tensor([temps[r] for r in owner], dtype=torch.float32)
        first = torch.tensor([o[0] for o in flat_opts])
        first_lp = (first_logits[torch.tensor(owner)].cpu() / tau.unsqueeze(1)).log_softmax(1)
        scores += first_lp.gather(1, first.view(-1, 1)).squeeze(1).double()
        if longest > 1:
            cache.batch_select_indices(torch.tensor(owner, device=self.device))
            tail_in = [o[:-1] for o in flat_opts]  # inputs that predict tokens 1..L-1
            opt_ids, opt_mask = self._right_padded(tail_in)
            full_mask = torch.cat([mask[torch.tensor(owner, device=self.device)], opt_mask], dim=1)
            start = torch.tensor([len(prompt_ids[r]) for r in owner], device=self.device).unsqueeze(1)
            pos = start + torch.arange(opt_ids.shape[1], device=self.device).unsqueeze(0)
            hidden = self._body(
                input_ids=opt_ids, attention_mask=full_mask, position_ids=pos, past_key_values=cache,
                use_cache=False,
            ).last_hidden_state
            sel_b, sel_t, targets = [], [], []
            for b, o in enumerate(flat_opts):
                sel_b += [b] * (len(o) - 1)
                sel_t += list(range(len(o) - 1))
                targets += o[1:]
            if targets:
                logits = self._project(hidden[torch.tensor(sel_b), torch.tensor(sel_t)]).cpu()
                sel_tau = tau[torch.tensor(sel_b)].unsqueeze(1)
                lp = (logits / sel_tau).log_softmax(1).gather(1, torch.tensor(targets).view(-1, 1)).squeeze(1)
                scores.index_add_(0, torch.tensor(sel_b), lp.double())
        offsets = np.cumsum([0] + [len(o) for o in option_ids])
        arr = scores.numpy()
        return [arr[offsets[r] : offsets[r + 1]] for r in range(n)]

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
        width = max(len(p) for p in prompt_ids)
        ids = torch.full((n, width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        for r, p in enumerate(prompt_ids):
            ids[r, width - len(p) :] = torch.tensor(p)
            mask[r, width - len(p) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(1) - 1).clamp_min(0)
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

