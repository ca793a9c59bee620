"""TEMPORARY stand-in for workers/worker.py until it lands on main; delete then.

Reads phobos:jobs and answers with the protocol's events, quoting the ingested file's text.
"""

from __future__ import annotations

import asyncio
import contextlib

import pymupdf  # type: ignore[import-untyped]
import redis.asyncio as aioredis

from core.documents import Citation
from workers import keys
from workers.protocol import Job, JobKind, ReplyEvent, ReplyType


async def run(redis: aioredis.Redis) -> None:
    docs: dict[str, list[tuple[str, int, str]]] = {}
    models: dict[str, str] = {}
    last = "0-0"
    while True:
        batches = await redis.xread({keys.JOBS_STREAM: last}, block=200)
        for _s, entries in batches or []:
            for entry_id, fields in entries:
                last = entry_id
                job = Job.from_json(fields[b"job"])
                seq = 0

                async def send(job: Job, kind: ReplyType, **kw: object) -> None:
                    nonlocal seq
                    seq += 1
                    ev = ReplyEvent(job.id, kind, seq=seq, meta=job.meta, **kw)  # type: ignore[arg-type]
                    await redis.xadd(job.reply_to, {"event": ev.to_json()})

                if job.kind is JobKind.INGEST:
                    data = await redis.get(job.blob_key or "")
                    try:
                        pdf = pymupdf.open(stream=data, filetype="pdf")
                    except Exception:
                        await send(job, ReplyType.ERROR, text=f"{job.file_name} is not a PDF.")
                        continue
                    for number, page in enumerate(pdf, start=1):
                        docs.setdefault(job.scope.key, []).append((job.file_name or "", number, page.get_text()))
                        await send(job, ReplyType.PROGRESS, done=number, total=len(pdf), text="reading pages")
                    await send(job, ReplyType.FINAL, text=f"Indexed {job.file_name}: {len(pdf)} pages.")
                elif job.kind is JobKind.ASK:
                    found = [d for k in job.scope.search_keys() for d in docs.get(k, [])]
                    if not found:
                        await send(job, ReplyType.FINAL, text="The documents here do not say.")
                        continue
                    name, page, text = found[0]
                    answer = text.strip()
                    for word in answer.split(" "):
                        await send(job, ReplyType.DELTA, text=word + " ")
                        await asyncio.sleep(0.05)
                    await send(job, ReplyType.FINAL, text=answer, citations=(Citation(name, (page,)),))
                elif job.kind is JobKind.SET_MODEL:
                    if job.text not in ("extractive", "smollm2-135m"):
                        await send(job, ReplyType.ERROR, text=f"There is no model called '{job.text}'.")
                    else:
                        models[job.scope.key] = job.text
                        await send(job, ReplyType.FINAL, text=f"This conversation now uses {job.text}.")
                else:
                    await send(job, ReplyType.FINAL, text=f"{job.kind} done")


@contextlib.asynccontextmanager
async def running(redis: aioredis.Redis):  # type: ignore[no-untyped-def]
    task = asyncio.create_task(run(redis))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
