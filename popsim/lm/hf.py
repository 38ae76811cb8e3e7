"""Hugging Face transformers backend: the embedded SmolLM2, any local folder, GGUF file or cached hub id.

Speed notes (LM passes are nearly all of popsim's cost):

* batches are filled up to a token budget after sorting by length, so padding stays small;
* scoring runs the decoder body once and projects onto the vocabulary *only* at continuation positions,
  in the model's dtype, then upcasts: the log-softmax always accumulates in fp32;
* scoring follows a prefix tree (:mod:`popsim.lm.prefix_tree`): a prefix shared by many prompts (an
  agent's persona + exemplar + profile) and a prompt shared by many continuations (a question's options)
  are packed into one sequence with a tree-attention mask and encoded once, so ``option_logprobs``
  (derived from ``score``) costs little more than the options' own tokens;
* in bf16 on CPU the decoder layers (for cache-free scoring passes) and the norm and MLP blocks (for
  generation) are compiled (:mod:`popsim.lm.compile`): eager elementwise kernels would otherwise cost
  as much as the matmuls;
* generation runs over a preallocated slot cache with continuous batching, its decode step compiled
  where the blocks are, and samples with counter-based Gumbel noise, so a row's sample depends only on
  its own prompt, temperature and seed (:mod:`popsim.lm.generate`).

:attr:`HFLanguageModel.identity` (weights' digest, dtype, device type, attention and compile path) keys
the machine-wide score cache, so a bf16 fit never reuses fp32 scores (see :mod:`popsim.lm.identity`).
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Iterator, Sequence

import torch

from popsim.exceptions import ModelLoadError, first_line
from popsim.lm.attention import ATTENTION_NAME, TILE, register_attention, tile_layout
from popsim.lm.base import LanguageModel, Prompt, as_row_values, check_batch, render_with_tokenizer
from popsim.lm.compile import compile_elementwise_blocks, should_compile
from popsim.lm.generate import KVCacheGeneration
from popsim.lm.identity import weights_digest
from popsim.lm.loading import convert_gguf, pick_device, pick_dtype, resolve_lm
from popsim.lm.prefix_tree import PackedTree, group_by_shared_prefix, pack_groups, token_budget_batches
from popsim.lm.sketch import LogitSketch, sketch_logits

__all__ = ["HFLanguageModel", "token_budget_batches"]

_CPU_SCORE_BATCH_TOKENS = 2048


class HFLanguageModel(KVCacheGeneration, LanguageModel):
    """A causal LM from transformers, frozen, behind popsim's three-call interface.

    Args:
        name: ``smollm2-135m-instruct`` (embedded), a folder, a ``.gguf`` file or a cached hub id.
        device: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda``, ``cuda:1`` ...
        dtype: ``auto`` (bf16 where the hardware multiplies it natively, else fp32), ``fp32``, ``bf16``.
        batch_tokens: padded tokens per forward pass; larger uses more memory.
        score_batch_tokens: padded tokens per scoring pass; ``None``: 2048 on CPU, where a pass whose
            activations and attention scores stay in cache ran 1.2-1.3x faster than 8192 tokens on 2
            cores (SmolLM2, ~125-token rows), and ``batch_tokens`` elsewhere. Generation always uses
            ``batch_tokens``: its decode steps are memory-bound and want many rows.
        prefix_sharing: score through the prefix tree (shared prefixes and repeated prompts encoded
            once), and let prompts generated together encode a shared prefix once; off encodes every
            prompt (and every (prompt, continuation) pair) in full (for benchmarks).
        min_shared_prefix: tokens two prompts must share to be encoded as one prefix.
        max_tree_tokens: longest packed prefix tree; a group of prompts that does not fit is split and
            its shared prefix encoded once per part. ``None``: 2048 (at most ``score_batch_tokens``) where
            compiled CPU scoring tiles the tree mask (``compile`` active on CPU, by default in bf16; see
            :func:`popsim.lm.attention.tile_layout`), so a survey agent's prompts are one tree; else 512,
            because dense attention kernels compute the whole (width x width) mask (on 2 CPU cores 512
            scored 64 ~110-token prompts 1.7x faster than 1024).
        tree_tiles: let compiled CPU scoring read only a shared key strip and a diagonal band of 64 x 64
            tiles of a tree mask (exact, see :func:`popsim.lm.attention.tile_layout`; compiled at load for
            batches of one and two trees; off computes every tile, for benchmarks).
        compile: ``auto`` (compile the decoder layers and the norm and MLP blocks where eager elementwise
            kernels are the bottleneck: bf16/fp16 on CPU; see :mod:`popsim.lm.compile`), ``on`` or ``off``.
        compile_decode_tokens: where the blocks are compiled, a ``generate`` call of at least this many new
            tokens (prompts x ``max_new_tokens``) also runs its decode steps through one compiled step
            (compiled on first use, 30-170 s per process); smaller calls decode eagerly, which is cheaper
            than the compile below ~100k tokens. 0: always compiled (benchmarks of the steady state).
    """

    backend = "transformers"
    supports_sketches = True
    supports_token_logprobs = True

    def __init__(
        self,
        name: str = "smollm2-135m-instruct",
        *,
        device: str = "auto",
        dtype: str = "auto",
        batch_tokens: int = 8192,
        score_batch_tokens: int | None = None,
        prefix_sharing: bool = True,
        min_shared_prefix: int = 8,
        max_tree_tokens: int | None = None,
        tree_tiles: bool = True,
        compile: str = "auto",
        compile_decode_tokens: int = 131_072,
    ) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        for field, value in (("lm.batch_tokens", batch_tokens), ("score_batch_tokens", score_batch_tokens)):
            if value is not None and value < 16:  # checked before the (slow) model load
                raise ModelLoadError(f"{field} must be >= 16; got {value}")
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
                f"lm '{name}' could not be loaded offline ({first_line(exc)}); "
                "download it beforehand (e.g. `huggingface-cli download ID`) or pass a local folder"
            ) from None
        except Exception as exc:  # a tokenizer that cannot be built, a truncated safetensors file, ...
            where = f"lm '{name}'" + (f" (at {location})" if str(location) != str(name) else "")
            raise ModelLoadError(
                f"{where} could not be loaded ({type(exc).__name__}: {first_line(exc)}); its files look "
                "incomplete or corrupt (an interrupted download?): download it again or point lm.name elsewhere"
            ) from None
        self.model.eval()
        self.model.requires_grad_(False)
        self.name = source.name
        self._location = location
        self.batch_tokens = batch_tokens
        if score_batch_tokens is None:
            on_cpu = self.device.type == "cpu"
            score_batch_tokens = min(batch_tokens, _CPU_SCORE_BATCH_TOKENS) if on_cpu else batch_tokens
        self.score_batch_tokens = score_batch_tokens
        self.prefix_sharing = prefix_sharing
        self.min_shared_prefix = min_shared_prefix
        self._pad_id = self.tokenizer.pad_token_id
        if self._pad_id is None:
            self._pad_id = self.tokenizer.eos_token_id or 0
        self._eos_ids = self._collect_eos_ids()
        self._body = self.model.get_decoder() if hasattr(self.model, "get_decoder") else self.model.base_model
        head = self.model.get_output_embeddings()
        self._head_weight = head.weight.detach()
        self._head_bias = None if getattr(head, "bias", None) is None else head.bias.detach()
        self._softcap = getattr(self.model.config, "final_logit_softcapping", None)
        # transformers 5.x renamed the KV-cache argument; older model code still takes past_key_values
        takes_cache = "cache" in inspect.signature(self._body.forward).parameters
        self._cache_kwarg = "cache" if takes_cache else "past_key_values"
        self.tree_tiles = tree_tiles
        self.compiled_blocks = 0
        self.compile_sampler = compile != "off"  # generation's sampler, on CPU (see popsim.lm.generate)
        self.compile_decode_tokens = compile_decode_tokens
        if should_compile(compile, self.device, self.dtype):
            register_attention(self.model)
            self.compiled_blocks = compile_elementwise_blocks(self.model, self._warm_up)
        if self.tiled_trees:
            self._warm_up_tiles()
        if max_tree_tokens is None:  # never wider than a scoring batch, which holds at least one tree
            max_tree_tokens = min(2048, self.score_batch_tokens) if self.tiled_trees else 512
        self.max_tree_tokens = max_tree_tokens

    @functools.cached_property
    def identity(self) -> str:
        """``NAME@DIGEST/DTYPE/DEVICE/ATTENTION[+compiled]``: everything here moves scores (bf16 vs fp32 by up
        to ~0.03 nats per token; compiled vs eager bf16 kernels round differently; so do CPU and GPU).
        The weights are hashed on first use, once per file per machine (:mod:`popsim.lm.identity`)."""
        dtype = str(self.dtype).removeprefix("torch.")
        path = self.model.config._attn_implementation + ("+compiled" if self.compiled_blocks else "")
        return f"{self.name}@{weights_digest(self._location)}/{dtype}/{self.device.type}/{path}"

    @property
    def short_attention(self) -> bool:
        """Whether compiled scoring passes use :func:`popsim.lm.attention.short_sequence_attention`."""
        return self.model.config._attn_implementation == ATTENTION_NAME

    @property
    def tiled_trees(self) -> bool:
        """Whether prefix-tree passes read only the strip and band of their mask (compiled CPU scoring)."""
        return (self.tree_tiles and self.short_attention and self.compiled_blocks > 0
                and self.device.type == "cpu")

    def _warm_up(self) -> None:
        with torch.inference_mode():
            # two rows: compiled graphs specialise on a batch of one
            self._body(input_ids=torch.tensor([[self._pad_id] * 4] * 2, device=self.device), use_cache=False)

    def _warm_up_tiles(self) -> None:
        """Compile the tiled tree pass now, for batches of one tree and of two (survey agents' trees come as
        both); if it fails, trees stay dense and everything else stays compiled."""
        tree = PackedTree()  # a 3-tile prefix and branches of 1 and 2 tiles: strip and band of different
        tree.add_segment([self._pad_id] * 3 * TILE, 0, -1)  # widths, so graphs do not assume them equal
        tree.add_segment([self._pad_id] * TILE, 3 * TILE, 0)
        tree.add_segment([self._pad_id] * 2 * TILE, 3 * TILE, 0)
        tree.predict.append((len(tree) - 1, self._pad_id, 0))
        try:
            self._packed_batch([tree, tree])
            self._packed_batch([tree])
        except Exception as exc:  # noqa: BLE001 - any failure means "dense trees"
            self.tree_tiles = False
            warnings.warn(f"tiled tree attention unavailable ({type(exc).__name__}: {exc}); scoring uses dense "
                          "512-token trees", RuntimeWarning, stacklevel=2)

    # ------------------------------------------------------------------ text <-> tokens
    def _collect_eos_ids(self) -> set[int]:
        ids = {self.tokenizer.eos_token_id}
        gen_cfg = getattr(self.model, "generation_config", None)
        extra = getattr(gen_cfg, "eos_token_id", None)
        ids.update(extra if isinstance(extra, list) else [extra])
        return {i for i in ids if i is not None}

    def render(self, prompt: Prompt) -> str:
        return render_with_tokenizer(self.tokenizer, prompt)

    # ------------------------------------------------------------------ forward helpers
    def _project(self, hidden: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits for selected hidden states only, in fp32 for the log-softmax that follows.

        The projection runs in the model's dtype (its matmul accumulates in fp32 internally) and only its
        output is upcast, as vLLM does: an fp32 projection in a bf16 model cost ~10% of scoring time.
        """
        logits = torch.nn.functional.linear(hidden, self._head_weight, self._head_bias).float()
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
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per batch: (pair of each token (N,), fp32 logits (N, V), target ids (N,)).

        Uses the prefix tree (shared prefixes and repeated prompts encoded once) unless
        ``prefix_sharing`` is off, in which case every pair is encoded in full.
        """
        # tree attention needs an explicit 4-D mask, which SDPA and eager attention take (flash does not)
        if self.prefix_sharing and self.model.config._attn_implementation in {"sdpa", "eager", ATTENTION_NAME}:
            yield from self._tree_logits(prompt_ids, cont_ids)
        else:
            yield from self._flat_logits(prompt_ids, cont_ids)

    def _flat_logits(self, prompt_ids, cont_ids):
        seqs = [p + c for p, c in zip(prompt_ids, cont_ids, strict=True)]
        for rows in token_budget_batches([len(s) for s in seqs], self.score_batch_tokens):
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
        """Prefix-tree scoring: each tree packed into one sequence; see :mod:`popsim.lm.prefix_tree`."""
        unique: dict[tuple[int, ...], int] = {}
        prompt_of_pair = [unique.setdefault(tuple(p), len(unique)) for p in prompt_ids]
        prompts = [list(p) for p in unique]
        pairs_of_prompt: list[list[int]] = [[] for _ in prompts]
        for pair, u in enumerate(prompt_of_pair):
            if cont_ids[pair]:
                pairs_of_prompt[u].append(pair)
        groups = group_by_shared_prefix(prompts, min_shared=self.min_shared_prefix)
        # a prompt shared with nothing and scored against one continuation is a plain sequence: the flat
        # path runs it with a causal mask, which attention kernels handle faster than a tree mask
        lone = [len(g.members) == 1 and len(pairs_of_prompt[g.members[0]]) == 1 for g in groups]
        lone_pairs = [pairs_of_prompt[g.members[0]][0] for g, alone in zip(groups, lone) if alone]
        if lone_pairs:
            index = torch.tensor(lone_pairs)
            for owner, logits, targets in self._flat_logits([prompt_ids[p] for p in lone_pairs],
                                                            [cont_ids[p] for p in lone_pairs]):
                yield index[owner], logits, targets
        groups = [g for g, alone in zip(groups, lone) if not alone]
        trees = pack_groups(groups, prompts, pairs_of_prompt, cont_ids, max_tokens=self.max_tree_tokens)
        for rows in token_budget_batches([len(t) for t in trees], self.score_batch_tokens):
            yield self._packed_batch([trees[r] for r in rows])

    def _tree_mask(self, trees: list[PackedTree], width: int) -> torch.Tensor:
        """(B, 1, width, width) tree-attention mask: a token sees its own and its ancestors' segments.

        Boolean (True = attend) for SDPA; additive float for eager attention. Padding rows see only
        themselves, so no softmax row is empty.
        """
        allowed = torch.eye(width, dtype=torch.bool).repeat(len(trees), 1, 1)
        causal = torch.ones(width, width, dtype=torch.bool).tril()
        for b, tree in enumerate(trees):
            n = len(tree)
            seg = torch.tensor(tree.segments)
            visible = torch.tensor(tree.ancestors(), dtype=torch.bool)
            allowed[b, :n, :n] = visible[seg.unsqueeze(1), seg.unsqueeze(0)] & causal[:n, :n]
        allowed = allowed.unsqueeze(1).to(self.device)
        if self.model.config._attn_implementation == "eager":
            zero = torch.zeros((), dtype=self.dtype, device=self.device)
            return torch.where(allowed, zero, torch.finfo(self.dtype).min)
        return allowed

    @torch.inference_mode()
    def _packed_batch(self, trees: list[PackedTree]):
        tiled = self.tiled_trees
        width = max(len(t) for t in trees)
        if tiled:
            width = -(-width // TILE) * TILE  # whole tiles; padding rows see only themselves
        ids = torch.full((len(trees), width), self._pad_id, dtype=torch.long)
        positions = torch.zeros((len(trees), width), dtype=torch.long)
        sel_b, sel_t, targets, owner = [], [], [], []
        for b, tree in enumerate(trees):
            ids[b, : len(tree)] = torch.tensor(tree.tokens)
            positions[b, : len(tree)] = torch.tensor(tree.positions)
            for index, target, pair in tree.predict:
                sel_b.append(b)
                sel_t.append(index)
                targets.append(target)
                owner.append(pair)
        mask = self._tree_mask(trees, width)
        layout = tile_layout(mask[:, 0]) if tiled else None
        tiles = {} if layout is None else {"tree_strip_mask": layout[0], "tree_band_mask": layout[1]}
        hidden = self._body(
            input_ids=ids.to(self.device), attention_mask=mask, position_ids=positions.to(self.device),
            use_cache=False, **tiles,
        ).last_hidden_state
        logits = self._project(hidden[torch.tensor(sel_b, device=self.device), torch.tensor(sel_t, device=self.device)])
        return torch.tensor(owner, dtype=torch.long), logits.cpu(), torch.tensor(targets, dtype=torch.long)

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
            if needs_grad or bool((tau != 1).any()):  # at tau = 1 the full-vocabulary division is skipped
                logits = logits / tau
            token_lp = logits.log_softmax(dim=1).gather(1, targets.view(-1, 1)).squeeze(1)
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

    def token_logprobs(
        self,
        prompt_ids: Sequence[Sequence[int]],
        target_ids: Sequence[Sequence[int]],
        *,
        temperature: float | Sequence[float] = 1.0,
        top_k: int = 0,
    ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per-token log p(target token | prefix) at ``temperature``, with the top-k alternatives.

        The HTTP server's echo/logprobs path: the same prefix-tree pass and arithmetic as :meth:`score`,
        so summing a row's values reproduces ``score`` for the same token ids. Returns per row
        ``(logprobs (T,), top ids (T, k), top logprobs (T, k))``.
        """
        check_batch("prompt_ids", prompt_ids)
        check_batch("target_ids", target_ids, expected=len(prompt_ids))
        temps = as_row_values(temperature, len(prompt_ids)).detach().float().clamp_min(1e-4)
        pieces: list[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = [[] for _ in prompt_ids]
        prompts = [list(p) for p in prompt_ids]
        targets_in = [list(t) for t in target_ids]
        for owner, logits, targets in self._continuation_logits(prompts, targets_in):
            if logits.shape[0] == 0:
                continue
            lp = (logits / temps[owner].unsqueeze(1)).log_softmax(dim=1)
            chosen = lp.gather(1, targets.view(-1, 1)).squeeze(1)
            top_lp, top_ids = lp.topk(top_k, dim=1) if top_k > 0 else (lp[:, :0], targets.view(-1, 1)[:, :0])
            for r in owner.unique().tolist():  # a row's tokens come in order within one batch
                sel = (owner == r).nonzero().squeeze(1)
                pieces[r].append((chosen[sel], top_ids[sel], top_lp[sel]))
        out = []
        for row in pieces:
            if not row:
                out.append((torch.zeros(0), torch.zeros((0, top_k), dtype=torch.long), torch.zeros((0, top_k))))
            else:
                out.append(tuple(torch.cat(part) for part in zip(*row, strict=True)))
        return out
