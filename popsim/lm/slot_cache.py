"""A preallocated KV cache of fixed slots, each holding one row at its own length (continuous batching).

Every layer's keys and values live in one (slots, kv_heads, max_len, head_dim) tensor allocated once
per ``generate`` call. Row ``r`` keeps its token ``i`` at index ``i`` of its slot, whatever other slots
hold, so a row's keys are laid out the same in any batch (no left padding) and a finished row's slot
is simply overwritten by the next waiting prompt. A pass names the slots it runs (``rows``), the
index each of its tokens is written at (``positions``) and how many leading cache indices it reads
(``live``: past the last busy row's token, nothing is read); keys after a token's own index are masked
(:meth:`SlotCache.mask`), so stale entries of an earlier occupant are never read.

Reading only the live part matters on CPU: a decode step of 64 SmolLM2 rows reads its whole KV cache once
per layer, 189 MB per step at 128 indices, about as many bytes as the weights themselves.

It implements the one method transformers' attention layers call, ``update``; the model is always
given the 4-D mask (or, for models with sliding-window layers, a mask per layer type), so no mask is
derived from the cache.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["SlotCache"]

_LIVE_STEP = 16


class SlotCache:
    """KV buffers for ``slots`` rows of up to ``max_len`` tokens each.

    Args:
        config: the model's (text) config; reads layers, heads and sliding-window layout.
    """

    is_compileable = True

    def __init__(self, config: Any, slots: int, max_len: int, dtype: torch.dtype, device: torch.device) -> None:
        heads = config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        shape = (slots, kv_heads, max_len, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.num_hidden_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.num_hidden_layers)]
        self.slots, self.max_len = slots, max_len
        self.layer_types = list(getattr(config, "layer_types", None) or [])
        self.window = getattr(config, "sliding_window", None)
        self._every = torch.arange(slots, device=device)
        self.rows = self._every
        self.positions = torch.zeros((slots, 1), dtype=torch.long, device=device)
        self.all_rows = True
        self._indices = torch.arange(max_len, device=device)
        self.live = self._indices  # the cache indices a pass reads; a tensor, so compiled steps see a size

    def set_pass(self, rows: torch.Tensor | None, positions: torch.Tensor, live: int | None = None) -> None:
        """The next forward runs ``rows`` (None: every slot, in order) writing at ``positions`` (rows, T) and
        reading cache indices below ``live`` (None: all; rounded up to 16, so compiled steps see few sizes)."""
        self.all_rows = rows is None
        self.rows = self._every if rows is None else rows
        self.positions = positions
        live = self.max_len if live is None else min(self.max_len, -(-live // _LIVE_STEP) * _LIVE_STEP)
        self.live = self._indices[:live]

    def copy_prefix(self, source: int, target: int, length: int) -> None:
        """Copy the keys and values of slot ``source``'s first ``length`` indices into slot ``target``."""
        for keys, values in zip(self.keys, self.values, strict=True):
            keys[target, :, :length] = keys[source, :, :length]
            values[target, :, :length] = values[source, :, :length]

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write (rows, kv_heads, T, dim) ``key``/``value`` at each row's positions; return its slots' full buffers."""
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        index = (self.rows.unsqueeze(1), slice(None), self.positions)  # -> (rows, T, kv_heads, dim)
        keys[index] = key.transpose(1, 2).to(keys.dtype)
        values[index] = value.transpose(1, 2).to(values.dtype)
        live = self.live.shape[0]
        if self.all_rows:
            return keys[:, :, :live], values[:, :, :live]
        return keys[self.rows, :, :live], values[self.rows, :, :live]

    def mask(self, positions: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        """Boolean (rows, 1, T, live) mask, True = attend: token at index p sees indices <= p.

        For models that mix full and sliding-window layers, a mask per layer type (transformers takes the
        mapping as given)."""
        keys = self.live  # a tensor's size, not an int: a new length does not recompile
        full = (keys.view(1, 1, -1) <= positions.unsqueeze(-1)).unsqueeze(1)
        if "sliding_attention" not in self.layer_types or not self.window:
            return full
        sliding = full & (keys.view(1, 1, 1, -1) > positions.unsqueeze(1).unsqueeze(-1) - self.window)
        return {kind: sliding if kind == "sliding_attention" else full for kind in set(self.layer_types)}
