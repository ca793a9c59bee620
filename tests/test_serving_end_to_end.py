"""bench/serving_end_to_end.py's measurement on a tiny model: every ask answered exactly once.

Real parts throughout (the bench starts them): redis-server, a worker process holding several asks at
once, a shared PDF, the job client. Timings are the bench's business; this checks the counts it reports.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
ASKS = 6


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("serving_end_to_end", ROOT / "bench" / "serving_end_to_end.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.serving
def test_concurrent_asks_through_a_real_worker_are_each_answered_once(tmp_path: Path) -> None:
    bench = load_bench()
    report = bench.measure(tiny=True, asks=ASKS, new_tokens=6, baseline=False, concurrency=4,
                           time_budget_s=240, work_dir=tmp_path)
    served = report["runs"]["served"]
    assert report["shared"].startswith("Indexed facts.pdf")
    assert served["worker_concurrency"] == 4
    assert served["errors"] == []
    assert (served["answered_once"], served["duplicates"], served["missing"]) == (ASKS, 0, 0)
    assert served["generated_tokens"] > 0  # the answers streamed model text, not the no-text fallback
