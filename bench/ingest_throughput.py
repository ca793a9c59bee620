"""Ingest throughput (pages/s), peak RSS and the embedder's share of the time: Phobos vs the tutorial's
pipeline on the same embedder, on R-lang.pdf and refman.pdf, side by side in one run, as JSON.

Each (pipeline, file) runs in its own process so its peak RSS is its own. The tutorial embeds one
chunk at a time, which takes very long on the 3,500-page refman: it reads a fixed sample of the
first --tutorial-pages pages there (the JSON says so); Phobos reads the whole file.

    .venv/bin/python bench/ingest_throughput.py [--refman-pages N] [--tutorial-pages 300]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

from common import MemoryStore, concrete_embedder, manual, tutorial_ingest

FILES = ["R-lang.pdf", "refman.pdf"]


def peak_rss_mb() -> dict[str, float]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"peak_rss_mb": round(own, 1), "peak_rss_reader_process_mb": round(children, 1)}


def run_phobos(name: str, max_pages: int | None, bf16: bool = True) -> dict[str, object]:
    import pymupdf

    from core.ingest import ingest_document
    from core.model_settings import ModelSettings
    from phobos.settings import Settings

    settings = Settings(models=ModelSettings(embed_bf16=bf16))
    embedder = concrete_embedder(settings)
    embedder.embed(["warm up"])
    data = manual(name).read_bytes()
    if max_pages is not None:
        with pymupdf.open(stream=data, filetype="pdf") as document:
            document.select(list(range(min(max_pages, document.page_count))))
            data = document.tobytes()
    inner = embedder.embed
    embed_s = 0.0

    def timed_embed(texts: list[str]):  # type: ignore[no-untyped-def]
        nonlocal embed_s
        started = time.perf_counter()
        vectors = inner(texts)
        embed_s += time.perf_counter() - started
        return vectors

    embedder.embed = timed_embed  # type: ignore[method-assign]
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    result = ingest_document(data, name, "bench:w:c", embedder, MemoryStore(), settings.ingest.limits())
    elapsed = time.perf_counter() - started
    return {"bf16": embedder.uses_bf16, "pages": result.info.pages, "chunks": result.info.chunks,
            "seconds": round(elapsed, 1),
            "pages_per_s": round(result.info.pages / elapsed, 3), "embedder_share": round(embed_s / elapsed, 3),
            "rss_after_model_load_mb": round(rss_before, 1), **peak_rss_mb(),
            "sample": f"first {max_pages} pages" if max_pages else "whole file"}


def run_tutorial(name: str, max_pages: int | None) -> dict[str, object]:
    from phobos.settings import Settings

    model = concrete_embedder(Settings())._model
    model.encode("warm up")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    index = tutorial_ingest(manual(name), model, max_pages=max_pages)
    elapsed = time.perf_counter() - started
    pages = min(max_pages or 10**9, _page_count(name))
    return {"pages": pages, "chunks": len(index.texts), "seconds": round(elapsed, 1),
            "pages_per_s": round(pages / elapsed, 3), "embedder_share": round(index.embed_s / elapsed, 3),
            "rss_after_model_load_mb": round(rss_before, 1), **peak_rss_mb(),
            "sample": f"first {max_pages} pages" if max_pages else "whole file"}


def _page_count(name: str) -> int:
    import pymupdf

    with pymupdf.open(manual(name)) as document:
        return int(document.page_count)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tutorial-pages", type=int, default=300, help="tutorial's sample of refman.pdf")
    parser.add_argument("--refman-pages", type=int, default=0, help="Phobos's sample of refman.pdf (0: all)")
    parser.add_argument("--one", nargs=3, metavar=("PIPELINE", "FILE", "MAX_PAGES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        pipeline, name, max_pages = args.one
        sample = int(max_pages) or None
        if pipeline == "tutorial":
            print(json.dumps(run_tutorial(name, sample)))
        else:
            print(json.dumps(run_phobos(name, sample, bf16=pipeline == "phobos")))
        return
    import torch

    results: dict[str, object] = {"cpu_threads": torch.get_num_threads(),
                                  "note": "peak_rss_reader_process_mb is inflated by fork (it counts the parent's "
                                          "pages at fork time), so it is not the reader's own peak"}
    for name in FILES:
        row = {}
        for pipeline in ("phobos", "phobos_fp32", "tutorial"):
            max_pages = 0
            if name == "refman.pdf":
                max_pages = args.tutorial_pages if pipeline == "tutorial" else args.refman_pages
            out = subprocess.run([sys.executable, __file__, "--one", pipeline, name, str(max_pages)],
                                 capture_output=True, text=True, check=True)
            row[pipeline] = json.loads(out.stdout.strip().splitlines()[-1])
            print(name, pipeline, row[pipeline], file=sys.stderr, flush=True)
        tutorial_rate = row["tutorial"]["pages_per_s"]
        row["speedup_pages_per_s"] = round(row["phobos"]["pages_per_s"] / tutorial_rate, 2)
        row["speedup_pages_per_s_fp32"] = round(row["phobos_fp32"]["pages_per_s"] / tutorial_rate, 2)
        results[name] = row
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
