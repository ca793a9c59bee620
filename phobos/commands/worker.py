"""`phobos worker`: load the models and serve jobs from the queue."""

from __future__ import annotations

import argparse

from phobos import runtime
from phobos.settings import Settings


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    requested = [n.strip() for n in args.models.split(",")] if args.models else settings.worker.served_models()
    with runtime.redis_url(settings) as url:
        health = runtime.serve_metrics(settings, url)  # /readyz answers 503 while the models load
        client = runtime.connect(url, settings)
        registry = runtime.load_registry(settings)
        embedder = runtime.load_embedder(settings)
        names, default_model = runtime.resolve_auto(settings, registry, requested)
        generators = runtime.load_generators(settings, registry, names)
        worker = runtime.build_worker(settings, client, embedder, generators, registry, default_model)
        worker.install_signal_handlers()
        if health:
            health.mark_loaded()
        worker.run(burst=args.burst)
    return 0
