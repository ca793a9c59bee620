"""Time to first token and to a 150-word answer per offline model, on the worker's own RAG prompt, as JSON.

    nice -n 10 .venv/bin/python bench/answer_speed.py [--models smollm2-135m,qwen2.5-coder-0.5b] [--threads 2]

The offline default must answer its first token within 10 s and a 150-word answer within 60 s on an idle
2-core CPU. The prompt is what a worker sends: the bundled handbook indexed as `phobos ingest` does, the
passages core.rag.RagEngine chooses within its source budget, core.prompt's messages; the sources dominate
the prompt, so the time to the first token is mostly their prefill. Each system prompt opens with its own
request number, so llama.cpp cannot reuse the previous prompt's cache. The answer is asked for at length
and cut at the tokens 150 words take for this model; an answer that stops sooner is extended at its
measured decode rate (``projected``).

On a shared machine wall-clock times say more about the neighbours than about the model, so llama.cpp runs
on one thread and the process's CPU seconds are measured as well: on an idle machine one thread takes
about that long, and two cores take it divided by their speed-up (TWO_CORE_SPEEDUP, below the ideal 2
because prefill and decode do not scale perfectly). The verdict uses that idle 2-core estimate; the wall
times and the load average are reported beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from common import ROOT, MemoryStore, ingest_cached

from core.generation import ChatMessage, GenerationParams
from core.model_settings import ModelSettings
from core.prompt import rag_messages
from core.rag import RagEngine, fit_sources
from core.registry import ModelRegistry
from core.scope import Scope
from phobos.runtime import load_embedder, load_generators, relevance_floor
from phobos.settings import Settings

HANDBOOK = ROOT / "phobos" / "samples" / "phobos-handbook.pdf"
QUESTIONS = (
    "What is Phobos and how do I share a document with it? Explain in detail.",
    "How does Phobos decide which passages to show the model, and how are they cited? Explain in detail.",
    "What happens when a worker crashes in the middle of an answer? Explain in detail.",
    "How do I choose another model for a conversation, and which models are there? Explain in detail.",
)
WORDS = 150
FIRST_TOKEN_LIMIT_S, ANSWER_LIMIT_S = 10.0, 60.0
TWO_CORE_SPEEDUP = 1.7  # llama.cpp on 2 threads vs 1; a conservative figure (ideal: 2)


def measure(generator, messages: list[ChatMessage], max_new_tokens: int) -> dict:  # type: ignore[no-untyped-def]
    params = GenerationParams(max_new_tokens=max_new_tokens, temperature=0.0, top_p=1.0)
    started, cpu_started = time.perf_counter(), time.process_time()
    first = first_cpu = 0.0
    pieces: list[str] = []
    for piece in generator.stream(messages, params):
        if not pieces:
            first, first_cpu = time.perf_counter() - started, time.process_time() - cpu_started
        pieces.append(piece)
    total, total_cpu = time.perf_counter() - started, time.process_time() - cpu_started
    text = "".join(pieces)
    tokens = max(1, generator.count_tokens([ChatMessage("assistant", text)]) - 4)
    return {"prompt_tokens": generator.count_tokens(messages), "first_token_s": first, "total_s": total,
            "first_token_cpu_s": first_cpu, "total_cpu_s": total_cpu, "tokens": tokens, "words": len(text.split()),
            "decode_tokens_per_s": (tokens - 1) / (total - first) if tokens > 1 and total > first else 0.0,
            "decode_tokens_per_cpu_s": ((tokens - 1) / (total_cpu - first_cpu)
                                        if tokens > 1 and total_cpu > first_cpu else 0.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="smollm2-135m,qwen2.5-coder-0.5b,qwen2.5-coder-1.5b")
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads (1: CPU seconds = 1-core time)")
    parser.add_argument("--full-budget", action="store_true",
                        help="fill the worker's whole source budget (no relevance floor, top 20): the longest prompt")
    parser.add_argument("--runs", type=int, default=len(QUESTIONS) - 1, help="measured answers per model")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "answer_speed.json")
    args = parser.parse_args()

    settings = Settings(models=ModelSettings(lazy_embedder=False, llm_threads=args.threads))
    embedder = load_embedder(settings)
    store = MemoryStore()
    scope = Scope("bench", "speed", "handbook")
    ingest_cached(store, HANDBOOK, scope.key, embedder, ROOT / ".cache" / "answer-bench" / "documents")
    engine = RagEngine(embedder, store, top_k=20 if args.full_budget else settings.retrieval.top_k,
                       min_relevance=0.0 if args.full_budget else relevance_floor(settings))
    contexts = [engine.context(q, scope) for q in QUESTIONS]
    registry = ModelRegistry.load(settings.models.models_file)
    report: dict = {"full_budget": args.full_budget,
                    "cpu_count": os.cpu_count(), "threads": args.threads, "two_core_speedup": TWO_CORE_SPEEDUP,
                    "words": WORDS,
                    "limits_s": {"first_token": FIRST_TOKEN_LIMIT_S, "answer": ANSWER_LIMIT_S}, "models": {}}
    for model in args.models.split(","):
        load_before = os.getloadavg()[0]
        generator = load_generators(settings, registry, [model])[model]
        spec = registry.get(model)
        # tokens per word of this model's English, from a first answer (also the warm-up)
        warm = measure(generator, rag_messages(QUESTIONS[0], contexts[0][:1]), 64)
        budget = int(WORDS * warm["tokens"] / max(1, warm["words"])) + 1
        runs = []
        for question, hits in list(zip(QUESTIONS[1:], contexts[1:], strict=True))[:args.runs]:
            hits = fit_sources(question, hits, [], generator, spec.max_new_tokens)
            messages = rag_messages(question, hits)
            # A system prompt of its own: llama.cpp would otherwise reuse the cache of a shared prefix
            # (the same passages in the same order), and the prefill would look nearly free.
            messages[0] = ChatMessage("system", f"Request {len(runs) + 1}. {messages[0].content}")
            run = measure(generator, messages, budget)
            left = max(0, budget - run["tokens"])  # an answer that stopped early: the rest at its decode rate
            run["answer_150_words_s"] = run["total_s"] + (left / run["decode_tokens_per_s"]
                                                          if left and run["decode_tokens_per_s"] else 0.0)
            run["answer_150_words_cpu_s"] = run["total_cpu_s"] + (left / run["decode_tokens_per_cpu_s"]
                                                                  if left and run["decode_tokens_per_cpu_s"] else 0.0)
            run["projected"] = bool(left)
            runs.append(run)
        generator.close()
        row = {k: round(statistics.median(r[k] for r in runs), 2)
               for k in ("prompt_tokens", "first_token_s", "answer_150_words_s", "first_token_cpu_s",
                         "answer_150_words_cpu_s", "decode_tokens_per_cpu_s")}
        idle = {"first_token_s": round(row["first_token_cpu_s"] / TWO_CORE_SPEEDUP, 1),
                "answer_150_words_s": round(row["answer_150_words_cpu_s"] / TWO_CORE_SPEEDUP, 1)}
        row.update(idle_2_core_estimate=idle, tokens_for_150_words=budget, runs=len(runs),
                   projected_runs=sum(r["projected"] for r in runs),
                   load_average_1min={"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
                   qualifies=(idle["first_token_s"] <= FIRST_TOKEN_LIMIT_S
                              and idle["answer_150_words_s"] <= ANSWER_LIMIT_S))
        report["models"][model] = row
        print(json.dumps({model: row}), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
