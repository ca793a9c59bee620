"""Where a cited file lives in Slack: its permalink, remembered per scope when the file is shared.

A citation names only the file, so the adapter keeps file name -> permalink itself; the token-free
permalink is all it stores.
"""

from __future__ import annotations

from collections.abc import Iterable

import redis.asyncio as aioredis

from core.scope import Scope
from jobs import keys

PERMALINK_PREFIX = keys.SLACK_PERMALINK_PREFIX  # + scope key: hash file name -> permalink
PERMALINK_TTL_S = 90 * 24 * 3600


class PermalinkStore:
    """File name -> permalink per scope, in Redis so that any adapter instance can link a citation."""

    def __init__(self, redis: aioredis.Redis):
        self.redis = redis

    async def remember(self, scope: Scope, file_name: str, permalink: str) -> None:
        if not permalink:
            return
        key = PERMALINK_PREFIX + scope.key
        await self.redis.hset(key, file_name, permalink)
        await self.redis.expire(key, PERMALINK_TTL_S)

    async def lookup(self, scope: Scope, file_names: Iterable[str]) -> dict[str, str]:
        """Permalinks for the files a question in ``scope`` could cite (its thread first, then channel)."""
        found: dict[str, str] = {}
        wanted = list(dict.fromkeys(file_names))
        for scope_key in scope.search_keys():
            missing = [name for name in wanted if name not in found]
            if not missing:
                break
            values = await self.redis.hmget(PERMALINK_PREFIX + scope_key, missing)
            for name, value in zip(missing, values, strict=True):
                if value is not None:
                    found[name] = value.decode() if isinstance(value, bytes) else str(value)
        return found
