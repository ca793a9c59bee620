"""`phobos worker`: load the models and serve jobs from the queue."""

from __future__ import annotations

import argparse

from phobos import runtime
from phobos.settings import Settings


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from workers.worker import Worker, WorkerConfig

    requested = [n.strip() for n in args.models.split(",")] if args.models else settings.served_models()
    with runtime.redis_url(settings) as url:
        health = runtime.serve_metrics(settings, url)  # /readyz answers 503 while the models load
        client = runtime.connect(url, settings)
        registry = runtime.load_registry(settings)
        embedder = runtime.load_embedder(settings)
        names, default_model = runtime.resolve_auto(settings, registry, requested)
        generators = runtime.load_generators(settings, registry, names)
        config = WorkerConfig(default_model=default_model,
                              ingest_limits=runtime.ingest_limits(settings), heartbeat_ttl_s=settings.heartbeat_ttl_s,
                              worker_id=settings.worker_id,
                              reclaim_idle_s=settings.reclaim_idle_s, max_deliveries=settings.max_deliveries,
                              generation_timeout_s=settings.generation_timeout_s,
                              shutdown_grace_s=settings.shutdown_grace_s, concurrency=settings.worker_concurrency,
                              memory_turns=settings.memory_turns, memory_tokens=settings.memory_tokens,
                              memory_ttl_s=settings.memory_ttl_s, log_text=settings.telemetry.log_text,
                              interaction_retention_days=settings.adapters.interaction_retention_days,
                              interaction_max_entries=settings.adapters.interaction_max_entries,
                              index_cache_max_bytes=settings.index_cache_max_bytes, links=settings.links,
                              fetch_limits=runtime.fetch_limits(settings), fetch_max_links=settings.fetch_max_links,
                              claims=settings.claims)
        worker = Worker(client, embedder, generators, registry, config, top_k=settings.top_k,
                        min_relevance=runtime.relevance_floor(settings), reranker=settings.reranker)
        worker.install_signal_handlers()
        if health:
            health.mark_loaded()
        worker.run(burst=args.burst)
    return 0
