"""The model names that running workers announce, for /model's autocomplete on Discord."""

from __future__ import annotations

import json
import time

import redis.asyncio as aioredis

from jobs.heartbeats import live_heartbeats

MODELS_CACHE_S = 10.0  # autocomplete runs on every keystroke; the worker heartbeats change slowly


class LiveModels:
    """Model names read from the workers' heartbeats, cached for ``MODELS_CACHE_S``."""

    def __init__(self, redis: aioredis.Redis):
        self.redis = redis
        self._cache: tuple[float, list[str]] = (0.0, [])

    async def names(self) -> list[str]:
        """Model names that running workers announce in their heartbeats (cached for a few seconds)."""
        fetched_at, names = self._cache
        if time.monotonic() - fetched_at < MODELS_CACHE_S:
            return names
        found: set[str] = set()
        for raw in await live_heartbeats(self.redis):
            found.update(_models_in_heartbeat(raw))
        names = sorted(found)
        self._cache = (time.monotonic(), names)
        return names


def _models_in_heartbeat(raw: bytes | str) -> list[str]:
    """Model names in a worker heartbeat: ``{"models": [...]}`` of names or of ``{"name": ...}`` objects."""
    try:
        data = json.loads(raw)
    except ValueError:
        return []
    models = data.get("models", []) if isinstance(data, dict) else data
    if not isinstance(models, list):
        return []
    return [str(m["name"] if isinstance(m, dict) else m) for m in models if m]
