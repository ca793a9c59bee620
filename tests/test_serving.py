"""The batched engine (core/serving) against separate greedy ``generate`` calls on a tiny random Llama.

CPU, static per-slot cache, no graphs: the engine must give every request exactly the tokens a lone
``generate`` gives it, whatever else is in the batch, joins, leaves or fails around it.
"""

from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
import torch

from core.backends.transformers_backend import TransformersGenerator
from core.generation import ChatMessage, GenerationParams
from core.registry import ModelSpec
from core.serving.engine import BatchEngine, FaultHook
from core.serving.requests import FinishReason, Handle, RequestFailed, RequestParams
from tests.test_transformers_backend import SENTENCES, build_tiny_llama

pytestmark = pytest.mark.serving

NEW_TOKENS = 24
PENALTY = 1.15  # GenerationParams' default: the engine must apply it per row exactly as generate does
GREEDY = RequestParams(max_new_tokens=NEW_TOKENS, repetition_penalty=PENALTY)
WORDS = " ".join(SENTENCES).split()
DONE_S = 120  # generous: the suite runs on a busy 2-core machine


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TransformersGenerator:
    folder = build_tiny_llama(tmp_path_factory.mktemp("tiny-llama-serving"))
    spec = ModelSpec(name="tiny", backend="transformers", weights=str(folder), context_tokens=256)
    return TransformersGenerator(spec, device="cpu", batched=False)


@pytest.fixture(scope="module")
def prompts(tiny: TransformersGenerator) -> list[list[int]]:
    """Eight prompts of 3 to 31 tokens."""
    texts = [" ".join(WORDS[i:i + 3 + 4 * i]) for i in range(8)]
    return [tiny.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


@pytest.fixture(scope="module")
def expected(tiny: TransformersGenerator, prompts: list[list[int]]) -> list[list[int]]:
    """Each prompt's answer from its own greedy generate call, up to (not including) its eos."""
    return [reference(tiny, p, NEW_TOKENS) for p in prompts]


def reference(tiny: TransformersGenerator, prompt: list[int], new_tokens: int) -> list[int]:
    ids = torch.tensor([prompt])
    out = tiny.model.generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, do_sample=False,
        repetition_penalty=PENALTY, eos_token_id=tiny._eos_ids, pad_token_id=tiny._pad_id,
    )
    answer: list[int] = out[0, len(prompt):].tolist()
    ends = [i for i, t in enumerate(answer) if t in tiny._eos_ids]
    return answer[: ends[0]] if ends else answer


def engine_for(tiny: TransformersGenerator, *, max_batch: int = 4, max_len: int = 256, admission: str = "step",
               fault_hook: FaultHook | None = None) -> BatchEngine:
    return BatchEngine(
        tiny.model, eos_ids=tiny._eos_ids, decode=lambda ids: tiny.tokenizer.decode(ids, skip_special_tokens=True),
        max_batch=max_batch, max_len=max_len, pad_id=tiny._pad_id, admission=admission, fault_hook=fault_hook,
        name="tiny",
    ).start()


def finished(handles: list[Handle]) -> list[Handle]:
    for h in handles:
        assert h.wait(DONE_S), f"request {h.request_id} did not finish"
    return handles


def test_staggered_requests_get_exactly_what_separate_generate_calls_give(
    tiny: TransformersGenerator, prompts: list[list[int]], expected: list[list[int]]
) -> None:
    assert sum(len(e) >= 8 for e in expected) >= 5, "precondition: most answers are long enough to overlap"
    engine = engine_for(tiny, max_batch=4)  # 8 requests on 4 slots: some wait, join as others leave
    try:
        handles: list[Handle] = []
        for group in ([0, 1, 2], [3, 4, 5], [6, 7]):
            new = [engine.submit(prompts[i], GREEDY) for i in group]
            handles += new
            events = iter(new[0])  # the next group joins while this one is decoding
            next(events)
            next(events)
        got = [h.token_ids for h in finished(handles)]
    finally:
        engine.close()
    assert got == expected
    assert all(h.finish_reason in (FinishReason.EOS, FinishReason.LENGTH) for h in handles)


def test_text_is_what_the_tokenizer_decodes(
    tiny: TransformersGenerator, prompts: list[list[int]], expected: list[list[int]]
) -> None:
    engine = engine_for(tiny)
    try:
        texts = [h.text() for h in [engine.submit(p, GREEDY) for p in prompts[:4]]]
    finally:
        engine.close()
    assert texts == [tiny.tokenizer.decode(e, skip_special_tokens=True) for e in expected[:4]]


def test_batch_boundary_admission_gives_the_same_tokens(
    tiny: TransformersGenerator, prompts: list[list[int]], expected: list[list[int]]
) -> None:
    engine = engine_for(tiny, admission="batch")
    try:
        got = [h.token_ids for h in finished([engine.submit(p, GREEDY) for p in prompts])]
    finally:
        engine.close()
    assert got == expected


def test_cancelling_one_leaves_the_others_tokens_unchanged(
    tiny: TransformersGenerator, prompts: list[list[int]], expected: list[list[int]]
) -> None:
    victim = 0
    assert len(expected[victim]) > 6, "precondition: the victim's answer is long"
    engine = engine_for(tiny)
    try:
        handles = [engine.submit(prompts[i], GREEDY) for i in (0, 1, 3, 6)]
        events = iter(handles[0])
        for _ in range(3):
            next(events)
        handles[0].cancel()
        finished(handles)
    finally:
        engine.close()
    assert handles[0].finish_reason is FinishReason.CANCELLED
    assert 3 <= len(handles[0].token_ids) < len(expected[victim])
    assert handles[0].token_ids == expected[victim][: len(handles[0].token_ids)]
    assert [h.token_ids for h in handles[1:]] == [expected[i] for i in (1, 3, 6)]


def test_stop_strings_and_token_limits_hold_per_request(
    tiny: TransformersGenerator, prompts: list[list[int]], expected: list[list[int]]
) -> None:
    full = tiny.tokenizer.decode(expected[0], skip_special_tokens=True)
    stop_word = full.split()[3]
    stop = " " + stop_word
    engine = engine_for(tiny)
    try:
        stopped = engine.submit(prompts[0], replace(GREEDY, stop=(stop,)))
        limited = engine.submit(prompts[1], replace(GREEDY, max_new_tokens=5))
        free = engine.submit(prompts[6], GREEDY)
        stopped_text = stopped.text()
        finished([limited, free])
    finally:
        engine.close()
    assert stopped.finish_reason is FinishReason.STOP
    assert stopped_text == full[: full.index(stop)]
    assert len(stopped.token_ids) < len(expected[0])  # generation stopped too, not only the text
    assert limited.finish_reason is FinishReason.LENGTH
    assert limited.token_ids == expected[1][:5]
    assert free.token_ids == expected[6]


def test_a_prompt_too_long_fails_alone_with_a_clear_error(
    tiny: TransformersGenerator, prompts: list[list[int]], expected: list[list[int]]
) -> None:
    engine = engine_for(tiny, max_len=64)
    try:
        good = engine.submit(prompts[0], GREEDY)
        too_long = engine.submit(list(range(5, 5 + 70)), GREEDY)
        other = engine.submit(prompts[1], GREEDY)
        with pytest.raises(RequestFailed, match="The prompt takes 70 tokens"):
            list(too_long)
        finished([good, other])
    finally:
        engine.close()
    assert too_long.finish_reason is FinishReason.ERROR
    assert [good.token_ids, other.token_ids] == [expected[0], expected[1]]


def test_a_failure_turning_one_answer_into_text_ends_only_that_answer(
    tiny: TransformersGenerator, prompts: list[list[int]], expected: list[list[int]]
) -> None:
    others = set(expected[1]) | set(expected[6])
    poison = next(t for t in expected[0][2:] if t not in others)  # a token only the first answer has

    def decode(ids: list[int]) -> str:  # the real tokenizer, failing on one token: a fault injected
        if poison in ids:
            raise ValueError(f"cannot decode token {poison}")
        return tiny.tokenizer.decode(ids, skip_special_tokens=True)

    engine = BatchEngine(tiny.model, eos_ids=tiny._eos_ids, decode=decode, max_batch=4, max_len=256,
                         pad_id=tiny._pad_id, name="tiny").start()
    try:
        failing = engine.submit(prompts[0], replace(GREEDY, stop=("never said",)))
        fine = [engine.submit(prompts[i], GREEDY) for i in (1, 6)]
        with pytest.raises(RequestFailed, match=f"could not turn the answer into text: cannot decode token {poison}"):
            list(failing)
        finished(fine)
    finally:
        engine.close()
    assert failing.token_ids == expected[0][: expected[0].index(poison)]  # streamed up to the failure
    assert [h.token_ids for h in fine] == [expected[1], expected[6]]


def test_greedy_rows_stay_exact_beside_a_sampled_row(
    tiny: TransformersGenerator, prompts: list[list[int]], expected: list[list[int]]
) -> None:
    engine = engine_for(tiny)
    try:
        torch.manual_seed(0)
        sampled = engine.submit(prompts[2], replace(GREEDY, temperature=1.0, top_p=0.9))
        greedy = [engine.submit(prompts[i], GREEDY) for i in (0, 1)]
        finished([sampled, *greedy])
    finally:
        engine.close()
    assert [h.token_ids for h in greedy] == [expected[0], expected[1]]
    assert sampled.finish_reason in (FinishReason.EOS, FinishReason.LENGTH)


class OutOfMemoryOnce:
    """A fault hook: raises torch.OutOfMemoryError the first time ``phase`` runs with at least ``rows`` rows."""

    def __init__(self, phase: str, rows: int):
        self.phase, self.rows, self.fired = phase, rows, False

    def __call__(self, phase: str, rows: int) -> None:
        if not self.fired and phase == self.phase and rows >= self.rows:
            self.fired = True
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")


@pytest.mark.parametrize(("phase", "rows"), [("decode", 4), ("prefill", 3)])
def test_running_out_of_memory_shrinks_the_batch_and_everyone_finishes(
    tiny: TransformersGenerator, prompts: list[list[int]], expected: list[list[int]], phase: str, rows: int
) -> None:
    hook = OutOfMemoryOnce(phase, rows)
    engine = engine_for(tiny, fault_hook=hook)
    try:
        handles = [engine.submit(p, GREEDY) for p in prompts]
        got = [h.token_ids for h in finished(handles)]
    finally:
        engine.close()
    assert hook.fired
    assert engine.oom_events == 1
    if phase == "decode":
        assert engine.cap == 2  # four decoding, halved; the two evicted resumed later
    assert got == expected  # nobody dropped, nobody's streamed tokens repeated or changed


def test_closing_the_engine_ends_waiting_requests_with_an_error(
    tiny: TransformersGenerator, prompts: list[list[int]]
) -> None:
    engine = engine_for(tiny, max_batch=1)
    first = engine.submit(prompts[0], replace(GREEDY, max_new_tokens=200))
    queued = engine.submit(prompts[1], GREEDY)
    next(iter(first))
    engine.close()
    with pytest.raises(RequestFailed, match="shut down"):
        list(queued)


def test_buckets_cover_every_size() -> None:
    from core.serving import buckets

    assert buckets.batch_buckets(64) == (1, 2, 4, 8, 16, 32, 64)
    assert buckets.batch_buckets(24) == (1, 2, 4, 8, 16, 24)
    assert buckets.kv_buckets(1000) == (128, 256, 512, 1000)
    prompt = buckets.prompt_buckets(300)
    assert all(buckets.bucket_for(n, prompt) >= n for n in range(1, 301))
    assert buckets.bucket_for(17, prompt) == 24
    with pytest.raises(ValueError, match="larger than the largest bucket"):
        buckets.bucket_for(301, prompt)


def test_detokenizer_pieces_add_up_to_the_full_decode(tiny: TransformersGenerator,
                                                      expected: list[list[int]]) -> None:
    from core.serving.detokenize import IncrementalDetokenizer

    def decode(ids: list[int]) -> str:
        return tiny.tokenizer.decode(ids, skip_special_tokens=True)

    detok = IncrementalDetokenizer(decode)
    ids = [*expected[0][:3], tiny.tokenizer.convert_tokens_to_ids("<start>"), *expected[0][3:]]
    text = "".join(detok.add(t) for t in ids) + detok.flush()
    assert text == decode(ids)


# --- through the transformers backend -------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_batched(tiny: TransformersGenerator) -> Iterator[TransformersGenerator]:
    batched = TransformersGenerator(tiny.spec, device="cpu", batched=True, max_batch=4)
    yield batched
    batched.close()


QUESTIONS = [[ChatMessage("user", " ".join(WORDS[i:i + 2 + 3 * i]))] for i in range(6)]
ANSWER = GenerationParams(max_new_tokens=NEW_TOKENS, temperature=0.0)


def test_cpu_default_is_the_plain_path(tiny: TransformersGenerator) -> None:
    assert tiny.engine is None
    assert tiny.max_concurrency == 1
    with pytest.raises(RuntimeError, match="not served by the batched engine"):
        tiny.submit([1, 2, 3], ANSWER)


def test_backend_streams_from_many_threads_what_the_plain_path_streams(
    tiny: TransformersGenerator, tiny_batched: TransformersGenerator
) -> None:
    assert tiny_batched.engine is not None and tiny_batched.max_concurrency == 4
    expected_texts = ["".join(tiny.stream(q, ANSWER)) for q in QUESTIONS]
    answers: dict[int, str] = {}

    def ask(i: int) -> None:
        answers[i] = "".join(tiny_batched.stream(QUESTIONS[i], ANSWER))

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(QUESTIONS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DONE_S)
    assert [answers.get(i) for i in range(len(QUESTIONS))] == expected_texts


def test_backend_cancel_and_walking_away_free_the_slot(
    tiny: TransformersGenerator, tiny_batched: TransformersGenerator
) -> None:
    long = replace(ANSWER, max_new_tokens=200)
    question = max(QUESTIONS, key=lambda q: len(list(tiny.stream(q, ANSWER))))
    cancel = threading.Event()
    got = []
    for piece in tiny_batched.stream(question, long, cancel):
        got.append(piece)
        cancel.set()
    assert len(got) == 1
    stream = tiny_batched.stream(question, long)
    next(stream)
    stream.close()
    engine = tiny_batched.engine
    assert engine is not None
    deadline = time.monotonic() + DONE_S
    while engine.active_count() and time.monotonic() < deadline:
        time.sleep(0.01)  # polling a condition with a deadline; nothing else to wait on from here
    assert engine.active_count() == 0


def test_backend_prompt_too_long_is_refused_before_the_engine(tiny_spec_small: ModelSpec) -> None:
    small = TransformersGenerator(tiny_spec_small, device="cpu", batched=True)
    try:
        with pytest.raises(ValueError, match="window is 8"):
            list(small.stream([ChatMessage("user", "a b c d e f g h")], ANSWER))
        assert small.engine is not None and small.engine.active_count() == 0
    finally:
        small.close()


@pytest.fixture
def tiny_spec_small(tiny: TransformersGenerator) -> ModelSpec:
    return replace(tiny.spec, context_tokens=8)


# --- GPU: graphs, 16-bit and 4-bit through the engine ----------------------------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(scope="module")
def cuda_spec(tmp_path_factory: pytest.TempPathFactory) -> ModelSpec:
    # Same tokenizer as `tiny`; hidden 256 gives bitsandbytes several 64-wide blocks per row.
    folder = build_tiny_llama(tmp_path_factory.mktemp("tiny-llama-cuda"), hidden=256)
    return ModelSpec(name="tiny-cuda", backend="transformers", weights=str(folder), context_tokens=256)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("graph_mode", ["cuda-graph", "compile"])
def test_cuda_graphs_give_the_tokens_of_separate_generate_calls(
    cuda_spec: ModelSpec, prompts: list[list[int]], graph_mode: str
) -> None:
    # float32 so that batching cannot change a greedy choice through rounding
    gen = TransformersGenerator(replace(cuda_spec, dtype="float32"), device="cuda", batched=False)
    try:
        expected_ids = [reference(gen, p, NEW_TOKENS) for p in prompts]
        engine = BatchEngine(
            gen.model, eos_ids=gen._eos_ids, max_batch=4, max_len=256, pad_id=gen._pad_id, graph_mode=graph_mode,
        ).start()
        try:
            assert engine.graph_mode == graph_mode  # captured, not fallen back to eager
            got = [h.token_ids for h in finished([engine.submit(p, GREEDY) for p in prompts])]
        finally:
            engine.close()
    finally:
        gen.close()
    assert got == expected_ids


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("quantization", ["none", "bnb-4bit"])
def test_gpu_default_serves_concurrent_streams_through_the_engine(cuda_spec: ModelSpec, quantization: str) -> None:
    if quantization != "none":
        pytest.importorskip("bitsandbytes")
    gen = TransformersGenerator(replace(cuda_spec, quantization=quantization), device="cuda")
    try:
        assert gen.engine is not None and gen.max_concurrency > 1
        assert gen.engine.graph_mode == "cuda-graph"
        answers: dict[int, str] = {}

        def ask(i: int) -> None:
            answers[i] = "".join(gen.stream(QUESTIONS[i], ANSWER))

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(QUESTIONS))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(DONE_S)
        assert sorted(answers) == list(range(len(QUESTIONS)))
    finally:
        gen.close()


@pytest.mark.gpu
@needs_cuda
@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="needs bitsandbytes")
def test_bnb_8bit_stays_on_the_plain_path(cuda_spec: ModelSpec) -> None:
    gen = TransformersGenerator(replace(cuda_spec, quantization="bnb-8bit"), device="cuda")
    try:
        assert gen.engine is None and gen.max_concurrency == 1
        assert "".join(gen.stream(QUESTIONS[0], ANSWER)) is not None
    finally:
        gen.close()
