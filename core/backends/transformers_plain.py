"""The plain path: one answer at a time through transformers' ``generate``, streamed as text.

Used where the batched engine cannot serve a model (or on CPU). ``generate`` runs on its own thread and
hands text pieces over a ``TextIteratorStreamer``; the caller's cancel, or its closing the stream, stops
the model at its next token.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

from core.generation import GenerationParams
from core.stop_strings import StopStringFilter

STREAM_POLL_S = 0.1  # how long the consumer waits for a piece before looking at `cancel` again


def stream_plain(
    model: Any,
    tokenizer: Any,
    prompt: list[int],
    params: GenerationParams,
    room: int,
    cancel: threading.Event | None,
    *,
    eos_ids: list[int],
    pad_id: int,
    name: str,
) -> Iterator[str]:
    """The answer to ``prompt`` (at most ``room`` new tokens), cut at ``params.stop``.

    Closing the iterator stops the model and waits for ``generate`` to let go of it: one generation at a time.
    """
    import torch
    from transformers import StoppingCriteriaList, TextIteratorStreamer

    stop = params.stop
    consumer_done = threading.Event()  # set when the caller stops reading, so the model stops too
    streamer = TextIteratorStreamer(
        tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=STREAM_POLL_S
    )
    input_ids = torch.tensor([prompt], device=model.device)  # (1, prompt_len)
    kwargs: dict[str, Any] = {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "max_new_tokens": min(params.max_new_tokens, room),
        "streamer": streamer,
        "stopping_criteria": StoppingCriteriaList(
            [_EventsCriteria(cancel, consumer_done), _StopTextCriteria(tokenizer, stop, len(prompt))]
        ),
        "eos_token_id": eos_ids,
        "pad_token_id": pad_id,
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
                model.generate(**kwargs)
        except BaseException as exc:  # handed to the consumer, which would otherwise wait forever
            failure.append(exc)
            streamer.end()

    thread = threading.Thread(target=generate, name=f"generate-{name}", daemon=True)
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
            raise RuntimeError(f"{name}: generation failed: {failure[0]}") from failure[0]
        tail = text.flush()
        if tail:
            yield tail
    finally:
        consumer_done.set()
        thread.join()  # one generation at a time per model: wait until this one has let go



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
