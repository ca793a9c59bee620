"""The evaluation sets in bench/eval: schema, split by document, evidence and key facts on the cited pages."""

import json
import re
import statistics
import sys
import unicodedata
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from key_facts import fact_stated  # noqa: E402

EVAL = ROOT / "bench" / "eval"
DOCS = ROOT / ".cache" / "eval-docs"  # where `bench/eval/get-documents.sh .cache/eval-docs` puts them
SPLITS = ("dev", "heldout")
KINDS = {"paraphrase", "direct"}
FIELDS = {"id", "question", "doc", "pages", "answer", "evidence", "kind", "key_facts"}
KEPT_ASIDE = {"R-intro.pdf", "R-data.pdf", "R-FAQ.pdf"}  # reserved for an independent check


def load(name: str) -> list[dict]:
    path = EVAL / name
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def questions() -> dict[str, list[dict]]:
    return {split: load(f"{split}.jsonl") for split in SPLITS}


def normalise(text: str) -> str:
    """Folds ligatures (NFKC), collapses whitespace and case, as a reader would compare text."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text)).strip().lower()


def test_question_schema() -> None:
    rows = [row for split in questions().values() for row in split]
    assert rows, "bench/eval/dev.jsonl is missing or empty"
    for row in rows:
        assert set(row) == FIELDS, row.get("id")
        for key in ("id", "question", "doc", "answer", "evidence"):
            assert isinstance(row[key], str) and row[key].strip(), (row["id"], key)
        assert row["kind"] in KINDS, row["id"]
        assert row["pages"] and all(isinstance(p, int) and p >= 1 for p in row["pages"]), row["id"]
        assert row["doc"].endswith(".pdf"), row["id"]
        facts = row["key_facts"]
        assert isinstance(facts, list) and 1 <= len(facts) <= 3, row["id"]
        assert all(isinstance(f, str) and f.strip() and all(a.strip() for a in f.split("|")) for f in facts), row["id"]


def test_key_facts_are_found_after_normalisation_and_as_whole_words() -> None:
    assert fact_stated("--vanilla", "Run Rscript \u2013\u2013vanilla".replace("\u2013\u2013", "--"))
    assert fact_stated("--mem", "Raise \u2011\u2011mem.".replace("\u2011", "-"))
    assert fact_stated("Z's ordered observations", "It means Z\u2019s ordered observations")
    assert fact_stated("is.null", "test it with `is.null()`")
    assert fact_stated("Thursday", "office hours on Thursdays")  # a plural still states it
    assert fact_stated("2127|2,127", "2,127 packages")  # alternatives
    assert not fact_stated("mode", "the model says")  # a word inside another word is not stated
    assert not fact_stated("50", "limit of 500 jobs")
    assert not fact_stated("HC3", "")
    assert not fact_stated("LANGUAGE", "in a different language")  # an identifier keeps its case
    assert fact_stated("LANGUAGE", "set the `LANGUAGE` environment variable")
    assert fact_stated("Visual Studio", "R does not compile with visual studio")  # capitals only at word starts
    # repeating the question is not stating the fact
    assert not fact_stated("twice|RcppExports", "After regenerating RcppExports, rebuild.", "regenerating RcppExports?")
    assert fact_stated("twice|RcppExports", "Run it twice.", "regenerating RcppExports?")


def test_every_key_fact_is_stated_by_the_gold_answer() -> None:
    """The gold answer is what a correct answer looks like, so it states every fact the scorer asks for.

    This holds without the documents, so it is checked on every machine (CI has no eval PDFs)."""
    misses = [(row["id"], f) for rows in questions().values() for row in rows
              for f in row["key_facts"] if not fact_stated(f, row["answer"])]
    assert not misses, f"key facts the gold answer does not state: {misses}"


def test_every_key_fact_says_more_than_its_question() -> None:
    """A fact only the question's own words state would credit an answer that repeats the question."""
    echoes = [(row["id"], f) for rows in questions().values() for row in rows for f in row["key_facts"]
              if all(fact_stated(a, row["question"]) for a in f.split("|"))]
    assert not echoes, echoes


def test_ids_are_unique_across_splits() -> None:
    ids = [row["id"] for split in questions().values() for row in split]
    ids += [row["id"] for row in load("offtopic.jsonl")]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})


def test_split_is_by_document() -> None:
    docs = {split: {row["doc"] for row in rows} for split, rows in questions().items()}
    assert not docs["dev"] & docs["heldout"], "a document appears in both splits"


def test_minimum_counts() -> None:
    split = questions()
    rows = split["dev"] + split["heldout"]
    assert len(rows) >= 150
    assert len({row["doc"] for row in rows}) >= 6
    assert 0.4 <= sum(row["kind"] == "paraphrase" for row in rows) / len(rows) <= 0.65
    for name, part in split.items():
        assert len(part) >= 0.4 * len(rows), f"{name} holds too few of the questions"
        assert len({row["doc"] for row in part}) >= 3, name
        assert {row["kind"] for row in part} == KINDS, name
    probes = load("offtopic.jsonl")
    assert len(probes) >= 30
    assert all(sum(p["split"] == name for p in probes) >= 10 for name in SPLITS)


def test_documents_kept_aside_are_unused() -> None:
    used = {row["doc"] for rows in questions().values() for row in rows}
    assert not used & KEPT_ASIDE


def test_every_document_is_fetched_by_the_script() -> None:
    script = (EVAL / "get-documents.sh").read_text(encoding="utf-8")
    for doc in {row["doc"] for rows in questions().values() for row in rows}:
        assert re.search(rf"[/ ]{re.escape(doc)}\b", script), f"{doc} is not in get-documents.sh"


def test_offtopic_schema() -> None:
    rows = load("offtopic.jsonl")
    assert rows
    for row in rows:
        assert set(row) == {"id", "question", "split"}, row
        assert row["split"] in SPLITS and row["question"].strip(), row


def documents() -> list[str]:
    return sorted({row["doc"] for rows in questions().values() for row in rows})


@cache
def page_texts(doc: str) -> list[str] | None:
    """The document's pages, normalised; None when it has not been fetched."""
    path = DOCS / doc
    if not path.exists():
        return None
    import pymupdf

    with pymupdf.open(path) as pdf:
        return [normalise(page.get_text()) for page in pdf]


@pytest.mark.parametrize("doc", documents())
def test_evidence_is_on_a_cited_page(doc: str) -> None:
    pages = page_texts(doc)
    if pages is None:
        pytest.skip(f"{DOCS / doc} absent: run bench/eval/get-documents.sh .cache/eval-docs")
    misses = []
    for row in (r for rows in questions().values() for r in rows if r["doc"] == doc):
        assert max(row["pages"]) <= len(pages), row["id"]
        if not any(normalise(row["evidence"]) in pages[p - 1] for p in row["pages"]):
            misses.append(row["id"])
    assert not misses, f"evidence not found on the cited pages: {misses}"


STOPWORDS = frozenset(
    re.findall(
        r"\w+",
        """
        the and for are you how what why can does with from that this into when which have has not but your
        its their there will should would could get any all one out use using like did was were been about
        than then them they these those some such just only also more most very our over under after before
        each other same own still where who while again here off too yet both few many much must may might
        """,
    )
)


def content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z][a-z0-9_.]+", normalise(text)) if len(w) >= 3 and w not in STOPWORDS}


def test_paraphrases_share_few_words_with_their_pages() -> None:
    """The `kind` labels hold: paraphrases reuse far fewer of the page's words than direct questions."""
    rows = [r for rows in questions().values() for r in rows]
    missing = sorted({r["doc"] for r in rows if page_texts(r["doc"]) is None})
    if missing:
        pytest.skip(f"documents absent from {DOCS}: {missing}")
    shares: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for row in rows:
        pages = page_texts(row["doc"])
        assert pages is not None
        on_page = content_words(" ".join(pages[p - 1] for p in row["pages"]))
        asked = content_words(row["question"])
        shares[row["kind"]].append(len(asked & on_page) / max(1, len(asked)))
    paraphrase, direct = statistics.mean(shares["paraphrase"]), statistics.mean(shares["direct"])
    assert paraphrase <= 0.4 and paraphrase < direct - 0.2, (paraphrase, direct)
