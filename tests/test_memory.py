"""Conversation memory: per conversation, capped by turns in Redis, bounded by tokens in the prompt,
cleared by /reset. A scripted generator records every prompt, so we see exactly what reached the model."""

from __future__ import annotations

import dataclasses

import redis

from core.generation import ChatMessage, GenerationParams
from core.ingest import IngestLimits, ingest_document
from core.prompt import sources_in
from core.rag import RagEngine, fit_history
from core.registry import ModelRegistry, ModelSpec
from core.scope import Scope
from jobs import keys
from jobs.protocol import Job, JobKind, ReplyEvent
from tests.pdfs import FACT_PAGES, pdf_with_pages
from tests.test_rag import LIMITS, ScriptedGenerator
from workers.memory import ConversationMemory
from workers.settings import WorkerSettings
from workers.store import RedisDocumentStore
from workers.worker import Worker

HERE = Scope("console", "m", "here")
THERE = Scope("console", "m", "there")


def turn(n: int) -> list[ChatMessage]:
    return [ChatMessage("user", f"question {n}"), ChatMessage("assistant", f"answer {n}")]


def test_memory_is_per_conversation_capped_and_expires(redis_client) -> None:
    memory = ConversationMemory(redis_client, max_turns=3, ttl_s=60)
    for n in range(5):
        memory.remember(HERE.key, f"question {n}", f"answer {n}")
    memory.remember(THERE.key, "question x", "answer x")
    assert memory.turns(HERE.key) == turn(2) + turn(3) + turn(4)
    assert memory.turns(THERE.key) == [ChatMessage("user", "question x"), ChatMessage("assistant", "answer x")]
    assert 0 < redis_client.ttl(keys.MEMORY_PREFIX + HERE.key) <= 60
    assert memory.clear(HERE.key) and memory.turns(HERE.key) == [] and not memory.clear(HERE.key)
    assert len(memory.turns(THERE.key)) == 2

    off = ConversationMemory(redis_client, max_turns=0, ttl_s=60)
    off.remember(HERE.key, "q", "a")
    assert off.turns(HERE.key) == [] and not redis_client.exists(keys.MEMORY_PREFIX + HERE.key)


def test_history_is_bounded_by_tokens_oldest_turn_first() -> None:
    generator = ScriptedGenerator("")  # counts words as tokens: each turn here is 4
    history = turn(1) + turn(2) + turn(3)
    assert fit_history(history, generator, 12) == history
    assert fit_history(history, generator, 11) == turn(2) + turn(3)
    assert fit_history(history, generator, 4) == turn(3)
    assert fit_history(history, generator, 3) == []


def test_a_tight_window_drops_earlier_turns_before_sources(redis_client, embedder) -> None:
    store = RedisDocumentStore(redis_client)
    scope = Scope("test", "m", "window")
    for name in ("guide.pdf", "atlas.pdf", "diary.pdf"):  # three documents: three separate sources
        ingest_document(pdf_with_pages([FACT_PAGES[2]]), name, scope.key, embedder, store, LIMITS)
    engine = RagEngine(embedder, store, top_k=3)
    roomy = ScriptedGenerator("It is turquoise [1].")
    long_turns = [m for n in range(5) for m in (ChatMessage("user", f"question {n} " + "word " * 30),
                                                 ChatMessage("assistant", f"answer {n} " + "word " * 30))]
    params = GenerationParams(max_new_tokens=20)
    engine.history_tokens = 10_000
    question = "What colour is the crater lake?"
    engine.answer(question, scope, roomy, params, lambda t: None, history=long_turns)
    (prompt,) = roomy.prompts
    sources = sources_in(prompt)
    assert prompt[1:-1] == long_turns and len(sources) == 3  # everything fits the 4096-token window

    tight = ScriptedGenerator("It is turquoise [1].")
    tight.context_tokens = roomy.count_tokens(prompt) - 2 * 64 + params.max_new_tokens  # two turns too many
    engine.answer(question, scope, tight, params, lambda t: None, history=long_turns)
    (prompt,) = tight.prompts
    assert prompt[1:-1] == long_turns[4:]  # the two oldest turns went, every source stayed
    assert sources_in(prompt) == sources

    engine.history_tokens = 130  # the memory budget alone keeps the last two turns (2 x 64 words)
    budgeted = ScriptedGenerator("It is turquoise [1].")
    engine.answer(question, scope, budgeted, params, lambda t: None, history=long_turns)
    assert budgeted.prompts[0][1:-1] == long_turns[6:]


class RecordingGenerator(ScriptedGenerator):
    """Answers each question with "re: <question>" and keeps every prompt."""

    def stream(self, messages, params, cancel=None):  # type: ignore[no-untyped-def]
        self.prompts.append(messages)
        yield "re: " + messages[-1].content


class NoEmbedder:
    name, dim, max_tokens = "none", 4, 10


def test_a_worker_remembers_each_conversation_apart_and_reset_forgets(redis_client: redis.Redis) -> None:
    generator = RecordingGenerator("")
    spec = ModelSpec(name="rec", backend="echo")
    config = WorkerSettings(default_model="rec", worker_id="w",
                          memory_turns=2, memory_tokens=1000)
    worker = Worker(redis_client, NoEmbedder(), {"rec": generator},  # type: ignore[arg-type,dict-item]
                    ModelRegistry({"rec": spec}), config, ingest_limits=IngestLimits(1, 1, 10, 0))
    worker.ensure_group()
    counter = iter(range(1000))

    def say(scope: Scope, text: str, kind: JobKind = JobKind.ASK) -> list[ChatMessage]:
        """Run one job; returns the history the model saw (the turns between system prompt and question)."""
        job = Job(id=f"m:{next(counter)}", kind=kind, scope=scope, user="u", reply_to=keys.reply_stream("m"),
                  text=text)
        redis_client.xadd(keys.JOBS_STREAM, {"job": job.to_json()})
        seen = len(generator.prompts)
        worker.run(burst=True)
        prompts = generator.prompts[seen:]
        return prompts[0][1:-1] if prompts else []

    def exchange(text: str) -> list[ChatMessage]:
        return [ChatMessage("user", text), ChatMessage("assistant", "re: " + text)]

    assert say(HERE, "first here") == []
    assert say(THERE, "first there") == []  # nothing of HERE's
    assert say(HERE, "second here") == exchange("first here")
    assert say(HERE, "third here") == exchange("first here") + exchange("second here")
    assert say(HERE, "fourth here") == exchange("second here") + exchange("third here")  # capped at 2 turns
    assert say(THERE, "second there") == exchange("first there")
    thread = dataclasses.replace(HERE, thread="t1")
    assert say(thread, "in a thread") == []  # a thread is its own conversation

    say(HERE, "", JobKind.RESET)
    assert say(HERE, "after reset") == []
    assert say(THERE, "third there") == exchange("first there") + exchange("second there")  # untouched
    events = [ReplyEvent.from_json(f[b"event"]) for _, f in redis_client.xrange(keys.reply_stream("m"))]
    finals = {e.job_id: e.text for e in events if e.is_terminal}
    assert "Forgot this conversation's earlier questions" in finals["m:7"]
