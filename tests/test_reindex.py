"""The embedder's identity is stored with the vectors; a mismatch names `phobos reindex`, which fixes it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.index import EmbedderMismatchError
from core.ingest import IngestLimits, ingest_pdf
from core.package_files import resolve
from phobos.settings import Settings
from tests.conftest import ROOT, phobos_env
from tests.pdfs import FACT_PAGES, pdf_with_pages
from workers.store import RedisDocumentStore

LIMITS = IngestLimits(max_bytes=10_000_000, max_pages=100, chunk_tokens=60, overlap_tokens=10)
CLI = [sys.executable, "-m", "phobos"]


def test_vectors_of_another_dimension_are_refused_with_the_command_that_fixes_it(redis_client, embedder) -> None:
    store = RedisDocumentStore(redis_client)
    ingest_pdf(pdf_with_pages(FACT_PAGES), "facts.pdf", "test:w:dim", embedder, store, LIMITS)
    info = store.list_documents(["test:w:dim"])[0]
    assert (info.embedder, info.dim) == (embedder.name, embedder.dim)
    with pytest.raises(EmbedderMismatchError, match=r"phobos reindex --scope test:w:dim"):
        store.load_index("test:w:dim", 128, embedder.name)
    with pytest.raises(EmbedderMismatchError, match=r"indexed with the embedder .*384 dimensions"):
        store.load_index("test:w:dim", embedder.dim, "another-embedder")


def test_asking_with_another_embedder_names_phobos_reindex_which_fixes_it(redis_server, start_worker,
                                                                          tmp_path: Path) -> None:
    # The same weights under another configured name are another embedder to Phobos: it cannot tell
    # that two names hold the same model, so it asks for a re-index rather than guess.
    other = tmp_path / "other-embedder"
    other.symlink_to(resolve(Settings().embedder), target_is_directory=True)
    pdf = tmp_path / "facts.pdf"
    pdf.write_bytes(pdf_with_pages(FACT_PAGES))
    env = phobos_env(redis_server.url, PHOBOS_CHUNK_TOKENS="60")
    subprocess.run([*CLI, "ingest", str(pdf), "--scope", "test:w:emb"], env=env, cwd=ROOT, check=True,
                   capture_output=True, timeout=300)

    start_worker("extractive", PHOBOS_EMBEDDER=str(other), PHOBOS_DEFAULT_MODEL="extractive")
    ask = [*CLI, "ask", "How many hives are in the apiary?", "--scope", "test:w:emb", "--json"]
    refused = subprocess.run(ask, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    reply = json.loads(refused.stdout)
    assert reply["type"] == "error", reply
    assert "phobos reindex --scope test:w:emb" in reply["text"] and str(other) in reply["text"]

    reindexed = subprocess.run([*CLI, "reindex", "--all"], env={**env, "PHOBOS_EMBEDDER": str(other)},
                               cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert reindexed.returncode == 0, reindexed.stderr
    assert "test:w:emb: re-embedded facts.pdf" in reindexed.stdout
    assert "Re-embedded 1 document(s) in 1 scope(s)" in reindexed.stdout

    answered = subprocess.run(ask, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    result = json.loads(answered.stdout)
    assert result["type"] == "final" and "twelve hives" in result["text"], result
