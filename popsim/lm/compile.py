"""Regional ``torch.compile`` of a decoder: whole layers for cache-free passes, norm/MLP blocks otherwise.

On CPU in bf16 the matmuls run on native bf16 units but PyTorch's eager elementwise kernels (RMSNorm's
upcast / pow / mean / rsqrt / mul chain, SiLU x up-projection, the rotary embedding's mul / cat / neg,
the residual adds) do not speed up with the dtype; on SmolLM2-135M they took about as long as all the
matmuls together. Two compiled paths cover them:

* every ``*RMSNorm`` and ``*MLP`` block is compiled, which serves generation's prompt encoding: its
  layers are called with a KV cache, whose per-layer index would make dynamo recompile a layer forward
  once per layer (generation's decode step is compiled whole instead, see :mod:`popsim.lm.generate`);
* every ``*DecoderLayer`` also gets a compiled forward that is taken only when no KV cache is passed,
  i.e. by scoring (flat or prefix-tree). There Inductor fuses the rotary embedding and residual adds as
  well, and attention runs inside the graph as the same SDPA call (measured ~9% faster per forward than
  the blocks alone on a 32 x 125 bf16 batch on 2 cores).

Both are compiled with ``dynamic=True``, so new batch shapes do not recompile (a mask of a new kind or a
batch of one compiles once more). Inductor caches the generated kernels on disk, so only the first
process on a machine pays the compile time (~15-30 s on 2 cores).
"""

from __future__ import annotations

import functools
import types
import warnings
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["compile_elementwise_blocks", "should_compile"]

_BLOCK_SUFFIXES = ("RMSNorm", "MLP")
_LAYER_SUFFIX = "DecoderLayer"
_CACHE_KWARGS = ("cache", "past_key_values", "past_key_value")  # names across transformers versions


def should_compile(setting: str, device: torch.device, dtype: torch.dtype) -> bool:
    """``auto`` compiles where it pays off: bf16 or fp16 on CPU. ``on`` / ``off`` force it."""
    if setting not in {"auto", "on", "off"}:
        raise ValueError(f"lm.compile must be auto, on or off; got {setting!r}")
    if setting != "auto":
        return setting == "on"
    return device.type == "cpu" and dtype in {torch.bfloat16, torch.float16}


# Graph variants one compiled layer forward may hold before dynamo runs it eagerly: mask kinds (causal,
# padded, dense tree, strip + band) x batch of one or more, x every model loaded in the process (the test
# suite loads several). torch's default of 8 was reached there.
_RECOMPILE_LIMIT = 64


@functools.cache
def _compiled_forward(layer_class: type) -> Callable[..., Any]:
    """One compiled forward per layer class, shared by all its instances (dynamo guards on shapes, not ids)."""
    import torch._dynamo.config as dynamo_config

    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, _RECOMPILE_LIMIT)
    return torch.compile(layer_class.forward, dynamic=True)


def _cache_free_compiled_forward(self: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
    """A decoder layer's forward: compiled when no KV cache is passed, the class's eager one otherwise."""
    if any(kwargs.get(name) is not None for name in _CACHE_KWARGS):
        return type(self).forward(self, *args, **kwargs)
    return _compiled_forward(type(self))(self, *args, **kwargs)


def _compile_cache_free_path(layer: torch.nn.Module) -> None:
    """Route ``layer``'s cache-free calls through the compiled forward of its class.

    A bound method in the instance's ``forward`` shadows the class method (``copy.deepcopy`` rebinds it
    to the copy); deleting the attribute restores eager behaviour.
    """
    layer.forward = types.MethodType(_cache_free_compiled_forward, layer)


def compile_elementwise_blocks(model: torch.nn.Module, warm_up: Callable[[], object]) -> int:
    """Compile the norm/MLP blocks and the decoder layers' cache-free path in place; returns how many
    modules were compiled.

    ``warm_up`` runs one small cache-free forward so compile errors (e.g. no C++ compiler) surface here
    (the caller compiles its tiled tree pass afterwards, separately: see ``HFLanguageModel``):
    then every module goes back to eager with a warning, and results are what they would have been
    without compiling.
    """
    blocks = [m for m in model.modules() if type(m).__name__.endswith(_BLOCK_SUFFIXES)]
    layers = [m for m in model.modules() if type(m).__name__.endswith(_LAYER_SUFFIX)]
    if not blocks and not layers:
        return 0
    for block in blocks:
        block.compile(dynamic=True)
    for layer in layers:
        _compile_cache_free_path(layer)
    try:
        warm_up()
    except Exception as exc:  # noqa: BLE001 - any backend failure means "stay eager"
        for block in blocks:
            block._compiled_call_impl = None
        for layer in layers:
            del layer.forward
        warnings.warn(f"torch.compile unavailable ({type(exc).__name__}); running eager. "
                      "Set lm.compile: off to skip the attempt.", RuntimeWarning, stacklevel=2)
        return 0
    return len(blocks) + len(layers)
