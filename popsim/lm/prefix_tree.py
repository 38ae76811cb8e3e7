"""Plan a scoring batch as a prefix tree, so shared tokens are encoded once.

An agent's prompt prefix (instruction + persona + exemplar + profile) is the same for all of its
questions, and a question's prompt is the same for all of its options: a tree. Each tree is laid out as
ONE packed sequence - the shared prefix, then every prompt's own suffix, then every continuation - and
scored in a single forward pass with a tree-attention mask: a token sees its ancestors (the prefix, its
prompt's suffix, earlier tokens of its own segment) and nothing else, at the position it would have in
its own full sequence. Every token is encoded exactly once and no KV cache is copied per branch (copying
an agent's prefix cache for each of its question x option branches cost more than the forward itself).

This module only plans (pure Python over token ids): trees, and (:func:`token_budget_batches`) which rows
share a forward pass; :class:`popsim.lm.hf.HFLanguageModel` executes the plan.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

__all__ = [
    "PrefixGroup", "PackedTree", "group_by_shared_prefix", "common_prefix_length", "pack_groups",
    "token_budget_batches",
]


@dataclass(frozen=True)
class PrefixGroup:
    """Distinct prompts (indices into the unique-prompt list) sharing their first ``prefix_len`` tokens."""

    prefix_len: int
    members: tuple[int, ...]


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def group_by_shared_prefix(
    prompts: Sequence[Sequence[int]], *, min_shared: int = 8, min_fraction: float = 0.5, max_members: int = 64
) -> list[PrefixGroup]:
    """Group prompts (token id lists) that share a long common prefix.

    Prompts are sorted lexicographically, so a group's common prefix is the common prefix of its first
    and last member. A prompt joins the current group while the shared prefix stays at least
    ``min_shared`` tokens and ``min_fraction`` of the first member's length: prompts that share only a
    short opening (the instruction) are not worth a group, those of one agent (instruction + persona +
    exemplar + profile) are. A prompt sharing too little forms a group of one, whose "prefix" is the
    whole prompt.
    """
    order = sorted(range(len(prompts)), key=lambda i: list(prompts[i]))
    groups: list[PrefixGroup] = []
    members = [order[0]]
    shared = len(prompts[order[0]])
    for idx in order[1:]:
        candidate = min(shared, common_prefix_length(prompts[members[0]], prompts[idx]))
        needed = max(min_shared, min_fraction * len(prompts[members[0]]))
        if candidate >= needed and len(members) < max_members:
            members.append(idx)
            shared = candidate
        else:
            groups.append(PrefixGroup(shared, tuple(members)))
            members, shared = [idx], len(prompts[idx])
    groups.append(PrefixGroup(shared, tuple(members)))
    return groups


@dataclass
class PackedTree:
    """One prefix tree as a single sequence for a tree-attention forward pass.

    ``segments[i]`` names the segment of token ``i`` (0 = shared prefix, then one per prompt suffix and
    one per continuation); ``parents[s]`` is segment ``s``'s parent (-1 for the prefix). ``predict``
    lists (token index, target id, pair) for every continuation token to score: the hidden state at
    that index predicts the target.
    """

    tokens: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    segments: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)
    predict: list[tuple[int, int, int]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.tokens)

    def add_segment(self, tokens: Sequence[int], start_position: int, parent: int) -> int:
        segment = len(self.parents)
        self.parents.append(parent)
        self.tokens.extend(tokens)
        self.positions.extend(range(start_position, start_position + len(tokens)))
        self.segments.extend([segment] * len(tokens))
        return segment

    def ancestors(self) -> list[list[bool]]:
        """``visible[s][t]``: segment ``s`` may attend to segment ``t`` (itself or an ancestor)."""
        n = len(self.parents)
        visible = [[False] * n for _ in range(n)]
        for s in range(n):
            t = s
            while t >= 0:
                visible[s][t] = True
                t = self.parents[t]
        return visible


def pack_groups(
    groups: Sequence[PrefixGroup],
    prompts: Sequence[Sequence[int]],
    pairs_of_prompt: Sequence[Sequence[int]],
    continuations: Sequence[Sequence[int]],
    *,
    max_tokens: int = 1024,
) -> list[PackedTree]:
    """Lay each group out as packed trees of at most ``max_tokens`` (more if one prompt needs it).

    A group whose members do not fit in one tree is split; each part repeats the shared prefix.
    """
    trees: list[PackedTree] = []
    for group in groups:
        prefix = list(prompts[group.members[0]][: group.prefix_len])
        tree = None
        for member in group.members:
            suffix = list(prompts[member][group.prefix_len :])
            conts = [(q, continuations[q]) for q in pairs_of_prompt[member] if continuations[q]]
            size = len(suffix) + sum(len(c) - 1 for _, c in conts)
            if tree is None or (len(tree) + size > max_tokens and len(tree.parents) > 1):
                tree = PackedTree()
                tree.add_segment(prefix, 0, -1)
                trees.append(tree)
            seg = tree.add_segment(suffix, len(prefix), 0) if suffix else 0
            last = len(tree) - 1 if suffix else len(prefix) - 1  # predicts each continuation's first token
            for q, cont in conts:
                tree.predict.append((last, cont[0], q))
                if len(cont) > 1:
                    start = len(tree)
                    tree.add_segment(cont[:-1], len(prompts[member]), seg)
                    tree.predict += [(start + t, cont[t + 1], q) for t in range(len(cont) - 1)]
    return trees


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
