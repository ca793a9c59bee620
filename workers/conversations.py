"""Per-conversation state in Redis: the model a conversation chose."""

from __future__ import annotations

import redis

from jobs import keys

MODEL_FIELD = "model"


class ConversationStore:
    def __init__(self, client: redis.Redis):
        self.redis = client

    def model(self, conversation_key: str) -> str | None:
        raw = self.redis.hget(keys.CONVERSATION_PREFIX + conversation_key, MODEL_FIELD)
        if raw is None:
            return None
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    def set_model(self, conversation_key: str, model: str) -> None:
        self.redis.hset(keys.CONVERSATION_PREFIX + conversation_key, MODEL_FIELD, model)
