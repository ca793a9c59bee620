"""The console adapter: a terminal conversation that behaves like one chat channel.

Plain lines are questions; /upload PATH, the commands of bot/commands.py (/ask, /docs, /forget, /model,
/models, /reset, /status), /good and /bad [why] to rate the last answer, /help.
When stdin is not a terminal, it answers each line in turn and exits at the end of input.
"""

from __future__ import annotations

import asyncio
import io
import sys
import uuid
from pathlib import Path
from typing import TextIO

from bot.commands import COMMANDS as TABLE
from bot.commands import usage_lines
from bot.pipeline import ReplyRouter
from bot.ratings import rater_id, record_rating
from bot.reply import AnswerReply, Markup, SurfaceLimits, Update
from bot.settings import REPLY_TIMEOUT_S
from core.local_files import read_local_file
from core.pdf import DocumentError
from core.scope import Scope
from core.text_safety import normalise_question
from jobs.client import JobClient
from jobs.interactions import BAD, GOOD, AsyncRatings
from jobs.protocol import Job, JobKind, ReplyEvent, ReplyType

CONSOLE_SCOPE = Scope("console", "local", "console")
HELP = "\n".join(["Type a question, or one of:",
                  "  /upload PATH: share a document here (.pdf, .docx, .pptx, .md, .txt, .html)",
                  *("  " + line for line in usage_lines("/", "console")),
                  "  /good: say the last answer was right",
                  "  /bad [WHY]: say the last answer was wrong, and optionally what was wrong",
                  "  /quit: leave"])
RATINGS = {"/good": GOOD, "/bad": BAD}
COMMANDS = {f"/{c.name}": c.kind for c in TABLE if "console" in c.platforms}
MARKUP = Markup(warn="[!]", wait="...")
CHECKED_HEADER = "phobos, checked against the sources>"


class ConsoleAdapter:
    def __init__(self, client: JobClient, user: str = "console-user", scope: Scope = CONSOLE_SCOPE,
                 out: TextIO = sys.stdout, reply_timeout_s: float = REPLY_TIMEOUT_S,
                 ratings: AsyncRatings | None = None, max_upload_bytes: int = 50_000_000):
        self.client = client
        self.ratings = ratings or AsyncRatings(client.redis)
        self.last_answer: str | None = None  # the job id of the last answered question, for /good and /bad
        self.user = user
        self.scope = scope
        self.out = out
        self.reply_timeout_s = reply_timeout_s
        self.max_upload_bytes = max_upload_bytes

    async def run(self, lines: TextIO = sys.stdin) -> None:
        is_interactive = lines.isatty()
        if isinstance(lines, io.TextIOWrapper):  # invalid UTF-8 typed or piped in is normalised, not fatal
            lines.reconfigure(errors="surrogateescape")
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
                self._print(f"> {normalise_question(line)}")
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
            if not argument:
                self._print("Usage: /upload PATH")
                return None
            path = Path(argument).expanduser()
            try:
                blob = read_local_file(path, self.max_upload_bytes)
            except DocumentError as exc:
                self._print(f"[!] {exc}")
                return None
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
        reply = console_reply(self)
        router = ReplyRouter(self.client, _no_other_jobs, reply_timeout_s=self.reply_timeout_s)
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
        final = reply.stream.final
        if job.kind is JobKind.ASK and final is not None and final.type is ReplyType.FINAL:
            self.last_answer = job.id
        return final

    async def _rate(self, rating: str, reason: str) -> None:
        if self.last_answer is None:
            self._print("There is no answer to rate yet: ask a question first.")
            return
        await record_rating(self.ratings, "console", self.last_answer, rating,
                            rater_id("console", self.scope.workspace, self.user), reason)
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


class ConsoleSurface:
    """The terminal: a surface that streams natively (new text is printed as it comes) and never limits."""

    limits = SurfaceLimits(text_chars=10**9, edit_interval_s=0.0, streams_natively=True)

    def __init__(self, console: ConsoleAdapter):
        self.console = console
        self.printed = ""  # the answer text printed so far
        self.is_streaming = False

    def interval_s(self) -> float:
        return self.limits.edit_interval_s

    async def start_afresh(self) -> None:
        self.printed, self.is_streaming = "", False

    def close(self) -> None:
        """Nothing shared to leave."""

    async def show(self, update: Update) -> bool:
        out = self.console
        if not update.is_streaming and not update.is_final:
            out._print(f"  {update.body}")  # a status line
            return True
        body = update.body
        if not self.is_streaming:
            if not update.is_final:
                out._print("phobos> ", end="")
                self.is_streaming = True
        elif not body.startswith(self.printed.rstrip()):  # another worker started over, or the final text differs
            out._print("")
            if update.is_final:  # printed text cannot be edited: the checked answer follows the streamed one
                out._print(CHECKED_HEADER)
            self.printed = ""
        if update.is_streaming:
            out._print(body[len(self.printed):], end="")
            self.printed = body
            return True
        if self.is_streaming:
            printed = self.printed.rstrip()  # the final text is the streamed one without trailing blanks
            out._print(body[len(printed):] if printed else body)
        else:
            out._print(body)
        if update.tail:
            out._print(update.tail)
        return True


def console_reply(console: ConsoleAdapter) -> AnswerReply:
    """One job's reply in the terminal: the shared reply model over :class:`ConsoleSurface`."""
    return AnswerReply(ConsoleSurface(console), MARKUP)
