"""A conversation's recent turns, in Redis: one capped list per conversation (scope key), never shared.

Written by the worker after an answer was posted; read into the next question's prompt, where
:func:`core.rag.fit_history` bounds it by tokens. Each conversation's list expires when it goes quiet.
"""

from __future__ import annotations

import json

import redis

from core.generation import ChatMessage
from jobs import keys

MEMORY_VERSION = 1


class ConversationMemory:
    """The last ``max_turns`` question-and-answer turns of each conversation; ``max_turns=0`` remembers nothing."""

    def __init__(self, client: redis.Redis, max_turns: int, ttl_s: int):
        self.redis = client
        self.max_turns = max_turns
        self.ttl_s = ttl_s

    def turns(self, conversation_key: str) -> list[ChatMessage]:
        """The remembered turns, oldest first, as alternating user and assistant messages."""
        if self.max_turns <= 0:
            return []
        messages: list[ChatMessage] = []
        for raw in self.redis.lrange(keys.MEMORY_PREFIX + conversation_key, -self.max_turns, -1):
            try:
                turn = json.loads(raw)
                if turn.get("v") != MEMORY_VERSION:
                    continue
                messages += [ChatMessage("user", str(turn["question"])),
                             ChatMessage("assistant", str(turn["answer"]))]
            except (ValueError, KeyError, TypeError, AttributeError):
                continue  # an unreadable turn is skipped, not fatal
        return messages

    def remember(self, conversation_key: str, question: str, answer: str) -> None:
        """Append one turn, keep the last ``max_turns``, and restart the conversation's expiry."""
        if self.max_turns <= 0:
            return
        key = keys.MEMORY_PREFIX + conversation_key
        turn = json.dumps({"v": MEMORY_VERSION, "question": question, "answer": answer})
        pipe = self.redis.pipeline(transaction=True)
        pipe.rpush(key, turn)
        pipe.ltrim(key, -self.max_turns, -1)
        pipe.expire(key, self.ttl_s)
        pipe.execute()

    def clear(self, conversation_key: str) -> bool:
        """Forget the conversation's turns; False when there were none."""
        return bool(self.redis.delete(keys.MEMORY_PREFIX + conversation_key))
