"""Generation through the OpenAI chat completions API, or any server that speaks it (vLLM, Ollama, llama.cpp).

Retries are ours, not the client's (its ``max_retries`` is 0): we retry only before the first piece of an
answer has been shown, since retrying later would repeat text the user has already seen, and we honour
``cancel`` while backing off.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Generator
from typing import Any

from core.generation import ChatMessage, GenerationParams
from core.registry import ModelSpec

DEFAULT_TIMEOUT_S = 60.0  # per request; a streamed answer's pieces each arrive well within it
DEFAULT_MAX_RETRIES = 4
BACKOFF_BASE_S = 1.0
BACKOFF_MAX_S = 30.0
NO_KEY = "no-key"  # OpenAI-compatible local servers usually ignore the key, but the client wants one
# Chat-format overhead per message and for the reply's priming, from OpenAI's token counting guide.
TOKENS_PER_MESSAGE = 4
TOKENS_REPLY_PRIMING = 3
CHARS_PER_TOKEN = 4  # rough English average, used only where tiktoken cannot count


class OpenAIGenerator:
    """A chat model behind an OpenAI-compatible HTTP API, behind the ``Generator`` port."""

    def __init__(
        self,
        spec: ModelSpec,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_retries: int = DEFAULT_MAX_RETRIES,
        backoff_base_s: float = BACKOFF_BASE_S,
        backoff_max_s: float = BACKOFF_MAX_S,
    ):
        """``spec.base_url`` wins over ``base_url``; neither means the OpenAI API, which needs ``api_key``."""
        from openai import OpenAI

        self.name = spec.name
        self.context_tokens = spec.context_tokens
        self.api_model = spec.api_model or spec.name
        self.base_url = spec.base_url or base_url or None
        if not api_key and self.base_url is None:
            raise ValueError(f"{spec.name} uses the OpenAI API: set OPENAI_API_KEY.")
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self._client = OpenAI(
            api_key=api_key or NO_KEY, base_url=self.base_url, timeout=timeout_s, max_retries=0
        )
        self._encoding = _tiktoken_encoding(self.api_model)

    def count_tokens(self, messages: list[ChatMessage]) -> int:
        """Exact for OpenAI models when tiktoken is installed; otherwise an estimate of chars/4.

        For other models behind a compatible server even tiktoken's count is an estimate (their
        tokenizers differ), good enough to budget a prompt with some room to spare.
        """
        n = TOKENS_REPLY_PRIMING
        for m in messages:
            n += TOKENS_PER_MESSAGE + self._count_text(m.role) + self._count_text(m.content)
        return n

    def _count_text(self, text: str) -> int:
        if self._encoding is not None:
            return len(self._encoding.encode(text, disallowed_special=()))
        return -(-len(text) // CHARS_PER_TOKEN)  # ceiling division

    def stream(
        self,
        messages: list[ChatMessage],
        params: GenerationParams,
        cancel: threading.Event | None = None,
    ) -> Generator[str, None, None]:
        response = self._create_with_retries(messages, params, cancel)
        if response is None:
            return  # cancelled while waiting to retry
        with response:  # closing drops the connection, which tells the server to stop generating
            for chunk in response:
                if cancel is not None and cancel.is_set():
                    return
                if not chunk.choices:
                    continue  # e.g. a final usage-only chunk
                piece = chunk.choices[0].delta.content
                if piece:
                    yield piece

    def _create_with_retries(
        self, messages: list[ChatMessage], params: GenerationParams, cancel: threading.Event | None
    ) -> Any:
        import openai

        request: dict[str, Any] = {
            "model": self.api_model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "stream": True,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_new_tokens,
        }
        if params.stop:
            request["stop"] = list(params.stop)
        if self.base_url is not None:
            # Not an OpenAI API parameter (it rejects unknown ones), but compatible servers take it:
            # vLLM as repetition_penalty, llama.cpp as repeat_penalty; each ignores the other's name.
            # Sent even at 1.0 (off), since servers have their own default (llama-cpp-python's is 1.1).
            penalty = params.repetition_penalty
            request["extra_body"] = {"repetition_penalty": penalty, "repeat_penalty": penalty}
        for attempt in range(self.max_retries + 1):
            try:
                return self._client.chat.completions.create(**request)
            except (openai.APIStatusError, openai.APIConnectionError) as exc:
                if attempt == self.max_retries or not is_retryable(exc):
                    raise
                delay = backoff_delay_s(attempt, _retry_after_s(exc), self.backoff_base_s, self.backoff_max_s)
            waiter = cancel if cancel is not None else threading.Event()
            if waiter.wait(delay):
                return None
        raise AssertionError("unreachable: the last attempt returns or raises")

    def close(self) -> None:
        self._client.close()


def is_retryable(exc: Exception) -> bool:
    """Rate limits (429), server errors (5xx), timeouts and dropped connections are worth another try."""
    import openai

    if isinstance(exc, openai.APIStatusError):
        return exc.status_code == 429 or exc.status_code >= 500
    return isinstance(exc, openai.APIConnectionError)  # includes APITimeoutError


def backoff_delay_s(
    attempt: int,
    retry_after_s: float | None,
    base_s: float = BACKOFF_BASE_S,
    max_s: float = BACKOFF_MAX_S,
    jitter: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before retry ``attempt + 1``: exponential with jitter, or the server's Retry-After.

    Jitter (50-100% of the step) keeps many workers that hit the same rate limit from retrying in step.
    """
    if retry_after_s is not None:
        return min(max(retry_after_s, 0.0), max_s)
    step = min(base_s * 2**attempt, max_s)
    return step * (0.5 + 0.5 * jitter())


def _retry_after_s(exc: Exception) -> float | None:
    response = getattr(exc, "response", None)
    if response is None:
        return None
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date; rare for APIs, and the exponential step is a fine substitute


def _tiktoken_encoding(model: str) -> Any:
    """tiktoken's encoding for ``model``, or None without tiktoken or its data files (it downloads them)."""
    try:
        import tiktoken
    except ImportError:
        return None
    try:
        try:
            return tiktoken.encoding_for_model(model)
        except KeyError:
            return tiktoken.get_encoding("o200k_base")  # the encoding of current OpenAI models
    except Exception:  # offline without a cached file: tiktoken raises whatever its HTTP client raises
        return None
