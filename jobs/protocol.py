"""Job and reply-event payloads: JSON with a version field, never pickle.

Adapters build :class:`Job` objects from platform events; workers answer with :class:`ReplyEvent`
objects on the adapter's reply stream.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from core.claims import AnswerCheck
from core.documents import Citation
from core.scope import Scope

PROTOCOL_VERSION = 1


class JobKind(StrEnum):
    ASK = "ask"  # answer a question from the scope's documents
    INGEST = "ingest"  # index one shared file (bytes in a blob key)
    DOCS = "docs"  # list the documents a question here would search
    FORGET = "forget"  # remove a document (or all) from this scope
    SET_MODEL = "set_model"  # choose the conversation's model
    MODELS = "models"  # list known models and whether a worker serves them
    STATUS = "status"  # workers, queue depth, models
    RESET = "reset"  # forget the conversation's recent turns (its memory); documents and model stay


class ReplyType(StrEnum):
    QUEUED = "queued"  # accepted; ``position`` says how many jobs are ahead
    PROGRESS = "progress"  # long work: ``done`` of ``total`` (pages, ...), with a text line
    DELTA = "delta"  # more answer text; append ``text``
    FINAL = "final"  # the whole answer ``text`` with ``citations``; the job is done
    ERROR = "error"  # the job failed; ``text`` is a message a person can act on


@dataclass(frozen=True)
class Job:
    """One unit of work. ``id`` comes from the platform event id, so a redelivered event is the same job."""

    id: str
    kind: JobKind
    scope: Scope
    user: str
    reply_to: str  # the adapter's reply stream
    text: str = ""  # the question, the model name, the document to forget, ...
    model: str | None = None  # None: the conversation's model, else the default
    file_name: str | None = None  # ingest: the file as the user named it
    blob_key: str | None = None  # ingest: Redis key holding the file's bytes
    meta: dict[str, str] = field(default_factory=dict)  # adapter context echoed back untouched
    deadline_at: float | None = None  # unix seconds; past it the job gets an "expired" reply, not an answer

    @property
    def sender_key(self) -> str:
        """Whose limits this job counts against: ``platform:workspace:user``, since user ids are only
        unique within a workspace; an event without a user counts against its channel."""
        who = self.user or f"channel:{self.scope.channel}"
        return f"{self.scope.platform}:{self.scope.workspace}:{who}"

    def to_json(self) -> str:
        data: dict[str, Any] = asdict(self)
        data["scope"] = self.scope.to_dict()
        data["v"] = PROTOCOL_VERSION
        return json.dumps(data)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Job:
        data = json.loads(raw)
        version = data.pop("v", None)
        if version != PROTOCOL_VERSION:
            raise ValueError(f"job protocol version {version!r} is not {PROTOCOL_VERSION}")
        data["scope"] = Scope.from_dict(data["scope"])
        data["kind"] = JobKind(data["kind"])
        return cls(**data)


@dataclass(frozen=True)
class SentenceSupport:
    """One sentence of a final answer as the claim check judged it (core/claims.py)."""

    text: str
    supported: bool
    cited: tuple[int, ...] = ()  # the source numbers it cites, as the model numbered them
    reason: str = ""
    is_claim: bool = True  # False: a refusal, a greeting or a lead-in, neither supported nor not


@dataclass(frozen=True)
class ClaimSupport:
    """What the claim check found in a final answer; the answer's ``text`` already shows it."""

    mode: str  # mark: unsupported sentences marked in the text; drop: left out of it
    support_share: float  # supported claims / claims, 1.0 for an answer without claims
    sentences: tuple[SentenceSupport, ...] = ()  # every sentence the model wrote, repeats removed
    duplicates_removed: int = 0
    is_fallback: bool = False  # no claim was supported: the text quotes the closest passages instead

    @property
    def unsupported(self) -> int:
        return sum(1 for s in self.sentences if s.is_claim and not s.supported)

    @classmethod
    def of(cls, check: AnswerCheck, mode: str, is_fallback: bool = False) -> ClaimSupport:
        sentences = tuple(SentenceSupport(s.text, s.supported, s.cited, s.reason, s.is_claim) for s in check.sentences)
        return cls(mode, check.support_share, sentences, check.duplicates_removed, is_fallback)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClaimSupport:
        sentences = tuple(SentenceSupport(**{**s, "cited": tuple(s.get("cited", ()))})
                          for s in data.get("sentences", ()))
        return cls(**{**data, "sentences": sentences})


@dataclass(frozen=True)
class ReplyEvent:
    """What a worker sends back about a job. ``seq`` orders events of one job."""

    job_id: str
    type: ReplyType
    seq: int = 0
    text: str = ""
    citations: tuple[Citation, ...] = ()
    position: int | None = None  # queued: jobs ahead of this one
    done: int | None = None  # progress
    total: int | None = None  # progress
    meta: dict[str, str] = field(default_factory=dict)
    attempt: int = 1  # the delivery that sent it: a retried job streams its answer again from the start
    claims: ClaimSupport | None = None  # final answers: which sentences their sources support

    @property
    def is_terminal(self) -> bool:
        return self.type in (ReplyType.FINAL, ReplyType.ERROR)

    def to_json(self) -> str:
        data: dict[str, Any] = asdict(self)
        data["citations"] = [{"file_name": c.file_name, "pages": list(c.pages), "location": c.location}
                             for c in self.citations]
        data["v"] = PROTOCOL_VERSION
        return json.dumps(data)

    @classmethod
    def from_json(cls, raw: str | bytes) -> ReplyEvent:
        data = json.loads(raw)
        version = data.pop("v", None)
        if version != PROTOCOL_VERSION:
            raise ValueError(f"reply protocol version {version!r} is not {PROTOCOL_VERSION}")
        data["type"] = ReplyType(data["type"])
        data["citations"] = tuple(Citation(c["file_name"], tuple(c["pages"]), c.get("location", ""))
                                  for c in data["citations"])
        if data.get("claims") is not None:
            data["claims"] = ClaimSupport.from_dict(data["claims"])
        return cls(**data)
