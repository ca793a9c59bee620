"""Re-embed stored chunks with the current embedder, after PHOBOS_EMBEDDER changed (`phobos reindex`).

The chunk texts are stored with each document, so no original file is needed; only the vectors and
the embedder named in the document's metadata change. Each document is replaced in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable

from core.embedding import Embedder
from workers.store import RedisDocumentStore

BATCH_CHUNKS = 256  # chunks embedded per call: bounds memory on a very large document


def reindex_scope(store: RedisDocumentStore, scope_key: str, embedder: Embedder,
                  report: Callable[[str], None] = lambda line: None) -> int:
    """Re-embed every document of the scope whose vectors another embedder made; returns how many."""
    import numpy as np

    done = 0
    for info in store.list_documents([scope_key]):
        if info.embedder == embedder.name and info.dim == embedder.dim:
            continue
        texts = [chunk.text for chunk in store.chunks_of(info)]
        vectors = [embedder.embed(texts[i:i + BATCH_CHUNKS]) for i in range(0, len(texts), BATCH_CHUNKS)]
        matrix = np.vstack(vectors) if vectors else np.zeros((0, embedder.dim), dtype=np.float32)
        store.replace_vectors(info, matrix, embedder.name)
        report(f"{scope_key}: re-embedded {info.file_name} ({len(texts)} passages)")
        done += 1
    return done
