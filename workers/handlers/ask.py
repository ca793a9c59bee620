"""An ask: index the question's links, answer it from the conversation's documents, check the claims,
remember the turn and log the interaction."""

from __future__ import annotations

import dataclasses
import time

from core import claim_marks
from core.generation import GenerationParams
from core.links import index_links, links_in, without_links
from core.rag import NO_DOCUMENTS_NOTE, Answer
from core.text_safety import EMPTY_QUESTION_HINT, normalise_question
from jobs.heartbeats import live_models
from jobs.interactions import AnsweredQuestion, Source
from jobs.protocol import ClaimSupport, Job
from workers.deadlines import Watchdog, seconds_left
from workers.environment import WorkerEnvironment
from workers.replies import ReplyPublisher
from workers.runner import JobContext


def handle(env: WorkerEnvironment, context: JobContext, publisher: ReplyPublisher) -> None:
    job = context.job
    notes = index_question_links(env, job, publisher)
    # Also here, not only in the adapters: whatever queued the job, the embedder gets valid text.
    question = normalise_question(without_links(job.text) if notes else job.text)
    if notes and not question:  # only links: the reply says what was indexed
        publisher.final("\n".join(notes))
        return
    if not question:
        publisher.error(EMPTY_QUESTION_HINT)
        return
    model = env.model_for(job)
    spec = env.registry.get(model)
    generator = env.generators.get(model)
    if generator is None:
        live = sorted(live_models(env.redis)) or sorted(env.generators)
        publisher.error(f"No worker serves the model '{model}' right now. Live models: {', '.join(live)}. "
                        "Choose one with /model NAME.")
        return
    publisher.observed.model = model
    params = GenerationParams(max_new_tokens=spec.max_new_tokens, temperature=spec.temperature)
    limit_s = seconds_left(job.deadline_at, env.settings.generation_timeout_s)
    with Watchdog(context.cancel, limit_s) as watchdog:
        if not env.wait_for_generator(model, context.cancel):
            answer = None
        else:
            try:
                # From a DM, the channels its adapter found the asker can read now, and no others.
                answer = env.engine.answer(question, job.scope, generator, params, on_delta=publisher.delta,
                                           history=env.memory.turns(job.scope.key), cancel=context.cancel,
                                           reads=job.search_keys())
            finally:
                env.generator_slots[model].release()
    if watchdog.fired:
        publisher.error(f"The answer took too long and was stopped after {max(0.0, limit_s):.0f} s. "
                        "Try a shorter question, or a faster model (/models).", outcome="timeout")
        return
    if answer is None:
        return  # stopped before its turn on the model: handed back, or taken over elsewhere
    _post_answer(env, job, publisher, question, model, answer, notes)


def _post_answer(env: WorkerEnvironment, job: Job, publisher: ReplyPublisher, question: str, model: str,
                 answer: Answer, notes: list[str]) -> None:
    checked = check_claims(env, answer, question, publisher)
    body = checked.text if checked else answer.text
    citations = tuple(dataclasses.replace(c, channel=job.channel_name(c.scope_key))
                      for c in (checked.citations if checked else answer.citations))
    claims = ClaimSupport.of(checked.check, checked.mode, checked.is_fallback) if checked else None
    text = "\n".join([*notes, "", body]) if notes else body
    if not publisher.final(text, citations, claims):
        return
    # Remembered once, by the worker that posted it. The next prompt sees the answer without the
    # sentences its sources did not support (after a fallback, only the quoted passages: a model shown
    # the fallback's own words imitates them).
    remembered = claim_marks.remembered(checked) if checked else body
    env.memory.remember(job.scope.key, question, remembered.removeprefix(NO_DOCUMENTS_NOTE))
    timings = publisher.observed  # the same measurements /metrics and the job's log line use
    env.interactions.record_answer(AnsweredQuestion(
        job_id=job.id, scope_key=job.scope.key, model=model, grounded=answer.grounded,
        sources=tuple(Source(hit.chunk.file_name, hit.chunk.pages, hit.score) for hit in answer.sources),
        queue_wait_s=timings.queue_wait_s or 0.0, first_token_s=timings.first_token_s,
        answer_s=timings.elapsed_s(), question=job.text, answer=answer.text,
        support_share=claims.support_share if claims else None,
        unsupported=claims.unsupported if claims else None))


def check_claims(env: WorkerEnvironment, answer: Answer, question: str,
                 publisher: ReplyPublisher) -> claim_marks.CheckedAnswer | None:
    """The answer after its claim check (None when the check is off or there were no sources);
    the check's time and the answer's support share go to the metrics."""
    started = time.monotonic()
    checked = claim_marks.review(answer, question, env.claim_embedder or env.embedder, env.settings.claims,
                                 env.claim_thresholds)
    if checked is not None:
        publisher.observed.claims_checked(checked.check.support_share, len(checked.check.claims),
                                          len(checked.check.unsupported), time.monotonic() - started)
    return checked


def index_question_links(env: WorkerEnvironment, job: Job, publisher: ReplyPublisher) -> list[str]:
    """Index the pages behind the question's links into its conversation; a line per link for the reply."""
    if not env.settings.links or not links_in(job.text, 1)[0]:
        return []
    notes = index_links(job.text, job.scope.key, env.fetcher, env.embedder, env.store, env.ingest_limits,
                        env.settings.fetch_max_links, user=job.user, progress=publisher.progress)
    return notes or ["The linked pages are already indexed here."]
