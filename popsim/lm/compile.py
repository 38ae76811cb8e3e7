"""Regional ``torch.compile`` of a decoder's elementwise-heavy blocks (norms and MLPs).

On CPU in bf16 the matmuls run on native bf16 units but PyTorch's eager elementwise kernels (RMSNorm's
upcast / pow / mean / rsqrt / mul chain, SiLU x up-projection) do not speed up with the dtype, and on
SmolLM2-135M they took about as long as all the matmuls together. Compiling just those blocks lets
Inductor fuse each chain into one vectorised loop; attention, the KV cache and the prefix-tree masks stay
eager, so nothing about shapes or masks can trigger graph breaks. Compiled with ``dynamic=True`` once per
block class, so new batch shapes do not recompile. Inductor caches the generated kernels on disk, so only
the first process on a machine pays the compile time (~15 s on 2 cores).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

__all__ = ["compile_elementwise_blocks", "should_compile"]

_BLOCK_SUFFIXES = ("RMSNorm", "MLP")


def should_compile(setting: str, device: torch.device, dtype: torch.dtype) -> bool:
    """``auto`` compiles where it pays off: bf16 or fp16 on CPU. ``on`` / ``off`` force it."""
    if setting not in {"auto", "on", "off"}:
        raise ValueError(f"lm.compile must be auto, on or off; got {setting!r}")
    if setting != "auto":
        return setting == "on"
    return device.type == "cpu" and dtype in {torch.bfloat16, torch.float16}


def compile_elementwise_blocks(model: torch.nn.Module, warm_up: Callable[[], object]) -> int:
    """Compile every ``*RMSNorm`` and ``*MLP`` submodule in place; returns how many were compiled.

    ``warm_up`` runs one small forward so compile errors (e.g. no C++ compiler) surface here: then every
    block goes back to eager with a warning, and results are what they would have been without compiling.
    """
    blocks = [m for m in model.modules() if type(m).__name__.endswith(_BLOCK_SUFFIXES)]
    if not blocks:
        return 0
    for block in blocks:
        block.compile(dynamic=True)
    try:
        warm_up()
    except Exception as exc:  # noqa: BLE001 - any backend failure means "stay eager"
        for block in blocks:
            block._compiled_call_impl = None
        warnings.warn(f"torch.compile unavailable ({type(exc).__name__}); running eager. "
                      "Set lm.compile: off to skip the attempt.", RuntimeWarning, stacklevel=2)
        return 0
    return len(blocks)
