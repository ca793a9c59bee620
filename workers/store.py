"""The DocumentStore on Redis: per scope, each document's metadata, chunk texts and vectors.

Vectors are stored as raw float32 bytes (one key per document) and cached in process memory per
scope, keyed by a version counter that every change bumps, so questions don't reload unchanged scopes.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict

import numpy as np
import redis

from core.documents import Chunk, DocumentInfo
from core.index import ScopeIndex
from jobs import keys

SCOPE_VERSION_PREFIX = "phobos:scope:version:"


class RedisDocumentStore:
    def __init__(self, client: redis.Redis):
        self.redis = client
        self._cache: dict[str, tuple[int, ScopeIndex]] = {}
        self._lock = threading.Lock()

    def get_document(self, scope_key: str, doc_id: str) -> DocumentInfo | None:
        raw = self.redis.get(_doc_key(scope_key, doc_id))
        return DocumentInfo(**json.loads(raw)) if raw else None

    def add_document(self, info: DocumentInfo, chunks: list[Chunk], vectors: np.ndarray) -> None:
        if len(chunks) != vectors.shape[0]:
            raise ValueError("one vector per chunk")
        scope, doc = info.scope_key, info.doc_id
        chunk_rows = [[c.text, c.page_start, c.page_end, c.ordinal] for c in chunks]
        # One transaction: a reader never sees a document without its chunks or vectors.
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(keys.DOC_CHUNKS_PREFIX + f"{scope}:{doc}", json.dumps(chunk_rows))
            pipe.set(keys.DOC_VECTORS_PREFIX + f"{scope}:{doc}", vectors.astype(np.float32).tobytes())
            pipe.set(_doc_key(scope, doc), json.dumps(asdict(info)))
            pipe.sadd(keys.SCOPE_DOCS_PREFIX + scope, doc)
            pipe.incr(SCOPE_VERSION_PREFIX + scope)
            pipe.execute()

    def list_documents(self, scope_keys: list[str]) -> list[DocumentInfo]:
        found = []
        for scope in scope_keys:
            doc_ids = sorted(d.decode() if isinstance(d, bytes) else d
                             for d in self.redis.smembers(keys.SCOPE_DOCS_PREFIX + scope))
            for doc in doc_ids:
                info = self.get_document(scope, doc)
                if info is not None:
                    found.append(info)
        return sorted(found, key=lambda d: d.added_at)

    def forget(self, scope_key: str, doc_id: str) -> bool:
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(_doc_key(scope_key, doc_id), keys.DOC_CHUNKS_PREFIX + f"{scope_key}:{doc_id}",
                        keys.DOC_VECTORS_PREFIX + f"{scope_key}:{doc_id}")
            pipe.srem(keys.SCOPE_DOCS_PREFIX + scope_key, doc_id)
            pipe.incr(SCOPE_VERSION_PREFIX + scope_key)
            removed = pipe.execute()[0]
        return bool(removed)

    def load_index(self, scope_key: str, dim: int) -> ScopeIndex:
        version = int(self.redis.get(SCOPE_VERSION_PREFIX + scope_key) or 0)
        with self._lock:
            cached = self._cache.get(scope_key)
            if cached and cached[0] == version:
                return cached[1]
        index = self._read_index(scope_key, dim)
        with self._lock:
            self._cache[scope_key] = (version, index)
        return index

    def _read_index(self, scope_key: str, dim: int) -> ScopeIndex:
        chunks: list[Chunk] = []
        matrices = []
        for info in self.list_documents([scope_key]):
            rows_raw = self.redis.get(keys.DOC_CHUNKS_PREFIX + f"{scope_key}:{info.doc_id}")
            vectors_raw = self.redis.get(keys.DOC_VECTORS_PREFIX + f"{scope_key}:{info.doc_id}")
            if not rows_raw or not vectors_raw:
                continue
            rows = json.loads(rows_raw)
            matrix = np.frombuffer(vectors_raw, dtype=np.float32).reshape(len(rows), dim)  # type: ignore[arg-type]
            chunks.extend(Chunk(info.doc_id, info.file_name, text, start, end, ordinal)
                          for text, start, end, ordinal in rows)
            matrices.append(matrix)
        vectors = np.vstack(matrices) if matrices else np.zeros((0, dim), dtype=np.float32)
        return ScopeIndex(chunks, vectors)


def _doc_key(scope_key: str, doc_id: str) -> str:
    return keys.DOC_PREFIX + f"{scope_key}:{doc_id}"
