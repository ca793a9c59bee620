"""Time from `phobos up` to ready, and one question's latency (first token, full answer), as JSON.

Runs against a throwaway state dir with the embedded Redis and the default models:
    .venv/bin/python bench/startup_latency.py [--questions N]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from phobos.redis_server import EmbeddedRedis

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "phobos" / "samples" / "phobos-handbook.pdf"
QUESTIONS = [
    "What is this document about?",
    "Which models can Phobos run on a GPU?",
    "What happens when a worker dies while it holds a job?",
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--questions", type=int, default=3)
    args = parser.parse_args()
    # A timeout's SIGTERM must unwind through the finally below: it stops `phobos up` and the Redis.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory() as state:
        env = {**os.environ, "PHOBOS_STATE_DIR": state, "PHOBOS_LOG_LEVEL": "WARNING"}
        env.pop("REDIS_URL", None)
        cli = [sys.executable, "-m", "phobos"]
        subprocess.run([*cli, "ingest", str(SAMPLE)], env=env, check=True, capture_output=True)

        started = time.monotonic()
        up = subprocess.Popen([*cli, "up", "--no-console"], env=env, stderr=subprocess.PIPE, text=True)
        assert up.stderr is not None
        for line in up.stderr:
            if line.startswith("Phobos is ready"):
                break
        ready_s = time.monotonic() - started
        # Read the rest too: a pipe nobody reads blocks its writers (up and its children) once 64 KiB are in it.
        threading.Thread(target=up.stderr.read, daemon=True).start()
        asks = []
        try:
            for question in (QUESTIONS * args.questions)[: args.questions]:
                began = time.monotonic()
                done = subprocess.run([*cli, "ask", question, "--json"], env=env, capture_output=True,
                                      text=True, check=True)
                result = json.loads(done.stdout)
                asks.append({"question": question, "first_token_s": result["first_token_s"],
                             "answer_s": result["total_s"], "with_cli_start_s": time.monotonic() - began,
                             "citations": len(result["citations"])})
        finally:
            up.terminate()
            up.wait(timeout=60)
            EmbeddedRedis(Path(state)).stop()  # detached: it would outlive the temp dir
    print(json.dumps({
        "up_to_ready_s": round(ready_s, 2),
        "first_token_s_median": round(statistics.median(a["first_token_s"] for a in asks), 3),
        "answer_s_median": round(statistics.median(a["answer_s"] for a in asks), 3),
        "asks": asks,
        "cpu_count": os.cpu_count(),
    }, indent=2))


if __name__ == "__main__":
    main()
