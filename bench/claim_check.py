"""The claim check (core/claims/) against hand labels: precision and recall per split, its cost, as JSON.

    .venv/bin/python bench/claim_check.py [--calibrate] [--out bench/results/claim_check.json]

Inputs: ``bench/eval/claim_answers.jsonl`` (answers from several models to dev and held-out questions,
with the numbered sources each model was shown) and ``bench/eval/claim_labels.jsonl`` (one answer
sentence a line, judged by hand against the sources it cites, or all of them when it cites none:
``supported``, ``unsupported`` or ``not_a_claim``; see bench/eval/README.md).

The positive class is an UNSUPPORTED sentence, what the check must mark:
  precision   marked sentences that are unsupported / marked sentences
  recall      unsupported sentences that are marked / unsupported sentences
  unmarked_unsupported_share   unsupported sentences left unmarked / labelled sentences (what a reader
              sees unmarked and wrong, the issue's 5% goal)
A sentence labelled not_a_claim that the check marks counts against precision.

``--calibrate`` picks ``ClaimThresholds`` on the DEV labels only (the grid below, best F1 of the
unsupported class, ties to the higher precision) and reports both splits with them; without it the
thresholds calibrated for the claim embedder in core/embedders.toml are used. Held-out labels never choose
a threshold.
The cost: the check's seconds per answer over every answer in the file, with the default embedder.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: the repo's core/

from core.claims import ClaimThresholds, SentenceCheck, check_answer, verdict

ROOT = Path(__file__).resolve().parents[1]
EVAL = ROOT / "bench" / "eval"
SIMILARITY_GRID = [round(0.30 + 0.025 * i, 3) for i in range(21)]  # 0.30 .. 0.80
COVERAGE_GRID = [round(0.05 * i, 2) for i in range(19)]  # 0 .. 0.90
PARAPHRASE_GRID = [0.75, 0.8, 0.85, 0.9, 0.95, 1.01]  # 1.01: no paraphrase shortcut
# Nothing cut short: the first pass collects each sentence's similarity, coverage and missing terms.
OPEN = ClaimThresholds(min_similarity=-1.0, min_coverage=0.0, paraphrase_similarity=2.0)


@dataclass
class Labelled:
    key: str
    split: str
    model: str
    label: str  # supported, unsupported, not_a_claim
    check: SentenceCheck | None  # the checker's view of the same sentence; None if not found


def load_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def source_texts(answer: dict) -> list[str]:
    return [f"({s['label']}) {s['text']}" for s in answer["sources"]]


def collect(answers: dict[str, dict], labels: list[dict], embedder) -> tuple[list[Labelled], list[float]]:  # type: ignore[no-untyped-def]
    """Each label with the checker's measurements of its sentence; the check's seconds per answer."""
    by_answer: dict[str, list[dict]] = {}
    for label in labels:
        by_answer.setdefault(label["answer"], []).append(label)
    found: list[Labelled] = []
    seconds: list[float] = []
    for key, answer in answers.items():
        started = time.perf_counter()
        check = check_answer(answer["answer"], source_texts(answer), embedder, OPEN)
        seconds.append(time.perf_counter() - started)
        sentences = {s.text.strip(): s for s in check.sentences}
        for label in by_answer.get(key, ()):
            found.append(Labelled(key, answer["split"], answer["model"], label["label"],
                                  sentences.get(label["sentence"].strip())))
    return found, seconds


def is_marked(check: SentenceCheck | None, limits: ClaimThresholds) -> bool:
    if check is None or not check.is_claim:
        return False
    supported, _ = verdict(check.missing_terms, check.similarity, check.coverage, limits)
    return not supported


def scores(items: list[Labelled], limits: ClaimThresholds) -> dict[str, float | int]:
    tp = fp = fn = tn = 0
    for item in items:
        marked, wrong = is_marked(item.check, limits), item.label == "unsupported"
        tp += marked and wrong
        fp += marked and not wrong
        fn += wrong and not marked
        tn += not marked and not wrong
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"sentences": len(items), "unsupported": tp + fn, "marked": tp + fp, "true_positives": tp,
            "false_positives": fp, "false_negatives": fn, "precision": round(precision, 3),
            "recall": round(recall, 3), "f1": round(f1, 3),
            "unmarked_unsupported_share": round(fn / len(items), 3) if items else 0.0}


def calibrate(dev: list[Labelled]) -> ClaimThresholds:
    best: tuple[float, float] = (-1.0, -1.0)
    chosen = ClaimThresholds()
    for similarity, coverage, paraphrase in itertools.product(SIMILARITY_GRID, COVERAGE_GRID, PARAPHRASE_GRID):
        limits = ClaimThresholds(similarity, coverage, paraphrase)
        result = scores(dev, limits)
        rank = (float(result["f1"]), float(result["precision"]))
        if rank > best:
            best, chosen = rank, limits
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--answers", type=Path, default=EVAL / "claim_answers.jsonl")
    parser.add_argument("--labels", type=Path, default=EVAL / "claim_labels.jsonl")
    parser.add_argument("--calibrate", action="store_true", help="choose the thresholds on the dev labels")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "claim_check.json")
    args = parser.parse_args()

    from phobos.runtime import claim_embedder_choice, claim_thresholds, load_claim_embedder, load_embedder
    from phobos.settings import Settings

    settings = Settings()
    embedder = load_claim_embedder(settings, load_embedder(settings))  # PHOBOS_CLAIM_EMBEDDER, as a worker's
    embedder.embed(["warm up"])  # the first call loads the model; a worker has done it before any answer
    answers = {a["key"]: a for a in load_jsonl(args.answers)}
    labels = load_jsonl(args.labels)
    items, seconds = collect(answers, labels, embedder)
    missing = [i.key for i in items if i.check is None]
    limits = calibrate([i for i in items if i.split == "dev"]) if args.calibrate else claim_thresholds(settings)

    report: dict = {
        "thresholds": asdict(limits), "calibrated_on": "dev" if args.calibrate else "core/embedders.toml",
        "labels": len(labels), "labels_not_matched": missing,
        "embedder": claim_embedder_choice(settings),
        "machine": f"{platform.machine()}, {platform.processor() or ''}".strip(", "),
    }
    for split in ("dev", "heldout"):
        chosen = [i for i in items if i.split == split]
        report[split] = scores(chosen, limits)
        report[split]["per_model"] = {m: scores([i for i in chosen if i.model == m], limits)
                                      for m in sorted({i.model for i in chosen})}
    report["all"] = scores(items, limits)
    sentences = sum(len(a["answer"]) > 0 for a in answers.values())
    report["cost"] = {"answers": sentences, "median_s": round(statistics.median(seconds), 4),
                      "p90_s": round(sorted(seconds)[int(0.9 * (len(seconds) - 1))], 4),
                      "max_s": round(max(seconds), 4), "mean_s": round(statistics.fmean(seconds), 4)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
