"""Saving and loading a fitted MoP model: ``gate.safetensors`` (tensors) + ``mop.json`` (everything else).

Never pickle: a model folder is plain data a user can inspect, and loading one runs no code.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from popsim.exceptions import RunDirectoryError
from popsim.io import atomic_write_bytes, atomic_write_json
from popsim.mop.gating import MixtureGate
from popsim.mop.personas import Persona
from popsim.mop.presets import PRESET_KEYS
from popsim.mop.prompts import PromptStyle
from popsim.records import ExemplarPool

if TYPE_CHECKING:
    from popsim.embed import SentenceEncoder
    from popsim.lm.base import LanguageModel
    from popsim.mop.model import MixtureOfPersonas

__all__ = ["save_model", "load_model"]

FORMAT_VERSION = 1
_NOT_SAVED = {"lm", "encoder", "style", "cache_path"}


def save_model(model: MixtureOfPersonas, directory: str | Path) -> Path:
    """Write ``gate.safetensors`` and ``mop.json`` (personas, exemplars, settings, provenance)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {f"gate.{k}": v.detach().contiguous() for k, v in model.gate_.state_dict().items()}
    tensors["h_g"] = model.h_g_.contiguous()
    tensors["h_e"] = model.h_e_.contiguous()
    tensors["exemplar_bias"] = model.exemplar_bias_.contiguous()
    tensors["persona_bias"] = model.persona_bias_.contiguous()
    scales = list(model.option_offset_params_)
    for i, scale in enumerate(scales):
        tensors[f"option_offsets.{i}"] = model.option_offset_params_[scale].contiguous()
    atomic_write_bytes(out / "gate.safetensors", save_safetensors(tensors))
    params = {k: v for k, v in model.get_params().items() if k not in _NOT_SAVED}
    params["personas"] = list(model.personas) if model.personas is not None else None
    meta = {
        "format_version": FORMAT_VERSION,
        "params": params,
        "settings": model.settings_,
        "style": vars(model.style_),
        "personas": [p.to_dict() for p in model.personas_],
        "option_scales": [list(s) for s in scales],
        "exemplars": {"inputs": model.exemplars_.inputs, "outputs": model.exemplars_.outputs,
                      "groups": [str(g) for g in model.exemplars_.groups],
                      "answers": model.exemplars_.answers,
                      "shown": None if model.exemplars_.shown is None else [list(s) for s in model.exemplars_.shown],
                      "stand_ins": None if model.exemplars_.stand_ins is None
                      else {q: list(ids) for q, ids in model.exemplars_.stand_ins.items()}},
        "lm": model.lm_name_,
        "lm_identity": getattr(model, "lm_identity_", None),
        "encoder": model.encoder_name_,
        "history": getattr(model, "history_", []),
        "fit_info": getattr(model, "fit_info_", {}),
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
    }
    atomic_write_json(out / "mop.json", meta)
    return out


def load_model(
    cls: type[MixtureOfPersonas], directory: str | Path, *, lm: LanguageModel | None = None,
    encoder: SentenceEncoder | None = None,
) -> MixtureOfPersonas:
    """Load a saved model; any unreadable or inconsistent file raises one :class:`RunDirectoryError`."""
    folder = Path(directory)
    meta_path, gate_path = folder / "mop.json", folder / "gate.safetensors"
    for path in (meta_path, gate_path):
        if not path.is_file():
            raise RunDirectoryError(f"no fitted MoP model in {folder} ({path.name} is missing); run `popsim fit` "
                                    "first, or delete the folder to refit")
    current = meta_path
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"not a format-{FORMAT_VERSION} popsim model file")
        current = gate_path
        tensors = load_safetensors(gate_path.read_bytes())
        current = meta_path
        params = meta["params"]
        model = cls(lm=lm, encoder=encoder, **params)
        # files written before presets hold every setting in params: they are the settings
        model.settings_ = meta.get("settings") or {k: params[k] for k in PRESET_KEYS}
        model.style_ = PromptStyle(**meta["style"])
        model.personas_ = [Persona(**p) for p in meta["personas"]]
        ex = meta["exemplars"]
        shown, stand_ins = ex.get("shown"), ex.get("stand_ins")  # older files: no per-question transcripts
        model.exemplars_ = ExemplarPool(ex["inputs"], ex["outputs"], np.asarray(ex["groups"]), None,
                                        ex.get("answers"), None if shown is None else [tuple(s) for s in shown],
                                        None if stand_ins is None else {q: tuple(i) for q, i in stand_ins.items()})
        current = gate_path
        model.h_g_, model.h_e_ = tensors.pop("h_g"), tensors.pop("h_e")
        # older files have no biases: the uncalibrated gate
        model.exemplar_bias_ = tensors.pop("exemplar_bias", torch.zeros(model.h_e_.shape[0]))
        model.persona_bias_ = tensors.pop("persona_bias", torch.zeros(model.h_g_.shape[0]))
        scales = [tuple(s) for s in meta.get("option_scales", [])]  # older files: no offsets
        model.option_offset_params_ = {s: tensors.pop(f"option_offsets.{i}") for i, s in enumerate(scales)}
        if any(tuple(p.shape) != (len(s),) for s, p in model.option_offset_params_.items()):
            raise ValueError("option offsets do not match their scales in mop.json")
        n_ex = len(model.exemplars_.inputs)
        if (model.h_g_.shape[0] != len(model.personas_) or model.h_e_.shape[0] != n_ex
                or tuple(model.exemplar_bias_.shape) != (n_ex,)
                or tuple(model.persona_bias_.shape) != (len(model.personas_),)):
            raise ValueError("tensor shapes do not match mop.json")
        model.gate_ = MixtureGate(model.h_e_.shape[1], len(model.personas_), dim=params["dim"])
        model.gate_.load_state_dict({k.removeprefix("gate."): v for k, v in tensors.items()})
        current = meta_path
        model.lm_name_, model.encoder_name_ = meta["lm"], meta["encoder"]
        model.lm_identity_ = meta.get("lm_identity")  # older files: not recorded
    except Exception as exc:  # json, safetensors, torch and our own checks raise many types
        raise RunDirectoryError(
            f"fitted model file {current} is corrupt or truncated ({type(exc).__name__}); delete {folder} "
            "to refit (or restore the file)"
        ) from None
    model.gate_.eval()
    model.history_, model.fit_info_ = meta.get("history", []), meta.get("fit_info", {})
    model.persona_labels_ = None
    if encoder is not None and encoder.name != meta["encoder"]:
        raise RunDirectoryError(
            f"model in {folder} was fitted with encoder '{meta['encoder']}', not '{encoder.name}'; "
            "use the same encoder (the gates read its embeddings)"
        )
    return model
