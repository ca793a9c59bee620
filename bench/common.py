"""Shared by the benches: paths, an in-memory DocumentStore, the tutorial's pipeline as a baseline."""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.documents import Chunk, DocumentInfo  # noqa: E402
from core.index import ScopeIndex  # noqa: E402

MANUALS = ROOT / ".cache" / "r-manuals"


def manual(name: str) -> Path:
    if (MANUALS / name).exists():
        return MANUALS / name
    raise SystemExit(f"{name} not found; run: bash bench/get-r-manuals.sh {MANUALS}")


def concrete_embedder(settings):  # type: ignore[no-untyped-def]
    """The sentence-transformers embedder itself (never the lazy wrapper): benches reach inside it."""
    from core.embedding import SentenceTransformerEmbedder
    from phobos.runtime import embedder_location, quiet_offline_libraries

    quiet_offline_libraries()
    return SentenceTransformerEmbedder(embedder_location(settings), bf16=settings.models.embed_bf16)


class MemoryStore:
    """A DocumentStore in process memory, so benches measure the engine and not Redis."""

    def __init__(self) -> None:
        self.docs: dict[tuple[str, str], tuple[DocumentInfo, list[Chunk], np.ndarray]] = {}
        self._indexes: dict[str, ScopeIndex] = {}

    def get_document(self, scope_key: str, doc_id: str) -> DocumentInfo | None:
        found = self.docs.get((scope_key, doc_id))
        return found[0] if found else None

    def add_document(self, info: DocumentInfo, chunks: list[Chunk], vectors: np.ndarray) -> None:
        self.docs[(info.scope_key, info.doc_id)] = (info, chunks, vectors)
        self._indexes.pop(info.scope_key, None)

    def list_documents(self, scope_keys: list[str]) -> list[DocumentInfo]:
        return [info for (scope, _), (info, _, _) in self.docs.items() if scope in scope_keys]

    def forget(self, scope_key: str, doc_id: str) -> bool:
        self._indexes.pop(scope_key, None)
        return self.docs.pop((scope_key, doc_id), None) is not None

    def load_indexes(self, scope_keys: list[str], dim: int, embedder_name: str = "") -> list[ScopeIndex]:
        return [self.load_index(key, dim) for key in scope_keys]

    def load_index(self, scope_key: str, dim: int, embedder_name: str = "") -> ScopeIndex:
        if scope_key not in self._indexes:
            parts = [(c, v) for (scope, _), (_, c, v) in self.docs.items() if scope == scope_key]
            chunks = [chunk for c, _ in parts for chunk in c]
            vectors = np.vstack([v for _, v in parts]) if parts else np.zeros((0, dim), np.float32)
            self._indexes[scope_key] = ScopeIndex(chunks, vectors)
        return self._indexes[scope_key]


def ingest_cached(store: MemoryStore, path: Path, scope_key: str, embedder, cache_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """``path`` indexed into ``store`` as a worker indexes it (core.ingest, default limits); the chunks and
    vectors are kept in ``cache_dir`` by the file's hash and the embedder, so a rerun does not embed again."""
    import dataclasses
    import hashlib
    import json

    from core.ingest import ingest_document
    from phobos.settings import Settings

    data = path.read_bytes()
    key = hashlib.sha256(data + embedder.name.encode()).hexdigest()[:20]
    cached = cache_dir / f"{path.name}-{key}"
    if (cached / "vectors.npy").exists():
        saved = json.loads((cached / "document.json").read_text())
        info = DocumentInfo(**{**saved["info"], "scope_key": scope_key})
        chunks = [Chunk(**c) for c in saved["chunks"]]
        store.add_document(info, chunks, np.load(cached / "vectors.npy"))
        return
    private = MemoryStore()
    ingest_document(data, path.name, scope_key, embedder, private, Settings().ingest.limits())
    (info, chunks, vectors), = private.docs.values()
    store.add_document(info, chunks, vectors)
    cached.mkdir(parents=True, exist_ok=True)
    np.save(cached / "vectors.npy", vectors)
    (cached / "document.json").write_text(json.dumps({"info": dataclasses.asdict(info),
                                                       "chunks": [dataclasses.asdict(c) for c in chunks]}))


@dataclass
class TutorialIndex:
    """The tutorial's pipeline: page text with newlines replaced, spaCy sentencizer, 10 sentences per
    chunk within a page, chunks of <= 30 estimated tokens dropped, one-at-a-time embedding, dot score."""

    texts: list[str] = field(default_factory=list)
    pages: list[int] = field(default_factory=list)
    vectors: np.ndarray | None = None
    embed_s: float = 0.0  # time inside the embedder


SENTENCES_PER_CHUNK = 10
MIN_TOKENS = 30


def tutorial_ingest(path: Path, model, max_pages: int | None = None) -> TutorialIndex:  # type: ignore[no-untyped-def]
    import pymupdf
    from spacy.lang.en import English

    nlp = English()
    nlp.add_pipe("sentencizer")
    index = TutorialIndex()
    vectors = []
    with pymupdf.open(path) as document:
        for number, page in enumerate(document, start=1):
            if max_pages is not None and number > max_pages:
                break
            text = page.get_text().replace("\n", " ").strip()
            sentences = [str(s) for s in nlp(text).sents]
            for i in range(0, len(sentences), SENTENCES_PER_CHUNK):
                chunk = "".join(sentences[i:i + SENTENCES_PER_CHUNK]).replace("  ", " ").strip()
                chunk = re.sub(r"\.([A-Z])", r". \1", chunk)
                if len(chunk) / 4 <= MIN_TOKENS:
                    continue
                started = time.perf_counter()
                vectors.append(model.encode(chunk, convert_to_numpy=True))
                index.embed_s += time.perf_counter() - started
                index.texts.append(chunk)
                index.pages.append(number)
    index.vectors = np.vstack(vectors).astype(np.float32)
    return index


def tutorial_search(index: TutorialIndex, model, question: str, k: int = 5) -> list[int]:  # type: ignore[no-untyped-def]
    """Pages of the top-``k`` chunks by dot score."""
    assert index.vectors is not None
    scores = index.vectors @ model.encode(question, convert_to_numpy=True)
    return [index.pages[i] for i in np.argsort(-scores)[:k]]
