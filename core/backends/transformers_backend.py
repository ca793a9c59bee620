"""Generation with Hugging Face transformers: hub models on a GPU (optionally 4/8-bit), or small ones on CPU.

Imports only the standard library, torch and transformers (bitsandbytes when a quantized entry loads),
so GPU machines without the rest of Phobos's dependencies can load and benchmark it.
"""

from __future__ import annotations

import gc
import logging
import queue
import threading
from collections.abc import Generator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from core import gpu
from core.chat_formats import TEMPLATE, ChatFormat, get_format
from core.generation import ChatMessage, GenerationParams
from core.registry import ModelSpec
from core.serving.requests import FinishReason, Handle, RequestParams
from core.stop_strings import StopStringFilter

log = logging.getLogger(__name__)

QUANTIZATIONS = ("none", "bnb-4bit", "bnb-8bit")
STREAM_POLL_S = 0.1  # how long the consumer waits for a piece before looking at `cancel` again
ENGINE_MAX_BATCH = 32  # answers decoded together on a GPU; the engine lowers it to what the free memory holds


@dataclass(frozen=True)
class LoadPlan:
    """How an entry will be loaded on this machine: decided from the spec and the GPU's facts."""

    device: str  # "cpu" or "cuda:N"
    dtype: str  # float32 | float16 | bfloat16
    attention: str  # flash_attention_2 | sdpa | eager
    quantization: str  # none | bnb-4bit | bnb-8bit


def plan_load(spec: ModelSpec, device: gpu.GpuFacts | None, is_flash_installed: bool) -> LoadPlan:
    """Pick device, dtype, attention and quantization for ``spec``; ``device`` None means CPU."""
    if spec.quantization not in QUANTIZATIONS:
        raise ValueError(f"{spec.name}: unknown quantization {spec.quantization!r}; known: {QUANTIZATIONS}")
    capability = device.capability if device is not None else None
    if spec.quantization != "none" and device is None:
        raise RuntimeError(
            f"{spec.name} is configured for {spec.quantization}, which needs a CUDA GPU; "
            "choose the entry without quantization to run on CPU."
        )
    dtype = gpu.choose_dtype(spec.dtype, capability)
    if spec.quantization == "bnb-8bit" and spec.dtype == "auto" and device is not None:
        dtype = "float16"  # LLM.int8 multiplies in float16: bfloat16 activations would be cast at every layer
    attention = gpu.choose_attention(spec.attention, capability, is_flash_installed)
    if attention == "flash_attention_2" and dtype == "float32":
        attention = "sdpa"  # flash attention kernels exist for fp16/bf16 only
    return LoadPlan(
        device=f"cuda:{device.index}" if device is not None else "cpu",
        dtype=dtype,
        attention=attention,
        quantization=spec.quantization,
    )


def split_gguf(weights: str) -> tuple[str, str | None]:
    """A GGUF file loads as (its folder, gguf_file=its name); anything else is a hub id or a model folder."""
    if weights.endswith(".gguf"):
        path = Path(weights)
        return str(path.parent), path.name
    return weights, None


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
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.name = spec.name
        self.spec = spec
        self.context_tokens = spec.context_tokens
        self.plan = plan_load(spec, _resolve_device(device), gpu.flash_attn_installed())
        log.info("loading %s from %s: %s", spec.name, spec.weights, self.plan)

        source, gguf_file = split_gguf(spec.weights_path())
        common: dict[str, Any] = {"token": hf_token or None, "trust_remote_code": spec.trust_remote_code}
        if gguf_file is not None:
            common["gguf_file"] = gguf_file
        self.tokenizer = AutoTokenizer.from_pretrained(source, **common)
        model_kwargs: dict[str, Any] = {
            **common,
            "dtype": getattr(torch, self.plan.dtype),
            "attn_implementation": self.plan.attention,
        }
        if self.plan.device != "cpu":
            model_kwargs["device_map"] = {"": self.plan.device}  # the whole model on one GPU, never offloaded
        quantization_config = _quantization_config(self.plan)
        if quantization_config is not None:  # only when configured: the tutorial always passed 4-bit
            model_kwargs["quantization_config"] = quantization_config
        self.model: Any = AutoModelForCausalLM.from_pretrained(source, **model_kwargs)
        self.model.eval()

        is_template = spec.chat_format == TEMPLATE
        self._format: ChatFormat | None = None if is_template else get_format(spec.chat_format)
        if self._format is None and not self.tokenizer.chat_template:
            raise ValueError(
                f"{spec.name}: the tokenizer has no chat template; set chat_format to an explicit format."
            )
        self._template_takes_system = self._format is None and _template_takes_system(self.tokenizer)
        self._eos_ids = _eos_ids(self.model, self.tokenizer, spec.stop_tokens)
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
                yield from self._stream_plain(prompt, replace(params, stop=self._stops(params)), room, cancel)

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

    def _stream_plain(
        self, prompt: list[int], params: GenerationParams, room: int, cancel: threading.Event | None
    ) -> Iterator[str]:
        import torch
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        stop = params.stop
        consumer_done = threading.Event()  # set when the caller stops reading, so the model stops too
        streamer = TextIteratorStreamer(
            self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=STREAM_POLL_S
        )
        input_ids = torch.tensor([prompt], device=self.model.device)  # (1, prompt_len)
        kwargs: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "max_new_tokens": min(params.max_new_tokens, room),
            "streamer": streamer,
            "stopping_criteria": StoppingCriteriaList(
                [_EventsCriteria(cancel, consumer_done), _StopTextCriteria(self.tokenizer, stop, len(prompt))]
            ),
            "eos_token_id": self._eos_ids,
            "pad_token_id": self._pad_id,
        }
        if params.repetition_penalty != 1.0:
            kwargs["repetition_penalty"] = params.repetition_penalty
        if params.temperature > 0:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)

        failure: list[BaseException] = []

        def generate() -> None:
            try:
                with torch.inference_mode():
                    self.model.generate(**kwargs)
            except BaseException as exc:  # handed to the consumer, which would otherwise wait forever
                failure.append(exc)
                streamer.end()

        thread = threading.Thread(target=generate, name=f"generate-{self.name}", daemon=True)
        thread.start()
        text = StopStringFilter(stop)
        try:
            while True:
                if cancel is not None and cancel.is_set():
                    return  # whatever the filter holds back stays unsaid
                try:
                    piece = next(streamer)
                except queue.Empty:
                    continue
                except StopIteration:
                    break
                shown = text.feed(piece)
                if shown:
                    yield shown
                if text.stopped:
                    return
            if failure:
                raise RuntimeError(f"{self.name}: generation failed: {failure[0]}") from failure[0]
            tail = text.flush()
            if tail:
                yield tail
        finally:
            consumer_done.set()
            thread.join()  # one generation at a time per model: wait until this one has let go

    def close(self) -> None:
        import torch

        if self.engine is not None:
            self.engine.close()
            self.engine = None
        self.model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


class _EventsCriteria:
    """Stops generation when the caller cancels or stops reading; checked after every token."""

    def __init__(self, *events: threading.Event | None):
        self._events = [e for e in events if e is not None]

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        is_done = any(e.is_set() for e in self._events)
        return torch.full((input_ids.shape[0],), is_done, dtype=torch.bool, device=input_ids.device)


class _StopTextCriteria:
    """Stops generation at the token that completes a stop string; the stream's filter cuts the text.

    transformers' own ``stop_strings`` precomputes tables over the whole vocabulary and fails on some
    tokenizers; decoding the last few tokens each step is cheap and works with any tokenizer.
    """

    def __init__(self, tokenizer: Any, stop: tuple[str, ...], prompt_len: int):
        self._tokenizer = tokenizer
        self._stop = tuple(s for s in stop if s)
        self._prompt_len = prompt_len
        # Nearly every token decodes to at least one character, so this many tokens cover any stop string.
        self._window = max((len(s) for s in self._stop), default=0) + 2

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        done = torch.zeros((input_ids.shape[0],), dtype=torch.bool, device=input_ids.device)
        if not self._stop:
            return done
        start = max(self._prompt_len, input_ids.shape[1] - self._window)
        for row in range(input_ids.shape[0]):
            tail = self._tokenizer.decode(input_ids[row, start:], skip_special_tokens=False)
            done[row] = any(s in tail for s in self._stop)
        return done


def _resolve_device(device: str | None) -> gpu.GpuFacts | None:
    if device == "cpu":
        return None
    if device is None:
        return gpu.best_device()
    devices = gpu.cuda_devices()
    if not devices:
        raise RuntimeError(f"device {device!r} asked for, but no CUDA device is visible")
    if device == "cuda":
        return max(devices, key=lambda d: d.free_bytes)
    index = int(device.removeprefix("cuda:"))
    return next(d for d in devices if d.index == index)


def _quantization_config(plan: LoadPlan) -> Any:
    if plan.quantization == "none":
        return None
    import importlib.util

    import torch
    from transformers import BitsAndBytesConfig

    if importlib.util.find_spec("bitsandbytes") is None:
        raise RuntimeError(f"{plan.quantization} needs the bitsandbytes package: pip install bitsandbytes")
    if plan.quantization == "bnb-4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",  # NF4 suits normally distributed weights better than plain int4
            bnb_4bit_compute_dtype=getattr(torch, plan.dtype),
        )
    return BitsAndBytesConfig(load_in_8bit=True)


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


def _eos_ids(model: Any, tokenizer: Any, stop_tokens: tuple[str, ...]) -> list[int]:
    """Every token id that ends the answer: the model's eos ids plus the entry's extra stop tokens.

    Llama 3 Instruct ends a turn with <|eot_id|>, which older copies of its generation config do not list.
    """
    ids: list[int] = []
    configured = model.generation_config.eos_token_id
    configured_ids = configured if isinstance(configured, list) else [configured]
    for candidate in [*configured_ids, tokenizer.eos_token_id]:
        if candidate is not None and candidate not in ids:
            ids.append(int(candidate))
    for token in stop_tokens:
        token_id = tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == tokenizer.unk_token_id:
            raise ValueError(f"stop token {token!r} is not in the tokenizer's vocabulary")
        if token_id not in ids:
            ids.append(int(token_id))
    if not ids:
        raise ValueError("the model has no eos token and the entry names no stop_tokens")
    return ids
