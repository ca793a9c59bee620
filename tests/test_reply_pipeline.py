"""The shared reply pipeline: the edit budget, attempts, and finals retried until shown, then acked.

Against a real Redis (the reply stream and its consumer group); the platform side is a recording
:class:`bot.pipeline.Reply` that refuses its first two attempts to show the answer.
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from bot.budget import EditBudget
from bot.pipeline import ReplyRouter
from bot.streaming import StreamedAnswer
from jobs import keys
from jobs.client import JobClient
from jobs.protocol import ReplyEvent, ReplyType
from tests.conftest import RedisServer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_edit_budget_is_shared_and_slows_each_answer_as_more_stream() -> None:
    clock = Clock()
    budget = EditBudget(calls_per_min=60, min_interval_s=0.5, clock=clock)
    for n in range(4):
        budget.join(f"a{n}")
    assert budget.interval_s() == 4.0  # one edit a second, shared by four answers
    assert [budget.try_spend() for _ in range(4)] == [True, True, True, False]  # a burst, then none
    clock.now += 1.0
    assert budget.try_spend() and not budget.try_spend()
    for n in range(4):
        budget.leave(f"a{n}")
    assert budget.interval_s() == 1.0


def test_a_higher_attempt_restarts_the_text_and_a_lower_one_is_ignored() -> None:
    shown: list[str] = []

    async def render(text: str, is_final: bool) -> bool:
        shown.append(text)
        return True

    async def scenario() -> str:
        answer = StreamedAnswer(render, min_interval_s=0)
        await answer.feed(ReplyEvent("j", ReplyType.DELTA, seq=1, text="first try ", attempt=1))
        await answer.feed(ReplyEvent("j", ReplyType.DELTA, seq=1, text="second ", attempt=2))
        await answer.feed(ReplyEvent("j", ReplyType.DELTA, seq=2, text="late words of try one", attempt=1))
        await answer.feed(ReplyEvent("j", ReplyType.DELTA, seq=2, text="try", attempt=2))
        return answer.text

    assert asyncio.run(scenario()) == "second try"
    assert shown == ["first try ", "second ", "second try"]


class RefusingReply:
    """Shows nothing of its first two attempts at the answer, like a platform answering 429 or 5xx."""

    def __init__(self) -> None:
        self.attempts: list[int] = []
        self.deltas: list[str] = []
        self.is_done = False

    def interval_s(self) -> float:
        return 0.05

    async def feed(self, event: ReplyEvent) -> None:
        self.deltas.append(event.text)
        raise RuntimeError("rate limited")  # intermediate failures are skipped

    async def flush(self) -> None:
        pass

    async def finish(self, event: ReplyEvent, attempt: int) -> None:
        self.attempts.append(attempt)
        if attempt < 3:
            raise RuntimeError("rate limited")
        self.is_done = True

    async def give_up(self) -> None:
        self.is_done = True


def test_a_final_is_retried_until_shown_and_only_then_marked_posted_and_acked(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        redis = aioredis.from_url(redis_server.url)
        jobs = JobClient(redis, "pipeline-test")
        await jobs.start_listening()
        reply = RefusingReply()
        router = ReplyRouter(jobs, lambda event: reply, final_backoff_s=(0.01,))
        running = asyncio.create_task(router.run())
        for event in (ReplyEvent("job-1", ReplyType.DELTA, seq=1, text="partial"),
                      ReplyEvent("job-1", ReplyType.FINAL, seq=2, text="the answer")):
            await redis.xadd(jobs.reply_stream, {"event": event.to_json()})
        try:
            async with asyncio.timeout(30):
                while not reply.is_done:
                    await asyncio.sleep(0.01)
                while (await redis.xpending(jobs.reply_stream, keys.REPLY_GROUP))["pending"]:
                    await asyncio.sleep(0.01)
            assert reply.deltas == ["partial"] and reply.attempts == [1, 2, 3]
            assert await redis.exists(keys.POSTED_PREFIX + "job-1")
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            await redis.aclose()

    asyncio.run(scenario())
