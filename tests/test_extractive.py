"""The extractive generator: it quotes the sentences of the sources that answer the question, cited."""

from __future__ import annotations

import threading

from core.backends.extractive import NO_SOURCES_REPLY, ExtractiveGenerator
from core.generation import ChatMessage, GenerationParams
from core.prompt import RAG_SYSTEM, SOURCES_HEADER
from core.registry import ModelRegistry

SOURCE_1 = ("Installing packages. Packages are installed with install.packages from a repository. "
            "The library path is set with .libPaths before loading them.")
SOURCE_2 = ("Memory limits. R keeps all objects in memory. On Unix the limit on the vector heap is set "
            "with the --max-vsize option. It cannot be lowered below the memory already in use.")


def messages(question: str, *sources: str) -> list[ChatMessage]:
    lines = "\n".join(f"[{n}] (manual.pdf, p. {n}) {text}" for n, text in enumerate(sources, 1))
    user = f"{SOURCES_HEADER}\n{lines}\n\nQuestion: {question}"
    return [ChatMessage("system", RAG_SYSTEM), ChatMessage("user", user)]


def answer(question: str, *sources: str, words: int = 256) -> str:
    generator = ExtractiveGenerator(ModelRegistry.load().get("extractive"))
    return "".join(generator.stream(messages(question, *sources), GenerationParams(max_new_tokens=words)))


def test_it_quotes_the_sentence_that_answers_from_a_lower_ranked_source_and_cites_it() -> None:
    text = answer("Which option sets the limit on the vector heap?", SOURCE_1, SOURCE_2)
    assert text.startswith("[2] "), text  # the answering source first, although the retriever ranked it second
    assert "--max-vsize option" in text
    assert "install.packages" not in text  # nothing of source 1 shares the question's words


def test_the_sentence_after_the_chosen_one_is_quoted_with_it_and_gaps_are_marked() -> None:
    text = answer("What is the vector heap limit on Unix?", SOURCE_2)
    assert "It cannot be lowered below the memory already in use." in text  # the sentence after
    assert "Memory limits." not in text  # neither the heading before it
    assert "R keeps all objects in memory." not in text


def test_a_section_number_after_the_chosen_sentence_is_not_quoted_as_its_context() -> None:
    # A passage running across a numbered heading, as the handbook's does ("... answer. 4. Choosing models").
    source = ("Passages under a minimum relevance are not shown to the model, so that an unrelated document "
              "does not lead to an invented answer. 4. Choosing models The default model quotes sentences.")
    text = answer("Why are passages under a minimum relevance not shown?", source)
    assert "invented answer." in text
    assert " 4. " not in text and not text.rstrip().endswith("4."), text


def test_a_question_sharing_no_word_with_the_sources_gets_their_opening_words() -> None:
    text = answer("Qwertyuiop asdfgh?", SOURCE_1, SOURCE_2)
    assert text.startswith("[1] Installing packages.") and "[2] Memory limits." in text


def test_the_word_budget_ends_at_the_end_of_a_sentence() -> None:
    text = answer("Which option sets the limit on the vector heap?", SOURCE_1, SOURCE_2, words=5)
    assert text.strip() == "[2] On Unix the limit on the vector heap is set with the --max-vsize option."
    run_on = "word " * 200 + "heap limit."
    cut = answer("What is the heap limit?", run_on, words=5)
    assert len(cut.split()) == 1 + 5 + 40  # the citation, the budget, and no more than 40 words past it


def test_no_sources_means_no_quote_and_a_cancel_stops_it() -> None:
    generator = ExtractiveGenerator(ModelRegistry.load().get("extractive"))
    plain = [ChatMessage("user", "hello")]
    assert "".join(generator.stream(plain, GenerationParams())) == NO_SOURCES_REPLY
    cancel = threading.Event()
    cancel.set()
    assert "".join(generator.stream(messages("vector heap?", SOURCE_2), GenerationParams(), cancel)) == ""
