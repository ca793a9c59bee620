"""The console adapter: a terminal conversation that behaves like one chat channel.

Plain lines are questions; /upload PATH, the commands of bot/commands.py (/ask, /docs, /forget, /model,
/models, /reset, /status), /good and /bad [why] to rate the last answer, /help.
When stdin is not a terminal, it answers each line in turn and exits at the end of input.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path
from typing import TextIO

from bot.commands import COMMANDS as TABLE
from bot.commands import usage_lines
from bot.pipeline import ReplyRouter
from bot.render import format_sources
from core.scope import Scope
from jobs.client import JobClient
from jobs.interactions import BAD, GOOD, AsyncRatings
from jobs.protocol import Job, JobKind, ReplyEvent, ReplyType
from telemetry import metrics

CONSOLE_SCOPE = Scope("console", "local", "console")
HELP = "\n".join(["Type a question, or one of:",
                  "  /upload PATH: share a document here (.pdf, .docx, .pptx, .md, .txt, .html)",
                  *("  " + line for line in usage_lines("/")),
                  "  /good: say the last answer was right",
                  "  /bad [WHY]: say the last answer was wrong, and optionally what was wrong",
                  "  /quit: leave"])
RATINGS = {"/good": GOOD, "/bad": BAD}
COMMANDS = {f"/{c.name}": c.kind for c in TABLE}
CHECKED_HEADER = "phobos, checked against the sources>"


class ConsoleAdapter:
    def __init__(self, client: JobClient, user: str = "console-user", scope: Scope = CONSOLE_SCOPE,
                 out: TextIO = sys.stdout, answer_timeout_s: float = 600.0, ratings: AsyncRatings | None = None):
        self.client = client
        self.ratings = ratings or AsyncRatings(client.redis)
        self.last_answer: str | None = None  # the job id of the last answered question, for /good and /bad
        self.user = user
        self.scope = scope
        self.out = out
        self.answer_timeout_s = answer_timeout_s

    async def run(self, lines: TextIO = sys.stdin) -> None:
        is_interactive = lines.isatty()
        if is_interactive:
            self._print("Phobos console. Ask a question about the documents shared here; /help for commands.")
        loop = asyncio.get_running_loop()
        while True:
            if is_interactive:
                self._print("you> ", end="")
            line = await loop.run_in_executor(None, lines.readline)
            if not line:
                break
            line = line.strip()
            if not line:
                continue
            if line in ("/quit", "/exit"):
                break
            if not is_interactive:
                self._print(f"> {line}")
            await self.handle_line(line)

    async def handle_line(self, line: str) -> ReplyEvent | None:
        """Turn one typed line into a job, show its replies as they arrive; returns the last event."""
        command, _, argument = line.partition(" ")
        argument = argument.strip()
        blob = None
        if command == "/help":
            self._print(HELP)
            return None
        if command in RATINGS:
            await self._rate(RATINGS[command], argument)
            return None
        if command == "/upload":
            path = Path(argument).expanduser()
            if not argument or not path.is_file():
                self._print(f"No file at '{argument}'. Usage: /upload PATH")
                return None
            blob = path.read_bytes()
            job = self._job(JobKind.INGEST, file_name=path.name)
        elif command in COMMANDS:
            if command in ("/model", "/ask") and not argument:
                self._print(f"Usage: {command} {'NAME (see /models)' if command == '/model' else 'QUESTION'}")
                return None
            job = self._job(COMMANDS[command], text=argument)
        elif command.startswith("/"):
            self._print(f"Unknown command {command}. /help lists them.")
            return None
        else:
            job = self._job(JobKind.ASK, text=line)
        return await self._run(job, blob)

    async def _run(self, job: Job, blob: bytes | None) -> ReplyEvent | None:
        """Submit ``job`` and show its replies through the shared pipeline until it ends."""
        reply = ConsoleReply(self)
        router = ReplyRouter(self.client, _no_other_jobs, answer_timeout_s=self.answer_timeout_s)
        router.expect(job.id, reply)
        ended = router.ended(job.id)
        routing = asyncio.create_task(router.run())
        try:
            await self.client.start_listening()
            if not await self.client.submit(job, blob):
                self._print("That was already asked; its answer is shown where it was asked.")
                return None
            await ended.wait()
        finally:
            routing.cancel()
            await asyncio.gather(routing, return_exceptions=True)
        if job.kind is JobKind.ASK and reply.final is not None and reply.final.type is ReplyType.FINAL:
            self.last_answer = job.id
        return reply.final

    async def _rate(self, rating: str, reason: str) -> None:
        if self.last_answer is None:
            self._print("There is no answer to rate yet: ask a question first.")
            return
        await self.ratings.rate(self.last_answer, rating, rater=f"console:{self.user}", reason=reason)
        metrics.feedback_rating("console", rating)
        self._print("Thanks, noted." if rating == GOOD else "Thanks, noted: this answer is marked as wrong.")

    def _job(self, kind: JobKind, text: str = "", file_name: str | None = None) -> Job:
        job_id = f"console:{uuid.uuid4().hex}"
        return Job(id=job_id, kind=kind, scope=self.scope, user=self.user, reply_to=self.client.reply_stream,
                   text=text, file_name=file_name)

    def _print(self, text: str, end: str = "\n") -> None:
        self.out.write(text + end)
        self.out.flush()


def _no_other_jobs(event: ReplyEvent) -> None:
    """The console shows only the job it is waiting for."""
    return None


class ConsoleReply:
    """One job's reply in the terminal: a :class:`bot.pipeline.Reply` that prints as events arrive."""

    def __init__(self, console: ConsoleAdapter):
        self.console = console
        self.view = _StreamView(console)
        self.final: ReplyEvent | None = None
        self.is_done = False

    def interval_s(self) -> float:
        return 1.0

    async def feed(self, event: ReplyEvent) -> None:
        self.view.show(event)

    async def flush(self) -> None:
        """Printed text needs no catching up."""

    async def finish(self, event: ReplyEvent, attempt: int) -> None:
        self.view.show(event)
        self.final, self.is_done = event, True

    async def give_up(self) -> None:
        self.is_done = True
        self.console._print(f"\nNo answer within {self.console.answer_timeout_s:.0f} s. Is a worker running? "
                            "(phobos status)")


class _StreamView:
    """Prints one job's events: answer text as it streams, progress lines, then sources."""

    def __init__(self, console: ConsoleAdapter):
        self.console = console
        self.streamed = False
        self.text = ""  # what was streamed so far

    def show(self, event: ReplyEvent) -> None:
        out = self.console
        if event.type is ReplyType.DELTA:
            if not self.streamed:
                out._print("phobos> ", end="")
            self.streamed = True
            self.text += event.text
            out._print(event.text, end="")
        elif event.type is ReplyType.QUEUED and event.position:
            out._print(f"  ... {event.text}")
        elif event.type is ReplyType.PROGRESS:
            out._print(f"  ... {event.text}: {event.done}/{event.total} pages")
        elif event.type is ReplyType.FINAL:
            if self.streamed:
                out._print("")
                # Printed text cannot be edited: when the claim check changed the answer, the checked
                # one follows it, as a chat platform's final edit replaces it.
                if event.claims is not None and self.text.strip() not in event.text:
                    out._print(CHECKED_HEADER)
                    out._print(event.text)
            else:
                out._print(event.text)
            sources = format_sources(event.citations)
            if sources:
                out._print(sources)
        elif event.type is ReplyType.ERROR:
            if self.streamed:
                out._print("")
            out._print(f"[!] {event.text}")
