"""The DocumentStore on Redis: per scope, each document's metadata, chunk texts and vectors.

Vectors are stored as raw float32 bytes (one key per document), with the embedder that made them
named in the document's metadata, and cached in process memory per scope (:mod:`workers.index_cache`,
bounded in bytes), keyed by a version counter that every change bumps, so questions don't reload
unchanged scopes.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict
from typing import Any

import numpy as np
import redis

from core.documents import Chunk, DocumentInfo
from core.index import EmbedderMismatchError, ScopeIndex
from core.scope import Scope
from jobs import keys
from workers.index_cache import IndexCache

SCOPE_VERSION_PREFIX = keys.SCOPE_VERSION_PREFIX


DEFAULT_CACHE_MAX_BYTES = 256 * 1024 * 1024


class RedisDocumentStore:
    def __init__(self, client: redis.Redis, cache_max_bytes: int = DEFAULT_CACHE_MAX_BYTES):
        self.redis = client
        self.cache = IndexCache(cache_max_bytes)

    def get_document(self, scope_key: str, doc_id: str) -> DocumentInfo | None:
        raw = self.redis.get(_doc_key(scope_key, doc_id))
        return DocumentInfo(**json.loads(raw)) if raw else None

    def add_document(self, info: DocumentInfo, chunks: list[Chunk], vectors: np.ndarray) -> None:
        if len(chunks) != vectors.shape[0]:
            raise ValueError("one vector per chunk")
        scope, doc = info.scope_key, info.doc_id
        chunk_rows = [[c.text, c.page_start, c.page_end, c.ordinal, c.location, c.section] for c in chunks]
        # One transaction: a reader never sees a document without its chunks or vectors.
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(keys.DOC_CHUNKS_PREFIX + f"{scope}:{doc}", json.dumps(chunk_rows))
            pipe.set(keys.DOC_VECTORS_PREFIX + f"{scope}:{doc}", vectors.astype(np.float32).tobytes())
            pipe.set(_doc_key(scope, doc), json.dumps(asdict(info)))
            pipe.sadd(keys.SCOPE_DOCS_PREFIX + scope, doc)
            pipe.incr(SCOPE_VERSION_PREFIX + scope)
            parsed = Scope.parse(scope)
            if parsed.thread:  # so a DM question over the channel can find its threads' documents
                pipe.sadd(keys.CHANNEL_THREADS_PREFIX + parsed.channel_scope.key, scope)
            pipe.execute()

    def list_documents(self, scope_keys: list[str]) -> list[DocumentInfo]:
        # Two round trips however many scopes: a DM question may read hundreds of channels.
        with self.redis.pipeline(transaction=False) as pipe:
            for scope in scope_keys:
                pipe.smembers(keys.SCOPE_DOCS_PREFIX + scope)
            members = pipe.execute()
        wanted = [(scope, d.decode() if isinstance(d, bytes) else d)
                  for scope, doc_ids in zip(scope_keys, members, strict=True) for d in doc_ids]
        if not wanted:
            return []
        raws = self.redis.mget([_doc_key(scope, doc) for scope, doc in sorted(wanted)])
        found = [DocumentInfo(**json.loads(raw)) for raw in raws if raw]
        return sorted(found, key=lambda d: d.added_at)

    def forget(self, scope_key: str, doc_id: str) -> bool:
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(_doc_key(scope_key, doc_id), keys.DOC_CHUNKS_PREFIX + f"{scope_key}:{doc_id}",
                        keys.DOC_VECTORS_PREFIX + f"{scope_key}:{doc_id}")
            pipe.srem(keys.SCOPE_DOCS_PREFIX + scope_key, doc_id)
            pipe.incr(SCOPE_VERSION_PREFIX + scope_key)
            removed = pipe.execute()[0]
        return bool(removed)

    def load_index(self, scope_key: str, dim: int, embedder_name: str = "") -> ScopeIndex:
        return self.load_indexes([scope_key], dim, embedder_name)[0]

    def load_indexes(self, scope_keys: list[str], dim: int, embedder_name: str = "") -> list[ScopeIndex]:
        """The scopes' indexes, in order; their versions are read in one round trip, and a scope that
        never held a document (version 0) is empty without another."""
        versions = [int(v or 0) for v in self.redis.mget([SCOPE_VERSION_PREFIX + key for key in scope_keys])]
        indexes = []
        for scope_key, version in zip(scope_keys, versions, strict=True):
            if version == 0:
                indexes.append(ScopeIndex([], np.zeros((0, dim), dtype=np.float32)))
                continue
            index = self.cache.get(scope_key, version)
            if index is None:
                index = self._read_index(scope_key, dim, embedder_name)
                self.cache.put(scope_key, version, index)
            indexes.append(index)
        return indexes

    def chunks_of(self, info: DocumentInfo) -> list[Chunk]:
        """The document's chunks as stored (texts and pages), in order."""
        rows_raw = self.redis.get(keys.DOC_CHUNKS_PREFIX + f"{info.scope_key}:{info.doc_id}")
        return _chunks(info, json.loads(rows_raw) if rows_raw else [])

    def replace_vectors(self, info: DocumentInfo, vectors: np.ndarray, embedder_name: str) -> DocumentInfo:
        """Store new vectors for a document's chunks, made by ``embedder_name`` (re-indexing)."""
        updated = dataclasses.replace(info, embedder=embedder_name, dim=int(vectors.shape[1]))
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(keys.DOC_VECTORS_PREFIX + f"{info.scope_key}:{info.doc_id}",
                     vectors.astype(np.float32).tobytes())
            pipe.set(_doc_key(info.scope_key, info.doc_id), json.dumps(dataclasses.asdict(updated)))
            pipe.incr(SCOPE_VERSION_PREFIX + info.scope_key)
            pipe.execute()
        return updated

    def scope_keys(self) -> list[str]:
        """Every scope holding documents."""
        found = self.redis.scan_iter(match=keys.SCOPE_DOCS_PREFIX + "*", count=1000)
        return sorted((k.decode() if isinstance(k, bytes) else k).removeprefix(keys.SCOPE_DOCS_PREFIX) for k in found)

    def _read_index(self, scope_key: str, dim: int, embedder_name: str) -> ScopeIndex:
        chunks: list[Chunk] = []
        matrices = []
        for info in self.list_documents([scope_key]):
            # Older records name no embedder: their vectors' size is all there is to check.
            is_other = bool(embedder_name and info.embedder and info.embedder != embedder_name)
            if is_other or (info.dim and info.dim != dim):
                raise EmbedderMismatchError(scope_key, info.embedder_identity, f"{embedder_name} ({dim} dimensions)")
            rows_raw = self.redis.get(keys.DOC_CHUNKS_PREFIX + f"{scope_key}:{info.doc_id}")
            vectors_raw = self.redis.get(keys.DOC_VECTORS_PREFIX + f"{scope_key}:{info.doc_id}")
            if not rows_raw or not vectors_raw:
                continue
            rows = json.loads(rows_raw)
            if len(vectors_raw) != len(rows) * dim * 4:
                raise EmbedderMismatchError(scope_key, info.embedder_identity, f"{embedder_name} ({dim} dimensions)")
            matrix = np.frombuffer(vectors_raw, dtype=np.float32).reshape(len(rows), dim)  # type: ignore[arg-type]
            chunks.extend(_chunks(info, rows))
            matrices.append(matrix)
        vectors = np.vstack(matrices) if matrices else np.zeros((0, dim), dtype=np.float32)
        return ScopeIndex(chunks, vectors)


def _chunks(info: DocumentInfo, rows: list[list[Any]]) -> list[Chunk]:
    # Rows stored before locations (or sections) existed have four (or five) fields; the rest is empty.
    return [Chunk(info.doc_id, info.file_name, text, start, end, ordinal, *_location_section(rest),
                  scope_key=info.scope_key)
            for text, start, end, ordinal, *rest in rows]


def _location_section(rest: list[Any]) -> tuple[str, str]:
    return (str(rest[0]) if rest else "", str(rest[1]) if len(rest) > 1 else "")


def _doc_key(scope_key: str, doc_id: str) -> str:
    return keys.DOC_PREFIX + f"{scope_key}:{doc_id}"
