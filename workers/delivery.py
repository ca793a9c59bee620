"""Taking jobs off the streams and giving them back: at-least-once delivery on a Redis consumer group.

A worker reads the general jobs stream and the streams of the models it serves (``keys.model_stream``),
all through one consumer group; everything below holds on each of them. It takes one entry at a time
(no prefetch): first the entries it already held under its name (a restart with a stable
``worker_id``), then entries other workers held and stopped renewing (XAUTOCLAIM after
``reclaim_idle_s``, resuming from where the last call stopped, so live leases at the head of the
pending list do not hide a dead worker's entry behind them), then new ones. While a job runs, a
:class:`Lease` thread keeps the entry's idle time near zero; a dead worker stops renewing, so its job
is reclaimed.

Every take of an entry gets a fencing token (a counter per entry, in ``keys.FENCE_PREFIX + stream``).
Renewing, handing back, forwarding, finishing and posting partial events all check it, so only the
latest holder acts: not a stalled worker whose job was taken over, nor a second process started
with the same worker id.

Ending a job is one Lua script: post the terminal reply event, XACK, release the depth counters,
only if the entry is still pending to this worker. So a job taken over by another worker can never
be answered twice, and an acknowledged job always has exactly one answer on its reply stream. The one
exception is forwarding (another Lua script): an ask moved to its model's stream is acknowledged on
the general stream without an answer, because its forwarded entry will be answered and finished.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from jobs import keys
from jobs.protocol import Job

log = logging.getLogger(__name__)

Fields = dict[bytes, bytes]

# Every script below starts with this check: the entry is pending to this consumer and this take's
# fencing token is still the entry's latest. KEYS[1]: jobs stream, KEYS[2]: its fence hash;
# ARGV[1..4]: group, consumer, entry id, token.
HOLDS_LUA = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 or p[1][2] ~= ARGV[2] then return 0 end
if redis.call('HGET', KEYS[2], ARGV[3]) ~= ARGV[4] then return 0 end
"""

# A new take of an entry: its next fencing token. KEYS: fence hash; ARGV: entry id
FENCE_LUA = "return redis.call('HINCRBY', KEYS[1], ARGV[1], 1)"

RENEW_LUA = HOLDS_LUA + """
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
"""

# A partial event (delta, progress) reaches the adapter only from the entry's current holder.
# KEYS: jobs stream, fence hash, reply stream; ARGV: group, consumer, entry id, token, event json, maxlen
POST_LUA = HOLDS_LUA + """
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', 'event', ARGV[5])
return 1
"""

# Make a held entry claimable at once, without counting the delivery against the job.
# KEYS: jobs stream, fence hash; ARGV: group, consumer, entry id, token, idle ms to set
HAND_BACK_LUA = HOLDS_LUA + """
local retries = math.max(0, tonumber(p[1][4]) - 1)
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'IDLE', ARGV[5], 'RETRYCOUNT', retries, 'JUSTID')
return 1
"""

# KEYS: jobs stream, fence hash, reply stream, depth counter, user counter, dead stream
# ARGV: group, consumer, entry id, token, reply event json ('' for none), reply maxlen, dead record json
#       ('' for none), dead maxlen
FINISH_LUA = HOLDS_LUA + """
if ARGV[7] ~= '' then
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[8], '*', 'dead', ARGV[7])
end
if ARGV[5] ~= '' then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', 'event', ARGV[5])
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('HDEL', KEYS[2], ARGV[3])
for i = 4, 5 do
  if tonumber(redis.call('GET', KEYS[i]) or '0') > 0 then redis.call('DECR', KEYS[i]) end
end
return 1
"""

# Move a held entry to another stream: add it there, acknowledge it here; only if still this take's.
# KEYS: from stream, its fence hash, to stream; ARGV: group, consumer, entry id, token, job json
FORWARD_LUA = HOLDS_LUA + """
redis.call('XADD', KEYS[3], '*', 'job', ARGV[5])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('HDEL', KEYS[2], ARGV[3])
return 1
"""

HAND_BACK_IDLE_MS = 10 * 24 * 3600 * 1000  # longer than any reclaim idle time
# XAUTOCLAIM looks at 10 pending entries per call when it claims one; a take scans up to this many
# calls' worth (then the next take resumes from the kept cursor), so one take stays cheap however
# long the pending list is.
RECLAIM_CALLS_PER_TAKE = 10


@dataclass(frozen=True)
class Delivery:
    """One entry handed to this worker, and how many times it has been handed to any worker."""

    entry_id: str
    fields: Fields
    times_delivered: int
    stream: str  # the stream it came from: renewing and acknowledging act there
    token: int = 0  # this take's fencing token: only the entry's latest take may act on it

    def job(self) -> Job:
        """The entry's job; raises ValueError (or KeyError, TypeError) for an unreadable entry."""
        return Job.from_json(self.fields[b"job"])


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _stream_id(value: str) -> tuple[int, int]:
    ms, _, seq = value.partition("-")
    return int(ms), int(seq or 0)


class JobQueue:
    """The worker's side of the job streams it reads (the general one, and its models'), for one consumer name.

    Every guarantee holds per stream: a delivery remembers its stream, and renewing, handing back,
    forwarding and finishing act on that stream's entry.
    """

    def __init__(self, client: redis.Redis, consumer: str, reclaim_idle_s: float,
                 streams: Sequence[str] = (keys.JOBS_STREAM,), group: str = keys.WORKER_GROUP):
        if not streams:
            raise ValueError("a JobQueue reads at least one stream")
        self.redis = client
        self.consumer = consumer
        self.reclaim_idle_ms = max(1, int(reclaim_idle_s * 1000))
        self.streams = list(dict.fromkeys(streams))  # in order of preference when several have entries
        self.group = group
        self.drain_own = True  # a (re)started worker first takes back what it held under its name
        self._reclaim_from = {stream: "0-0" for stream in self.streams}  # XAUTOCLAIM's cursor, per stream
        self._fence = client.register_script(FENCE_LUA)
        self._renew = client.register_script(RENEW_LUA)
        self._post = client.register_script(POST_LUA)
        self._hand_back = client.register_script(HAND_BACK_LUA)
        self._forward = client.register_script(FORWARD_LUA)
        self._finish = client.register_script(FINISH_LUA)

    def ensure_group(self) -> None:
        for stream in self.streams:
            try:
                self.redis.xgroup_create(stream, self.group, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    # --- taking ---

    def take(self, block_ms: int) -> Delivery | None:
        """The next entry for this worker, or None after ``block_ms`` without one."""
        if self.drain_own:
            delivery = self._take_own()
            if delivery is not None:
                return delivery
            self.drain_own = False
        return self._reclaim() or self._read_new(block_ms)

    def _take_own(self) -> Delivery | None:
        for stream in self.streams:
            held = self.redis.xpending_range(stream, self.group, min="-", max="+", count=1,
                                             consumername=self.consumer)
            if not held:
                continue
            first: Any = held[0]
            entry_id = _text(first["message_id"])
            # Claiming it again counts a delivery and resets its idle time, as a fresh read would.
            claimed: Any = self.redis.xclaim(stream, self.group, self.consumer, 0, [entry_id])
            delivery = self._delivery(stream, claimed)
            if delivery is not None:
                return delivery
        return None

    def _reclaim(self) -> Delivery | None:
        for stream in self.streams:
            for _ in range(RECLAIM_CALLS_PER_TAKE):
                reply: Any = self.redis.xautoclaim(stream, self.group, self.consumer, self.reclaim_idle_ms,
                                                   start_id=self._reclaim_from[stream], count=1)
                if not reply:
                    break
                self._reclaim_from[stream] = _text(reply[0])
                delivery = self._delivery(stream, reply[1] if len(reply) > 1 else [])
                if delivery is not None:
                    log.info("reclaimed job entry %s on %s (delivery %d)", delivery.entry_id, stream,
                             delivery.times_delivered)
                    return delivery
                if self._reclaim_from[stream] == "0-0":
                    break  # the whole pending list was looked at; the next take starts over
        return None

    def take_new_nowait(self) -> Delivery | None:
        """A new entry if one is waiting, without blocking (used between the slices of a long ingest)."""
        return self._read_new(None)

    def _read_new(self, block_ms: int | None) -> Delivery | None:
        reply: Any = self.redis.xreadgroup(self.group, self.consumer, {s: ">" for s in self.streams}, count=1,
                                           block=block_ms)
        if not reply:
            return None
        # COUNT is per stream: several streams may each have handed over an entry. Keep the first in
        # order of preference; hand the others straight back, so no entry waits here without a lease.
        read = {_text(stream): entries for stream, entries in reply}
        taken: Delivery | None = None
        for stream in self.streams:
            delivery = self._delivery(stream, read.get(stream))
            if delivery is None:
                continue
            if taken is None:
                taken = delivery
            else:
                self.hand_back(delivery)
        return taken

    def _delivery(self, stream: str, entries: Any) -> Delivery | None:
        entries = [e for e in entries or [] if e and e[1] is not None]  # skip entries deleted while pending
        if not entries:
            return None
        entry_id, fields = entries[0]
        entry_id = _text(entry_id)
        info: Any = self.redis.xpending_range(stream, self.group, min=entry_id, max=entry_id, count=1)
        times = int(info[0]["times_delivered"]) if info else 1
        token = int(self._fence(keys=[keys.FENCE_PREFIX + stream], args=[entry_id]))
        return Delivery(entry_id, fields, times, stream, token)

    def _holds(self, delivery: Delivery) -> list[str]:
        return self.fence(delivery)[0]

    def _holder_args(self, delivery: Delivery) -> list[str | int]:
        return self.fence(delivery)[1]

    def fence(self, delivery: Delivery) -> tuple[list[str], list[str | int]]:
        """The first keys and arguments of a script that starts with :data:`HOLDS_LUA` for this take:
        other modules fence their writes on the delivery with it (an ingest's saved progress)."""
        return ([delivery.stream, keys.FENCE_PREFIX + delivery.stream],
                [self.group, self.consumer, delivery.entry_id, delivery.token])

    # --- holding and ending ---

    def renew(self, delivery: Delivery) -> bool:
        """Reset the entry's idle time; False when it is no longer this take's (it was taken over)."""
        return bool(self._renew(keys=self._holds(delivery), args=self._holder_args(delivery)))

    def post(self, delivery: Delivery, reply_to: str, event_json: str) -> bool:
        """Add a partial event (delta, progress) to ``reply_to``; False, with nothing posted, when the
        entry is no longer this take's: a stalled worker's text stops once another took the job over."""
        return bool(self._post(keys=[*self._holds(delivery), reply_to],
                               args=[*self._holder_args(delivery), event_json, keys.REPLY_STREAM_MAXLEN]))

    def hand_back(self, delivery: Delivery) -> bool:
        """Let another worker take the entry now, without counting this delivery against the job."""
        return bool(self._hand_back(keys=self._holds(delivery),
                                    args=[*self._holder_args(delivery), HAND_BACK_IDLE_MS]))

    def forward(self, delivery: Delivery, stream: str, job_json: str) -> bool:
        """Move the entry to ``stream`` as ``job_json`` and acknowledge it here, in one step.

        No reply event and no counter change: the job is still queued, and the forwarded entry's
        finish releases the counters. False, with nothing done, when the entry is no longer this take's.
        """
        return bool(self._forward(keys=[*self._holds(delivery), stream],
                                  args=[*self._holder_args(delivery), job_json]))

    def finish(self, delivery: Delivery, user: str | None, reply_to: str | None, event_json: str = "",
               dead_record: str = "") -> bool:
        """Post the terminal event (and a dead-letter record), acknowledge, release the counters.

        False, with nothing done, when the entry is no longer this take's.
        """
        stream_keys = [*self._holds(delivery), reply_to or keys.reply_stream("nobody"), keys.QUEUE_DEPTH_KEY,
                       keys.USER_QUEUED_PREFIX + (user or ""), keys.DEAD_STREAM]
        args: list[str | int] = [*self._holder_args(delivery), event_json, keys.REPLY_STREAM_MAXLEN,
                                 dead_record, keys.DEAD_STREAM_MAXLEN]
        return bool(self._finish(keys=stream_keys, args=args))

    # --- housekeeping ---

    def trim(self) -> int:
        """Drop acknowledged entries older than anything still pending or not yet delivered, on every stream."""
        return sum(self._trim(stream) for stream in self.streams)

    def _trim(self, stream: str) -> int:
        groups = [g for g in self.redis.xinfo_groups(stream) if _text(g["name"]) == self.group]
        if not groups:
            return 0
        keep_from = _text(groups[0]["last-delivered-id"])
        summary = self.redis.xpending(stream, self.group)
        if summary and summary.get("pending") and summary.get("min"):
            oldest_pending = _text(summary["min"])
            keep_from = min(keep_from, oldest_pending, key=_stream_id)
        return int(self.redis.xtrim(stream, minid=keep_from, approximate=False))


class Lease(threading.Thread):
    """Renews a running job's entry until stopped; calls ``on_lost`` if another worker took it over."""

    def __init__(self, queue: JobQueue, delivery: Delivery, on_lost: Callable[[], None]):
        super().__init__(name="lease", daemon=True)
        self.queue = queue
        self.delivery = delivery
        self.on_lost = on_lost
        self.interval_s = queue.reclaim_idle_ms / 1000 / 4
        self.is_lost = False
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval_s):
            try:
                if not self.queue.renew(self.delivery):
                    log.warning("job entry %s was taken over by another worker", self.delivery.entry_id)
                    self.is_lost = True
                    self.on_lost()
                    return
            except (redis.RedisError, OSError) as exc:
                log.warning("renewing the lease on %s failed (%s); retrying", self.delivery.entry_id, exc)

    def __enter__(self) -> Lease:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        """Stop renewing (the job ended, or went back to the queue)."""
        self._stop_event.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=5)
