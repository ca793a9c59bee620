"""A DM question over many scopes: the job's list of scopes, the union ranking, and channel-naming citations."""

from core.documents import Citation
from core.ingest import IngestLimits, ingest_document
from core.rag import RagEngine
from core.scope import Scope
from jobs.protocol import Job, JobKind, ReplyEvent, ReplyType
from tests.pdfs import FACT_PAGES, pdf_with_pages
from workers.store import RedisDocumentStore

LIMITS = IngestLimits(max_bytes=10_000_000, max_pages=100, chunk_tokens=60, overlap_tokens=10)
DM = Scope("slack", "T1", "D1")


def dm_job(reads: list[str], names: dict[str, str] | None = None, scope: Scope = DM) -> Job:
    return Job(id="j1", kind=JobKind.ASK, scope=scope, user="U1", reply_to="r", text="q", reads=reads,
               channel_names=names or {})


def test_the_job_carries_its_scopes_through_json_and_reads_only_its_own_platform() -> None:
    job = dm_job(["slack:T1:C1", "slack:T1:C1:17.5", "discord:9:8", "slack:T1:C1"], {"slack:T1:C1": "finance"})
    again = Job.from_json(job.to_json())
    assert again == job
    assert again.search_keys() == ["slack:T1:D1", "slack:T1:C1", "slack:T1:C1:17.5"]
    assert again.channel_name("slack:T1:C1:17.5") == "finance", "a thread is named by its channel"
    assert again.channel_name("slack:T1:D1") == "", "the DM's own documents need no channel name"
    plain = Job(id="j0", kind=JobKind.ASK, scope=DM, user="U1", reply_to="r").to_json()
    assert "reads" not in plain, "a job outside a DM is written as before, for workers not yet upgraded"
    assert Job.from_json(plain).search_keys() == ["slack:T1:D1"], "without reads: its conversation only"


def test_a_citation_keeps_its_channel_through_the_reply_event() -> None:
    named = Citation("report.pdf", (3,), "", "slack:T1:C1", "finance")
    plain = Citation("notes.pdf", (1,))
    event = ReplyEvent.from_json(ReplyEvent("j1", ReplyType.FINAL, citations=(named, plain)).to_json())
    assert event.citations == (named, plain)


def test_a_dm_question_reads_the_granted_channels_and_threads_and_nothing_else(redis_client, embedder) -> None:
    store = RedisDocumentStore(redis_client)
    facts = pdf_with_pages(FACT_PAGES)
    ingest_document(facts, "granted.pdf", "slack:T1:C1:1700.1", embedder, store, LIMITS)  # in a thread
    ingest_document(facts, "secret.pdf", "slack:T1:C2", embedder, store, LIMITS)
    ingest_document(facts, "other-team.pdf", "slack:T2:C1", embedder, store, LIMITS)
    engine = RagEngine(embedder, store)
    assert redis_client.smembers("phobos:channel:threads:slack:T1:C1") == {b"slack:T1:C1:1700.1"}
    nothing = engine.retrieve("Who made the lighthouse lens?", DM, k=20)
    assert nothing == [], "without reads a DM sees only its own documents"
    many = ["slack:T1:C1", "slack:T1:C1:1700.1"] + [f"slack:T1:C{n}" for n in range(3, 500)]
    hits = engine.retrieve("Who made the lighthouse lens?", DM, k=20, reads=many)
    assert hits and {h.chunk.file_name for h in hits} == {"granted.pdf"}
    assert {h.chunk.scope_key for h in hits} == {"slack:T1:C1:1700.1"}


def test_the_union_ranks_as_one_index_over_the_same_chunks(redis_client, embedder) -> None:
    """One fusion over the union (core/joined.py): here the same ranking and cosines as one scope holding
    both documents, and the same relevance floor (BM25 keeps each scope's own word statistics)."""
    store = RedisDocumentStore(redis_client)
    pages_a, pages_b = FACT_PAGES[:2], FACT_PAGES[2:]
    ingest_document(pdf_with_pages(pages_a), "a.pdf", "slack:T1:CA", embedder, store, LIMITS)
    ingest_document(pdf_with_pages(pages_b), "b.pdf", "slack:T1:CB", embedder, store, LIMITS)
    ingest_document(pdf_with_pages(pages_a), "a.pdf", "slack:T1:CAB", embedder, store, LIMITS)
    ingest_document(pdf_with_pages(pages_b), "b.pdf", "slack:T1:CAB", embedder, store, LIMITS)
    engine = RagEngine(embedder, store, min_relevance=0.2)
    for question in ("When does the overnight train depart?", "Who made the lighthouse lens?",
                     "How are the queen bees marked?"):
        union = engine.retrieve(question, DM, k=6, reads=["slack:T1:CA", "slack:T1:CB"])
        single = engine.retrieve(question, Scope("slack", "T1", "CAB"), k=6)
        assert [(h.chunk.file_name, h.chunk.ordinal) for h in union] == \
               [(h.chunk.file_name, h.chunk.ordinal) for h in single]
        assert [round(h.score, 5) for h in union] == [round(h.score, 5) for h in single]
        floor_union = engine.context(question, DM, reads=["slack:T1:CA", "slack:T1:CB"])
        floor_single = engine.context(question, Scope("slack", "T1", "CAB"))
        assert [h.chunk.text for h in floor_union] == [h.chunk.text for h in floor_single]


def test_a_question_split_once_scores_as_each_index_splitting_it_itself() -> None:
    """The union splits the question into BM25 terms once (core.hybrid.query_terms); each index then looks
    them up: the same scores as its own tokenizer gives, unknown words and stop words included."""
    import random

    import numpy as np

    from core.hybrid import LexicalIndex

    rng = random.Random(3)
    words = [*" ".join(FACT_PAGES).split(), "Running", "runs", "THE", "a", "C++", "foo_bar", "don't", "e-mail",
             "naïve", "Straße", "1872"]
    index = LexicalIndex([" ".join(rng.choices(words, k=30)) for _ in range(300)])
    for _ in range(200):
        query = " ".join(rng.choices([*words, "unknownword", "zebra"], k=rng.randint(1, 10)))
        own = [w for w in index._tokenizer.tokenize([query], update_vocab=False, return_as="string",
                                                    show_progress=False)[0] if w]
        expected = np.asarray(index._bm25.get_scores(own), dtype=np.float32) if own else np.zeros(index.size)
        assert np.allclose(index.scores(query), expected), query
