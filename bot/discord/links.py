"""Where each file was shared on Discord, so an answer's sources can link to the message that carried it."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import redis.asyncio as aioredis

from bot.reply import LinkResolver, Links
from core.documents import Citation
from core.scope import Scope

# + scope key: hash of file name -> jump URL of the latest message that shared that file there.
SOURCE_LINKS_PREFIX = "phobos:discord:links:"


class SourceLinks:
    """Remembers file → message links per scope in Redis, so they survive an adapter restart."""

    def __init__(self, redis: aioredis.Redis):
        self.redis = redis

    async def remember(self, scope: Scope, file_name: str, url: str) -> None:
        await self.redis.hset(SOURCE_LINKS_PREFIX + scope.key, file_name, url)

    async def resolver(self, scope: Scope) -> Callable[[Citation], str | None]:
        """A lookup for :func:`bot.render.format_sources`; a thread's own uploads win over its channel's."""
        links: dict[str, str] = {}
        for key in reversed(scope.search_keys()):  # channel first, so the thread's entries overwrite it
            raw = await self.redis.hgetall(SOURCE_LINKS_PREFIX + key)
            links.update({_text(name): _text(url) for name, url in raw.items()})
        return lambda citation: links.get(citation.file_name)

    def for_answer(self, scope: Scope) -> Links:
        """The links an answer in ``scope`` cites, looked up when its sources are shown (not before)."""
        async def links(citations: Sequence[Citation]) -> LinkResolver:
            return await self.resolver(scope)
        return links


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
