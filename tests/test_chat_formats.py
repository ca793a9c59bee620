"""Explicit chat formats for models without a chat template."""

from __future__ import annotations

import pytest

from core.chat_formats import XGEN_HEADER, get_format
from core.generation import ChatMessage
from core.stop_strings import StopStringFilter

TURNS = [
    ChatMessage("user", "What is on page 2?"),
    ChatMessage("assistant", "The budget."),
    ChatMessage("user", "And page 3?"),
]


def test_xgen_follows_its_model_card() -> None:
    text = get_format("xgen").render(TURNS)
    assert text == (
        XGEN_HEADER
        + "### Human: What is on page 2?\n### Assistant: The budget.\n### Human: And page 3?\n### Assistant:"
    )


def test_xgen_system_message_replaces_the_generic_header() -> None:
    text = get_format("xgen").render([ChatMessage("system", "Cite pages."), *TURNS[:1]])
    assert text.startswith("Cite pages.\n\n### Human: What is on page 2?")
    assert XGEN_HEADER not in text


@pytest.mark.parametrize(
    ("name", "continuation"),
    [
        # What a model continuing its own transcript writes: the answer, then the human's next turn.
        ("xgen", " Revenue.\n### Human: thanks\n### Assistant:"),
        ("plain-dialogue", " Revenue.\nUser: thanks\nAssistant:"),
    ],
)
def test_stop_strings_catch_the_model_writing_the_next_turn(name: str, continuation: str) -> None:
    shown = StopStringFilter(get_format(name).stop)
    text = shown.feed(continuation) + shown.flush()
    assert text == " Revenue."
    assert shown.stopped


def test_unknown_format_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="template, plain-dialogue, xgen"):
        get_format("chatml")
