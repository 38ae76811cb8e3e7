"""Why do label-matched exemplars cost SST-2? The repeated request, or the exemplar's content? (dev, no gate)

    python benchmarks/results/fidelity-quick-dev-session16/exemplar_request.py [--text sst2] [--seed 0]

For the quick text setting's dev generation contexts, exemplars are drawn uniformly from the pool among any
label, the context's own label, or the other label (as `../fidelity-quick-dev-session7/label_match.py`),
and the exemplar turn's request (the user message before the exemplar's text) is rendered three ways: as
the benchmark renders it ("Please write a positive one-sentence movie review."), reworded ("Write a
positive ..."; never identical to the task that follows), or without its label ("Please write a
one-sentence movie review."). Personas uniform, tau 0.9, the same per-text seeds. Prints pooled FID /
MAUVE, per-label FID and mean words of each set (`label_match.run`, with the request rendered per arm).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fidelity-quick-dev-session7"))
import label_match  # noqa: E402

from popsim.lm.base import Chat  # noqa: E402

ARMS = [("any label", "as is"), ("same label", "as is"), ("same label", "reworded"), ("any label", "reworded"),
        ("same label", "no label"), ("any label", "no label"), ("other label", "no label")]


def render(chat: Chat, request: str) -> Chat:
    """``chat`` with its exemplar turn's request rendered as ``request`` says (system, user, assistant, user)."""
    messages = list(chat.messages)
    i = next(n for n, (role, _) in enumerate(messages) if role == "user")
    text = messages[i][1]
    assert text.startswith("Please write "), text
    if request == "reworded":
        messages[i] = ("user", "Write " + text[len("Please write "):])
    elif request == "no label":
        messages[i] = ("user", "Please write a one-sentence movie review.")
    return Chat(messages=tuple(messages))


def main() -> None:
    label_match.run(ARMS, render, default_text="sst2")


if __name__ == "__main__":
    main()
