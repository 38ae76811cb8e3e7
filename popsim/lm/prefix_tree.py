"""Plan a scoring batch as a prefix tree, so shared tokens are encoded once.

An agent's prompt prefix (instruction + persona + exemplar + profile) is the same for all of its
questions, and a question's prompt is the same for all of its options. The scorer therefore runs three
levels: (1) each group's shared prefix, (2) each distinct prompt's remaining suffix on the group's KV
cache, (3) each continuation on its prompt's KV cache. This module only plans (pure Python over token
ids); :class:`popsim.lm.hf.HFLanguageModel` executes the plan.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

__all__ = ["PrefixGroup", "group_by_shared_prefix", "common_prefix_length", "batch_groups"]


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


def batch_groups(costs: Sequence[int], budget: int) -> Iterator[list[int]]:
    """Greedy batches of group indices whose summed cost stays within ``budget`` (at least one each)."""
    batch: list[int] = []
    total = 0
    for i, cost in enumerate(costs):
        if batch and total + cost > budget:
            yield batch
            batch, total = [], 0
        batch.append(i)
        total += cost
    if batch:
        yield batch
