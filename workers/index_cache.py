"""A least-recently-used cache of scope indexes, bounded in bytes.

A worker serving a big workspace meets thousands of scopes; each index is kept while it is among the
most recently asked and the total stays under ``max_bytes`` (as :meth:`ScopeIndex.nbytes` counts it).
An entry is keyed by scope and valid for one version of it: a changed scope's old index is dropped at
its next lookup, never served. An index bigger than the whole budget is used once and not kept.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from core.index import ScopeIndex


class IndexCache:
    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[int, ScopeIndex, int]] = OrderedDict()  # scope -> version, index, bytes
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        """Bytes held by the cached indexes, as last measured."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, scope_key: str, version: int) -> ScopeIndex | None:
        """The cached index of this version of the scope, or None (a stale version is dropped)."""
        with self._lock:
            entry = self._entries.get(scope_key)
            if entry is None:
                return None
            if entry[0] != version:
                self._remove(scope_key)
                return None
            # Its BM25 index may have been built since it was cached: measure it again.
            size = entry[1].nbytes()
            self._bytes += size - entry[2]
            self._entries[scope_key] = (version, entry[1], size)
            self._entries.move_to_end(scope_key)
            self._evict()
            return entry[1]

    def put(self, scope_key: str, version: int, index: ScopeIndex) -> None:
        """Keep ``index`` as this version of the scope, evicting the least recently used to fit."""
        size = index.nbytes()
        with self._lock:
            if scope_key in self._entries:
                self._remove(scope_key)
            if size > self.max_bytes:
                return
            self._entries[scope_key] = (version, index, size)
            self._bytes += size
            self._evict()

    def _remove(self, scope_key: str) -> None:
        self._bytes -= self._entries.pop(scope_key)[2]

    def _evict(self) -> None:
        while self._bytes > self.max_bytes and self._entries:
            self._remove(next(iter(self._entries)))
