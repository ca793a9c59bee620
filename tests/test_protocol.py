import json

import pytest

from core.documents import Citation
from core.scope import Scope
from jobs.protocol import Job, JobKind, ReplyEvent, ReplyType


def test_job_round_trips_through_json() -> None:
    job = Job(id="slack:Ev1", kind=JobKind.INGEST, scope=Scope("slack", "T", "C", "1.2"), user="U1",
              reply_to="phobos:replies:slack-1", file_name="a.pdf", blob_key="phobos:blob:slack:Ev1",
              meta={"channel": "C"})
    assert Job.from_json(job.to_json()) == job
    assert json.loads(job.to_json())["v"] == 1


def test_reply_round_trips_with_citations() -> None:
    event = ReplyEvent(job_id="j", type=ReplyType.FINAL, seq=3, text="answer",
                       citations=(Citation("a.pdf", (2, 3)),))
    assert ReplyEvent.from_json(event.to_json()) == event
    assert event.is_terminal


def test_unknown_version_is_refused() -> None:
    raw = json.loads(ReplyEvent(job_id="j", type=ReplyType.DELTA, text="x").to_json())
    raw["v"] = 99
    with pytest.raises(ValueError, match="version"):
        ReplyEvent.from_json(json.dumps(raw))


def test_citation_labels_name_file_and_pages() -> None:
    assert Citation("a.pdf", (4,)).label() == "a.pdf, p. 4"
    assert Citation("a.pdf", (4, 5)).label() == "a.pdf, pp. 4-5"
