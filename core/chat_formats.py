"""Explicit chat formats for models whose tokenizer has no chat template.

Most instruct models ship a chat template and we use it (``chat_format = "template"``). A few models in
the registry do not: XGen-7B-8K-inst documents its format only in the model card, and BLOOM-7b1 is a
base model with no chat format at all. For those the registry names one of the formats here.
A format renders the conversation ending with the assistant's cue, and names stop strings: the text
where the model starts writing the next human turn, which it would otherwise do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from core.generation import ChatMessage

TEMPLATE = "template"  # the registry value meaning: use the tokenizer's own chat template

# From the XGen-7B-8K-inst model card (Salesforce/xgen-7b-8k-inst).
XGEN_HEADER = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions.\n\n"
)


@dataclass(frozen=True)
class ChatFormat:
    name: str
    render: Callable[[list[ChatMessage]], str]  # the whole prompt, ending where the answer starts
    stop: tuple[str, ...]  # where the model would begin the next turn


def _render_xgen(messages: list[ChatMessage]) -> str:
    # XGen has no system role; a system message replaces the card's generic header.
    system = "\n\n".join(m.content for m in messages if m.role == "system")
    parts = [system + "\n\n" if system else XGEN_HEADER]
    for m in messages:
        if m.role == "user":
            parts.append(f"### Human: {m.content}\n")
        elif m.role == "assistant":
            parts.append(f"### Assistant: {m.content}\n")
    parts.append("### Assistant:")
    return "".join(parts)


def _render_plain_dialogue(messages: list[ChatMessage]) -> str:
    # A base model continues text; a transcript ending in "Assistant:" makes the continuation an answer.
    parts = []
    for m in messages:
        if m.role == "system":
            parts.append(f"{m.content}\n\n")
        elif m.role == "user":
            parts.append(f"User: {m.content}\n")
        else:
            parts.append(f"Assistant: {m.content}\n")
    parts.append("Assistant:")
    return "".join(parts)


FORMATS: dict[str, ChatFormat] = {
    "xgen": ChatFormat("xgen", _render_xgen, stop=("### Human:", "\n###", "<|endoftext|>")),
    "plain-dialogue": ChatFormat("plain-dialogue", _render_plain_dialogue, stop=("\nUser:",)),
}


def get_format(name: str) -> ChatFormat:
    """The explicit format called ``name``; a clear error names the known ones."""
    try:
        return FORMATS[name]
    except KeyError:
        known = ", ".join([TEMPLATE, *sorted(FORMATS)])
        raise ValueError(f"Unknown chat_format {name!r}. Known formats: {known}.") from None
