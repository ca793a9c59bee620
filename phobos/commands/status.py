"""`phobos status`, `models` and `redis stop`: what is running, what can be served, the embedded Redis."""

from __future__ import annotations

import argparse
import sys

from jobs.heartbeats import live_models, live_workers
from phobos import runtime
from phobos.redis_server import EmbeddedRedis, describe_uptime
from phobos.settings import Settings


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from jobs import queue_state, supervised

    url = runtime.running_redis_url(settings)  # a look does not start the embedded Redis
    if url is None:
        print(f"Redis: embedded, not running (data in {EmbeddedRedis(settings.state_path).data_dir}; "
              "the next `phobos up`, `worker` or `ingest` starts it)")
        print("Workers live: 0")
        return 0
    client = runtime.connect(url, settings)
    workers = live_workers(client)
    state = queue_state.read(client)
    children = supervised.current(client)
    print(f"Redis: {_redis_line(settings, url)}")
    print(f"Workers live: {len(workers)}")
    for w in workers:
        print(f"  {w.worker_id} on {w.host} (pid {w.pid}): {', '.join(w.models)}")
    print(f"Queue depth: {state.depth} waiting; {state.pending} running; {state.admitted} admitted; "
          f"{state.dead} dead-lettered")
    if children:
        print("Run by `phobos up`:")
        for child in children:
            print(f"  {child.describe()}")
    return 0


def _redis_line(settings: Settings, url: str) -> str:
    if not runtime.is_embedded(settings):
        return runtime.masked_url(url)
    info = EmbeddedRedis(settings.state_path).info()
    if info is None:  # stopped between the two looks
        return f"embedded, not running ({url})"
    return f"embedded, pid {info.pid}, up {describe_uptime(info.uptime_s)} ({url})"


def cmd_models(args: argparse.Namespace, settings: Settings) -> int:
    registry = runtime.load_registry(settings)
    url = runtime.running_redis_url(settings)  # a listing does not start the embedded Redis
    live = live_models(runtime.connect(url, settings)) if url else set()
    for spec in registry.specs():
        mark = "*" if spec.name in live else " "
        default = " (default)" if spec.name == settings.worker.default_model else ""
        print(f"{mark} {spec.name:<22} {spec.backend:<12} {spec.description}{default}")
    print("* = served by a live worker now")
    return 0


def cmd_redis(args: argparse.Namespace, settings: Settings) -> int:
    if not runtime.is_embedded(settings):
        print("REDIS_URL is set, so there is no embedded Redis to stop; stop that server where it runs.",
              file=sys.stderr)
        return 2
    embedded = EmbeddedRedis(settings.state_path)
    stopped = embedded.stop()
    if stopped is None:
        print(f"The embedded Redis is not running (data in {embedded.data_dir}).")
        return 0
    others = stopped.clients - 1  # less the connection that asked
    print(f"Stopped the embedded Redis (pid {stopped.pid}, up {describe_uptime(stopped.uptime_s)}); "
          f"its data stays in {embedded.data_dir}.")
    if others > 0:
        print(f"{others} connection(s) were still open: those processes wait for Redis until the next Phobos "
              "command starts it.")
    return 0
