"""The claim check through a real worker, a real Redis and the console adapter (PHOBOS_CLAIMS modes).

The echo model repeats its whole prompt: the numbered source (supported, word for word) and then the
question, which here states something the source does not say. So one answer holds both kinds of sentence.
"""

from __future__ import annotations

import json
import time

import pytest

from core.claim_marks import MARK
from jobs import keys
from jobs.interactions import InteractionLog
from jobs.protocol import ReplyType
from tests.pdfs import FACT_PAGES, pdf_with_pages
from tests.test_end_to_end import Conversation, write

SMALL_CHUNKS = {"PHOBOS_TOP_K": "1", "PHOBOS_CHUNK_TOKENS": "60", "PHOBOS_LOG_TEXT": "true"}
INVENTED = "Its crater lake is home to 42 singing dragons."
ECHOED_QUESTION = f"Mount Kessler last erupted in 1931, right? {INVENTED}"


def share_facts(talk: Conversation, tmp_path) -> None:  # type: ignore[no-untyped-def]
    uploaded = talk("/upload " + write(tmp_path / "facts.pdf", pdf_with_pages(FACT_PAGES)))
    assert uploaded is not None and uploaded.type is ReplyType.FINAL, uploaded


def test_final_answers_carry_their_check_and_the_console_shows_the_mark(redis_server, redis_client, start_worker,
                                                                        tmp_path) -> None:
    start_worker("extractive,echo", PHOBOS_DEFAULT_MODEL="extractive", **SMALL_CHUNKS)
    talk = Conversation(redis_server.url, "claims-mark")
    share_facts(talk, tmp_path)

    quoted = talk("What colour is the crater lake of Mount Kessler?")
    assert quoted is not None and quoted.type is ReplyType.FINAL, quoted
    assert quoted.claims is not None and quoted.claims.mode == "mark"
    assert quoted.claims.support_share == 1.0 and quoted.claims.unsupported == 0  # extractive quotes verbatim
    assert MARK not in quoted.text and "turquoise" in quoted.text

    talk("/model echo")
    echoed = talk(ECHOED_QUESTION)
    assert echoed is not None and echoed.type is ReplyType.FINAL, echoed
    assert echoed.claims is not None and echoed.claims.unsupported >= 1
    (invented,) = [s for s in echoed.claims.sentences if "dragons" in s.text]
    assert not invented.supported and "42" in invented.reason
    assert f"{MARK} {INVENTED}" in echoed.text
    assert f"sentences {'was' if echoed.claims.unsupported == 1 else 'were'} not found in the sources" in echoed.text
    printed = talk.out.getvalue()
    streamed, checked = printed.rsplit("phobos, checked against the sources>", 1)
    assert INVENTED in streamed and MARK not in streamed  # streaming stays as it was
    assert f"{MARK} {INVENTED}" in checked and "Sources:" in checked

    def answers_logged() -> list[dict]:
        entries = redis_client.xrange(keys.INTERACTIONS_STREAM)
        return [json.loads(fields[b"data"]) for _, fields in entries if fields[b"type"] == b"answer"]

    deadline = time.monotonic() + 60  # the worker records an answer just after posting it
    while len(answers_logged()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    first, second = answers_logged()
    assert (first["support_share"], first["unsupported"]) == (1.0, 0)
    assert (second["support_share"], second["unsupported"]) == (echoed.claims.support_share, echoed.claims.unsupported)
    log = InteractionLog(redis_client)
    log.rate(echoed.job_id, "bad", "ada")
    (rated,) = log.rated_answers()  # the fields read back from the log
    assert rated.answer.support_share == echoed.claims.support_share and rated.answer.unsupported >= 1


@pytest.mark.parametrize("mode", ["drop", "off"])
def test_drop_leaves_the_sentence_out_and_off_posts_the_model_text(mode, redis_server, start_worker,
                                                                   tmp_path) -> None:
    start_worker("echo", PHOBOS_DEFAULT_MODEL="echo", PHOBOS_CLAIMS=mode, **SMALL_CHUNKS)
    talk = Conversation(redis_server.url, f"claims-{mode}")
    share_facts(talk, tmp_path)
    echoed = talk(ECHOED_QUESTION)
    assert echoed is not None and echoed.type is ReplyType.FINAL, echoed
    if mode == "off":
        assert echoed.claims is None and INVENTED in echoed.text and MARK not in echoed.text
        assert "checked against the sources" not in talk.out.getvalue()
        return
    assert echoed.claims is not None and echoed.claims.mode == "drop"
    assert "dragons" not in echoed.text and "turquoise" in echoed.text
    assert "not found in the sources and was left out." in echoed.text
