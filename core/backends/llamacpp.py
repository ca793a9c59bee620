"""GGUF models on llama.cpp (llama-cpp-python): the fastest way to run a small model on a CPU."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from core.generation import ChatMessage, GenerationParams
from core.registry import ModelSpec

TOKENS_PER_MESSAGE = 4  # role markers the chat template adds around each message


class LlamaCppGenerator:
    def __init__(self, spec: ModelSpec, n_threads: int = 0, weights_dir: Path | None = None):
        from llama_cpp import Llama

        self.name = spec.name
        self.context_tokens = spec.context_tokens
        self._llama = Llama(
            model_path=spec.weights_path(weights_dir),  # checked against the registry's sha256 first
            n_ctx=spec.context_tokens,
            n_threads=n_threads or os.cpu_count() or 1,
            verbose=False,
        )

    def count_tokens(self, messages: list[ChatMessage]) -> int:
        # The template's markers are a few tokens per message; counting the contents exactly and
        # adding that overhead avoids rendering the template here.
        total = 0
        for message in messages:
            total += len(self._llama.tokenize(message.content.encode(), add_bos=False, special=False))
            total += TOKENS_PER_MESSAGE
        return total

    def stream(self, messages: list[ChatMessage], params: GenerationParams,
               cancel: threading.Event | None = None) -> Iterator[str]:
        pieces = self._llama.create_chat_completion(
            messages=[{"role": m.role, "content": m.content} for m in messages],  # type: ignore[misc]
            max_tokens=params.max_new_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            repeat_penalty=params.repetition_penalty,
            stop=list(params.stop) or None,
            stream=True,
        )
        for piece in pieces:
            if cancel is not None and cancel.is_set():
                break
            delta: Any = piece["choices"][0]["delta"]  # type: ignore[index]
            text = delta.get("content")
            if text:
                yield str(text)

    def close(self) -> None:
        self._llama.close()
