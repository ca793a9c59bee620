"""An ingest's finished slices, kept in Redis until the document is stored whole (core.ingest.ProgressStore).

A worker stopped mid-ingest (SIGTERM, a rolling restart) hands the job back; the worker that takes it
next loads these and embeds only the pages after them. Each save appends one slice in one script,
fenced on the job's delivery (:meth:`workers.delivery.JobQueue.fence`), so a worker whose job was
taken over cannot write into the new holder's progress. Everything expires with the upload's blob.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import redis

from core.documents import Chunk
from core.ingest import SavedProgress
from jobs import keys
from workers.delivery import HOLDS_LUA

log = logging.getLogger(__name__)

# KEYS: (fence: jobs stream, fence hash), state, chunks list, vectors string
# ARGV: (fence: group, consumer, entry id, token), state json, vectors bytes, ttl s, chunk rows json...
SAVE_LUA = HOLDS_LUA + """
redis.call('SET', KEYS[3], ARGV[5], 'EX', ARGV[7])
for i = 8, #ARGV do redis.call('RPUSH', KEYS[4], ARGV[i]) end
if ARGV[6] ~= '' then redis.call('APPEND', KEYS[5], ARGV[6]) end
redis.call('EXPIRE', KEYS[4], ARGV[7])
redis.call('EXPIRE', KEYS[5], ARGV[7])
return 1
"""


class RedisProgressStore:
    """Saved ingest progress for one job's delivery; ``fence`` is ``JobQueue.fence(delivery)``."""

    def __init__(self, client: redis.Redis, fence: tuple[list[str], list[str | int]], file_name: str,
                 ttl_s: int = keys.BLOB_TTL_S):
        self.redis = client
        self.file_name = file_name
        self.fence_keys, self.fence_args = fence
        self.ttl_s = ttl_s
        self._save = client.register_script(SAVE_LUA)

    def load(self, scope_key: str, doc_id: str) -> SavedProgress | None:
        state_key, chunks_key, vectors_key = _keys(scope_key, doc_id)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(state_key)
            pipe.lrange(chunks_key, 0, -1)
            pipe.get(vectors_key)
            raw_state, rows, raw_vectors = pipe.execute()
        if not raw_state:
            return None
        state = json.loads(raw_state)
        chunks = [Chunk(doc_id, self.file_name, text, start, end, ordinal)
                  for text, start, end, ordinal in (json.loads(r) for r in rows)]
        vectors = np.frombuffer(raw_vectors or b"", dtype=np.float32)
        matrices = [vectors.reshape(len(chunks), -1)] if chunks else []
        log.info("resuming the ingest of %s at page %d: %d passages already embedded", self.file_name,
                 state["pages_done"], len(chunks))
        return SavedProgress(state["pages_done"], state["chunker"], chunks, matrices)

    def save(self, scope_key: str, doc_id: str, pages_done: int, chunker: dict[str, Any], new_chunks: list[Chunk],
             new_vectors: np.ndarray | None) -> bool:
        state = json.dumps({"pages_done": pages_done, "chunker": chunker})
        rows = [json.dumps([c.text, c.page_start, c.page_end, c.ordinal]) for c in new_chunks]
        matrix = new_vectors.astype(np.float32).tobytes() if new_vectors is not None else b""
        is_saved = bool(self._save(keys=[*self.fence_keys, *_keys(scope_key, doc_id)],
                                   args=[*self.fence_args, state, matrix, self.ttl_s, *rows]))
        if is_saved:
            log.info("ingest progress saved: page %d, %d passages embedded in this slice", pages_done,
                     len(new_chunks))
        return is_saved

    def clear(self, scope_key: str, doc_id: str) -> None:
        self.redis.delete(*_keys(scope_key, doc_id))


def _keys(scope_key: str, doc_id: str) -> list[str]:
    base = f"{keys.INGEST_PROGRESS_PREFIX}{scope_key}:{doc_id}"
    return [base + ":state", base + ":chunks", base + ":vectors"]
