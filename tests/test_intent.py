import pytest

from core.intent import is_overview_question


@pytest.mark.parametrize("question", [
    "What is this document about?",
    "what are these PDFs about",
    "Summarize the handbook",
    "Can you summarise it?",
    "Give me an overview",
    "What does the report say?",
    "What's in this file?",
])
def test_questions_about_the_documents_as_a_whole(question: str) -> None:
    assert is_overview_question(question)


@pytest.mark.parametrize("question", [
    "What colour is the crater lake?",
    "What is the document retention policy?",
    "How do I share a file in a thread?",
])
def test_questions_about_something_in_them(question: str) -> None:
    assert not is_overview_question(question)
