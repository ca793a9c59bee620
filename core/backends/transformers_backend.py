"""Generation with Hugging Face transformers: hub models on a GPU (optionally 4/8-bit), or small ones on CPU.

Imports only the standard library, torch and transformers (bitsandbytes when a quantized entry loads),
so GPU machines without the rest of Phobos's dependencies can load and benchmark it. Loading lives in
``transformers_loading``, the one-at-a-time ``generate`` path in ``transformers_plain``, the batched
engine in ``core.serving``; this module turns chat messages into prompts and picks the path.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Generator, Iterator
from dataclasses import replace
from typing import Any

from core import gpu
from core.backends.transformers_loading import eos_ids, load_model, plan_load, resolve_device
from core.backends.transformers_plain import stream_plain
from core.chat_formats import TEMPLATE, ChatFormat, get_format
from core.generation import ChatMessage, GenerationParams
from core.registry import ModelSpec
from core.serving.requests import FinishReason, Handle, RequestParams

log = logging.getLogger(__name__)

ENGINE_MAX_BATCH = 32  # answers decoded together on a GPU; the engine lowers it to what the free memory holds


class TransformersGenerator:
    """A transformers causal LM behind the ``Generator`` port.

    On a GPU, ``stream`` and ``submit`` go through a batched engine (core/serving) and may be called from
    many threads at once: every answer in flight decodes in one batch. Elsewhere, and where the engine
    cannot serve the model, ``generate`` runs one answer at a time (concurrent callers take turns).
    ``max_concurrency`` says which: how many answers are worth having in flight.
    """

    def __init__(
        self,
        spec: ModelSpec,
        *,
        hf_token: str | None = None,
        device: str | None = None,
        batched: bool | None = None,
        max_batch: int = ENGINE_MAX_BATCH,
        graph_mode: str = "auto",
    ):
        """Load ``spec.weights``. ``device``: "cpu", "cuda", "cuda:N", or None for the freest GPU else CPU.

        ``hf_token`` is needed for gated hub models (Gemma, Llama 3) unless they are in the local cache.
        ``batched``: serve through the batched engine; None means on a GPU yes, on CPU no (a CPU is
        bound by arithmetic, so batching gains little there). bnb-8bit always takes the plain path.
        """
        self.name = spec.name
        self.spec = spec
        self.context_tokens = spec.context_tokens
        self.plan = plan_load(spec, resolve_device(device), gpu.flash_attn_installed())
        self.tokenizer, self.model = load_model(spec, self.plan, hf_token)

        is_template = spec.chat_format == TEMPLATE
        self._format: ChatFormat | None = None if is_template else get_format(spec.chat_format)
        if self._format is None and not self.tokenizer.chat_template:
            raise ValueError(
                f"{spec.name}: the tokenizer has no chat template; set chat_format to an explicit format."
            )
        self._template_takes_system = self._format is None and _template_takes_system(self.tokenizer)
        self._eos_ids = eos_ids(self.model, self.tokenizer, spec.stop_tokens)
        pad = self.tokenizer.pad_token_id
        self._pad_id = pad if pad is not None else self._eos_ids[0]
        self._plain_lock = threading.Lock()  # generate serves one answer at a time
        self.engine: Any = None
        if batched is None:
            batched = self.plan.device != "cpu"
        if batched:
            self.engine = self._start_engine(max_batch, graph_mode)
        self.max_concurrency = self.engine.max_batch if self.engine is not None else 1

    def _start_engine(self, max_batch: int, graph_mode: str) -> Any:
        """The batched engine for this model, or None (said once in the log) where it cannot serve it."""
        from core.serving.engine import BatchEngine

        if self.plan.quantization == "bnb-8bit":
            log.warning("%s: bnb-8bit answers one at a time through generate: LLM.int8 decode is slow and "
                        "its kernels are not captured in graphs; choose bnb-4bit or 16-bit to batch", self.name)
            return None
        top_k = getattr(self.model.generation_config, "top_k", None) or 0
        try:
            return BatchEngine(
                self.model, eos_ids=self._eos_ids, decode=self._decode_answer, max_batch=max_batch,
                max_len=self.context_tokens, graph_mode=graph_mode, pad_id=self._pad_id, top_k=top_k,
                name=self.name,
            ).start()
        except Exception as exc:  # an architecture or device the engine cannot serve: the plain path can
            log.warning("%s: batched engine unavailable, answering one at a time: %s: %s",
                        self.name, type(exc).__name__, exc)
            return None

    def _decode_answer(self, ids: list[int]) -> str:
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        assert isinstance(text, str)
        return text

    # --- prompt -----------------------------------------------------------------------------------

    def prompt_text(self, messages: list[ChatMessage]) -> str:
        """The prompt exactly as the model sees it, ending where the answer starts."""
        if self._format is not None:
            return self._format.render(messages)
        turns = [{"role": m.role, "content": m.content} for m in messages]
        if not self._template_takes_system:
            turns = _fold_system_into_first_user(turns)
        text = self.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        assert isinstance(text, str)
        return text

    def prompt_ids(self, messages: list[ChatMessage]) -> list[int]:
        # A chat template writes its own BOS; an explicit format relies on the tokenizer adding it.
        add_special = self._format is not None
        encoded = self.tokenizer(self.prompt_text(messages), add_special_tokens=add_special)
        ids: list[int] = encoded["input_ids"]
        return ids

    def count_tokens(self, messages: list[ChatMessage]) -> int:
        return len(self.prompt_ids(messages))

    # --- generation -------------------------------------------------------------------------------

    def stream(
        self,
        messages: list[ChatMessage],
        params: GenerationParams,
        cancel: threading.Event | None = None,
    ) -> Generator[str, None, None]:  # a generator: closing it early stops the model too
        prompt = self.prompt_ids(messages)
        room = self.context_tokens - len(prompt)
        if room <= 0:
            raise ValueError(
                f"The prompt takes {len(prompt)} tokens; {self.name}'s window is {self.context_tokens}."
            )
        if self.engine is not None:
            yield from self._stream_batched(prompt, params, cancel)
        else:
            with self._plain_lock:
                yield from stream_plain(
                    self.model, self.tokenizer, prompt, replace(params, stop=self._stops(params)), room, cancel,
                    eos_ids=self._eos_ids, pad_id=self._pad_id, name=self.name,
                )

    def submit(self, prompt_ids: list[int], params: GenerationParams) -> Handle:
        """Start an answer in the batched engine and return at once; thread-safe.

        The handle yields the answer's tokens with their text and has ``cancel()``; a failure of this
        request alone (prompt too long, ...) ends its iteration with ``RequestFailed``.
        """
        if self.engine is None:
            raise RuntimeError(f"{self.name} is not served by the batched engine; use stream()")
        request = RequestParams(
            max_new_tokens=params.max_new_tokens, temperature=params.temperature, top_p=params.top_p,
            repetition_penalty=params.repetition_penalty, stop=self._stops(params),
        )
        handle: Handle = self.engine.submit(prompt_ids, request)
        return handle

    def _stops(self, params: GenerationParams) -> tuple[str, ...]:
        return tuple(params.stop) + (self._format.stop if self._format is not None else ())

    def _stream_batched(
        self, prompt: list[int], params: GenerationParams, cancel: threading.Event | None
    ) -> Iterator[str]:
        handle = self.submit(prompt, params)
        try:
            for event in handle.events(cancel):
                if event.text:
                    yield event.text
            if handle.finish_reason is not FinishReason.CANCELLED and handle.tail:
                yield handle.tail
        finally:
            handle.cancel()  # the caller stopped reading: the engine lets the answer go at its next step

    def close(self) -> None:
        import torch

        if self.engine is not None:
            self.engine.close()
            self.engine = None
        self.model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _template_takes_system(tokenizer: Any) -> bool:
    """Whether the chat template accepts a system turn; Gemma's raises an exception on one."""
    from jinja2 import TemplateError

    probe = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    try:
        tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
    except TemplateError:
        return False
    return True


def _fold_system_into_first_user(turns: list[dict[str, str]]) -> list[dict[str, str]]:
    system = "\n\n".join(t["content"] for t in turns if t["role"] == "system")
    rest = [dict(t) for t in turns if t["role"] != "system"]
    if not system:
        return rest
    for t in rest:
        if t["role"] == "user":
            t["content"] = f"{system}\n\n{t['content']}"
            return rest
    return [{"role": "user", "content": system}, *rest]
